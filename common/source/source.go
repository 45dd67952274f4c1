package source

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/numaproj/numaflow-go/pkg/sourcer"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/numaflow-connectors/sources/common/metrics"
)

// Source is the portable adapter: a numaflow-go sourcer.Sourcer over a Driver. It owns everything
// that is the same for every broker: bounded reads that wait for data, stable offsets, no double
// emission, batched and retried acks, nack options, leases, pending, partitions, shutdown, metrics.
//
// Each message the driver receives becomes a record, held until the broker has committed or taken it
// back. A record moves buffered -> inFlight (handed to numa) -> acking -> gone, or inFlight -> nacked
// (delayed locally, or released to the broker) -> gone. The lease keeper extends every held record.
type Source struct {
	d    Driver
	caps Capabilities
	opts Options
	log  *slog.Logger
	m    *metrics.Source
	dl   DeadLetterer  // nil when the driver cannot dead-letter
	dec  OffsetDecoder // nil when offsets cannot be turned back into handles
	chk  Checker       // nil when the driver has no health check

	mu      sync.Mutex
	recs    map[string]*record // every held record, by message ID
	counts  [numStates]int     // records per state
	buffer  queue              // buffered records, in receive order
	delayed delayQueue         // locally nacked records, by due time
	nacks   nackCounts         // delivery counts of messages nacked back to the broker

	dataCh   chan struct{} // signalled when a record becomes readable
	spaceCh  chan struct{} // signalled when a record is released (room to receive)
	growCh   chan struct{} // a parked receiver takes a token to start receiving
	active   atomic.Int32  // receivers currently receiving
	lastFull atomic.Int64  // when a receive last returned a full batch (unix nanoseconds)

	stream     any // the context of numa's current read stream, compared by identity only
	ready      atomic.Bool
	probing    atomic.Bool // the prober runs
	shutting   atomic.Bool
	sem        chan struct{} // bounds concurrent Ack/Nack/Extend/DeadLetter calls
	jobs       *tracker      // outstanding broker commits (acks, nacks, dead letters)
	bg         *tracker      // lease keeper and pending refreshes
	bgCtx      context.Context
	bgCancel   context.CancelFunc
	recvCancel context.CancelFunc
	recvWG     sync.WaitGroup
	reserved   int    // receive room promised to running Receive calls (under mu)
	seq        uint64 // last record sequence number (under mu)
	shutOnce   sync.Once
	closeOnce  sync.Once
	closeErr   error

	acked      atomic.Int64 // messages numa acked, ever
	logMu      sync.Mutex
	logged     map[string]time.Time // last "broker call failed" line per op/kind
	suppressed map[string]int

	pmu      sync.Mutex
	pVal     int64
	pAcked   int64 // acked when pVal was read
	pAt      time.Time
	pRunning chan struct{} // closed when the running refresh ends; nil when none runs
}

type state int

const (
	buffered   state = iota // received, not yet handed to numa
	inFlight                // handed to numa, no answer yet
	committing              // acked, nacked, dead-lettered or released: a broker call is under way
	delayed                 // nacked; held here until its due time (LocalRedelivery)
	numStates
)

type record struct {
	msg        *Message
	state      state
	received   time.Time // first receive in this process (for MaxExtension)
	leaseUntil time.Time
	due        time.Time // delayed: when it becomes readable again
	deliveries int       // deliveries to numa, this one included (max of broker count and ours)
	emitted    int       // times handed to numa by this process
	maxedOut   bool      // MaxExtension reached: no more extensions
	gen        int       // bumped whenever msg.Handle is replaced
	seq        uint64    // receive order
	heapIndex  int
}

var _ sourcer.Sourcer = (*Source)(nil)

