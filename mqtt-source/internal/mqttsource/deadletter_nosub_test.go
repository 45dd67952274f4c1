package mqttsource

import (
	"context"
	"testing"
	"time"

	"github.com/numaflow-connectors/sources/mqtt-source/mqtttest"
)

// An MQTT topic keeps nothing by itself: a dead letter published to a topic no session subscribes to
// is answered with PUBACK 0x10 (no matching subscribers) and discarded by the broker. That is no dead
// letter: DeadLetter must fail for good (the adapter then applies DEAD_LETTER_FALLBACK and says so)
// and leave the original unacknowledged, instead of acknowledging it as if a copy were kept.
func TestIntegrationDeadLetterWithoutSubscriber(t *testing.T) {
	srv := mqtttest.Shared(t)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	name := mqtttest.Name(t)
	cfg := testConfig(srv, name, name+"-0", name)
	cfg.DeadLetterTopic = "dead/" + name // nobody subscribes to it
	d := openReady(ctx, t, cfg, harnessBudget)
	if err := srv.Connect(t, "").Publish(ctx, name, 1, nil, []byte("poison")); err != nil {
		t.Fatal(err)
	}
	got, _ := receiveUntil(t, d, 1, 10*time.Second)
	if len(got) != 1 {
		t.Fatal("nothing received")
	}
	got[0].Deliveries = 3
	err := d.DeadLetter(ctx, got[0], "max deliveries (3) reached")
	if err == nil {
		t.Fatal("dead letter reported as done, but the broker discarded the copy (no subscriber to the dead-letter topic) " +
			"and the original was acknowledged: the message is gone")
	}
	if code := d.ErrorCode(err); code.Transient() {
		t.Fatalf("dead letter without a subscriber failed as %s (%v): retrying cannot help", code, err)
	}
	time.Sleep(ackSettle)
	_ = d.Close(ctx)
	d = openReady(ctx, t, cfg, harnessBudget)
	again, _ := receiveUntil(t, d, 1, 10*time.Second)
	if len(again) != 1 || string(again[0].Payload) != "poison" {
		t.Fatalf("the original was acknowledged by the failed dead letter: got %q after a restart", payloadsOf(again))
	}
	// What the README asks for: a persistent session subscribed to the topic, even offline, keeps it.
	srv.Session(t, name+"-dead-reader", time.Hour, 1, cfg.DeadLetterTopic)
	if err := d.DeadLetter(ctx, again[0], "max deliveries (3) reached"); err != nil {
		t.Fatalf("dead letter with an offline persistent subscriber: %v", err)
	}
	if dl := srv.Resume(t, name+"-dead-reader").WaitReceived(ctx, 1); len(dl) != 1 || string(dl[0].Payload) != "poison" {
		t.Fatalf("the persistent subscriber got %d dead letters, want the one", len(dl))
	}
}
