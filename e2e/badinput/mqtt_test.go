package badinput

import (
	"context"
	"encoding/base64"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/eclipse/paho.golang/paho"

	"github.com/numaflow-connectors/sources/common/numatest"
	"github.com/numaflow-connectors/sources/mqtt-source/mqtttest"
)

// mqttEnv points the connector at topic on srv, with a session (client id topic-0, share group topic)
// that mqttSession created before anything was published: MQTT drops what nobody subscribes to.
func mqttEnv(srv *mqtttest.Server, topic string, extra ...string) []string {
	return append([]string{"MQTT_URL=" + srv.URL(), "MQTT_TOPICS=" + topic, "MQTT_USERNAME=" + mqtttest.User,
		"MQTT_PASSWORD=" + srv.Password, "MQTT_CLIENT_ID=" + topic + "-0", "MQTT_SHARE_GROUP=" + topic,
		"LOG_LEVEL=debug", "LOG_FORMAT=json"}, extra...)
}

func mqttSession(t *testing.T, srv *mqtttest.Server, topic string) {
	t.Helper()
	srv.Session(t, topic+"-0", time.Hour, 1, "$share/"+topic+"/"+topic)
}

// publishMQTT publishes each message to topic at QoS 1 and waits for the broker's PUBACK.
func publishMQTT(ctx context.Context, t *testing.T, srv *mqtttest.Server, msgs ...*paho.Publish) {
	t.Helper()
	pub := srv.Connect(t, "")
	defer pub.Close()
	for _, m := range msgs {
		m.QoS = 1
		if _, err := pub.Client.Publish(ctx, m); err != nil {
			t.Fatalf("publishing %.20q: %v", m.Payload, err)
		}
	}
}