// New wraps d. It starts the background receivers, the lease keeper and the workers; Close stops
// them. reg may be nil (metrics not registered).
func New(d Driver, opts Options, log *slog.Logger, reg prometheus.Registerer) (*Source, error) {
	if d == nil {
		return nil, errors.New("source: nil driver")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	caps := d.Capabilities()
	caps.ReceiveConcurrency = max(caps.ReceiveConcurrency, 1)
	caps.AckConcurrency = max(caps.AckConcurrency, 1)
	opts, err := opts.withDefaults(caps)
	if err != nil {
		return nil, err
	}
	s := &Source{
		d: d, caps: caps, opts: opts, log: log, m: metrics.New(reg),
		recs:    make(map[string]*record),
		nacks:   nackCounts{m: make(map[string]int)},
		dataCh:  make(chan struct{}, 1),
		spaceCh: make(chan struct{}, 1),
		growCh:  make(chan struct{}, caps.ReceiveConcurrency),
		sem:     make(chan struct{}, caps.AckConcurrency),
		pVal:    -1,
		jobs:    newTracker(),
		logged:  make(map[string]time.Time), suppressed: make(map[string]int),
		bg: newTracker(),
	}
	s.dl, _ = d.(DeadLetterer)
	s.dec, _ = d.(OffsetDecoder)
	s.chk, _ = d.(Checker)
	s.setReady(true)
	s.m.Pending.Set(-1)
	// Background work derives from a context owned by the adapter, cancelled by Close: numa's
	// per-call contexts end with each call and must not cut broker commits short.
	s.bgCtx, s.bgCancel = context.WithCancel(context.Background()) //nolint:contextcheck // owned by Close
	recvCtx, recvCancel := context.WithCancel(s.bgCtx)
	s.recvCancel = recvCancel
	s.active.Store(1)
	for i := 0; i < caps.ReceiveConcurrency; i++ {
		s.recvWG.Add(1)
		go s.receiver(recvCtx, i == 0)
	}
	if caps.Lease > 0 {
		s.bg.run(func() { s.leaseKeeper(s.bgCtx) })
	}
	return s, nil
}

// Ready reports whether the broker answered the last call (false while it is unreachable, its
// resource is missing, or access is denied).
func (s *Source) Ready() bool { return s.ready.Load() }

func (s *Source) setReady(v bool) {
	if s.ready.Swap(v) != v {
		if v {
			s.log.Info("broker reachable")
		} else if s.chk != nil && s.probing.CompareAndSwap(false, true) {
			if !s.bg.run(s.prober) {
				s.probing.Store(false)
			}
		}
	}
	if v {
		s.m.Ready.Set(1)
	} else {
		s.m.Ready.Set(0)
	}
}

// ---- receiving ----

// receiver runs Receive in a loop. Only `active` receivers receive; the others wait on growCh, so an
// idle source makes one broker call at a time and a busy one runs up to ReceiveConcurrency.
func (s *Source) receiver(ctx context.Context, startActive bool) {
	defer s.recvWG.Done()
	if !startActive && !s.park(ctx) {
		return
	}
	// Receive retries back off to at most 2 s: a couple of cheap calls a second is no hot spin, and
	// readiness must come back within seconds of the broker (the probe after each wait).
	bo := backoff{max: 2 * time.Second}
	for ctx.Err() == nil {
		want := s.reserveRoom(ctx)
		if want == 0 {
			return
		}
		msgs, err := s.d.Receive(ctx, want)
		s.mu.Lock()
		s.reserved -= want
		s.mu.Unlock()
		if err != nil {
			code := classify(s.d, err)
			if code == Canceled && ctx.Err() != nil {
				return
			}
			s.brokerError("receive", code, err)
			s.setReady(false)
			if s.shrink() && !s.park(ctx) {
				return
			}
			if !sleepCtx(ctx, bo.next()) {
				return
			}
			continue
		}
		bo.reset()
		if len(msgs) > 0 || s.chk == nil {
			// An empty answer proves little (some waits end quietly on a silent network): with a
			// health check, only messages or the prober make the source ready again.
			s.setReady(true)
		}
		s.m.ReceiveBatch.Observe(float64(len(msgs)))
		s.admit(msgs)
		switch {
		case len(msgs) >= want && s.caps.MaxReceive > 0 && want == s.caps.MaxReceive:
			// A full batch: there is more, add a receiver. (Growing on any non-empty batch was tried:
			// it multiplies outstanding polls, and the Pub/Sub emulator lets a killed replica's
			// outstanding pulls absorb redeliveries for another ack deadline each.)
			s.lastFull.Store(time.Now().UnixNano())
			s.grow()
		case len(msgs) == 0 && time.Since(time.Unix(0, s.lastFull.Load())) >= shrinkIdle:
			// Empty, and no receive has returned a full batch for a while: drop to one receive at a
			// time. An empty answer while full batches keep coming (a broker that wakes every waiting
			// poll for each send and gives the messages to one of them) is no reason to shrink: a
			// replica whose receivers shrank that way gets an ever smaller share of a queue it shares
			// with others while its peers keep theirs. A trickle (partial batches, empty answers in
			// between, as with short polling) still runs one receive at a time.
			if s.shrink() && !s.park(ctx) {
				return
			}
		}
	}
}

// prober runs while the broker is unreachable: it calls the driver's health check every second and
// declares the broker reachable again as soon as one passes. Readiness thus comes back within about a
// second of the broker, whatever the receivers are doing (backing off, in a long poll, or idle
// because prefetch is full), and a silent network (where calls neither fail nor answer) stays
// not-ready until a check really answers.
func (s *Source) prober() {
	defer s.probing.Store(false)
	for !s.Ready() && sleepCtx(s.bgCtx, time.Second) {
		c, cancel := context.WithTimeout(s.bgCtx, 5*time.Second)
		err := s.chk.Check(c)
		cancel()
		if err == nil {
			s.setReady(true)
			return
		}
	}
}

// shrinkIdle is how long no receive must have returned a full batch before an empty receive parks its
// receiver.
const shrinkIdle = time.Second

func (s *Source) grow() {
	n := s.active.Load()
	if int(n) < s.caps.ReceiveConcurrency && s.active.CompareAndSwap(n, n+1) {
		s.growCh <- struct{}{} // capacity is ReceiveConcurrency: never blocks
	}
}

// shrink lowers the number of active receivers when more than one runs; true means the caller must park.
func (s *Source) shrink() bool {
	for {
		n := s.active.Load()
		if n <= 1 {
			return false
		}
		if s.active.CompareAndSwap(n, n-1) {
			return true
		}
	}
}

func (s *Source) park(ctx context.Context) bool {
	select {
	case <-s.growCh:
		return true
	case <-ctx.Done():
		return false
	}
}

// reserveRoom blocks until fewer than Prefetch records are held or being received, and reserves
// room for one Receive (at most MaxReceive); 0 when ctx ends. The caller gives the reservation back.
func (s *Source) reserveRoom(ctx context.Context) int {
	for {
		s.mu.Lock()
		// Messages numa has answered (acked, nacked) are waiting for the broker's commit: they do not
		// hold back receiving, so the next batch is fetched while the last one is being deleted. A
		// broker that commits slowly still applies backpressure through the second bound.
		committing := s.counts[committing]
		room := s.opts.Prefetch - (len(s.recs) - committing) - s.reserved
		if committing >= 2*s.opts.Prefetch {
			room = 0
		}
		if room > 0 {
			if s.caps.MaxReceive > 0 {
				room = min(room, s.caps.MaxReceive)
			}
			s.reserved += room
			s.mu.Unlock()
			return room
		}
		s.mu.Unlock()
		select {
		case <-s.spaceCh:
		case <-ctx.Done():
			return 0
		}
	}
}

// admit turns received messages into buffered records.
func (s *Source) admit(msgs []*Message) {
	now := time.Now()
	var tooLarge []*record
	s.mu.Lock()
	added := false
	for _, m := range msgs {
		if m == nil || m.ID == "" {
			s.log.Error("driver returned a message without an id; dropped from this batch")
			continue
		}
		if r, ok := s.recs[m.ID]; ok {
			// The broker redelivered a message we still hold (its lease ran out, or a duplicate
			// delivery): keep the newest handle, do not hand it to numa a second time.
			r.msg.Handle = m.Handle
			r.gen++
			r.leaseUntil = now.Add(s.caps.Lease)
			if r.maxedOut { // its lease ran out and it came back to us: a fresh extension window
				r.maxedOut, r.received = false, now
			}
			r.deliveries = max(r.deliveries, m.Deliveries)
			s.m.Duplicates.Inc()
			continue
		}
		if m.EventTime.IsZero() {
			m.EventTime = now
		}
		s.seq++
		r := &record{msg: m, received: now, leaseUntil: now.Add(s.caps.Lease), heapIndex: -1, seq: s.seq}
		r.deliveries = max(m.Deliveries, s.nacks.take(m.ID)+1)
		s.recs[m.ID] = r
		if len(m.Payload) > s.opts.MaxMessageBytes {
			r.state = committing
			s.counts[committing]++
			tooLarge = append(tooLarge, r)
			continue
		}
		r.state = buffered
		s.counts[buffered]++
		s.buffer.push(r)
		added = true
	}
	s.setGauges()
	s.mu.Unlock()
	if added {
		signal(s.dataCh)
	}
	for _, r := range tooLarge {
		reason := fmt.Sprintf("payload of %d bytes exceeds MAX_MESSAGE_BYTES (%d)", len(r.msg.Payload), s.opts.MaxMessageBytes)
		s.log.Warn("message too large", "id", r.msg.ID, "bytes", len(r.msg.Payload), "limit", s.opts.MaxMessageBytes)
		s.deadLetter(r, "too_large", reason, 0)
	}
}

// setState moves a held record to st and keeps the per-state counts and gauges. Caller holds s.mu.
func (s *Source) setState(r *record, st state) {
	s.counts[r.state]--
	r.state = st
	s.counts[st]++
	s.setGauges()
}

// forget removes records that the broker has committed or taken back.
func (s *Source) forget(rs []*record) {
	s.mu.Lock()
	for _, r := range rs {
		if cur, ok := s.recs[r.msg.ID]; ok && cur == r {
			s.counts[r.state]--
			delete(s.recs, r.msg.ID)
		}
	}
	s.setGauges()
	s.mu.Unlock()
	signal(s.spaceCh)
}

// setGauges publishes the per-state counts. Caller holds s.mu.
func (s *Source) setGauges() {
	s.m.Buffered.Set(float64(s.counts[buffered]))
	s.m.InFlight.Set(float64(s.counts[inFlight]))
}

// ---- Read ----

// Read hands numa at most req.Count() messages. It waits for the first one until req.TimeOut() (an
// instant empty answer would make numa spin), then keeps filling the batch while messages keep coming
// (Options.Linger), and never returns after the deadline.
func (s *Source) Read(ctx context.Context, req sourcer.ReadRequest, ch chan<- sourcer.Message) {
	start := time.Now()
	defer func() { s.m.ReadLatency.Observe(time.Since(start).Seconds()) }()
	s.watchStream(ctx)
	ctx, cancel := context.WithTimeout(ctx, req.TimeOut())
	defer cancel()
	want := int(min(req.Count(), uint64(1<<30)))
	if s.shutting.Load() {
		<-ctx.Done() // hand out nothing, but do not make numa spin either
		return
	}
	sent := 0
	defer func() { s.m.Read.Add(float64(sent)) }()
	for sent < want {
		batch, next := s.take(want - sent)
		for i, r := range batch {
			select {
			case ch <- s.toNuma(r):
				sent++
			case <-ctx.Done():
				s.untake(batch[i:])
				return
			}
		}
		if sent >= want {
			return
		}
		wait := time.Until(next) // next delayed record due; zero time when none
		if next.IsZero() || wait > time.Hour {
			wait = time.Hour
		}
		if sent > 0 {
			wait = min(wait, s.opts.Linger)
		}
		t := time.NewTimer(max(wait, 0))
		select {
		case <-s.dataCh:
			t.Stop()
		case <-t.C:
			if sent > 0 && (next.IsZero() || time.Now().Before(next)) {
				return // lingered long enough with no new message
			}
		case <-ctx.Done():
			t.Stop()
			return
		}
	}
}

// watchStream notices a new read stream from numa. numaflow-go passes the stream's context to Read,
// so when that context ends numa has gone away (restarted or shutting down): it will never ack or nack
// what it was handed, so those messages are made readable again at once instead of being held until
// their leases end (or, worse, swallowed as duplicates when the broker redelivers them to us).
func (s *Source) watchStream(ctx context.Context) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stream == any(ctx) {
		return
	}
	s.stream = ctx
	context.AfterFunc(ctx, s.numaGone)
}

