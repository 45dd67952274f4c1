package rabbitmq

import (
	"context"
	"testing"
	"time"

	"github.com/numaproj/numaflow-go/pkg/sourcer"

	"github.com/numaflow-connectors/sources/common/numatest"
	"github.com/numaflow-connectors/sources/rabbitmq-source/rabbitmqtest"
)

// MaxDeliveries counts deliveries to numa. On a quorum queue a lost connection raises the broker's
// x-delivery-count of every delivery the channel held, also of those the driver had queued and never
// handed to the adapter: numa never saw them, so their redelivery must not count as a second one.
func TestIntegrationConnectionLossDoesNotCountQueuedDeliveries(t *testing.T) {
	f := newFixture(t, rabbitmqtest.Quorum, nil)
	const batch, total = 5, 20 // the adapter holds 10, the window is 20: 10 wait in the driver's queue
	if err := f.publish(t.Context(), pubs(total, "m", true)...); err != nil {
		t.Fatal(err)
	}
	cfg := f.config()
	cfg.ConsumerTag = "count-" + f.queue
	d, src := openSource(t, cfg, batch, 0)
	waitFor(t, "every message at this replica", func() bool {
		d.mu.Lock()
		defer d.mu.Unlock()
		return d.sess != nil && len(d.sess.live) == total
	})
	if _, err := f.node.CloseConnections(t.Context(), cfg.ConsumerTag, "test: connection loss"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the reconnection", func() bool {
		d.mu.Lock()
		defer d.mu.Unlock()
		return d.sess != nil && d.sess.gen >= 2
	})
	// numa sees each message for the first time and nacks it with MaxDeliveries 2 (and a delay, so
	// the delayed pool takes it and the next ones can be read): none is over.
	maxDel, delay := uint32(2), uint64(60_000)
	seen := map[string]bool{}
	deadline := time.Now().Add(30 * time.Second)
	for len(seen) < total && time.Now().Before(deadline) {
		got := numatest.ReadFrom(t.Context(), src, batch, 300*time.Millisecond)
		items := make([]sourcer.NackOffset, len(got))
		for i, m := range got {
			seen[string(m.Value())] = true
			items[i] = sourcer.NackOffset{Offset: m.Offset(), NackOptions: &sourcer.NackOptions{MaxDeliveries: &maxDel, Delay: &delay}}
		}
		if len(items) > 0 {
			src.Nack(context.Background(), numatest.NackRequest(items...))
		}
	}
	if len(seen) != total {
		t.Fatalf("read %d of %d", len(seen), total)
	}
	time.Sleep(time.Second) // dead letters are published in the background
	dead, err := f.deadLetters()
	if err != nil {
		t.Fatal(err)
	}
	if len(dead) > 0 {
		var counts []any
		for _, m := range dead {
			counts = append(counts, string(m.Body), m.Headers[HeaderDeadLetterDeliveries])
		}
		t.Fatalf("%d of %d messages dead-lettered after one delivery to numa (MaxDeliveries 2): %v", len(dead), total, counts)
	}
}
