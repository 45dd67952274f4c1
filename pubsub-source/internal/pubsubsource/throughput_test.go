package pubsubsource

import (
	"context"
	"flag"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"cloud.google.com/go/pubsub/v2"
	pb "cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"

	"github.com/numaflow-connectors/sources/common/source"
	"github.com/numaflow-connectors/sources/pubsub-source/pubsubtest"
)

var throughput = flag.Int("pubsub-throughput", 0, "measure receive+ack throughput of N 1 KiB messages on the emulator: the driver's unary Pull against the library's StreamingPull Receive")

// TestThroughput backs the README's choice of unary Pull over StreamingPull with a measurement. It
// runs only with -pubsub-throughput=N (e.g. 20000).
func TestThroughput(t *testing.T) {
	n := *throughput
	if n == 0 {
		t.Skip("run with -pubsub-throughput=20000")
	}
	emu := pubsubtest.Shared(t)
	payload := make([]byte, 1024)
	fill := func(topic string) {
		msgs := make([]*pb.PubsubMessage, n)
		for i := range msgs {
			msgs[i] = &pb.PubsubMessage{Data: payload}
		}
		publish(t, emu, topic, msgs...)
	}

	// Unary Pull through the driver: up to 4 loops of Pull(500) + Acknowledge, as the adapter runs it.
	topic := emu.CreateTopic(t, "tp")
	sub := emu.CreateSubscription(t, "tp", pubsubtest.Subscription{Topic: topic})
	fill(topic)
	d := openOn(t, sub, nil)
	var got atomic.Int64
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for got.Load() < int64(n) && ctx.Err() == nil {
				rctx, rcancel := context.WithTimeout(ctx, 3*time.Second)
				msgs, _ := d.Receive(rctx, 500)
				rcancel()
				hs := make([]source.Handle, len(msgs))
				for i, m := range msgs {
					hs[i] = m.Handle
				}
				if len(hs) > 0 {
					if err := d.Ack(ctx, hs); err != nil {
						t.Errorf("ack: %v", err)
						return
					}
				}
				got.Add(int64(len(msgs)))
			}
		}()
	}
	wg.Wait()
	cancel()
	unary := float64(got.Load()) / time.Since(start).Seconds()
	t.Logf("%s unary Pull(500)+Acknowledge, 4 loops: %d messages, %.0f msg/s", emu.Kind, got.Load(), unary)

	// The library's Subscriber.Receive (StreamingPull, its own leasing and flow control).
	topic2 := emu.CreateTopic(t, "ts")
	sub2 := emu.CreateSubscription(t, "ts", pubsubtest.Subscription{Topic: topic2})
	fill(topic2)
	c, err := pubsub.NewClient(context.Background(), pubsubtest.Project)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var got2 atomic.Int64
	ctx2, cancel2 := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel2()
	start = time.Now()
	s := c.Subscriber(sub2)
	s.ReceiveSettings.MaxOutstandingMessages = 1000
	_ = s.Receive(ctx2, func(_ context.Context, m *pubsub.Message) {
		m.Ack()
		if got2.Add(1) >= int64(n) {
			cancel2()
		}
	})
	streaming := float64(got2.Load()) / time.Since(start).Seconds()
	t.Logf("%s StreamingPull Subscriber.Receive (1 stream, 1000 outstanding): %d messages, %.0f msg/s", emu.Kind, got2.Load(), streaming)
}