func (s *Source) numaGone() {
	if s.shutting.Load() {
		return // Shutdown releases whatever is in flight
	}
	s.mu.Lock()
	var rs []*record
	for _, r := range s.recs {
		if r.state == inFlight {
			rs = append(rs, r)
		}
	}
	slices.SortFunc(rs, func(a, b *record) int { return cmp.Compare(b.seq, a.seq) })
	for _, r := range rs { // newest first to the front, so the oldest ends up first
		s.setState(r, buffered)
		s.buffer.pushFront(r)
	}
	s.mu.Unlock()
	if len(rs) > 0 {
		s.log.Warn("numa's read stream ended; its unanswered messages will be read again", "count", len(rs))
		signal(s.dataCh)
	}
}

// take moves up to n readable records (due redeliveries first, then received ones in order) in
// flight. It also returns when the next delayed record is due (zero when none).
func (s *Source) take(n int) ([]*record, time.Time) {
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*record
	for len(out) < n {
		r := s.delayed.popDue(now)
		if r == nil {
			break
		}
		out = append(out, r)
	}
	for len(out) < n {
		r := s.buffer.pop()
		if r == nil {
			break
		}
		out = append(out, r)
	}
	for _, r := range out {
		s.setState(r, inFlight)
		r.emitted++
		if r.emitted > 1 {
			r.deliveries++
		}
		if r.deliveries > 1 {
			s.m.Redelivered.Inc()
		}
	}
	if s.buffer.len() > 0 || s.delayed.dueBy(now) {
		signal(s.dataCh) // more is readable: the next Read must not wait
	}
	return out, s.delayed.nextDue()
}

