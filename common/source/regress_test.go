package source_test

// Regression tests, one per known defect of the adapter. Each names the behaviour a user would
// notice. They use only the exported API, memsource (with its fault injection) and the snapshot hook.

import (
	"context"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/numaproj/numaflow-go/pkg/sourcer"

	"github.com/numaflow-connectors/sources/common/numatest"
	"github.com/numaflow-connectors/sources/common/source"
	"github.com/numaflow-connectors/sources/common/source/memsource"
)

// ---- helpers ----

func newQueue(t *testing.T, n, size int, key string) (*memsource.Broker, []string) {
	t.Helper()
	b := memsource.NewBroker()
	b.CreateQueue("q")
	return b, publishN(t, b, n, size, key)
}

func publishN(t *testing.T, b *memsource.Broker, n, size int, key string) []string {
	t.Helper()
	if n == 0 {
		return nil
	}
	pubs := make([]memsource.Publication, n)
	for i := range pubs {
		pubs[i] = memsource.Publication{Payload: make([]byte, size), Key: key}
	}
	ids, err := b.PublishIDs("q", pubs...)
	if err != nil {
		t.Fatal(err)
	}
	return ids
}

// readAck is numa's loop once: read a batch, ack it all. It returns the IDs read.
func readAck(s *source.Source, n int, timeout time.Duration) []string {
	got := read(s, n, timeout)
	ack(s, got...)
	return ids(got)
}

// readUntil reads and acks until want IDs were read or the time is up; it returns what was read.
func readUntil(s *source.Source, want int, within time.Duration, batch int) []string {
	var got []string
	deadline := time.Now().Add(within)
	for len(got) < want && time.Now().Before(deadline) {
		got = append(got, readAck(s, batch, min(time.Second, time.Until(deadline)+time.Millisecond))...)
	}
	return got
}

func nackWith(s *source.Source, delayMs uint64, maxDeliveries uint32, msgs ...sourcer.Message) {
	o := &sourcer.NackOptions{Delay: &delayMs}
	if maxDeliveries > 0 {
		o.MaxDeliveries = &maxDeliveries
	}
	nack(s, o, msgs...)
}

// ---- Defect 0: goes deaf ----

// After a busy spell and a quiet period, a source with many receivers must still notice new messages.
// Symptom: the pipeline drains a backlog, goes quiet, and then new messages sit in the queue unread
// (every receiver parked or waiting for room that was freed long ago). The cycle runs three times: the
// bad interleaving is likely, not certain, in any one.
func TestRegressNewMessagesAfterAQuietPeriodAreRead(t *testing.T) {
	b := memsource.NewBroker()
	b.CreateQueue("q")
	d := memsource.NewDriver(b, memsource.Options{Queue: "q", MaxReceive: 10, ReceiveConcurrency: 50,
		Wait: 300 * time.Millisecond, Lease: 30 * time.Second})
	s, _ := newSource(t, d, source.Options{ReadBatchSize: 500})
	for round := 1; round <= 3; round++ {
		publishN(t, b, 3000, 16, "")
		if got := readUntil(s, 3000, 15*time.Second, 500); len(got) != 3000 {
			t.Fatalf("round %d: drained %d of 3000", round, len(got))
		}
		// Quiet: long enough for every receiver to get several empty answers and shrink (the
		// in-process analogue of a quiet minute).
		time.Sleep(1500 * time.Millisecond)
		publishN(t, b, 10, 16, "")
		start := time.Now()
		if got := readUntil(s, 10, 2*time.Second, 500); len(got) != 10 {
			t.Fatalf("round %d: after a quiet period, %d of 10 new messages read in %s (broker backlog %d, snapshot %+v): the source went deaf",
				round, len(got), time.Since(start).Round(time.Millisecond), b.Len("q"), source.SnapshotOf(s))
		}
	}
}

