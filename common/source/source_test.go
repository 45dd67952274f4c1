package source_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/numaproj/numaflow-go/pkg/sourcer"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/numaflow-connectors/sources/common/numatest"
	"github.com/numaflow-connectors/sources/common/source"
	"github.com/numaflow-connectors/sources/common/source/memsource"
)

// ---- a scriptable fake driver for error paths ----

var errTransient = errors.New("transient")
var errBad = errors.New("bad handle")

type call struct {
	op      string
	handles []source.Handle
	delay   time.Duration
}

type fake struct {
	caps source.Capabilities
	mu   sync.Mutex
	in   chan []*source.Message
	// ackErr returns the error for one Ack call (nil: success).
	ackErr func(n int, handles []source.Handle) error
	// extendErr returns the error for one Extend call (nil: success).
	extendErr func(handles []source.Handle) error
	calls     []call
	acks      int
	// nackWait, when set, holds every Nack call until it is closed (a slow broker).
	nackWait chan struct{}
}

func newFake(caps source.Capabilities) *fake {
	return &fake{caps: caps, in: make(chan []*source.Message, 100)}
}

func (f *fake) Capabilities() source.Capabilities { return f.caps }
func (f *fake) Receive(ctx context.Context, max int) ([]*source.Message, error) {
	select {
	case m := <-f.in:
		return m, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-time.After(200 * time.Millisecond):
		return nil, nil
	}
}
func (f *fake) record(op string, h []source.Handle, d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, call{op, append([]source.Handle(nil), h...), d})
}
func (f *fake) Ack(_ context.Context, h []source.Handle) error {
	f.record("ack", h, 0)
	f.mu.Lock()
	n := f.acks
	f.acks++
	f.mu.Unlock()
	if f.ackErr != nil {
		return f.ackErr(n, h)
	}
	return nil
}
func (f *fake) Nack(ctx context.Context, h []source.Handle, d time.Duration) error {
	f.record("nack", h, d)
	if f.nackWait != nil {
		select {
		case <-f.nackWait:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}
func (f *fake) Extend(_ context.Context, h []source.Handle, d time.Duration) error {
	f.record("extend", h, d)
	if f.extendErr != nil {
		return f.extendErr(h)
	}
	return nil
}
func (f *fake) Backlog(context.Context) (int64, error) { return -1, nil }
func (f *fake) ErrorCode(err error) source.Code {
	switch {
	case errors.Is(err, errTransient):
		return source.Unavailable
	case errors.Is(err, errBad):
		return source.InvalidArgument
	}
	return source.Unknown
}
func (f *fake) Close(context.Context) error { return nil }
func (f *fake) callsOf(op string) []call {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []call
	for _, c := range f.calls {
		if c.op == op {
			out = append(out, c)
		}
	}
	return out
}

type decodingFake struct{ *fake }

func (d decodingFake) HandleFromID(id string) (source.Handle, bool) { return "decoded:" + id, true }

func msg(id, handle string, keys ...string) *source.Message {
	return &source.Message{ID: id, Handle: handle, Payload: []byte(id), EventTime: time.Now(), Keys: keys}
}

// ---- helpers ----

func newSource(t *testing.T, d source.Driver, opts source.Options) (*source.Source, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	s, err := source.New(d, opts, nil, reg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = s.Close(ctx)
	})
	return s, reg
}

func read(s *source.Source, n int, d time.Duration) []sourcer.Message {
	return numatest.ReadFrom(context.Background(), s, n, d)
}

func ack(s *source.Source, msgs ...sourcer.Message) {
	s.Ack(context.Background(), numatest.AckRequest(numatest.OffsetsOf(msgs)...))
}

func nack(s *source.Source, opts *sourcer.NackOptions, msgs ...sourcer.Message) {
	req := make([]sourcer.NackOffset, len(msgs))
	for i, m := range msgs {
		req[i] = sourcer.NackOffset{Offset: m.Offset(), NackOptions: opts}
	}
	s.Nack(context.Background(), numatest.NackRequest(req...))
}

// filledBroker returns a memsource broker whose queue "q" holds n one-byte messages.
func filledBroker(t *testing.T, n int) *memsource.Broker {
	t.Helper()
	b := memsource.NewBroker()
	b.CreateQueue("q")
	pubs := make([]memsource.Publication, n)
	for i := range pubs {
		pubs[i] = memsource.Publication{Payload: []byte("x")}
	}
	if err := b.Publish("q", pubs...); err != nil {
		t.Fatal(err)
	}
	return b
}

func waitFor(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func ids(msgs []sourcer.Message) []string {
	out := make([]string, len(msgs))
	for i, m := range msgs {
		out[i] = string(m.Offset().Value())
	}
	return out
}

// ---- tests ----

func TestAckRetriesOnlyTheFailedEntries(t *testing.T) {
	f := newFake(source.Capabilities{MaxAck: 10})
	f.ackErr = func(n int, h []source.Handle) error {
		if n == 0 {
			return &source.BatchError{Failed: map[int]error{1: errTransient, 2: errBad}}
		}
		return nil
	}
	s, reg := newSource(t, f, source.Options{})
	f.in <- []*source.Message{msg("a", "ha"), msg("b", "hb"), msg("c", "hc")}
	got := read(s, 10, time.Second)
	ack(s, got...)
	waitFor(t, 5*time.Second, "the retry", func() bool { return len(f.callsOf("ack")) == 2 })
	calls := f.callsOf("ack")
	if fmt.Sprint(calls[1].handles) != "[hb]" {
		t.Fatalf("retry carried %v, want only the transient failure [hb]", calls[1].handles)
	}
	waitFor(t, 5*time.Second, "metrics", func() bool {
		return testutil.ToFloat64(counterVec(t, reg, "numaflow_source_acked_total")) == 2
	})
	if v := testutil.ToFloat64(counterVec(t, reg, "numaflow_source_ack_failed_total")); v != 1 {
		t.Errorf("ack_failed_total = %v, want 1 (the invalid handle)", v)
	}
	time.Sleep(300 * time.Millisecond)
	if n := len(f.callsOf("ack")); n != 2 {
		t.Errorf("%d ack calls: a permanent failure must not be retried", n)
	}
}

// counterVec finds a single-series metric by name in reg.
func counterVec(t *testing.T, reg *prometheus.Registry, name string) prometheus.Collector {
	t.Helper()
	return gathered{reg, name}
}

type gathered struct {
	reg  *prometheus.Registry
	name string
}

func (g gathered) Describe(ch chan<- *prometheus.Desc) {}
func (g gathered) Collect(ch chan<- prometheus.Metric) {
	mfs, _ := g.reg.Gather()
	for _, mf := range mfs {
		if mf.GetName() != g.name {
			continue
		}
		v := 0.0
		for _, m := range mf.GetMetric() {
			v += m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
		ch <- prometheus.MustNewConstMetric(prometheus.NewDesc(g.name, "", nil, nil), prometheus.UntypedValue, v)
	}
}

func TestRedeliveryWhileInFlightIsNotEmittedTwiceAndNewestHandleWins(t *testing.T) {
	f := newFake(source.Capabilities{})
	s, _ := newSource(t, f, source.Options{})
	f.in <- []*source.Message{msg("a", "h1")}
	first := read(s, 10, time.Second)
	f.in <- []*source.Message{msg("a", "h2"), msg("b", "hb")}
	second := read(s, 10, time.Second)
	if fmt.Sprint(ids(first), ids(second)) != "[a] [b]" {
		t.Fatalf("reads %v then %v; a redelivery of an in-flight message must not be emitted again", ids(first), ids(second))
	}
	ack(s, first...)
	waitFor(t, 5*time.Second, "ack", func() bool { return len(f.callsOf("ack")) == 1 })
	if h := f.callsOf("ack")[0].handles; fmt.Sprint(h) != "[h2]" {
		t.Errorf("acked with %v, want the newest handle h2", h)
	}
}

func TestUnknownOffsetsAckedThroughTheDecoder(t *testing.T) {
	f := newFake(source.Capabilities{})
	s, _ := newSource(t, decodingFake{f}, source.Options{})
	s.Ack(context.Background(), numatest.AckRequest(sourcer.NewOffset([]byte("s:1-0"), 0)))
	waitFor(t, 5*time.Second, "ack", func() bool { return len(f.callsOf("ack")) == 1 })
	if h := f.callsOf("ack")[0].handles; fmt.Sprint(h) != "[decoded:s:1-0]" {
		t.Errorf("acked %v", h)
	}
}

func TestOrderedKeyNackReleasesLaterMessagesOfTheKey(t *testing.T) {
	f := newFake(source.Capabilities{OrderedKeys: true})
	s, _ := newSource(t, f, source.Options{})
	f.in <- []*source.Message{msg("a", "ha", "k1"), msg("b", "hb", "k2"), msg("c", "hc", "k1")}
	first := read(s, 1, time.Second)
	if fmt.Sprint(ids(first)) != "[a]" {
		t.Fatalf("read %v", ids(first))
	}
	delay := uint64(1500)
	nack(s, &sourcer.NackOptions{Delay: &delay}, first...)
	waitFor(t, 5*time.Second, "nack", func() bool { return len(f.callsOf("nack")) == 1 })
	c := f.callsOf("nack")[0]
	if fmt.Sprint(c.handles) != "[ha hc]" || c.delay != 1500*time.Millisecond {
		t.Errorf("nack %v after %s, want [ha hc] after 1.5s", c.handles, c.delay)
	}
	if rest := read(s, 10, 300*time.Millisecond); fmt.Sprint(ids(rest)) != "[b]" {
		t.Errorf("then read %v, want [b]", ids(rest))
	}
}

func TestLocalRedeliveryHonoursDelayAndCountsDeliveries(t *testing.T) {
	f := newFake(source.Capabilities{LocalRedelivery: true})
	s, _ := newSource(t, f, source.Options{})
	f.in <- []*source.Message{msg("a", "ha")}
	first := read(s, 10, time.Second)
	delay := uint64(300)
	maxDel := uint32(2)
	opts := &sourcer.NackOptions{Delay: &delay, MaxDeliveries: &maxDel}
	nacked := time.Now()
	nack(s, opts, first...)
	var again []sourcer.Message
	for len(again) == 0 && time.Since(nacked) < 5*time.Second {
		again = read(s, 10, time.Second)
	}
	if took := time.Since(nacked); len(again) != 1 || took < 290*time.Millisecond {
		t.Fatalf("redelivered %v after %s, want [a] after >= 300ms", ids(again), took)
	}
	if n := len(f.callsOf("nack")); n != 0 {
		t.Errorf("driver Nack called %d times: local redelivery keeps the message", n)
	}
	// Second delivery nacked with MaxDeliveries 2: no dead-letter target, fallback nack releases it.
	nack(s, opts, again...)
	waitFor(t, 5*time.Second, "release to the broker", func() bool { return len(f.callsOf("nack")) == 1 })
}

func TestPrefetchBoundsWhatIsHeld(t *testing.T) {
	b := filledBroker(t, 500)
	d := memsource.NewDriver(b, memsource.Options{Queue: "q", MaxReceive: 7})
	s, reg := newSource(t, d, source.Options{Prefetch: 30})
	waitFor(t, 5*time.Second, "prefetch", func() bool {
		return testutil.ToFloat64(counterVec(t, reg, "numaflow_source_buffered")) >= 30
	})
	time.Sleep(300 * time.Millisecond)
	if v := testutil.ToFloat64(counterVec(t, reg, "numaflow_source_buffered")); v > 30 {
		t.Errorf("buffered %v messages with Prefetch 30", v)
	}
	got := read(s, 100, time.Second)
	if len(got) == 0 || len(got) > 30 {
		t.Errorf("read %d with Prefetch 30", len(got))
	}
}

func TestDefaultPrefetch(t *testing.T) {
	for _, c := range []struct {
		batch, conc, max, want int
	}{
		{500, 1, 500, 1000},  // one receive at a time: two batches (server.Env.Budget's figure)
		{500, 1, 0, 1000},    // no receive size: a batch per receive
		{500, 4, 500, 2500},  // Pub/Sub: four pulls of 500 while numa holds a batch
		{100, 4, 500, 500},   // receives fetch at most a batch
		{500, 10, 10, 1000},  // SQS: ten receives of 10 fit in two batches
		{500, 100, 10, 1500}, // a hundred receives of 10 do not
	} {
		got := source.DefaultPrefetch(c.batch, source.Capabilities{ReceiveConcurrency: c.conc, MaxReceive: c.max})
		if got != c.want {
			t.Errorf("DefaultPrefetch(batch %d, %d receives of %d) = %d, want %d", c.batch, c.conc, c.max, got, c.want)
		}
	}
}

// With the default prefetch, a driver's concurrent receives run while numa holds a batch unacked:
// the buffer refills to the driver's concurrency times its receive size, not to one more batch.
func TestDefaultPrefetchKeepsConcurrentReceivesBusy(t *testing.T) {
	b := filledBroker(t, 5000)
	d := memsource.NewDriver(b, memsource.Options{Queue: "q", MaxReceive: 50, ReceiveConcurrency: 4})
	s, reg := newSource(t, d, source.Options{ReadBatchSize: 50})
	if got := read(s, 50, time.Second); len(got) != 50 {
		t.Fatalf("read %d, want 50", len(got))
	}
	// Numa holds 50 unacked; four receives of 50 fill the buffer to 200 (a prefetch of two batches
	// would stop at 50).
	waitFor(t, 5*time.Second, "four receives' worth buffered", func() bool {
		return testutil.ToFloat64(counterVec(t, reg, "numaflow_source_buffered")) >= 200
	})
	time.Sleep(200 * time.Millisecond)
	if v := testutil.ToFloat64(counterVec(t, reg, "numaflow_source_buffered")); v > 200 {
		t.Errorf("buffered %v with batch 50 and 4 receives of 50 (prefetch 250, 50 in flight)", v)
	}
}

func TestOutageMakesNotReadyWithoutSpinningAndRecovers(t *testing.T) {
	b := memsource.NewBroker()
	b.CreateQueue("q")
	d := memsource.NewDriver(b, memsource.Options{Queue: "q", Wait: 200 * time.Millisecond})
	s, _ := newSource(t, d, source.Options{})
	b.SetDown(true)
	waitFor(t, 5*time.Second, "not ready", func() bool { return !s.Ready() })
	before := b.Calls("receive") + b.Calls("check")
	start := time.Now()
	if got := read(s, 10, time.Second); len(got) != 0 {
		t.Fatalf("read during an outage returned %d", len(got))
	}
	if took := time.Since(start); took > 1500*time.Millisecond {
		t.Errorf("read during an outage took %s", took)
	}
	time.Sleep(2 * time.Second)
	if n := b.Calls("receive") + b.Calls("check") - before; n > 30 {
		t.Errorf("%d broker calls in 3 s of outage: back off instead of spinning", n)
	}
	b.SetDown(false)
	if err := b.Publish("q", memsource.Publication{Payload: []byte("after")}); err != nil {
		t.Fatal(err)
	}
	healed := time.Now()
	waitFor(t, 5*time.Second, "ready again within 5 s of the heal", s.Ready)
	t.Logf("ready %s after the heal", time.Since(healed).Round(time.Millisecond))
	var got []sourcer.Message
	for len(got) == 0 {
		got = read(s, 10, time.Second)
	}
	if string(got[0].Value()) != "after" {
		t.Errorf("after recovery read %q", got[0].Value())
	}
}

func TestIdleSourceMakesOneReceiveAtATime(t *testing.T) {
	b := filledBroker(t, 400)
	d := memsource.NewDriver(b, memsource.Options{Queue: "q", MaxReceive: 10, Wait: 500 * time.Millisecond})
	s, _ := newSource(t, d, source.Options{})
	n := 0
	for n < 400 {
		got := read(s, 100, time.Second)
		ack(s, got...)
		n += len(got)
	}
	time.Sleep(time.Second) // busy receivers notice the queue is empty and park
	before := b.Calls("receive")
	time.Sleep(2 * time.Second)
	// One long poll at a time: about 2 s / 500 ms = 4 calls; 4 parallel receivers would make 16.
	if n := b.Calls("receive") - before; n > 7 {
		t.Errorf("%d receive calls in 2 s while idle with a 500 ms long poll: idle sources must poll one at a time", n)
	}
}

// herdDriver answers like a broker that wakes every waiting poll for each send and gives the
// messages to one of them: while messages keep coming, two receives in three return empty at once.
type herdDriver struct {
	*fake
	partial        bool // answer one message instead of a full batch (a trickle)
	busy           bool // never answer empty (a backlog)
	payload        int  // payload bytes of each message (0: its id)
	mu             sync.Mutex
	calls, n, most int
	next           int
}

func (h *herdDriver) Receive(ctx context.Context, limit int) ([]*source.Message, error) {
	h.mu.Lock()
	h.calls++
	h.n++
	h.most = max(h.most, h.n)
	empty := !h.busy && h.calls%3 != 0
	var out []*source.Message
	if !empty {
		if h.partial {
			limit = 1
		}
		for range limit {
			h.next++
			id := fmt.Sprint(h.next)
			m := msg(id, id)
			if h.payload > 0 {
				m.Payload = make([]byte, h.payload)
			}
			out = append(out, m)
		}
	}
	h.mu.Unlock()
	defer func() { h.mu.Lock(); h.n--; h.mu.Unlock() }()
	if !sleepCtx(ctx, 2*time.Millisecond) {
		return nil, ctx.Err()
	}
	return out, nil
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	select {
	case <-time.After(d):
		return true
	case <-ctx.Done():
		return false
	}
}

// Empty receives while messages keep coming do not park receivers: a replica whose receivers shrank
// on them would get an ever smaller share of a queue it shares with others (seen on the SQS
// emulator: 11% instead of a third).
func TestEmptyReceivesWhileBusyKeepReceivers(t *testing.T) {
	h := &herdDriver{fake: newFake(source.Capabilities{MaxReceive: 10, ReceiveConcurrency: 8})}
	if most := h.drain(t); most < 6 {
		t.Errorf("at most %d receives ran at once (ReceiveConcurrency 8): empty answers while messages flow shrank the receivers", most)
	}
}

// A trickle (one message per answer, empty answers in between, as with short polling) keeps one
// receive at a time: no busy loop of parallel polls for a few messages.
func TestTrickleKeepsOneReceive(t *testing.T) {
	h := &herdDriver{fake: newFake(source.Capabilities{MaxReceive: 10, ReceiveConcurrency: 8}), partial: true}
	if most := h.drain(t); most > 1 {
		t.Errorf("%d receives ran at once for a trickle of one message per answer", most)
	}
}

// A backlog on a broker that answers with fewer messages than asked (Pub/Sub's Pull: the emulator
// gives at most 100 of 500) gets concurrent receives when the driver says any message makes a
// receive full (FullReceive 1). By default such answers are not full, and receives stay one at a time.
func TestFullReceiveGrowsReceivesOnPartialAnswers(t *testing.T) {
	for _, c := range []struct{ full, least, most int }{{1, 6, 8}, {0, 1, 1}} {
		h := &herdDriver{fake: newFake(source.Capabilities{MaxReceive: 10, ReceiveConcurrency: 8, FullReceive: c.full}),
			partial: true, busy: true}
		if most := h.drain(t); most < c.least || most > c.most {
			t.Errorf("FullReceive %d, one message per answer with more waiting: at most %d receives ran at once, want %d to %d",
				c.full, most, c.least, c.most)
		}
	}
}

// A backlog of 20 KiB messages: a receive asks for an eighth of the 64 MiB byte budget, 409 messages,
// fewer than the driver's MaxReceive of 500. Such a receive is still whole (the room left did not cut
// it), so full answers grow the receives to the driver's concurrency; counting only asks of MaxReceive
// kept Pub/Sub at one pull at a time for messages over 16 KiB.
func TestFullReceiveOfBigMessagesGrowsReceives(t *testing.T) {
	h := &herdDriver{fake: newFake(source.Capabilities{MaxReceive: 500, ReceiveConcurrency: 4}), busy: true, payload: 20 << 10}
	if most := h.drainWith(t, source.Options{Prefetch: 5000, PrefetchBytes: 64 << 20}); most < 3 {
		t.Errorf("at most %d receives ran at once on a backlog of 20 KiB messages, want up to the driver's 4", most)
	}
}

// drain reads and acks for a second and returns the most receives that ran at once.
func (h *herdDriver) drain(t *testing.T) int { return h.drainWith(t, source.Options{Prefetch: 1000}) }

func (h *herdDriver) drainWith(t *testing.T, opts source.Options) int {
	s, _ := newSource(t, h, opts)
	for start := time.Now(); time.Since(start) < time.Second; {
		ack(s, read(s, 500, 50*time.Millisecond)...)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.most
}

func TestTooLargeMessageIsDeadLetteredAndTheStreamGoesOn(t *testing.T) {
	b := memsource.NewBroker()
	b.CreateQueue("q")
	_ = b.Publish("q", memsource.Publication{Payload: make([]byte, 1000)}, memsource.Publication{Payload: []byte("ok")})
	d := memsource.NewDriver(b, memsource.Options{Queue: "q", DeadLetter: true})
	s, _ := newSource(t, d, source.Options{MaxMessageBytes: 500})
	var got []sourcer.Message
	for start := time.Now(); len(got) == 0 && time.Since(start) < 5*time.Second; {
		got = read(s, 10, time.Second)
	}
	if fmt.Sprint(len(got)) != "1" || string(got[0].Value()) != "ok" {
		t.Fatalf("read %d messages", len(got))
	}
	waitFor(t, 5*time.Second, "dead letter", func() bool { return len(b.DeadLetters("q")) == 1 })
	if r := b.DeadLetters("q")[0].Reason; r == "" {
		t.Errorf("no reason")
	}
}

func TestFallbackDropAcksAndCounts(t *testing.T) {
	b := memsource.NewBroker()
	b.CreateQueue("q")
	_ = b.Publish("q", memsource.Publication{Payload: []byte("poison")})
	d := memsource.NewDriver(b, memsource.Options{Queue: "q"})
	s, reg := newSource(t, d, source.Options{Fallback: source.FallbackDrop})
	got := read(s, 10, 2*time.Second)
	one := uint32(1)
	nack(s, &sourcer.NackOptions{MaxDeliveries: &one}, got...)
	waitFor(t, 5*time.Second, "the drop", func() bool { return b.Len("q") == 0 })
	if v := testutil.ToFloat64(counterVec(t, reg, "numaflow_source_dropped_total")); v != 1 {
		t.Errorf("dropped_total = %v", v)
	}
}

// orderedAcks is a driver whose broker takes acknowledgements only in order (Capabilities.OrderedAcks).
type orderedAcks struct{ source.Driver }

func (d orderedAcks) Capabilities() source.Capabilities {
	c := d.Driver.Capabilities()
	c.OrderedAcks = true
	return c
}

// With DEAD_LETTER_FALLBACK unset, a message past its max deliveries with no dead-letter target stays
// at the broker (nack), except where acknowledgements are ordered: kept there, it would stop the source.
func TestFallbackDefaultFollowsOrderedAcks(t *testing.T) {
	for _, ordered := range []bool{false, true} {
		t.Run(fmt.Sprint("ordered acks ", ordered), func(t *testing.T) {
			b := memsource.NewBroker()
			b.CreateQueue("q")
			_ = b.Publish("q", memsource.Publication{Payload: []byte("poison")})
			var d source.Driver = memsource.NewDriver(b, memsource.Options{Queue: "q"})
			if ordered {
				d = orderedAcks{d}
			}
			s, reg := newSource(t, d, source.Options{})
			got := read(s, 10, 2*time.Second)
			one := uint32(1)
			nack(s, &sourcer.NackOptions{MaxDeliveries: &one}, got...)
			if ordered {
				waitFor(t, 5*time.Second, "the drop", func() bool { return b.Len("q") == 0 })
			} else {
				time.Sleep(500 * time.Millisecond)
			}
			dropped := 0.0
			if c := counterVec(t, reg, "numaflow_source_dropped_total"); testutil.CollectAndCount(c) > 0 {
				dropped = testutil.ToFloat64(c)
			}
			if want := map[bool]float64{false: 0, true: 1}[ordered]; dropped != want || b.Len("q") != 1-int(want) {
				t.Errorf("dropped_total = %v and %d messages in the queue, want %v dropped", dropped, b.Len("q"), want)
			}
		})
	}
}

func TestMaxExtensionLetsTheLeaseExpire(t *testing.T) {
	b := memsource.NewBroker()
	b.CreateQueue("q")
	_ = b.Publish("q", memsource.Publication{Payload: []byte("held")})
	d := memsource.NewDriver(b, memsource.Options{Queue: "q", Lease: 400 * time.Millisecond, MaxExtension: 1200 * time.Millisecond})
	s, reg := newSource(t, d, source.Options{})
	if got := read(s, 10, 2*time.Second); len(got) != 1 {
		t.Fatalf("read %d", len(got))
	}
	other := memsource.NewDriver(b, memsource.Options{Queue: "q", Wait: time.Millisecond})
	// Kept past its first lease, then left to expire at the maximum.
	time.Sleep(700 * time.Millisecond)
	if m, _ := other.Receive(context.Background(), 10); len(m) != 0 {
		t.Fatalf("message escaped while its lease was being extended")
	}
	waitFor(t, 5*time.Second, "the maximum extension", func() bool {
		return testutil.ToFloat64(counterVec(t, reg, "numaflow_source_lease_max_extension_reached_total")) == 1
	})
	// The broker makes it visible again: another consumer, or this source (a duplicate it absorbs), gets it.
	waitFor(t, 5*time.Second, "redelivery after the maximum extension", func() bool {
		m, _ := other.Receive(context.Background(), 10)
		return len(m) == 1 || testutil.ToFloat64(counterVec(t, reg, "numaflow_source_duplicate_receives_total")) >= 1
	})
}

func TestNumaRestartMakesInFlightMessagesReadableAgain(t *testing.T) {
	f := newFake(source.Capabilities{})
	s, _ := newSource(t, f, source.Options{})
	f.in <- []*source.Message{msg("a", "ha"), msg("b", "hb")}
	stream1, endStream1 := context.WithCancel(context.Background())
	ch := make(chan sourcer.Message, 10)
	s.Read(stream1, numatest.ReadRequest(10, time.Second), ch)
	if len(ch) != 2 {
		t.Fatalf("read %d", len(ch))
	}
	endStream1() // numa went away without answering
	var again []sourcer.Message
	waitFor(t, 5*time.Second, "requeue", func() bool {
		again = append(again, read(s, 10, 100*time.Millisecond)...)
		return len(again) == 2
	})
	if fmt.Sprint(ids(again)) != "[a b]" {
		t.Errorf("read again %v", ids(again))
	}
	ack(s, again...)
	waitFor(t, 5*time.Second, "ack", func() bool { return len(f.callsOf("ack")) == 1 })
}

func TestPendingIsCachedAndUnknownOnError(t *testing.T) {
	b := memsource.NewBroker()
	b.CreateQueue("q")
	_ = b.Publish("q", memsource.Publication{Payload: []byte("x")})
	d := memsource.NewDriver(b, memsource.Options{Queue: "q"})
	s, _ := newSource(t, d, source.Options{PendingRefresh: time.Hour})
	if p := s.Pending(context.Background()); p != 1 {
		t.Fatalf("pending %d, want 1", p)
	}
	s.Pending(context.Background())
	s.Pending(context.Background())
	if n := b.Calls("backlog"); n != 1 {
		t.Errorf("%d backlog calls for 3 Pending calls within the refresh period", n)
	}
	s2, _ := newSource(t, memsource.NewDriver(b, memsource.Options{Queue: "missing"}), source.Options{})
	if p := s2.Pending(context.Background()); p != -1 {
		t.Errorf("pending %d on a failing backlog, want -1", p)
	}
}

// Between readings Pending answers the last reading as it was (at least what the replica holds): acks
// since the reading are not taken off, because arrivals since cannot be added.
func TestCachedPendingIsTheReading(t *testing.T) {
	b := memsource.NewBroker()
	b.CreateQueue("q")
	for i := 0; i < 10; i++ {
		_ = b.Publish("q", memsource.Publication{Payload: []byte("x")})
	}
	d := memsource.NewDriver(b, memsource.Options{Queue: "q"})
	s, _ := newSource(t, d, source.Options{PendingRefresh: time.Hour})
	if p := s.Pending(context.Background()); p != 10 {
		t.Fatalf("pending %d, want 10", p)
	}
	var got []sourcer.Message
	for len(got) < 4 {
		got = append(got, read(s, 4-len(got), time.Second)...)
	}
	ack(s, got...)
	waitFor(t, 5*time.Second, "the acks to land", func() bool { return b.Len("q") == 6 })
	if p := s.Pending(context.Background()); p != 10 {
		t.Errorf("pending %d, want the cached reading, 10", p)
	}
	if n := b.Calls("backlog"); n != 1 {
		t.Errorf("%d backlog calls; the reading is cached", n)
	}
}

// A steady pipeline: messages arrive as fast as numa acks them, and the broker's backlog stays at about
// 2,000. numa asks for Pending every 5 s, the default refresh period, so every other call is answered
// from a reading almost a period old. Such an answer used to subtract the period's acks (about 10,000
// here) with none of its arrivals, and report only what the replica held: an autoscaler shown a
// fraction of a steady backlog scales down while it should not.
func TestCachedPendingHoldsInASteadyPipeline(t *testing.T) {
	b := memsource.NewBroker()
	b.CreateQueue("q")
	publishN(t, b, 2000, 10, "")
	d := memsource.NewDriver(b, memsource.Options{Queue: "q", MaxReceive: 100, Wait: 50 * time.Millisecond})
	s, _ := newSource(t, d, source.Options{ReadBatchSize: 100, Prefetch: 200, PendingRefresh: 2 * time.Second})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{})
	go func() { // numa at about 2,000 msg/s; the publisher keeps the backlog topped up
		defer close(done)
		for ctx.Err() == nil {
			ack(s, read(s, 100, 200*time.Millisecond)...)
			if n := 2000 - b.Len("q"); n > 0 {
				publishN(t, b, n, 10, "")
			}
			time.Sleep(50 * time.Millisecond)
		}
	}()
	time.Sleep(500 * time.Millisecond)
	s.Pending(ctx)                      // a fresh reading
	time.Sleep(1900 * time.Millisecond) // almost a refresh period: the next answer is the cached reading
	p := s.Pending(ctx)
	backlog := b.Len("q")
	cancel()
	<-done
	if p < int64(backlog)/2 {
		t.Errorf("Pending %d while the broker holds %d: the autoscaler is shown less than half a steady backlog", p, backlog)
	}
}

// silentFake answers receives with nothing (as a quiet long poll does) while its extensions time out
// and its health check fails: a silent network partition.
type silentFake struct {
	*fake
	mu      sync.Mutex
	silent  bool
	checked int
}

func (f *silentFake) set(v bool) { f.mu.Lock(); f.silent = v; f.mu.Unlock() }
func (f *silentFake) isSilent() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.silent
}
func (f *silentFake) Extend(ctx context.Context, h []source.Handle, d time.Duration) error {
	if f.isSilent() {
		return fmt.Errorf("extending: %w", context.DeadlineExceeded)
	}
	return f.fake.Extend(ctx, h, d)
}
func (f *silentFake) Check(context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.checked++
	if f.silent {
		return fmt.Errorf("checking: %w", context.DeadlineExceeded)
	}
	return nil
}

func TestSilentPartitionIsNotReadyUntilTheCheckPasses(t *testing.T) {
	f := &silentFake{fake: newFake(source.Capabilities{Lease: 400 * time.Millisecond})}
	s, _ := newSource(t, f, source.Options{})
	f.in <- []*source.Message{msg("a", "ha")}
	if got := read(s, 10, time.Second); len(got) != 1 {
		t.Fatalf("read %d", len(got))
	}
	f.set(true) // held message: its extensions now time out, receives stay quietly empty
	waitFor(t, 5*time.Second, "not ready", func() bool { return !s.Ready() })
	time.Sleep(500 * time.Millisecond) // several empty receives
	if s.Ready() {
		t.Fatalf("empty receives made a silent partition look ready")
	}
	f.set(false)
	waitFor(t, 5*time.Second, "ready after the check passes", s.Ready)
}

// A source whose broker is silent from the start (its check times out, receives answer nothing) is not
// ready: it reported ready until a first receive failed, which against a silent endpoint takes that
// receive's whole timeout (30 s on SQS). It is ready as soon as the check passes.
func TestNotReadyAtStartUntilTheBrokerAnswers(t *testing.T) {
	f := &silentFake{fake: newFake(source.Capabilities{}), silent: true}
	s, _ := newSource(t, f, source.Options{})
	for deadline := time.Now().Add(300 * time.Millisecond); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if s.Ready() {
			t.Fatal("ready at start before the broker answered")
		}
	}
	f.set(false)
	waitFor(t, 3*time.Second, "ready once the check passes", s.Ready)
}

// refusedFake is a broker that refuses this consumer for good while refused is set (failed_precondition:
// a Redis key of another type, an exclusive consumer holding a RabbitMQ queue, a disabled SQS KMS key):
// every receive and every health check fail with it.
type refusedFake struct {
	*fake
	refused atomic.Bool
}

var errRefused = errors.New("refused in the broker's state")

func (f *refusedFake) Receive(ctx context.Context, max int) ([]*source.Message, error) {
	if f.refused.Load() {
		return nil, fmt.Errorf("receiving: %w", errRefused)
	}
	return f.fake.Receive(ctx, max)
}
func (f *refusedFake) Check(context.Context) error {
	if f.refused.Load() {
		return fmt.Errorf("checking: %w", errRefused)
	}
	return nil
}
func (f *refusedFake) ErrorCode(err error) source.Code {
	if errors.Is(err, errRefused) {
		return source.FailedPrecondition
	}
	return f.fake.ErrorCode(err)
}

// A source whose every receive the broker refuses for good reads nothing: it must not report ready
// (/readyz, numaflow_source_ready and the NumaflowSourceNotReady alert), and it is ready again once
// the refusal ends.
func TestReceiveRefusedForGoodIsNotReady(t *testing.T) {
	f := &refusedFake{fake: newFake(source.Capabilities{})}
	f.refused.Store(true)
	s, _ := newSource(t, f, source.Options{})
	waitFor(t, 5*time.Second, "not ready while every receive is refused", func() bool { return !s.Ready() })
	f.refused.Store(false)
	waitFor(t, 5*time.Second, "ready once the broker takes the consumer again", s.Ready)
	f.in <- []*source.Message{msg("a", "ha")}
	if got := read(s, 10, 2*time.Second); len(got) != 1 {
		t.Fatalf("read %d after the refusal ended", len(got))
	}
}

// Keys and headers must reach numaflow-go as valid UTF-8 (protobuf strings), whatever the broker held;
// payloads pass byte for byte.
func TestInvalidUTF8InKeysAndHeadersIsReplaced(t *testing.T) {
	f := newFake(source.Capabilities{})
	s, _ := newSource(t, f, source.Options{})
	bad := string([]byte{0xff, 'x', 0xfe})
	m := msg("a", "ha", bad)
	m.Headers = map[string]string{bad: bad, "ok": "fine"}
	m.Payload = []byte{0xff, 0x00, 0xfe}
	f.in <- []*source.Message{m}
	got := read(s, 10, time.Second)
	if len(got) != 1 {
		t.Fatalf("read %d", len(got))
	}
	if k := got[0].Keys()[0]; k != "\uFFFDx\uFFFD" {
		t.Errorf("key %q", k)
	}
	if v, ok := got[0].Headers()["\uFFFDx\uFFFD"]; !ok || v != "\uFFFDx\uFFFD" || got[0].Headers()["ok"] != "fine" {
		t.Errorf("headers %q", got[0].Headers())
	}
	if string(got[0].Value()) != string([]byte{0xff, 0x00, 0xfe}) {
		t.Errorf("payload changed: %q", got[0].Value())
	}
}

// failingExtend is a memsource driver whose lease extensions fail while failing is set: a replica cut
// off from the broker for its extensions (the other replica, on the same broker, is not).
type failingExtend struct {
	*memsource.Driver
	failing atomic.Bool
}

func (f *failingExtend) Extend(ctx context.Context, h []source.Handle, lease time.Duration) error {
	if f.failing.Load() {
		return fmt.Errorf("extend: %w", memsource.ErrUnavailable)
	}
	return f.Driver.Extend(ctx, h, lease)
}

// Messages a replica buffered while its extensions failed, until their leases ran out and another
// replica read and acked them, are not handed to numa afterwards: each would be a duplicate whose ack
// fails. They are counted and released (a harmless failure here: the handles are dead).
func TestBufferedMessagesWhoseLeaseRanOutAreNotHandedOut(t *testing.T) {
	const n = 20
	b := filledBroker(t, n)
	const lease = 500 * time.Millisecond
	cut := &failingExtend{Driver: memsource.NewDriver(b, memsource.Options{Queue: "q", Lease: lease, MaxReceive: n})}
	cut.failing.Store(true)
	a, regA := newSource(t, cut, source.Options{Prefetch: n})
	waitFor(t, 5*time.Second, "replica A's buffer", func() bool {
		return testutil.ToFloat64(counterVec(t, regA, "numaflow_source_buffered")) == n
	})
	time.Sleep(lease + 200*time.Millisecond) // every lease A holds has run out at the broker

	other, _ := newSource(t, memsource.NewDriver(b, memsource.Options{Queue: "q", Lease: 10 * time.Second}), source.Options{})
	var got []sourcer.Message
	for start := time.Now(); len(got) < n && time.Since(start) < 5*time.Second; {
		batch := read(other, n, 200*time.Millisecond)
		ack(other, batch...)
		got = append(got, batch...)
	}
	if len(got) != n {
		t.Fatalf("replica B read %d of %d", len(got), n)
	}
	waitFor(t, 5*time.Second, "replica B's acks", func() bool { return b.Len("q") == 0 })

	cut.failing.Store(false)
	if stale := read(a, n, 300*time.Millisecond); len(stale) != 0 {
		t.Errorf("replica A handed numa %d messages whose leases had run out (and B had acked): %v", len(stale), ids(stale))
	}
	if v := testutil.ToFloat64(counterVec(t, regA, "numaflow_source_lease_expired_unread_total")); v != n {
		t.Errorf("lease_expired_unread_total = %v, want %d", v, n)
	}
	waitFor(t, 5*time.Second, "A's releases to end", func() bool { return source.SnapshotOf(a).Committing == 0 })
	if b.Len("q") != 0 {
		t.Errorf("%d messages at the broker after A released its dead handles, want 0", b.Len("q"))
	}
}

// With ordered keys, a message whose lease ran out unread takes the later buffered messages of its key
// with it (the broker delivers it again, and none of them may overtake it); other keys go on.
func TestExpiredLeaseTakesTheLaterMessagesOfItsKey(t *testing.T) {
	f := newFake(source.Capabilities{OrderedKeys: true, Lease: 300 * time.Millisecond})
	f.extendErr = func(h []source.Handle) error {
		failed := map[int]error{}
		for i, x := range h {
			if x == "ha" {
				failed[i] = errBad
			}
		}
		if len(failed) == 0 {
			return nil
		}
		return &source.BatchError{Failed: failed}
	}
	s, reg := newSource(t, f, source.Options{})
	f.in <- []*source.Message{msg("a", "ha", "K"), msg("x", "hx", "L")}
	f.in <- []*source.Message{msg("b", "hb", "K")}
	waitFor(t, 5*time.Second, "three buffered", func() bool {
		return testutil.ToFloat64(counterVec(t, reg, "numaflow_source_buffered")) == 3
	})
	time.Sleep(600 * time.Millisecond) // a's lease ran out; b's and x's were extended
	if got := ids(read(s, 10, 300*time.Millisecond)); fmt.Sprint(got) != "[x]" {
		t.Errorf("read %v, want [x]: a's lease ran out, and b must not overtake it", got)
	}
	if v := testutil.ToFloat64(counterVec(t, reg, "numaflow_source_lease_expired_unread_total")); v != 2 {
		t.Errorf("lease_expired_unread_total = %v, want 2 (a and b)", v)
	}
	// Both go back to the broker, in key order, readable at once.
	waitFor(t, 5*time.Second, "the release of a and b", func() bool { return len(f.callsOf("nack")) > 0 })
	if c := f.callsOf("nack")[0]; fmt.Sprint(c.handles) != "[ha hb]" || c.delay != 0 {
		t.Errorf("released %v with delay %s, want [ha hb] at once", c.handles, c.delay)
	}
}

// A delayed nack sets the message's lease at the broker (SQS: its visibility timeout): the lease
// keeper must not extend it while the nack is under way, or a late extension would turn the nack's
// delay back into one lease.
func TestLeaseKeeperLeavesAReleaseUnderWayAlone(t *testing.T) {
	f := newFake(source.Capabilities{Lease: 300 * time.Millisecond})
	f.nackWait = make(chan struct{})
	s, _ := newSource(t, f, source.Options{})
	f.in <- []*source.Message{msg("a", "ha")}
	got := read(s, 10, 2*time.Second)
	if len(got) != 1 {
		t.Fatalf("read %d messages", len(got))
	}
	delay := uint64(10_000)
	nack(s, &sourcer.NackOptions{Delay: &delay}, got...)
	waitFor(t, 5*time.Second, "the nack call", func() bool { return len(f.callsOf("nack")) == 1 })
	before := len(f.callsOf("extend"))
	time.Sleep(500 * time.Millisecond) // more than a lease: it would have been extended twice
	close(f.nackWait)
	time.Sleep(200 * time.Millisecond) // an extension queued behind the nack (AckConcurrency 1) goes out now
	if n := len(f.callsOf("extend")) - before; n != 0 {
		t.Errorf("%d lease extensions while a nack with a 10 s delay was under way, want none", n)
	}
}

// numa nacks a message; before the release reaches the broker, our own receive gets the message back
// (SQS: a waiting long poll gets it the moment its visibility is 0) with the broker's receive count,
// which counts this new delivery. The adapter keeps it and hands it to numa again: that is delivery 2,
// not 3, or MaxDeliveries 3 dead-letters (or with the drop fallback, drops) a message numa saw twice.
func TestRedeliveryDuringAReleaseIsCountedOnce(t *testing.T) {
	f := newFake(source.Capabilities{})
	f.nackWait = make(chan struct{})
	s, _ := newSource(t, f, source.Options{Fallback: source.FallbackDrop})
	first := msg("a", "h1")
	first.Deliveries = 1
	f.in <- []*source.Message{first}
	got := read(s, 10, 2*time.Second)
	if len(got) != 1 {
		t.Fatalf("read %d messages", len(got))
	}
	nack(s, &sourcer.NackOptions{}, got...)
	waitFor(t, 5*time.Second, "the release call", func() bool { return len(f.callsOf("nack")) == 1 })
	again := msg("a", "h2")
	again.Deliveries = 2 // the broker's count: its second delivery
	f.in <- []*source.Message{again}
	time.Sleep(300 * time.Millisecond) // received while the release is under way
	close(f.nackWait)
	got = read(s, 10, 2*time.Second)
	if len(got) != 1 {
		t.Fatalf("read %d messages after the release, want the one received meanwhile", len(got))
	}
	three := uint32(3)
	nack(s, &sourcer.NackOptions{MaxDeliveries: &three}, got...) // numa's second delivery: below 3
	time.Sleep(300 * time.Millisecond)
	if acks := f.callsOf("ack"); len(acks) != 0 {
		t.Errorf("the message was dropped after numa saw it twice, with MaxDeliveries 3: its second delivery was counted as the third")
	}
}

// refusingDLQ is a driver whose dead-letter target refuses every message for good (permission denied).
type refusingDLQ struct{ *fake }

var errDenied = errors.New("not authorized to publish to the dead-letter topic")

func (d refusingDLQ) DeadLetter(context.Context, *source.Message, string) error { return errDenied }
func (d refusingDLQ) ErrorCode(err error) source.Code {
	if errors.Is(err, errDenied) {
		return source.PermissionDenied
	}
	return d.fake.ErrorCode(err)
}

// A dead-letter target that refuses a message for good leaves it to the fallback where the broker
// acknowledges in order (MQTT: nacked and kept, it would hold back every later acknowledgement; the
// fallback there defaults to drop); elsewhere the message is nacked, to come back and try again.
func TestDeadLetterRefusedForGoodFallsBackWithOrderedAcks(t *testing.T) {
	for _, ordered := range []bool{false, true} {
		t.Run(fmt.Sprint("ordered acks ", ordered), func(t *testing.T) {
			f := newFake(source.Capabilities{OrderedAcks: ordered})
			s, _ := newSource(t, refusingDLQ{f}, source.Options{AckRetry: 100 * time.Millisecond})
			f.in <- []*source.Message{msg("a", "ha")}
			got := read(s, 10, 2*time.Second)
			one := uint32(1)
			nack(s, &sourcer.NackOptions{MaxDeliveries: &one}, got...)
			op := map[bool]string{false: "nack", true: "ack"}[ordered]
			waitFor(t, 5*time.Second, "the "+op, func() bool { return len(f.callsOf(op)) == 1 })
		})
	}
}

// stoppingFake records when the adapter stops the broker's deliveries, against its first release.
type stoppingFake struct {
	*fake
	stoppedAt int // calls recorded before StopReceiving; -1 until called
}

func (d *stoppingFake) StopReceiving(context.Context) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.stoppedAt = len(d.calls)
	return nil
}