// untake puts records that could not be sent before the deadline back at the front of the buffer.
func (s *Source) untake(rs []*record) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := len(rs) - 1; i >= 0; i-- {
		r := rs[i]
		r.emitted--
		s.setState(r, buffered)
		s.buffer.pushFront(r)
	}
	signal(s.dataCh)
}

func (s *Source) toNuma(r *record) sourcer.Message {
	m := r.msg
	msg := sourcer.NewMessage(m.Payload, sourcer.NewOffset([]byte(m.ID), s.opts.Partition), m.EventTime)
	if len(m.Keys) > 0 {
		msg = msg.WithKeys(validKeys(m.Keys))
	}
	if len(m.Headers) > 0 {
		msg = msg.WithHeaders(validHeaders(m.Headers))
	}
	return msg
}

// Keys and headers travel as protobuf strings, which must be valid UTF-8: one bad byte from a broker
// would make numaflow-go fail to send the batch and stop its server (and the same message would stop
// it again after every restart). Invalid bytes become U+FFFD; valid strings are passed as they are.
// Payloads are bytes and always pass untouched.
func validKeys(keys []string) []string {
	for i, k := range keys {
		if !utf8.ValidString(k) {
			out := slices.Clone(keys)
			for j := i; j < len(out); j++ {
				out[j] = strings.ToValidUTF8(out[j], "\uFFFD")
			}
			return out
		}
	}
	return keys
}

func validHeaders(h map[string]string) map[string]string {
	for k, v := range h {
		if !utf8.ValidString(k) || !utf8.ValidString(v) {
			out := make(map[string]string, len(h))
			for k, v := range h {
				out[strings.ToValidUTF8(k, "\uFFFD")] = strings.ToValidUTF8(v, "\uFFFD")
			}
			return out
		}
	}
	return h
}

// ---- Ack ----