// A receive whose response is lost mid-drain leaves its messages leased at the broker; they come back
// after the lease, when the source has drained everything else and gone quiet, and must then be read.
// Symptom: a handful of messages reappear at the broker after a network hiccup and are never consumed.
// Two rounds, as above.
func TestRegressMessagesOfALostReceiveAreReadAfterTheirLease(t *testing.T) {
	const lease = 1500 * time.Millisecond
	b := memsource.NewBroker()
	b.CreateQueue("q")
	d := memsource.NewDriver(b, memsource.Options{Queue: "q", MaxReceive: 10, ReceiveConcurrency: 50,
		Wait: 300 * time.Millisecond, Lease: lease})
	s, _ := newSource(t, d, source.Options{ReadBatchSize: 500})
	for round := 1; round <= 2; round++ {
		publishN(t, b, 3000, 16, "")
		seen := make(map[string]bool)
		for _, id := range readUntil(s, 1000, 10*time.Second, 500) {
			seen[id] = true
		}
		b.SetFault(memsource.OpReceive, memsource.Fault{LoseResponse: true, Times: 3})
		lostAt := time.Now()
		deadline := lostAt.Add(lease + 2500*time.Millisecond)
		for (len(seen) < 3000 || b.Len("q") > 0) && time.Now().Before(deadline) {
			for _, id := range readAck(s, 500, time.Second) {
				seen[id] = true
			}
		}
		if len(seen) != 3000 || b.Len("q") != 0 {
			t.Fatalf("round %d: %s after 3 lost receive responses (lease %s): read %d of 3000 distinct messages, broker still holds %d (readable %d, snapshot %+v)",
				round, time.Since(lostAt).Round(time.Millisecond), lease, len(seen), b.Len("q"), b.Readable("q", false), source.SnapshotOf(s))
		}
	}
}

// ---- Defect 1: locally delayed messages block receiving ----

// With LocalRedelivery and a small prefetch, messages nacked with a long delay must not stop new
// messages from being read. Symptom: two nacks with a 60 s delay and the pipeline stops for a minute.
func TestRegressLongNackDelaysDoNotBlockNewMessages(t *testing.T) {
	b, _ := newQueue(t, 2, 8, "")
	d := memsource.NewDriver(b, memsource.Options{Queue: "q", LocalRedelivery: true, Wait: 200 * time.Millisecond})
	s, _ := newSource(t, d, source.Options{Prefetch: 2})
	var first []sourcer.Message
	waitFor(t, 5*time.Second, "the first two", func() bool {
		first = append(first, read(s, 2, 200*time.Millisecond)...)
		return len(first) == 2
	})
	nackWith(s, 60_000, 0, first...)
	fresh := publishN(t, b, 1, 8, "")
	if got := readUntil(s, 1, 3*time.Second, 10); len(got) != 1 || got[0] != fresh[0] {
		t.Fatalf("read %v within 3 s of publishing %v while two messages wait out a 60 s nack delay (snapshot %+v)",
			got, fresh, source.SnapshotOf(s))
	}
}

// ---- Defect 2: key order after a failed dead-letter ----

// With OrderedKeys, a message that reached MaxDeliveries and could not be dead-lettered goes back to
// the broker (fallback nack); a later message of its key that the source holds must go back with it,
// not be handed to numa first. Symptom: messages of one FIFO group processed out of order.
func TestRegressKeyOrderSurvivesAFailedDeadLetter(t *testing.T) {
	for _, tc := range []struct {
		name       string
		deadLetter bool
		fault      memsource.Fault
	}{
		{name: "no dead-letter target"},
		{name: "dead-letter call fails", deadLetter: true, fault: memsource.Fault{Err: memsource.ErrDenied}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, idsK := newQueue(t, 2, 8, "K")
			b.SetFault(memsource.OpDeadLetter, tc.fault)
			d := memsource.NewDriver(b, memsource.Options{Queue: "q", OrderedKeys: true, DeadLetter: tc.deadLetter,
				Wait: 200 * time.Millisecond, Lease: 10 * time.Second})
			s, _ := newSource(t, d, source.Options{AckRetry: 300 * time.Millisecond})
			waitFor(t, 5*time.Second, "both buffered", func() bool { return source.SnapshotOf(s).Buffered == 2 })
			m1 := read(s, 1, time.Second)
			if len(m1) != 1 || ids(m1)[0] != idsK[0] {
				t.Fatalf("first read %v, want [%s]", ids(m1), idsK[0])
			}
			nackWith(s, 0, 1, m1...) // delivered once, MaxDeliveries 1: dead-letter, which fails
			var next []string
			deadline := time.Now().Add(6 * time.Second)
			for len(next) == 0 && time.Now().Before(deadline) {
				next = readAck(s, 10, 200*time.Millisecond)
			}
			if len(next) == 0 || next[0] != idsK[0] {
				t.Fatalf("after %s (key K) failed to dead-letter, numa read %v first: %s must come back before %s",
					idsK[0], next, idsK[0], idsK[1])
			}
		})
	}
}