// Poison messages and oversize ones on MQTT: non-UTF-8 bytes in the payload and in the correlation
// data (binary in MQTT: base64 in its header), a user property that tries to forge the connector's
// x-mqtt-topic header, an empty payload, a 1000 KiB payload, then a normal message, which must arrive, as
// must each of the others with valid UTF-8 headers. MQTT itself requires UTF-8 in topics and
// properties (mosquitto refuses others), so those cannot reach the connector. Over MAX_MESSAGE_BYTES
// with 2,500 messages after it (more than the broker's window of 1,000 unacknowledged): with a
// dead-letter topic, published there with the reason, and the stream goes on; without, by default
// (DEAD_LETTER_FALLBACK unset: drop for MQTT), acknowledged, logged and gone, and the stream goes on.
// With DEAD_LETTER_FALLBACK=nack set, the message is kept (MQTT has no nack), and since MQTT
// acknowledges in order it holds back every later acknowledgement: the source stalls once the window
// is full (about 2,000 messages later, measured before drop became the default), which the connector
// warns about at start.
func TestMQTTPoisonAndOversize(t *testing.T) {
	t.Parallel()
	srv := mqtttest.Start(t, mqtttest.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	t.Run("poison", func(t *testing.T) {
		topic := mqtttest.Name(t)
		mqttSession(t, srv, topic)
		publishMQTT(ctx, t, srv,
			&paho.Publish{Topic: topic, Payload: []byte(nonUTF8)},
			&paho.Publish{Topic: topic, Payload: []byte("binary-correlation"), Properties: &paho.PublishProperties{CorrelationData: []byte(nonUTF8)}},
			&paho.Publish{Topic: topic, Payload: []byte("forged-topic"), Properties: &paho.PublishProperties{
				User: paho.UserProperties{{Key: "x-mqtt-topic", Value: "elsewhere"}, {Key: "ok", Value: "1"}}}},
			&paho.Publish{Topic: topic, Payload: nil, Properties: &paho.PublishProperties{User: paho.UserProperties{{Key: "empty", Value: "yes"}}}},
			&paho.Publish{Topic: topic, Payload: []byte(largeBody)},
			&paho.Publish{Topic: topic, Payload: []byte("after-poison")},
		)
		conn := startConnector(t, mqttSource, mqttEnv(srv, topic))
		msgs := conn.drainUntil(t, drainTimeout, seenEach(
			payloadIs(nonUTF8), payloadIs("binary-correlation"), payloadIs("forged-topic"),
			func(m numatest.Message) bool { return len(m.Payload) == 0 && m.Headers["empty"] == "yes" },
			payloadIs(largeBody), payloadIs("after-poison"),
		))
		for _, m := range msgs {
			for k, v := range m.Headers {
				if !utf8.ValidString(k) || !utf8.ValidString(v) {
					t.Errorf("header %q=%q is not valid UTF-8", k, v)
				}
			}
			if m.Headers["x-mqtt-topic"] != topic || !slices.Equal(m.Keys, []string{topic}) {
				t.Errorf("%.20q: topic header %q, keys %q; want %q (a user property must not forge it)", m.Payload, m.Headers["x-mqtt-topic"], m.Keys, topic)
			}
			switch string(m.Payload) {
			case "binary-correlation":
				if got := m.Headers["x-mqtt-correlation-data"]; got != base64.StdEncoding.EncodeToString([]byte(nonUTF8)) {
					t.Errorf("binary correlation data as header %q, want it base64", got)
				}
			case "forged-topic":
				if m.Headers["ok"] != "1" {
					t.Errorf("the other user property was lost: %v", m.Headers)
				}
			}
		}
		conn.finish(t)
	})

	t.Run("oversize dead-lettered", func(t *testing.T) {
		topic := mqtttest.Name(t)
		dlq := topic + "/dlq"
		watcher := srv.Connect(t, topic+"-dlq-watcher")
		if err := watcher.Subscribe(ctx, dlq); err != nil {
			t.Fatal(err)
		}
		conn := drainOversize(ctx, t, srv, topic, oversizeAfter, "MQTT_DEAD_LETTER_TOPIC="+dlq)
		eventually(t, 20*time.Second, func(context.Context) error {
			got := watcher.Received()
			if len(got) == 0 {
				return errNotYet
			}
			reason := got[0].Properties.User.Get("dead-letter-reason")
			if string(got[0].Payload) != bigPayload || !strings.Contains(reason, reasonTooLarge) {
				return fmt.Errorf("dead letter of %d bytes with reason %q", len(got[0].Payload), reason)
			}
			return nil
		})
		conn.waitOutput(t, 5*time.Second, "message dead-lettered", reasonTooLarge)
		conn.finish(t)
	})

	t.Run("oversize dropped by default", func(t *testing.T) {
		conn := drainOversize(ctx, t, srv, mqtttest.Name(t), oversizeAfter)
		conn.waitOutput(t, 5*time.Second, "message dropped", reasonTooLarge)
		conn.waitOutput(t, 5*time.Second, "no MQTT_DEAD_LETTER_TOPIC", "dropped_total")
		if out := conn.proc.Output(); strings.Contains(out, "the source stops receiving") {
			t.Errorf("warned about the nack fallback, which is not the default:\n%s", out)
		}
		conn.finish(t)
	})

	// An explicit nack fallback: the oversize message is kept and redelivered locally without
	// spinning, the messages after it flow while the window lasts, and the connector said at start
	// what this leads to.
	t.Run("oversize kept by DEAD_LETTER_FALLBACK=nack", func(t *testing.T) {
		conn := drainOversize(ctx, t, srv, mqtttest.Name(t), 300, "LOG_FORMAT=text", "DEAD_LETTER_FALLBACK=nack")
		conn.waitOutput(t, 5*time.Second, "no MQTT_DEAD_LETTER_TOPIC", "the source stops receiving")
		conn.assertNoNackSpin(t)
		conn.finish(t)
	})
}

// oversizeAfter is how many messages follow the oversize one: more than the broker's window (1,000).
const oversizeAfter = 2500

// drainOversize publishes "before", an oversize message and after more to topic (on a session made
// first), starts the connector with MAX_MESSAGE_BYTES=smallLimit and env, and drains until every
// message but the oversize one has arrived.
func drainOversize(ctx context.Context, t *testing.T, srv *mqtttest.Server, topic string, after int, env ...string) *conn {
	t.Helper()
	mqttSession(t, srv, topic)
	msgs := []*paho.Publish{{Topic: topic, Payload: []byte("before")}, {Topic: topic, Payload: []byte(bigPayload)}}
	want := []string{"before"}
	for i := range after {
		p := fmt.Sprintf("after-%04d", i)
		msgs, want = append(msgs, &paho.Publish{Topic: topic, Payload: []byte(p)}), append(want, p)
	}
	publishMQTT(ctx, t, srv, msgs...)
	c := startConnector(t, mqttSource, mqttEnv(srv, topic, append(env, "MAX_MESSAGE_BYTES="+smallLimit)...))
	assertOversizeNotDelivered(t, c.drainUntil(t, drainTimeout, seenAll(want...)))
	return c
}
