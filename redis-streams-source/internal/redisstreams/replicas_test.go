package redisstreams

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/numaflow-connectors/sources/common/numatest"
	"github.com/numaflow-connectors/sources/common/source"
	"github.com/numaflow-connectors/sources/redis-streams-source/redistest"
)

// Three replicas (adapter + driver each) share one group; one, stalled with entries in flight, is killed
// without releasing anything. The others claim what it held, and every entry is acked at least once:
// nothing is lost.
func TestIntegrationReplicaKilledMidStream(t *testing.T) {
	if testing.Short() {
		t.Skip("replica test skipped in -short mode")
	}
	srv := redistest.Shared(t)
	c := srv.Client(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	stream := redistest.Name(t)
	const total = 3000
	publishN(t, c, stream, total, "e")
	// The group exists before the replicas start (they would create it on their first read), so the
	// pending list can be watched from the start.
	if err := c.XGroupCreate(ctx, stream, "g", "0").Err(); err != nil {
		t.Fatal(err)
	}

	var mu sync.Mutex
	acked := map[string]int{}
	type replica struct {
		src      *source.Source
		consumer string
		stop     context.CancelFunc
		done     chan struct{}
	}
	start := func(i int, ack bool) *replica {
		d := openTest(ctx, t, testConfig(srv.URL(), stream))
		src, err := source.New(d, source.Options{Partition: int32(i), ReadBatchSize: 100, ReleaseWait: 200 * time.Millisecond},
			testLogger(t), prometheus.NewRegistry())
		if err != nil {
			t.Fatal(err)
		}
		rctx, stop := context.WithCancel(ctx)
		r := &replica{src: src, consumer: d.consumer, stop: stop, done: make(chan struct{})}
		go func() { // numa's loop: read a batch, ack it
			defer close(r.done)
			for rctx.Err() == nil {
				offs := numatest.OffsetsOf(numatest.ReadFrom(rctx, src, 100, 300*time.Millisecond))
				if len(offs) == 0 || rctx.Err() != nil || !ack {
					continue // the stalled replica never acks
				}
				src.Ack(rctx, numatest.AckRequest(offs...))
				mu.Lock()
				for _, o := range offs {
					acked[string(o.Value())]++
				}
				mu.Unlock()
			}
		}()
		return r
	}
	rs := []*replica{start(0, true), start(1, true), start(2, false)}
	// Kill replica 2 once it holds entries.
	waitUntil(t, 30*time.Second, "replica 2 holding entries", func() bool {
		for _, p := range pendingOf(t, c, stream) {
			if p.Consumer == rs[2].consumer {
				return true
			}
		}
		return false
	})
	rs[2].stop()
	<-rs[2].done
	rs[2].src.Kill(ctx)
	held := 0
	byC := map[string]int{}
	for _, p := range pendingOf(t, c, stream) {
		byC[p.Consumer]++
		if p.Consumer == rs[2].consumer {
			held++
		}
	}
	if held == 0 {
		t.Fatalf("the killed replica %s held nothing (pending %v): the test proves nothing", rs[2].consumer, byC)
	}
	t.Logf("killed replica %s held %d entries", rs[2].consumer, held)
	waitUntil(t, 60*time.Second, "every entry acked", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(acked) == total
	})
	for _, r := range rs[:2] {
		r.stop()
		<-r.done
		if err := r.src.Close(context.WithoutCancel(ctx)); err != nil {
			t.Errorf("closing: %v", err)
		}
	}
	// Give the acks time to land, then nothing may be left pending in the group.
	waitUntil(t, 20*time.Second, "an empty pending list", func() bool { return len(pendingOf(t, c, stream)) == 0 })
	dups := 0
	for _, n := range acked {
		dups += n - 1
	}
	t.Logf("%d entries acked by the surviving replicas after one was killed; %d acked twice", len(acked), dups)
}

func waitUntil(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", within, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