// A driver whose broker pushes messages is told to stop them before the adapter releases what it
// holds at shutdown, so released messages go to another replica rather than straight back here.
func TestShutdownStopsDeliveriesBeforeReleasing(t *testing.T) {
	d := &stoppingFake{fake: newFake(source.Capabilities{}), stoppedAt: -1}
	s, _ := newSource(t, d, source.Options{ReleaseWait: 50 * time.Millisecond})
	d.in <- []*source.Message{msg("a", "ha"), msg("b", "hb")}
	waitFor(t, 5*time.Second, "two buffered", func() bool { return source.SnapshotOf(s).Buffered == 2 })
	s.Shutdown(context.Background())
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.stoppedAt < 0 || len(d.calls) == d.stoppedAt || d.calls[d.stoppedAt].op != "nack" {
		t.Errorf("StopReceiving after call %d of %v: want it called before the release of the buffered messages", d.stoppedAt, d.calls)
	}
	for _, c := range d.calls[:max(d.stoppedAt, 0)] {
		if c.op == "nack" {
			t.Errorf("a release (%v) before StopReceiving", c.handles)
		}
	}
}

// The broker redelivers a message the source still holds (its lease lapsed in a network cut, and our
// own receive got it back): the adapter keeps it from numa a second time, and must not count that
// delivery either. It took the broker's count, and numa's first nack with MaxDeliveries 2 dropped (or
// dead-lettered) a message numa had seen once.
func TestSwallowedRedeliveryDoesNotCountTowardsMaxDeliveries(t *testing.T) {
	for _, inFlight := range []bool{false, true} {
		t.Run(map[bool]string{false: "buffered", true: "in flight"}[inFlight], func(t *testing.T) {
			f := newFake(source.Capabilities{})
			s, _ := newSource(t, f, source.Options{Fallback: source.FallbackDrop})
			first := msg("a", "h1")
			first.Deliveries = 1
			f.in <- []*source.Message{first}
			var got []sourcer.Message
			if inFlight {
				got = read(s, 10, 2*time.Second)
			} else {
				waitFor(t, 3*time.Second, "a buffered", func() bool { return source.SnapshotOf(s).Buffered == 1 })
			}
			again := msg("a", "h2")
			again.Deliveries = 2 // the broker's count: it delivered a again, to us
			f.in <- []*source.Message{again}
			time.Sleep(400 * time.Millisecond) // admitted as a duplicate: numa is not handed it twice
			if !inFlight {
				got = read(s, 10, 2*time.Second)
			}
			if len(got) != 1 {
				t.Fatalf("read %d messages", len(got))
			}
			two := uint32(2)
			nack(s, &sourcer.NackOptions{MaxDeliveries: &two}, got...) // numa's first delivery of a
			time.Sleep(300 * time.Millisecond)
			if acks := f.callsOf("ack"); len(acks) != 0 {
				t.Errorf("a was dropped (acked: %v) after numa saw it once, with MaxDeliveries 2", acks)
			}
		})
	}
}

