package badinput

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	pb "cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"

	"github.com/numaflow-connectors/sources/common/numatest"
	"github.com/numaflow-connectors/sources/pubsub-source/pubsubtest"
)

func pubsubEnv(t *testing.T, emu *pubsubtest.Emulator, sub string, extra ...string) []string {
	creds := writeFile(t, shortDir(t), "sa.json", `{"type":"service_account","project_id":"`+pubsubtest.Project+
		`","private_key_id":"k1","private_key":"`+sentinel+`","client_email":"x@test.iam.gserviceaccount.com"}`)
	env := []string{"PUBSUB_EMULATOR_HOST=" + emu.Host, "PUBSUB_SUBSCRIPTION=" + sub, "PUBSUB_ACK_DEADLINE=10s",
		"GOOGLE_APPLICATION_CREDENTIALS=" + creds, "LOG_LEVEL=debug"}
	return append(env, extra...)
}

func publish(t *testing.T, emu *pubsubtest.Emulator, topic string, msgs ...*pb.PubsubMessage) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := emu.Publish(ctx, topic, msgs...); err != nil {
		t.Fatal(err)
	}
}

func data(s string) *pb.PubsubMessage { return &pb.PubsubMessage{Data: []byte(s)} }

func TestPubSubPoisonAndOversize(t *testing.T) {
	t.Parallel()
	emu := pubsubtest.Start(t)
	t.Logf("emulator: %s", emu.Kind)

	// Poison: non-UTF-8 data, empty data (Pub/Sub needs data or an attribute: it has one), 1000 KiB; then
	// a normal message, which must arrive, as must each of the others, byte for byte.
	t.Run("poison", func(t *testing.T) {
		topic := emu.CreateTopic(t, "poison")
		sub := emu.CreateSubscription(t, "poison", pubsubtest.Subscription{Topic: topic})
		publish(t, emu, topic, data(nonUTF8), &pb.PubsubMessage{Attributes: map[string]string{"kind": "empty"}}, data(largeBody))
		c := startConnector(t, pubsubSource, pubsubEnv(t, emu, sub, "LOG_FORMAT=json"))
		emptyData := func(m numatest.Message) bool { return len(m.Payload) == 0 && m.Headers["kind"] == "empty" }
		c.drainUntil(t, drainTimeout, seenEach(payloadIs(nonUTF8), payloadIs(largeBody), emptyData))
		publish(t, emu, topic, data("after-poison"))
		c.drainUntil(t, drainTimeout, payloadIs("after-poison"))
		c.finish(t)
	})

	t.Run("oversize dead-lettered", func(t *testing.T) {
		topic := emu.CreateTopic(t, "big")
		sub := emu.CreateSubscription(t, "big", pubsubtest.Subscription{Topic: topic})
		dlTopic := emu.CreateTopic(t, "big-dl")
		dlSub := emu.CreateSubscription(t, "big-dl", pubsubtest.Subscription{Topic: dlTopic})
		publish(t, emu, topic, data("before"), data(bigPayload), data("after"))
		c := startConnector(t, pubsubSource, pubsubEnv(t, emu, sub, "LOG_FORMAT=text", "MAX_MESSAGE_BYTES="+smallLimit,
			"PUBSUB_DEAD_LETTER_TOPIC="+dlTopic))
		msgs := c.drainUntil(t, drainTimeout, seenAll("before", "after"))
		assertOversizeNotDelivered(t, msgs)
		eventually(t, 20*time.Second, func(ctx context.Context) error {
			got, err := emu.Drain(ctx, dlSub)
			if err != nil {
				return err
			}
			err = errNotYet
			for _, m := range got {
				reason := m.GetAttributes()["x-dead-letter-reason"]
				if string(m.GetData()) == bigPayload && strings.Contains(reason, reasonTooLarge) {
					return nil
				}
				err = fmt.Errorf("dead-letter topic got a %d-byte message with reason %q", len(m.GetData()), reason)
			}
			return err
		})
		c.waitOutput(t, 5*time.Second, "message dead-lettered", reasonTooLarge)
		c.finish(t)
	})

	// Over the limit with no dead-letter topic and the default fallback (nack): the message stays (the
	// subscription's own dead-letter policy applies), the stream goes on and nothing spins.
	t.Run("oversize nacked", func(t *testing.T) {
		topic := emu.CreateTopic(t, "nack")
		sub := emu.CreateSubscription(t, "nack", pubsubtest.Subscription{Topic: topic})
		publish(t, emu, topic, data("before"), data(bigPayload), data("after"))
		c := startConnector(t, pubsubSource, pubsubEnv(t, emu, sub, "LOG_FORMAT=text", "MAX_MESSAGE_BYTES="+smallLimit))
		assertOversizeNotDelivered(t, c.drainUntil(t, drainTimeout, seenAll("before", "after")))
		c.assertNoNackSpin(t)
		c.finish(t)
	})

	t.Run("oversize dropped", func(t *testing.T) {
		topic := emu.CreateTopic(t, "drop")
		sub := emu.CreateSubscription(t, "drop", pubsubtest.Subscription{Topic: topic})
		publish(t, emu, topic, data("before"), data(bigPayload), data("after"))
		c := startConnector(t, pubsubSource, pubsubEnv(t, emu, sub, "LOG_FORMAT=json", "MAX_MESSAGE_BYTES="+smallLimit,
			"DEAD_LETTER_FALLBACK=drop"))
		msgs := c.drainUntil(t, drainTimeout, seenAll("before", "after"))
		assertOversizeNotDelivered(t, msgs)
		c.waitOutput(t, 5*time.Second, "message dropped", reasonTooLarge)
		c.finish(t)
	})
}
