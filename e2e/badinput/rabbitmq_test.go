package badinput

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/numaflow-connectors/sources/common/numatest"
	"github.com/numaflow-connectors/sources/rabbitmq-source/rabbitmqtest"
)

// rabbitEnv points the connector at queue on node.
func rabbitEnv(node *rabbitmqtest.Node, queue string, extra ...string) []string {
	return append([]string{"RABBITMQ_URL=" + node.URL(), "RABBITMQ_QUEUE=" + queue, "LOG_LEVEL=debug", "LOG_FORMAT=json"}, extra...)
}

// Poison messages and oversize ones on RabbitMQ: non-UTF-8 bytes in the body, in a header value
// (an AMQP byte array), in a header name and in the routing key (the message key); an empty body; a
// 1000 KiB body; then a normal message, which must arrive, as must each of the others with valid UTF-8
// headers and keys. Over MAX_MESSAGE_BYTES with a dead-letter exchange: published there with the
// reason, acked, and the queue goes on.
func TestRabbitMQPoisonAndOversize(t *testing.T) {
	t.Parallel()
	node := rabbitmqtest.Start(t, rabbitmqtest.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	t.Run("poison", func(t *testing.T) {
		q := rabbitmqtest.Name(t)
		node.DeclareQueue(t, q, rabbitmqtest.Classic, nil)
		c := node.Dial(t)
		pub := func(key string, m amqp.Publishing) {
			t.Helper()
			if err := rabbitmqtest.PublishOn(ctx, c, "amq.topic", key, m); err != nil {
				t.Fatal(err)
			}
		}
		ch, err := c.Channel()
		if err != nil {
			t.Fatal(err)
		}
		if err := ch.QueueBind(q, "#", "amq.topic", false, nil); err != nil {
			t.Fatal(err)
		}
		pub("k", amqp.Publishing{Body: []byte(nonUTF8)})
		pub("k", amqp.Publishing{Body: []byte("bad-header"), Headers: amqp.Table{"h": []byte(nonUTF8)}})
		pub("k", amqp.Publishing{Body: []byte("bad-header-name"), Headers: amqp.Table{nonUTF8: "v"}})
		pub(nonUTF8, amqp.Publishing{Body: []byte("bad-key")})
		pub("k", amqp.Publishing{Body: nil, MessageId: "empty"})
		pub("k", amqp.Publishing{Body: []byte(largeBody)})
		pub("k", amqp.Publishing{Body: []byte("after-poison")})
		conn := startConnector(t, rabbitSource, rabbitEnv(node, q))
		msgs := conn.drainUntil(t, drainTimeout, seenEach(
			payloadIs(nonUTF8), payloadIs("bad-header"), payloadIs("bad-header-name"), payloadIs("bad-key"),
			func(m numatest.Message) bool {
				return len(m.Payload) == 0 && m.Headers["x-rabbitmq-message-id"] == "empty"
			},
			payloadIs(largeBody), payloadIs("after-poison"),
		))
		for _, m := range msgs {
			for k, v := range m.Headers {
				if !utf8.ValidString(k) || !utf8.ValidString(v) {
					t.Errorf("header %q=%q is not valid UTF-8", k, v)
				}
			}
			for _, k := range m.Keys {
				if !utf8.ValidString(k) {
					t.Errorf("key %q is not valid UTF-8", k)
				}
			}
		}
		conn.finish(t)
	})

	t.Run("oversize dead-lettered", func(t *testing.T) {
		q := rabbitmqtest.Name(t)
		node.DeclareQueue(t, q, rabbitmqtest.Quorum, nil)
		dlq := q + ".dlq"
		node.DeclareQueue(t, dlq, rabbitmqtest.Classic, nil)
		c := node.Dial(t)
		for _, body := range []string{"before", bigPayload, "after"} {
			if err := rabbitmqtest.PublishOn(ctx, c, "", q, amqp.Publishing{Body: []byte(body)}); err != nil {
				t.Fatal(err)
			}
		}
		ch, err := c.Channel()
		if err != nil {
			t.Fatal(err)
		}
		if err := ch.QueueBind(dlq, dlq, "amq.direct", false, nil); err != nil {
			t.Fatal(err)
		}
		conn := startConnector(t, rabbitSource, rabbitEnv(node, q, "MAX_MESSAGE_BYTES="+smallLimit,
			"RABBITMQ_DEAD_LETTER_EXCHANGE=amq.direct", "RABBITMQ_DEAD_LETTER_ROUTING_KEY="+dlq))
		msgs := conn.drainUntil(t, drainTimeout, seenAll("before", "after"))
		assertOversizeNotDelivered(t, msgs)
		eventually(t, 20*time.Second, func(context.Context) error {
			m, ok, err := ch.Get(dlq, true)
			switch {
			case err != nil:
				return err
			case !ok:
				return errNotYet
			}
			reason, _ := m.Headers["x-dead-letter-reason"].(string)
			if string(m.Body) != bigPayload || !strings.Contains(reason, reasonTooLarge) {
				return fmt.Errorf("dead letter of %d bytes with reason %q", len(m.Body), reason)
			}
			return nil
		})
		conn.waitOutput(t, 5*time.Second, "message dead-lettered", reasonTooLarge)
		conn.finish(t)
	})
}