// Ack commits the offsets at the broker in the background (batched, retried on transient errors up to
// Options.AckRetry) and returns at once; leases stay extended until the commit lands. Unknown offsets
// and repeated acks are fine.
func (s *Source) Ack(ctx context.Context, req sourcer.AckRequest) {
	offsets := req.Offsets()
	var rs []*record
	var orphans []Handle
	s.mu.Lock()
	for _, off := range offsets {
		id := string(off.Value())
		r, ok := s.recs[id]
		if !ok {
			// Not held here: acked twice, released at shutdown, or handed out by an earlier process
			// (numa re-sends acks after a restart).
			s.m.UnknownAcks.Inc()
			if s.dec != nil {
				if h, ok := s.dec.HandleFromID(id); ok {
					orphans = append(orphans, h)
				}
			}
			continue
		}
		switch r.state {
		case buffered: // handed to an earlier numa stream, requeued, now acked: commit it
			s.buffer.remove(r)
		case delayed:
			s.delayed.remove(r)
		case inFlight:
		default:
			continue // already being committed
		}
		s.setState(r, committing)
		rs = append(rs, r)
	}
	s.mu.Unlock()
	if len(rs) > 0 {
		s.acked.Add(int64(len(rs))) // numa is done with them: Pending counts them gone from now on
		s.commit(rs, "ack", func(ctx context.Context, h []Handle) error { return s.d.Ack(ctx, h) }, func(done []*record) {
			s.m.Acked.Add(float64(len(done)))
		})
	}
	if len(orphans) > 0 {
		s.jobs.run(func() {
			failed := s.callBatched(s.bgCtx, "ack", orphans, func(ctx context.Context, h []Handle) error { return s.d.Ack(ctx, h) })
			s.m.Acked.Add(float64(len(orphans) - len(failed)))
		})
	}
}

// commit runs op on the records' handles in the background and forgets them afterwards. Records
// whose commit failed for good are forgotten too: the broker redelivers them once their lease ends
// (at-least-once), which is better than holding them forever.
func (s *Source) commit(rs []*record, op string, call func(context.Context, []Handle) error, done func([]*record)) {
	start := time.Now()
	ran := s.jobs.run(func() {
		handles := make([]Handle, len(rs))
		s.mu.Lock()
		for i, r := range rs {
			handles[i] = r.msg.Handle
		}
		s.mu.Unlock()
		failed := s.callBatched(s.bgCtx, op, handles, call)
		ok := make([]*record, 0, len(rs))
		for i, r := range rs {
			if err, bad := failed[i]; bad {
				if op == "ack" {
					s.m.AckFailed.Inc()
				}
				s.log.Warn(op+" failed; the broker may redeliver the message", "id", r.msg.ID, "error", err)
				continue
			}
			ok = append(ok, r)
		}
		if op == "ack" {
			s.m.AckLatency.Observe(time.Since(start).Seconds())
		}
		if done != nil {
			done(ok)
		}
		s.forget(rs)
	})
	if !ran { // closed: the driver may not be called any more; the broker redelivers after the lease
		s.forget(rs)
	}
}

// callBatched splits handles into chunks of MaxAck, runs call on them with at most AckConcurrency
// calls at once across the adapter, and retries transient failures with backoff for Options.AckRetry.
// It returns the errors of the handles that failed for good, by index.
func (s *Source) callBatched(ctx context.Context, op string, handles []Handle, call func(context.Context, []Handle) error) map[int]error {
	size := s.caps.MaxAck
	if size <= 0 {
		size = len(handles)
	}
	var (
		mu     sync.Mutex
		failed map[int]error
		wg     sync.WaitGroup
	)
	for lo := 0; lo < len(handles); lo += size {
		hi := min(lo+size, len(handles))
		wg.Add(1)
		go func(lo, hi int) {
			defer wg.Done()
			f := s.callRetry(ctx, op, handles[lo:hi], call)
			if len(f) == 0 {
				return
			}
			mu.Lock()
			defer mu.Unlock()
			if failed == nil {
				failed = make(map[int]error)
			}
			for i, err := range f {
				failed[lo+i] = err
			}
		}(lo, hi)
	}
	wg.Wait()
	return failed
}

func (s *Source) callRetry(ctx context.Context, op string, handles []Handle, call func(context.Context, []Handle) error) map[int]error {
	deadline := time.Now().Add(s.opts.AckRetry)
	idx := make([]int, len(handles)) // position of each pending handle in the caller's slice
	for i := range idx {
		idx[i] = i
	}
	var failed map[int]error
	fail := func(i int, err error) {
		if failed == nil {
			failed = make(map[int]error)
		}
		failed[i] = err
	}
	var bo backoff
	for len(idx) > 0 {
		batch := make([]Handle, len(idx))
		for j, i := range idx {
			batch[j] = handles[i]
		}
		select {
		case s.sem <- struct{}{}:
		case <-ctx.Done():
			for _, i := range idx {
				fail(i, ctx.Err())
			}
			return failed
		}
		// Each attempt is bounded: on a silent network a call neither fails nor answers, and only a
		// deadline turns that into an error (and readiness false).
		cctx, ccancel := context.WithTimeout(ctx, callTimeout)
		err := call(cctx, batch)
		ccancel()
		<-s.sem
		if err == nil {
			return failed
		}
		var retry []int
		var be *BatchError
		if errors.As(err, &be) {
			for j, e := range be.Failed {
				if j < 0 || j >= len(idx) {
					continue
				}
				code := classify(s.d, e)
				s.brokerError(op, code, e)
				if code.Transient() {
					retry = append(retry, idx[j])
				} else {
					fail(idx[j], e)
				}
			}
		} else {
			code := classify(s.d, err)
			s.brokerError(op, code, err)
			if code == Unavailable || code == DeadlineExceeded {
				s.setReady(false) // the receivers' probe brings it back
			}
			if code.Transient() {
				retry = idx
			} else {
				for _, i := range idx {
					fail(i, err)
				}
			}
		}
		idx = retry
		if len(idx) == 0 {
			return failed
		}
		wait := bo.next()
		if time.Now().Add(wait).After(deadline) || !sleepCtx(ctx, wait) {
			for _, i := range idx {
				fail(i, fmt.Errorf("%s: gave up retrying: %w", op, err))
			}
			return failed
		}
		// While the broker is unreachable, wait for the receivers' probe to see it back rather than
		// calling it again and again (an outage must cost next to no CPU).
		for !s.Ready() && time.Now().Before(deadline) && !s.shutting.Load() && sleepCtx(ctx, 200*time.Millisecond) {
		}
	}
	return failed
}

