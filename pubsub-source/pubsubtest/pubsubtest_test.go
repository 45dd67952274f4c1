package pubsubtest

import (
	"context"
	"testing"
	"time"

	pb "cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
)

// Both kinds of emulator start, take a message and give it back.
func TestEmulators(t *testing.T) {
	for _, kind := range []string{KindJava, KindPstest} {
		t.Run(kind, func(t *testing.T) {
			if kind == KindJava && javaEmulator() == "" {
				t.Skip("Google's Java emulator is not installed here")
			}
			t.Setenv("PUBSUBTEST_EMULATOR", kind)
			e := Start(t)
			if e.Kind != kind {
				t.Fatalf("started %s, want %s", e.Kind, kind)
			}
			topic := e.CreateTopic(t, "t")
			sub := e.CreateSubscription(t, "s", Subscription{Topic: topic, Ordering: true})
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			ids, err := e.Publish(ctx, topic, &pb.PubsubMessage{Data: []byte("hello"), Attributes: map[string]string{"a": "1"}})
			if err != nil || len(ids) != 1 {
				t.Fatalf("publishing: %v %v", ids, err)
			}
			var got []*pb.PubsubMessage
			for len(got) == 0 && ctx.Err() == nil {
				msgs, err := e.Drain(ctx, sub)
				if err != nil {
					t.Fatalf("draining: %v", err)
				}
				got = append(got, msgs...)
			}
			if len(got) != 1 || string(got[0].GetData()) != "hello" || got[0].GetAttributes()["a"] != "1" || got[0].GetMessageId() != ids[0] {
				t.Fatalf("got %v, want the published message %s", got, ids[0])
			}
			e.stop()
			select {
			case <-e.proc.Done():
			case <-time.After(10 * time.Second):
				t.Fatalf("emulator still running after Stop")
			}
		})
	}
}