// A message the adapter hands back to the broker before numa read it (here: the later message of a
// key whose first message was nacked) is delivered once more by the broker, whose count goes up; that
// delivery numa never saw must not count towards MaxDeliveries. Symptom: messages dead-lettered after
// fewer deliveries than the pipeline allows (SQS's ApproximateReceiveCount counts them).
func TestRegressUnreadReleasesDoNotCountAsDeliveries(t *testing.T) {
	b, idsK := newQueue(t, 2, 8, "K")
	d := memsource.NewDriver(b, memsource.Options{Queue: "q", OrderedKeys: true, DeadLetter: true,
		Wait: 50 * time.Millisecond, Lease: 10 * time.Second})
	s, _ := newSource(t, d, source.Options{})
	waitFor(t, 5*time.Second, "both buffered", func() bool { return source.SnapshotOf(s).Buffered == 2 })
	first := read(s, 1, time.Second)
	if len(first) != 1 || ids(first)[0] != idsK[0] {
		t.Fatalf("first read %v, want [%s]", ids(first), idsK[0])
	}
	nackWith(s, 0, 0, first...) // its key-mate goes back to the broker with it, unread
	var second []sourcer.Message
	deadline := time.Now().Add(5 * time.Second)
	for second == nil && time.Now().Before(deadline) {
		for _, m := range read(s, 10, 200*time.Millisecond) {
			if string(m.Offset().Value()) == idsK[1] {
				second = append(second, m)
			} else {
				ack(s, m)
			}
		}
	}
	if second == nil {
		t.Fatalf("%s never came back", idsK[1])
	}
	if n := b.Deliveries("q", idsK[1]); n != 2 {
		t.Fatalf("broker delivered %s %d times, want 2 (once unread)", idsK[1], n)
	}
	nackWith(s, 0, 2, second...) // numa saw it once: MaxDeliveries 2 is not reached
	again := readUntil(s, 1, 5*time.Second, 10)
	if dl := b.DeadLetters("q"); len(dl) > 0 {
		t.Fatalf("%s dead-lettered after one delivery numa saw (reason %q)", idsK[1], dl[0].Reason)
	}
	if !slices.Contains(again, idsK[1]) {
		t.Fatalf("read %v after the nack, want %s again", again, idsK[1])
	}
}

// ---- Defect 3: the byte budget ----

// PrefetchBytes bounds the payload bytes held for numa (buffered + in flight); only a single message
// larger than the budget may exceed it, alone. Symptom: a source with large messages runs out of
// memory (OOMKilled) although PREFETCH_BYTES was set.
func TestRegressPrefetchBytesBoundsHeldPayload(t *testing.T) {
	const budget = 1 << 20
	b, _ := newQueue(t, 20, 256<<10, "")
	publishN(t, b, 1, 3*budget/2, "") // one oversize message: delivered alone
	publishN(t, b, 4, 256<<10, "")
	d := memsource.NewDriver(b, memsource.Options{Queue: "q", MaxReceive: 10, Wait: 200 * time.Millisecond})
	s, _ := newSource(t, d, source.Options{Prefetch: 100, PrefetchBytes: budget, MaxMessageBytes: 4 << 20})
	var worst source.Snapshot
	check := func() {
		snap := source.SnapshotOf(s)
		if snap.Buffered+snap.InFlight > 1 && snap.HeldBytes > worst.HeldBytes {
			worst = snap
		}
	}
	read := 0
	deadline := time.Now().Add(8 * time.Second)
	for read < 25 && time.Now().Before(deadline) {
		for range 5 {
			check()
			time.Sleep(4 * time.Millisecond) // numa is slow: the source has time to over-fill
		}
		read += len(readAck(s, 1, 500*time.Millisecond))
	}
	if read < 25 {
		t.Errorf("read %d of 25 messages", read)
	}
	if worst.HeldBytes > budget {
		t.Fatalf("held %d payload bytes in %d messages (buffered %d, in flight %d) with PrefetchBytes %d",
			worst.HeldBytes, worst.Buffered+worst.InFlight, worst.Buffered, worst.InFlight, budget)
	}
}