// ---- Nack ----

// Nack makes the offsets readable again, honouring NackOptions: Delay (ms) postpones the redelivery,
// MaxDeliveries sends a message that has been delivered that many times to the dead-letter target
// (or the configured fallback) with Reason recorded.
func (s *Source) Nack(ctx context.Context, req sourcer.NackRequest) {
	now := time.Now()
	type release struct {
		rs    []*record
		delay time.Duration
	}
	var releases []release
	type overLimit struct {
		r      *record
		reason string
		delay  time.Duration
	}
	var toDLQ []overLimit
	s.mu.Lock()
	for _, no := range req.Offsets() {
		r, ok := s.recs[string(no.Offset.Value())]
		if !ok || r.state != inFlight {
			continue
		}
		s.m.Nacked.Inc()
		var delay time.Duration
		var reason string
		maxDeliveries := 0
		if o := no.NackOptions; o != nil {
			if o.Delay != nil {
				delay = time.Duration(min(*o.Delay, uint64(time.Duration(1<<62)/time.Millisecond))) * time.Millisecond
			}
			if o.MaxDeliveries != nil {
				maxDeliveries = int(*o.MaxDeliveries)
			}
			if o.Reason != nil {
				reason = *o.Reason
			}
		}
		if maxDeliveries > 0 && r.deliveries >= maxDeliveries {
			s.setState(r, committing)
			toDLQ = append(toDLQ, overLimit{r, fmt.Sprintf("max deliveries (%d) reached after %d deliveries; last nack reason: %s",
				maxDeliveries, r.deliveries, reasonOr(reason)), delay})
			continue
		}
		rs := []*record{r}
		if s.caps.OrderedKeys && len(r.msg.Keys) > 0 {
			// Later messages of the same key must not overtake this one.
			rs = append(rs, s.buffer.removeKey(r.msg.Keys[0])...)
		}
		if s.caps.LocalRedelivery {
			for _, x := range rs {
				s.setState(x, delayed)
				x.due = now.Add(delay)
				s.delayed.push(x)
			}
			continue
		}
		for _, x := range rs {
			s.setState(x, committing)
		}
		releases = append(releases, release{rs: rs, delay: delay})
	}
	s.mu.Unlock()
	if s.caps.LocalRedelivery {
		signal(s.dataCh) // a zero-delay redelivery is readable now
	}
	for _, rel := range releases {
		s.release(rel.rs, rel.delay)
	}
	for _, o := range toDLQ {
		s.deadLetter(o.r, "max_deliveries", o.reason, o.delay)
	}
}

func reasonOr(r string) string {
	if r == "" {
		return "none given"
	}
	return r
}

// release hands records back to the broker, readable again after delay.
func (s *Source) release(rs []*record, delay time.Duration) {
	if s.caps.MaxNackDelay > 0 {
		delay = min(delay, s.caps.MaxNackDelay)
	}
	s.commit(rs, "nack", func(ctx context.Context, h []Handle) error { return s.d.Nack(ctx, h, delay) }, func(done []*record) {
		s.mu.Lock()
		for _, r := range done {
			s.nacks.put(r.msg.ID, r.deliveries)
		}
		s.mu.Unlock()
	})
}

// deadLetter moves r to the driver's dead-letter target, or applies the fallback when there is none.
// r must be in state committing.
func (s *Source) deadLetter(r *record, kind, reason string, delay time.Duration) {
	ran := s.jobs.run(func() {
		err := ErrNoDeadLetter
		if s.dl != nil {
			err = s.dlRetry(s.bgCtx, r, reason)
		}
		switch {
		case err == nil:
			s.m.DeadLettered.WithLabelValues(kind).Inc()
			s.log.Warn("message dead-lettered", "id", r.msg.ID, "reason", reason)
			s.forget([]*record{r})
		case errors.Is(err, ErrNoDeadLetter) && s.opts.Fallback == FallbackDrop:
			s.log.Warn("message dropped: no dead-letter target and DEAD_LETTER_FALLBACK=drop", "id", r.msg.ID, "reason", reason)
			s.commit([]*record{r}, "ack", func(ctx context.Context, h []Handle) error { return s.d.Ack(ctx, h) }, func(done []*record) {
				s.m.Dropped.WithLabelValues(kind).Add(float64(len(done)))
			})
		default:
			if !errors.Is(err, ErrNoDeadLetter) {
				s.log.Error("dead-lettering failed; nacking the message instead", "id", r.msg.ID, "reason", reason, "error", err)
			} else {
				s.log.Warn("message over its limit nacked: no dead-letter target (DEAD_LETTER_FALLBACK=nack)", "id", r.msg.ID, "reason", reason)
			}
			// It will come back and fail the same way: space its returns out by its delivery count
			// (1 s, 2 s, 4 s ... up to 5 min) so it never turns into a hot loop.
			s.release([]*record{r}, max(delay, fallbackDelay(r.deliveries)))
		}
	})
	if !ran {
		s.forget([]*record{r})
	}
}

