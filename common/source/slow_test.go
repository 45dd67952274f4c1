package source_test

// Tests of the adapter driven the way numa drives it when numa is slow or misbehaves: late acks, read
// streams that end mid-batch, big messages.

import (
	"context"
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