func sizedMsg(id, handle string, size int, key string) *source.Message {
	return &source.Message{ID: id, Handle: handle, Payload: bytes.Repeat([]byte{'x'}, size), EventTime: time.Now(), Keys: []string{key}}
}

// A nacked message A and its buffered key-mate B are released (ordered keys); our own receive gets
// both back while the release runs (an SQS FIFO long poll), together with a big message X of another
// key. takeBack found room for the small B but not the big A: B was buffered and read before A. B must
// go back to the broker with A.
func TestTakeBackKeepsKeyOrder(t *testing.T) {
	f := newFake(source.Capabilities{OrderedKeys: true})
	f.nackWait = make(chan struct{})
	s, _ := newSource(t, f, source.Options{PrefetchBytes: 1000, Prefetch: 100})
	f.in <- []*source.Message{sizedMsg("A", "a1", 400, "K"), sizedMsg("B", "b1", 10, "K")}
	waitFor(t, 3*time.Second, "A and B buffered", func() bool { return source.SnapshotOf(s).Buffered == 2 })
	first := read(s, 1, time.Second)
	if len(first) != 1 || ids(first)[0] != "A" {
		t.Fatalf("first read %v", ids(first))
	}
	nack(s, nil, first...) // A and B released; the Nack call blocks
	waitFor(t, 3*time.Second, "release under way", func() bool { return len(f.callsOf("nack")) == 1 })
	f.in <- []*source.Message{sizedMsg("X", "x1", 500, "L"), sizedMsg("A", "a2", 400, "K"), sizedMsg("B", "b2", 10, "K")}
	waitFor(t, 3*time.Second, "X buffered", func() bool { return source.SnapshotOf(s).Buffered == 1 })
	time.Sleep(50 * time.Millisecond)
	close(f.nackWait)
	var got []string
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) {
		ms := read(s, 10, 200*time.Millisecond)
		got = append(got, ids(ms)...)
		ack(s, ms...)
	}
	posA, posB := -1, -1
	for i, id := range got {
		if id == "A" && posA < 0 {
			posA = i
		}
		if id == "B" && posB < 0 {
			posB = i
		}
	}
	if posB >= 0 && (posA < 0 || posB < posA) {
		t.Fatalf("key K out of order after a release our receive got back: numa read %v (nack calls %v)", got, f.callsOf("nack"))
	}
}