// callTimeout bounds one Ack, Nack, Extend or DeadLetter attempt.
const callTimeout = 5 * time.Second

// fallbackDelay is the nack delay for a message that could not be dead-lettered, by delivery count.
func fallbackDelay(deliveries int) time.Duration {
	return min(time.Second<<min(max(deliveries-1, 0), 9), 5*time.Minute)
}

func (s *Source) dlRetry(ctx context.Context, r *record, reason string) error {
	deadline := time.Now().Add(s.opts.AckRetry)
	var bo backoff
	for {
		s.sem <- struct{}{}
		cctx, ccancel := context.WithTimeout(ctx, callTimeout)
		err := s.dl.DeadLetter(cctx, r.msg, reason)
		ccancel()
		<-s.sem
		if err == nil || errors.Is(err, ErrNoDeadLetter) {
			return err
		}
		code := classify(s.d, err)
		s.brokerError("dead_letter", code, err)
		wait := bo.next()
		if !code.Transient() || time.Now().Add(wait).After(deadline) || !sleepCtx(ctx, wait) {
			return err
		}
	}
}

// ---- leases ----

func (s *Source) leaseKeeper(ctx context.Context) {
	t := time.NewTicker(s.opts.ExtendEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.extendDue(ctx)
		}
	}
}

// extendDue extends every held record with less than half its lease left. While the broker is
// unreachable it does nothing: the calls would fail, and the receivers' probe notices the recovery.
func (s *Source) extendDue(ctx context.Context) {
	if !s.Ready() {
		return
	}
	now := time.Now()
	half := s.caps.Lease / 2
	var rs []*record
	var handles []Handle
	var gens []int
	s.mu.Lock()
	for _, r := range s.recs {
		if r.maxedOut || r.leaseUntil.Sub(now) > half {
			continue
		}
		if s.caps.MaxExtension > 0 && now.Sub(r.received)+s.caps.Lease > s.caps.MaxExtension {
			r.maxedOut = true
			s.m.LeaseExpired.Inc()
			s.log.Warn("maximum lease extension reached; the broker will redeliver the message", "id", r.msg.ID,
				"held", now.Sub(r.received).Round(time.Second).String())
			continue
		}
		rs = append(rs, r)
		handles = append(handles, r.msg.Handle)
		gens = append(gens, r.gen)
	}
	s.mu.Unlock()
	if len(rs) == 0 {
		return
	}
	failed := s.callBatchedOnce(ctx, "extend", handles, func(c context.Context, h []Handle) error {
		return s.d.Extend(c, h, s.caps.Lease)
	})
	s.mu.Lock()
	n := 0
	for i, r := range rs {
		if _, bad := failed[i]; bad {
			continue
		}
		if r.gen == gens[i] {
			r.leaseUntil = now.Add(s.caps.Lease)
			n++
		}
	}
	s.mu.Unlock()
	s.m.Extensions.Add(float64(n))
}

// callBatchedOnce is callBatched without retries past the next lease-keeper tick.
func (s *Source) callBatchedOnce(ctx context.Context, op string, handles []Handle, call func(context.Context, []Handle) error) map[int]error {
	c, cancel := context.WithTimeout(ctx, max(s.opts.ExtendEvery, time.Second))
	defer cancel()
	return s.callBatched(c, op, handles, call)
}

// ---- Pending, partitions ----

// Pending returns the broker's backlog for the whole source, cached for Options.PendingRefresh and
// answered within about half a second; -1 when unknown.
func (s *Source) Pending(ctx context.Context) int64 {
	s.pmu.Lock()
	if !s.pAt.IsZero() && time.Since(s.pAt) < s.opts.PendingRefresh {
		v := s.pendingNow()
		s.pmu.Unlock()
		return v
	}
	done := s.pRunning
	if done == nil {
		done = make(chan struct{})
		if s.bg.run(func() { s.refreshPending(done) }) {
			s.pRunning = done
		} else {
			close(done) // closed: answer from what we have
		}
	}
	s.pmu.Unlock()
	t := time.NewTimer(500 * time.Millisecond)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
	case <-ctx.Done():
	}
	s.pmu.Lock()
	defer s.pmu.Unlock()
	if s.pAt.IsZero() || time.Since(s.pAt) > 3*s.opts.PendingRefresh {
		return -1 // no reading, or too old to steer an autoscaler
	}
	return s.pendingNow()
}

