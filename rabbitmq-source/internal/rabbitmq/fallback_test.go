package rabbitmq

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/numaflow-connectors/sources/common/numatest"
	"github.com/numaflow-connectors/sources/common/server"
	"github.com/numaflow-connectors/sources/common/source"
	"github.com/numaflow-connectors/sources/rabbitmq-source/rabbitmqtest"
)

// countingDriver counts the deliveries the driver hands to the adapter.
type countingDriver struct {
	*driver
	received atomic.Int64
}

func (c *countingDriver) Receive(ctx context.Context, max int) ([]*source.Message, error) {
	msgs, err := c.driver.Receive(ctx, max)
	c.received.Add(int64(len(msgs)))
	return msgs, err
}

// A message the adapter cannot dead-letter (no target, DEAD_LETTER_FALLBACK=nack, the default) is
// nacked with a growing delay (1 s, 2 s, ...) so it never turns into a hot loop. RabbitMQ has no
// delayed nack: the driver must still not hand it back at once, or the broker pushes it straight back
// and it goes round as fast as the broker can send it (an oversize message: its whole body every time).
func TestIntegrationFallbackNackIsNotAHotLoop(t *testing.T) {
	f := newFixture(t, rabbitmqtest.Classic, nil)
	cfg := testConfig(f.node.URL(), f.queue) // no dead-letter exchange
	big := make([]byte, 4<<10)
	if err := f.publish(t.Context(), amqp.Publishing{Body: big, MessageId: "big"}); err != nil {
		t.Fatal(err)
	}
	d := openBudget(t.Context(), t, cfg, server.Budget{Messages: 20, Bytes: source.DefaultPrefetchBytes})
	cd := &countingDriver{driver: d}
	src, err := source.New(cd, source.Options{ReadBatchSize: 10, MaxMessageBytes: 1 << 10, AckRetry: 5 * time.Second,
		ReleaseWait: 200 * time.Millisecond}, testLogger(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		_ = src.Close(ctx)
	})
	const watch = 3 * time.Second
	deadline := time.Now().Add(watch)
	for time.Now().Before(deadline) {
		if msgs := numatest.ReadFrom(t.Context(), src, 10, 300*time.Millisecond); len(msgs) > 0 {
			t.Fatalf("an oversize message reached numa")
		}
	}
	// Nacked with 1 s, then 1 s ... between deliveries: about 3 in 3 s.
	if n := cd.received.Load(); n > 6 {
		t.Fatalf("the oversize message was delivered %d times in %s: the fallback nack's delay is not honoured", n, watch)
	}
	ready, unacked := queueCounts(t, f.node, f.queue)
	if ready+unacked != 1 {
		t.Fatalf("queue holds %d ready + %d unacked, want the message kept", ready, unacked)
	}
}
