package source_test

// Tests of the adapter driven the way numa drives it when numa is slow or misbehaves: late acks, read
// streams that end mid-batch, big messages.

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/numaproj/numaflow-go/pkg/sourcer"

	"github.com/numaflow-connectors/sources/common/numatest"
	"github.com/numaflow-connectors/sources/common/source"
	"github.com/numaflow-connectors/sources/common/source/memsource"
)

// numa's read stream ends while a Read is still running on it (numa restarted mid-batch). What the
// Read hands out after the end was noticed must not stay in flight on the dead stream: no numa will
// ever answer for it, and the lease keeper would keep it from the new stream (and, with ordered keys,
// its whole key at the broker) until MaxExtension, again after every redelivery to this replica.
// numaflow-go's server and the adapter's Read both pick at random between sending and a done context,
// so the race is tried many times.
func TestMessagesReadOnAnEndedStreamAreReadAgain(t *testing.T) {
	b, _ := newQueue(t, 0, 8, "")
	d := memsource.NewDriver(b, memsource.Options{Queue: "q", Wait: 100 * time.Millisecond})
	s, _ := newSource(t, d, source.Options{})
	for i := range 40 {
		publishN(t, b, 1, 8, "")
		waitFor(t, 5*time.Second, "buffered", func() bool { return source.SnapshotOf(s).Buffered == 1 })
		stream, end := context.WithCancel(context.Background())
		ch := make(chan sourcer.Message)
		done := make(chan struct{})
		go func() { // numaflow-go's sender: it keeps taking messages as the stream ends
			defer close(done)
			first := true
			for range ch {
				if first {
					first = false
					end() // numa goes away after the first message of the batch
				}
			}
		}()
		s.Read(stream, numatest.ReadRequest(2, 300*time.Millisecond), ch)
		close(ch)
		<-done
		end()
		// The new numa reads: the message must come back to it.
		stream2, end2 := context.WithCancel(context.Background())
		got := numatest.ReadFrom(stream2, s, 10, time.Second)
		for len(got) == 0 && source.SnapshotOf(s).InFlight == 0 && source.SnapshotOf(s).Buffered > 0 {
			got = numatest.ReadFrom(stream2, s, 10, time.Second)
		}
		if len(got) != 1 {
			end2()
			t.Fatalf("round %d: the new stream read %d messages; in flight on the ended stream: %v",
				i, len(got), source.SnapshotOf(s).InFlightIDs)
		}
		s.Ack(context.Background(), numatest.AckRequest(got[0].Offset()))
		end2()
		waitFor(t, 5*time.Second, "acked", func() bool { return b.Len("q") == 0 })
	}
}

// visibilityFake is a broker with SQS's and Pub/Sub's lease semantics: a nack with a delay and a lease
// extension are the same call (ChangeMessageVisibility, ModifyAckDeadline) on the same handle, and the
// one that reaches the broker last sets when the message is visible again. Extensions are slow.
type visibilityFake struct {
	*fake
	mu        sync.Mutex
	visibleAt time.Time
	extending atomic.Int32
}

func (v *visibilityFake) Extend(ctx context.Context, h []source.Handle, lease time.Duration) error {
	v.extending.Add(1)
	defer v.extending.Add(-1)
	select { // a slow call: it lands at the broker when it returns
	case <-time.After(300 * time.Millisecond):
	case <-ctx.Done():
		return ctx.Err()
	}
	v.mu.Lock()
	v.visibleAt = time.Now().Add(lease)
	v.mu.Unlock()
	return v.fake.Extend(ctx, h, lease)
}

func (v *visibilityFake) Nack(ctx context.Context, h []source.Handle, delay time.Duration) error {
	v.mu.Lock()
	v.visibleAt = time.Now().Add(delay)
	v.mu.Unlock()
	return v.fake.Nack(ctx, h, delay)
}

// numa nacks a message with a delay while the lease keeper's extension of it is on its way to the
// broker (SQS and Pub/Sub run several such calls at once). The extension must not land after the nack:
// it would set the message's visibility back to one lease, so the nack's delay is not honoured (here
// 10 s becomes 1 s: numa's retry hammers again long before the delay it asked for).
func TestNackDelayIsNotUndoneByAnExtensionUnderWay(t *testing.T) {
	const lease = time.Second
	v := &visibilityFake{fake: newFake(source.Capabilities{Lease: lease, AckConcurrency: 4})}
	s, _ := newSource(t, v, source.Options{ExtendEvery: 50 * time.Millisecond})
	v.in <- []*source.Message{msg("a", "ha")}
	got := read(s, 10, 2*time.Second)
	if len(got) != 1 {
		t.Fatalf("read %d messages", len(got))
	}
	waitFor(t, 5*time.Second, "an extension under way", func() bool { return v.extending.Load() > 0 })
	delay := uint64(10_000)
	nack(s, &sourcer.NackOptions{Delay: &delay}, got...)
	waitFor(t, 5*time.Second, "the nack", func() bool { return len(v.callsOf("nack")) == 1 })
	waitFor(t, 5*time.Second, "no extension under way", func() bool { return v.extending.Load() == 0 })
	v.mu.Lock()
	left := time.Until(v.visibleAt)
	v.mu.Unlock()
	if left < 8*time.Second {
		t.Errorf("the message is visible again in %s, want about 10 s (the nack's delay): an extension landed after the nack",
			left.Round(100*time.Millisecond))
	}
}

// A pipeline slower than the buffer: numa reads 10 messages a second, the adapter buffers 20, and a
// buffered message reaches MaxExtension before numa gets to it. Its lease runs out, it is released
// and received again, buffered at the back, and runs out again: every turn is one more delivery at the
// broker, where a redrive policy (SQS maxReceiveCount, a Pub/Sub dead-letter policy) counts it and
// moves the message to the dead-letter queue although numa never read it. The adapter must not buffer
// more than numa reads within the leases it may hold (here a message was delivered 17 times before
// numa read it once).
func TestSlowPipelineDoesNotChurnBufferedMessages(t *testing.T) {
	b, ids := newQueue(t, 60, 8, "")
	d := memsource.NewDriver(b, memsource.Options{Queue: "q", Lease: 200 * time.Millisecond,
		MaxExtension: 400 * time.Millisecond, Wait: 100 * time.Millisecond})
	s, _ := newSource(t, d, source.Options{Prefetch: 20})
	worst, worstID := 0, ""
	seen := map[string]bool{}
	deadline := time.Now().Add(30 * time.Second)
	for len(seen) < len(ids) && time.Now().Before(deadline) {
		got := read(s, 1, time.Second)
		for _, m := range got {
			id := string(m.Offset().Value())
			if n := b.Deliveries("q", id); !seen[id] && n > worst {
				worst, worstID = n, id
			}
			seen[id] = true
		}
		time.Sleep(100 * time.Millisecond) // the pipeline's pace
		ack(s, got...)
	}
	if len(seen) < len(ids) {
		t.Fatalf("read %d of %d messages", len(seen), len(ids))
	}
	if worst > 4 {
		t.Errorf("%s was delivered %d times by the broker before numa read it once", worstID, worst)
	}
}