// ---- Defect 4: refill runs one receive at a time ----

// countingDriver counts Receive calls running at once.
type countingDriver struct {
	*memsource.Driver
	now, peak atomic.Int32
}

func (c *countingDriver) Receive(ctx context.Context, max int) ([]*source.Message, error) {
	n := c.now.Add(1)
	defer c.now.Add(-1)
	for p := c.peak.Load(); n > p && !c.peak.CompareAndSwap(p, n); p = c.peak.Load() {
	}
	return c.Driver.Receive(ctx, max)
}

// After prefetch fills and numa acks a batch, the refill must use several receives at once, as the
// first fill did. Symptom: throughput drops to one broker round trip at a time once the source has
// been full (e.g. SQS at 10 messages per 20-50 ms instead of hundreds).
func TestRegressRefillAfterABatchRunsConcurrentReceives(t *testing.T) {
	b, _ := newQueue(t, 2000, 16, "")
	b.SetFault(memsource.OpReceive, memsource.Fault{Latency: 40 * time.Millisecond}) // a broker round trip
	d := &countingDriver{Driver: memsource.NewDriver(b, memsource.Options{Queue: "q", MaxReceive: 10,
		ReceiveConcurrency: 8, Wait: 200 * time.Millisecond})}
	s, _ := newSource(t, d, source.Options{ReadBatchSize: 100, Prefetch: 200})
	filled := func(what string) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for source.SnapshotOf(s).Buffered < 200 {
			if time.Now().After(deadline) {
				t.Fatalf("%s: prefetch not filled within 5 s (snapshot %+v, broker backlog %d)", what, source.SnapshotOf(s), b.Len("q"))
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	filled("first fill")
	firstFill := d.peak.Load()
	time.Sleep(300 * time.Millisecond) // the receivers are now waiting for room
	d.peak.Store(d.now.Load())
	got := readAck(s, 100, time.Second)
	filled("refill")
	if refill := d.peak.Load(); refill < 2 {
		t.Fatalf("refill of %d messages ran at most %d Receive at once (the first fill ran %d)", len(got), refill, firstFill)
	}
}

// ---- Defect 5: leases lapse while receives fail ----

// Receive errors (throttling, an unreachable endpoint for receives only) must not stop the lease
// keeper: Extend still works, so held messages keep their leases. Symptom: during receive throttling,
// messages numa is processing become visible again and are processed twice by another replica.
func TestRegressLeasesAreExtendedWhileReceivesFail(t *testing.T) {
	const lease = 600 * time.Millisecond
	for _, fault := range []error{memsource.ErrThrottled, memsource.ErrUnavailable} {
		t.Run(fault.Error(), func(t *testing.T) {
			b, _ := newQueue(t, 1, 8, "")
			d := memsource.NewDriver(b, memsource.Options{Queue: "q", Lease: lease, Wait: 200 * time.Millisecond})
			s, _ := newSource(t, d, source.Options{})
			var held []sourcer.Message
			waitFor(t, 5*time.Second, "the message", func() bool {
				held = append(held, read(s, 1, 200*time.Millisecond)...)
				return len(held) == 1
			})
			b.SetFault(memsource.OpReceive, memsource.Fault{Err: fault})
			extends := b.Calls("extend")
			start := time.Now()
			for time.Since(start) < 4*lease {
				if n, _ := b.Leased("q"); n != 1 {
					t.Fatalf("the lease (%s) of a message numa holds lapsed %s into receive errors (%v); extend calls since: %d",
						lease, time.Since(start).Round(time.Millisecond), fault, b.Calls("extend")-extends)
				}
				time.Sleep(10 * time.Millisecond)
			}
			ack(s, held...)
		})
	}
}

// ---- Defect 6: a release racing the source's own receive ----

// racingDriver's Nack makes the messages readable at the broker and then waits until this source's own
// Receive has returned each of them again (plus 100 ms for the adapter to take them in) before it returns: the window in which a released message
// comes back to the source that is still releasing it.
type racingDriver struct {
	*memsource.Driver
	mu      sync.Mutex
	waiting map[string]chan struct{}
}

func (r *racingDriver) Receive(ctx context.Context, max int) ([]*source.Message, error) {
	msgs, err := r.Driver.Receive(ctx, max)
	r.mu.Lock()
	for _, m := range msgs {
		if ch := r.waiting[m.ID]; ch != nil {
			close(ch)
			delete(r.waiting, m.ID)
		}
	}
	r.mu.Unlock()
	return msgs, err
}

func (r *racingDriver) Nack(ctx context.Context, handles []source.Handle, delay time.Duration) error {
	var chs []chan struct{}
	r.mu.Lock()
	for _, h := range handles {
		id := memsource.HandleID(h)
		ch := make(chan struct{})
		r.waiting[id] = ch
		chs = append(chs, ch)
	}
	r.mu.Unlock()
	err := r.Driver.Nack(ctx, handles, delay)
	for _, ch := range chs {
		select {
		case <-ch:
		case <-time.After(2 * time.Second):
		}
	}
	// The receive has returned; give the adapter a moment to take in its messages before this release
	// completes (the adapter does no driver call in between that could be hooked instead).
	time.Sleep(100 * time.Millisecond)
	return err
}

// A released message (nack with delay 0, an ordered-key release) that the source's own receive gets
// back while the release is under way must be readable promptly, not hidden until its new lease ends.
// Symptom: nacked messages (or the rest of a FIFO group) come back only after the visibility timeout.
func TestRegressReleasedMessageReceivedBackIsNotHidden(t *testing.T) {
	const lease = 10 * time.Second
	for _, tc := range []struct {
		name    string
		ordered bool
	}{
		{name: "nack delay 0"},
		{name: "ordered-key release", ordered: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, pub := newQueue(t, 2, 8, "K")
			d := &racingDriver{Driver: memsource.NewDriver(b, memsource.Options{Queue: "q", Lease: lease,
				OrderedKeys: tc.ordered, Wait: 200 * time.Millisecond}), waiting: make(map[string]chan struct{})}
			s, _ := newSource(t, d, source.Options{})
			waitFor(t, 5*time.Second, "both buffered", func() bool { return source.SnapshotOf(s).Buffered == 2 })
			m1 := read(s, 1, time.Second)
			nackWith(s, 0, 0, m1...)
			got := readUntil(s, 2, 3*time.Second, 10)
			slices.Sort(got)
			if !slices.Equal(got, pub) {
				t.Fatalf("within 3 s of the nack numa read %v, want %v (broker: %d leased; lease %s): a released message came back to the source and was hidden",
					got, pub, must(b.Leased("q")), lease)
			}
		})
	}
}

func must(n int, _ int64) int { return n }

// ---- Defect 7: read-ahead with streaming acks ----

// numa may read again before answering (read-ahead) and ack one offset at a time in any order: no
// message may be handed out twice while in flight, and each is committed once.
func TestRegressReadAheadWithOutOfOrderAcks(t *testing.T) {
	b, pub := newQueue(t, 40, 8, "")
	d := memsource.NewDriver(b, memsource.Options{Queue: "q", MaxReceive: 7, Wait: 200 * time.Millisecond, Lease: 2 * time.Second})
	s, _ := newSource(t, d, source.Options{Prefetch: 12, ReadBatchSize: 5})
	rng := rand.New(rand.NewPCG(7, 7))
	inFlight := make(map[string]sourcer.Message)
	readCount := make(map[string]int)
	deadline := time.Now().Add(8 * time.Second)
	for b.Len("q") > 0 && time.Now().Before(deadline) {
		for range 2 { // read twice before answering
			for _, m := range read(s, 5, 100*time.Millisecond) {
				id := string(m.Offset().Value())
				if _, dup := inFlight[id]; dup {
					t.Fatalf("%s handed out again while in flight", id)
				}
				inFlight[id] = m
				readCount[id]++
			}
		}
		if snap := source.SnapshotOf(s); snap.InFlight != len(inFlight) {
			t.Fatalf("source has %d in flight, numa holds %d", snap.InFlight, len(inFlight))
		}
		keys := make([]string, 0, len(inFlight))
		for id := range inFlight {
			keys = append(keys, id)
		}
		slices.Sort(keys)
		rng.Shuffle(len(keys), func(i, j int) { keys[i], keys[j] = keys[j], keys[i] })
		for _, id := range keys[:(len(keys)*2+2)/3] { // about two thirds; the rest stay in flight

			ack(s, inFlight[id])
			delete(inFlight, id)
		}
	}
	for _, m := range inFlight {
		ack(s, m)
	}
	waitFor(t, 5*time.Second, "every message committed", func() bool { return b.Len("q") == 0 })
	for _, id := range pub {
		if readCount[id] != 1 {
			t.Errorf("%s read %d times", id, readCount[id])
		}
	}
}

// ---- found by the model test: a restart requeues the new stream's messages ----

// When numa's read stream restarts, only what the old stream held may be handed out again. The old
// stream's end (noticed after the new stream already read) must not requeue messages handed to the new
// stream. Symptom: after a numa restart, messages are handed out twice while in flight; numa (v1.8+)
// drops the second copy and never answers it, so it waits for a lease or is processed twice.
func TestRegressRestartDoesNotRequeueTheNewStreamsMessages(t *testing.T) {
	b, _ := newQueue(t, 4, 8, "")
	d := memsource.NewDriver(b, memsource.Options{Queue: "q", Wait: 200 * time.Millisecond})
	s, _ := newSource(t, d, source.Options{})
	waitFor(t, 5*time.Second, "all buffered", func() bool { return source.SnapshotOf(s).Buffered == 4 })
	stream1, end1 := context.WithCancel(context.Background())
	old := numatest.ReadFrom(stream1, s, 2, time.Second) // held by the numa that goes away
	stream2, end2 := context.WithCancel(context.Background())
	defer end2()
	fresh := numatest.ReadFrom(stream2, s, 2, time.Second) // the new numa's first batch
	end1()
	held := make(map[string]bool)
	for _, id := range ids(fresh) {
		held[id] = true
	}
	var again []string
	deadline := time.Now().Add(time.Second)
	for time.Now().Before(deadline) {
		for _, m := range numatest.ReadFrom(stream2, s, 10, 100*time.Millisecond) {
			id := string(m.Offset().Value())
			if held[id] {
				t.Fatalf("%s handed to the new stream again while it holds it (old stream had %v, new stream %v)",
					id, ids(old), ids(fresh))
			}
			again = append(again, id)
			s.Ack(context.Background(), numatest.AckRequest(m.Offset()))
		}
	}
	slices.Sort(again)
	if want := ids(old); !slices.Equal(again, want) {
		t.Errorf("after the restart read %v again, want the old stream's %v", again, want)
	}
}

// Messages over MaxMessageBytes keep their payload until their dead letter is done. While the
// dead-letter target is slow or failing (each retried for AckRetry), those bodies stay in the byte
// budget, so receiving pauses instead of holding one oversize message after another: 200 of 1 MiB were
// held at once with a 2 MiB budget before (an OOM in a pod during a poison wave with a throttled DLQ).
func TestRegressDeadLetterBodiesStayInTheByteBudget(t *testing.T) {
	b := memsource.NewBroker()
	b.CreateQueue("q")
	publishN(t, b, 200, 1<<20, "") // 200 x 1 MiB
	b.SetFault(memsource.OpDeadLetter, memsource.Fault{Err: memsource.ErrThrottled})
	defer b.ClearFaults()
	d := memsource.NewDriver(b, memsource.Options{Queue: "q", DeadLetter: true, Wait: 50 * time.Millisecond})
	s, _ := newSource(t, d, source.Options{PrefetchBytes: 2 << 20, MaxMessageBytes: 64 << 10, Prefetch: 100})
	worst := 0
	for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		worst = max(worst, source.SnapshotOf(s).Committing)
	}
	if worst > 2 {
		t.Errorf("%d oversize messages of 1 MiB held at once for their dead letters, with PREFETCH_BYTES 2 MiB", worst)
	}
}