// pendingNow is the last backlog reading less what numa acked since: those commits are under way
// (a commit that fails shows again at the next reading), new arrivals show at the next reading.
// Caller holds s.pmu.
func (s *Source) pendingNow() int64 {
	if s.pVal < 0 {
		return -1
	}
	return max(0, s.pVal-(s.acked.Load()-s.pAcked))
}

func (s *Source) refreshPending(done chan struct{}) {
	ctx, cancel := context.WithTimeout(s.bgCtx, 10*time.Second)
	defer cancel()
	acked := s.acked.Load()
	v, err := s.d.Backlog(ctx)
	if err != nil {
		s.brokerError("backlog", classify(s.d, err), err)
		v = -1
	}
	if v < 0 {
		v = -1
	}
	s.m.Pending.Set(float64(v))
	s.pmu.Lock()
	s.pVal, s.pAcked, s.pAt, s.pRunning = v, acked, time.Now(), nil
	s.pmu.Unlock()
	close(done)
}

// ActivePartitions is this replica's partition: every offset carries it.
func (s *Source) ActivePartitions(context.Context) []int32 { return []int32{s.opts.Partition} }

// TotalPartitions is unknown (nil): replicas come and go, so no exact count exists.
func (s *Source) TotalPartitions(context.Context) *int32 { return nil }

// ---- shutdown ----

// Shutdown stops receiving, releases buffered messages at once, waits up to Options.ReleaseWait for
// numa to ack what is in flight, releases the rest and flushes pending commits. Reads after it return
// no messages. Idempotent; ctx bounds the whole of it.
func (s *Source) Shutdown(ctx context.Context) {
	s.shutOnce.Do(func() {
		s.shutting.Store(true)
		s.recvCancel()
		waitCtx(ctx, s.recvWG.Wait)
		s.releaseHeld(func(r *record) bool { return r.state == buffered || r.state == delayed })
		wait, cancel := context.WithTimeout(ctx, s.opts.ReleaseWait)
		for wait.Err() == nil && s.count(inFlight) > 0 {
			sleepCtx(wait, 20*time.Millisecond)
		}
		cancel()
		// Whatever numa did not answer (or nacked meanwhile) goes back to the broker now.
		s.releaseHeld(func(r *record) bool { return r.state != committing })
		s.jobs.wait(ctx)
		s.log.Info("source drained", "still_held", s.count(inFlight)+s.count(committing))
	})
}

func (s *Source) count(st state) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.counts[st]
}

// releaseHeld hands the selected records back to the broker, readable at once.
func (s *Source) releaseHeld(sel func(*record) bool) {
	var rs []*record
	s.mu.Lock()
	for _, r := range s.recs {
		if sel(r) {
			rs = append(rs, r)
		}
	}
	for _, r := range rs {
		switch r.state {
		case buffered:
			s.buffer.remove(r)
		case delayed:
			s.delayed.remove(r)
		}
		s.setState(r, committing)
	}
	s.mu.Unlock()
	if len(rs) > 0 {
		s.log.Info("releasing held messages", "count", len(rs))
		s.commit(rs, "release", func(ctx context.Context, h []Handle) error { return s.d.Nack(ctx, h, 0) }, nil)
	}
}

// Kill stops all background work and closes the driver without releasing or committing anything, as
// if the process had died (kill -9): held messages come back only when their leases end. For tests.
func (s *Source) Kill(ctx context.Context) {
	s.closeOnce.Do(func() {
		s.shutting.Store(true)
		s.jobs.close()
		s.bg.close()
		s.recvCancel()
		s.bgCancel()
		s.recvWG.Wait()
		s.jobs.wait(ctx)
		s.bg.wait(ctx)
		s.closeErr = s.d.Close(ctx)
	})
}

// Close calls Shutdown, waits for every background goroutine and closes the driver. Idempotent.
func (s *Source) Close(ctx context.Context) error {
	s.closeOnce.Do(func() {
		s.Shutdown(ctx)
		s.jobs.close()
		s.jobs.wait(ctx)
		s.bg.close()
		s.bgCancel()
		s.bg.wait(ctx)
		s.closeErr = s.d.Close(ctx)
	})
	return s.closeErr
}

// ---- helpers ----

func (s *Source) brokerError(op string, code Code, err error) {
	if code == Canceled {
		return
	}
	s.m.BrokerErrors.WithLabelValues(op, code.String()).Inc()
	// One line per operation and kind every 5 s at most: an outage must not flood the logs (the
	// metric counts every error).
	key := op + "/" + code.String()
	s.logMu.Lock()
	last, suppressed := s.logged[key], s.suppressed[key]
	if time.Since(last) < 5*time.Second {
		s.suppressed[key]++
		s.logMu.Unlock()
		return
	}
	s.logged[key] = time.Now()
	s.suppressed[key] = 0
	s.logMu.Unlock()
	level := slog.LevelWarn
	if !code.Transient() {
		level = slog.LevelError
	}
	s.log.Log(s.bgCtx, level, "broker call failed", "op", op, "kind", code.String(), "error", err,
		"similar_errors_suppressed", suppressed)
}

func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// waitCtx runs wait (a WaitGroup's Wait) but gives up when ctx ends.
func waitCtx(ctx context.Context, wait func()) {
	done := make(chan struct{})
	go func() { wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
	}
}