// A message the adapter redelivered itself (LocalRedelivery) reaches MaxDeliveries with the broker's
// count still at its first delivery; the copy DeadLetter gets must carry numa's count, which drivers
// write into the dead letter (x-dead-letter-deliveries said 0 after 3 deliveries on RabbitMQ).
func TestDeadLetterCarriesNumasDeliveryCount(t *testing.T) {
	b, want := newQueue(t, 1, 8, "")
	d := memsource.NewDriver(b, memsource.Options{Queue: "q", LocalRedelivery: true, DeadLetter: true, Wait: 50 * time.Millisecond})
	s, _ := newSource(t, d, source.Options{})
	for i := range 3 {
		var got []sourcer.Message
		waitFor(t, 5*time.Second, "delivery "+strconv.Itoa(i+1), func() bool {
			got = read(s, 1, 200*time.Millisecond)
			return len(got) == 1
		})
		if ids(got)[0] != want[0] {
			t.Fatalf("delivery %d: read %v, want %s", i+1, ids(got), want[0])
		}
		nackWith(s, 0, 3, got...)
	}
	waitFor(t, 5*time.Second, "the dead letter", func() bool { return len(b.DeadLetters("q")) == 1 })
	if dl := b.DeadLetters("q")[0]; dl.Deliveries != 3 {
		t.Fatalf("dead letter after 3 deliveries to numa carries Deliveries %d (broker count %d)", dl.Deliveries, 1)
	}
}

// askRecorder is a memsource driver that records the max of every Receive call.
type askRecorder struct {
	*memsource.Driver
	mu   sync.Mutex
	asks []int
}

func (a *askRecorder) Receive(ctx context.Context, max int) ([]*source.Message, error) {
	a.mu.Lock()
	a.asks = append(a.asks, max)
	a.mu.Unlock()
	return a.Driver.Receive(ctx, max)
}

// Before it has seen a message the adapter cannot size a receive by bytes; it must not ask for more
// messages of MaxMessageBytes than PrefetchBytes holds. Symptom: a restart with a backlog of 50 MiB
// messages took 10 of them (500 MiB) at once into a pod with a 64 MiB budget, and crash-looped.
func TestFirstReceiveFitsTheByteBudgetAtMaxMessageBytes(t *testing.T) {
	b, _ := newQueue(t, 6, 3<<20, "")
	d := &askRecorder{Driver: memsource.NewDriver(b, memsource.Options{Queue: "q", Wait: 50 * time.Millisecond})}
	s, _ := newSource(t, d, source.Options{MaxMessageBytes: 8 << 20, PrefetchBytes: 16 << 20})
	waitFor(t, 5*time.Second, "a receive", func() bool { d.mu.Lock(); defer d.mu.Unlock(); return len(d.asks) > 0 })
	d.mu.Lock()
	first := d.asks[0]
	d.mu.Unlock()
	if first > 2 {
		t.Fatalf("first receive asked for %d messages: up to %d MiB at MaxMessageBytes 8 MiB, with PrefetchBytes 16 MiB", first, first*8)
	}
	if got := readAck(s, 10, 2*time.Second); len(got) == 0 {
		t.Fatalf("nothing read (snapshot %+v)", source.SnapshotOf(s))
	}
}

// Keys and headers that are not valid UTF-8 go out with U+FFFD (3 bytes) for each run of bad bytes:
// WireSize must count that, or a message near MaxMessageBytes with such headers passes the check and
// then fails numa's read stream over the gRPC limit.
func TestWireSizeCountsRepairedKeysAndHeaders(t *testing.T) {
	bad := strings.Repeat("\xff.", 1000) // 2,000 bytes that go out as 4,000
	m := &source.Message{ID: "id", Payload: make([]byte, 100), Keys: []string{bad}, Headers: map[string]string{"h": bad, bad: "v"}}
	sent := len(m.Payload) + len(m.ID)
	for _, s := range []string{bad, "h", bad, bad, "v"} {
		sent += len(strings.ToValidUTF8(s, "\uFFFD"))
	}
	if got := source.WireSize(m); got < int64(sent) {
		t.Fatalf("WireSize = %d for a message whose fields take %d bytes once made valid UTF-8", got, sent)
	}
}
