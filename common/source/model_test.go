package source_test

// The model test: thousands of random schedules of what numa and the broker may do to a source
// (publish, read with read-ahead, ack or nack any subset in any order, nack options, slow and failing
// broker calls, lost receive responses, outages, a restarted numa stream, shutdown), run against
// memsource with small budgets, checking after every step what a user relies on:
//
//   - no message is lost: each one is acked by numa, dead-lettered, or still at the broker after Close;
//   - numa is never handed a message it holds unanswered (two copies in flight);
//   - no stall: while the broker has readable messages and numa reads and answers, messages arrive
//     within 2 leases + 2 s;
//   - budgets: buffered + in flight <= Prefetch and their bytes <= PrefetchBytes (one oversize message
//     alone is allowed); locally delayed messages stay within the same budgets of their own;
//   - key order (OrderedKeys): a message is read (the first time or again) only after every earlier
//     message of its key was acked, dead-lettered, or is in flight at numa;
//   - MaxDeliveries: a message is dead-lettered or dropped for it only once numa has read it that often
//     (unless a lost receive response made the broker count a delivery numa never saw);
//   - Pending is never below what the adapter holds, nor below the broker's backlog after a quiet
//     period.
//
// A failing schedule prints its seed and the command that replays it:
//
//	go test ./source -run TestModel -model.seed=N -v
//
// A seed fixes every decision of the schedule, not the goroutine timing: a timing-dependent failure may
// need a few runs to show again (add -count=5). -model.n=5000 runs a long search (no time budget),
// -model.ignore=bytes,dup looks past known violations, -model.stacks dumps goroutines on a violation.
//
// The adapter's internals are seen only through snapshot() (inspect_test.go). Records it holds back
// and cannot hand to numa yet (e.g. behind a delayed message of the same key) must be reported as
// Delayed, not Buffered: the stall check treats Buffered records as readable.

import (
	"cmp"
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"runtime"
	"slices"
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

var (
	modelSeed   = flag.Uint64("model.seed", 0, "model test: replay only the schedule with this seed")
	modelN      = flag.Int("model.n", 150, "model test: number of schedules (seeds model.start ...)")
	modelStart  = flag.Uint64("model.start", 1, "model test: first seed")
	modelPar    = flag.Int("model.par", 12, "model test: schedules run at once")
	modelBudget = flag.Duration("model.budget", 0, "model test: stop starting schedules after this long "+
		"(default 45s unless -model.n is given; negative: no limit)")
	modelIgnore = flag.String("model.ignore", "", "model test: comma-separated invariants not to check "+
		"(prefetch, bytes, delayed, dup, order, stall, pending, lost, early, release, read)")
	modelStacks = flag.Bool("model.stacks", false, "model test: add every goroutine's stack to a failing trace")
	modelTrace  = flag.Bool("model.trace", false, "model test: print the trace of passing schedules too")
)

func TestModel(t *testing.T) {
	if *modelSeed != 0 {
		r := runSchedule(*modelSeed)
		if r.err != nil || *modelTrace {
			t.Log(r.report())
		}
		if r.err != nil {
			t.Fatalf("seed %d: %v", *modelSeed, r.err)
		}
		return
	}
	budget := *modelBudget
	if budget == 0 {
		budget = 45 * time.Second
		flag.Visit(func(f *flag.Flag) {
			if f.Name == "model.n" {
				budget = -1
			}
		})
	}
	start := time.Now()
	seeds := make(chan uint64)
	var (
		mu      sync.Mutex
		failed  []scheduleResult
		ran     atomic.Int64
		longest atomic.Int64
	)
	var wg sync.WaitGroup
	for range max(*modelPar, 1) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for seed := range seeds {
				r := runSchedule(seed)
				ran.Add(1)
				if d := int64(r.took); d > longest.Load() {
					longest.Store(d)
				}
				if r.err != nil {
					mu.Lock()
					failed = append(failed, r)
					mu.Unlock()
				}
			}
		}()
	}
	for i := range *modelN {
		if budget > 0 && time.Since(start) > budget {
			break
		}
		seeds <- *modelStart + uint64(i)
	}
	close(seeds)
	wg.Wait()
	t.Logf("%d schedules in %s (longest %s), %d failed", ran.Load(), time.Since(start).Round(time.Millisecond),
		time.Duration(longest.Load()).Round(time.Millisecond), len(failed))
	slices.SortFunc(failed, func(a, b scheduleResult) int { return cmp.Compare(a.seed, b.seed) })
	byInvariant := make(map[string][]uint64)
	for _, r := range failed {
		inv, _, _ := strings.Cut(r.err.Error(), ":")
		byInvariant[inv] = append(byInvariant[inv], r.seed)
	}
	for inv, seeds := range byInvariant {
		t.Logf("invariant %q broken by %d schedules, e.g. seeds %v", inv, len(seeds), seeds[:min(len(seeds), 8)])
	}
	for i, r := range failed {
		if i == 0 {
			t.Log(r.report())
		}
		if i == 20 {
			t.Errorf("... and %d more failing seeds", len(failed)-i)
			break
		}
		t.Errorf("seed %d (%s): %v\n    replay: go test ./source -run TestModel -model.seed=%d -v", r.seed, r.cfg, r.err, r.seed)
	}
}

// ---- schedule configuration ----

type modelConfig struct {
	Prefetch        int
	PrefetchBytes   int64
	MaxPayload      int // largest payload published (some exceed PrefetchBytes)
	MaxMessageBytes int // 0: the default (nothing is too large)
	MaxReceive      int
	RecvConcurrency int
	MaxAnswer       int // 0: a receive gets as many as it asks for
	FullReceive     int
	Lease           time.Duration
	Wait            time.Duration // memsource long poll
	LocalRedelivery bool
	OrderedKeys     bool
	DeadLetter      bool
	Fallback        source.Fallback
	Keys            int // distinct keys; 0: no keys
	Steps           int
}

func (c modelConfig) String() string {
	return fmt.Sprintf("prefetch=%d bytes=%d maxPayload=%d maxMsg=%d maxRecv=%d recvConc=%d maxAnswer=%d fullRecv=%d lease=%s wait=%s local=%t ordered=%t dlq=%t fallback=%s keys=%d steps=%d",
		c.Prefetch, c.PrefetchBytes, c.MaxPayload, c.MaxMessageBytes, c.MaxReceive, c.RecvConcurrency, c.MaxAnswer, c.FullReceive, c.Lease, c.Wait,
		c.LocalRedelivery, c.OrderedKeys, c.DeadLetter, c.Fallback, c.Keys, c.Steps)
}

func genConfig(r *rand.Rand) modelConfig {
	c := modelConfig{
		Prefetch:        2 + r.IntN(19),
		PrefetchBytes:   int64(64 + r.IntN(960)),
		MaxReceive:      1 + r.IntN(10),
		RecvConcurrency: 1 + r.IntN(8),
		Lease:           time.Duration(300+r.IntN(701)) * time.Millisecond,
		Wait:            time.Duration(50+r.IntN(250)) * time.Millisecond,
		LocalRedelivery: r.IntN(2) == 0,
		OrderedKeys:     r.IntN(2) == 0,
		DeadLetter:      r.IntN(2) == 0,
		Fallback:        source.FallbackNack,
		Keys:            r.IntN(4),
		Steps:           15 + r.IntN(31),
	}
	if r.IntN(3) == 0 {
		c.Fallback = source.FallbackDrop
	}
	c.MaxPayload = int(c.PrefetchBytes) * (50 + r.IntN(101)) / 100 // 0.5x .. 1.5x the byte budget
	if c.DeadLetter && r.IntN(3) == 0 {
		c.MaxMessageBytes = c.MaxPayload * 9 / 10 // the largest few are too large: dead-lettered
	}
	if r.IntN(3) == 0 {
		// A broker that answers with fewer than asked while more wait (Pub/Sub's Pull), and a driver
		// that may say how few make a receive full.
		c.MaxAnswer = 1 + r.IntN(c.MaxReceive)
		c.FullReceive = r.IntN(c.MaxAnswer + 1)
	}
	return c
}

// ---- the model ----

type mstate int

const (
	unread   mstate = iota // never handed to numa
	atNuma                 // handed to numa, unanswered
	nacked                 // numa nacked it; not read since
	orphaned               // at numa when its stream ended (restart); not read since
	acked                  // numa acked it
)

func (s mstate) String() string {
	return [...]string{"unread", "at-numa", "nacked", "orphaned", "acked"}[s]
}

type mmsg struct {
	id    string
	seq   int
	key   string
	size  int
	state mstate
	reads int
	// mayVanish: the adapter may legitimately remove it without numa acking it (too large, or nacked
	// with MaxDeliveries: dead-lettered, or dropped by FallbackDrop).
	mayVanish bool
	tooLarge  bool
	// minMaxDel is the smallest MaxDeliveries numa nacked it with (0: none): it may be dead-lettered or
	// dropped for it only once numa has read it that often.
	minMaxDel int
}

type scheduleResult struct {
	seed  uint64
	cfg   modelConfig
	err   error
	trace []string
	took  time.Duration
}

func (r scheduleResult) report() string {
	var b strings.Builder
	fmt.Fprintf(&b, "seed %d: %s\n", r.seed, r.cfg)
	tr := r.trace
	if len(tr) > 80 {
		fmt.Fprintf(&b, "  ... %d earlier steps\n", len(tr)-80)
		tr = tr[len(tr)-80:]
	}
	for _, l := range tr {
		b.WriteString("  " + l + "\n")
	}
	if r.err != nil {
		fmt.Fprintf(&b, "FAILED: %v\nreplay: go test ./source -run TestModel -model.seed=%d -v\n", r.err, r.seed)
	}
	return b.String()
}

type model struct {
	cfg   modelConfig
	r     *rand.Rand
	b     *memsource.Broker
	s     *source.Source
	start time.Time

	msgs  map[string]*mmsg
	order []*mmsg // publish order
	out   map[string]*mmsg

	stream       context.Context
	endStream    context.CancelFunc
	faulty       bool      // a fault or outage is (or may be) active
	healedAt     time.Time // when faults were last cleared
	everFaulty   bool      // a fault or outage happened (a given-up ack leaves a lease behind)
	lostReceives bool      // a receive's response was lost: the broker counted deliveries numa never saw
	maxNackDelay time.Duration

	trace []string
	err   error
}

const queueName = "q"

func (m *model) logf(format string, args ...any) {
	m.trace = append(m.trace, fmt.Sprintf("%6dms ", time.Since(m.start).Milliseconds())+fmt.Sprintf(format, args...))
}

// ignored reports whether the invariant was switched off with -model.ignore.
func ignored(invariant string) bool {
	return slices.Contains(strings.Split(*modelIgnore, ","), invariant)
}

// fail records a violation of invariant (the first one ends the schedule).
func (m *model) fail(invariant, format string, args ...any) {
	if ignored(invariant) {
		m.logf("ignored violation (%s): %s", invariant, fmt.Sprintf(format, args...))
		return
	}
	format = invariant + ": " + format
	if m.err == nil {
		m.err = fmt.Errorf(format, args...)
		m.logf("VIOLATION: %v", m.err)
		if *modelStacks {
			buf := make([]byte, 1<<20)
			m.logf("goroutines:\n%s", buf[:runtime.Stack(buf, true)])
		}
	}
}

func runSchedule(seed uint64) (res scheduleResult) {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	cfg := genConfig(r)
	m := &model{cfg: cfg, r: r, b: memsource.NewBroker(), start: time.Now(),
		msgs: make(map[string]*mmsg), out: make(map[string]*mmsg)}
	defer func() {
		res = scheduleResult{seed: seed, cfg: cfg, err: m.err, trace: m.trace, took: time.Since(m.start)}
	}()
	m.b.CreateQueue(queueName)
	d := memsource.NewDriver(m.b, memsource.Options{
		Queue: queueName, Lease: cfg.Lease, MaxReceive: cfg.MaxReceive, DeadLetter: cfg.DeadLetter, Wait: cfg.Wait,
		OrderedKeys: cfg.OrderedKeys, LocalRedelivery: cfg.LocalRedelivery, ReceiveConcurrency: cfg.RecvConcurrency,
		MaxAck: 1 + r.IntN(10), AckConcurrency: 1 + r.IntN(3), MaxAnswer: cfg.MaxAnswer, FullReceive: cfg.FullReceive,
	})
	s, err := source.New(d, source.Options{
		ReadBatchSize: 5, Prefetch: cfg.Prefetch, PrefetchBytes: cfg.PrefetchBytes, MaxMessageBytes: cfg.MaxMessageBytes,
		Fallback: cfg.Fallback, AckRetry: time.Second, PendingRefresh: 50 * time.Millisecond, ReleaseWait: 200 * time.Millisecond,
	}, nil, nil)
	if err != nil {
		m.fail("setup", "New: %v", err)
		return
	}
	m.s = s
	m.stream, m.endStream = context.WithCancel(context.Background())
	closed := false
	defer func() {
		if !closed {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			_ = s.Close(ctx)
			cancel()
		}
		m.endStream()
	}()

	for i := 0; i < cfg.Steps && m.err == nil; i++ {
		m.step()
		m.check()
	}
	if m.err != nil {
		return
	}
	m.heal()
	m.drain()
	if m.err != nil {
		return
	}
	// Leave a batch unanswered now and then: Close must give it back to the broker.
	if r.IntN(2) == 0 {
		m.read(1+r.IntN(5), 50*time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	if r.IntN(2) == 0 {
		m.logf("shutdown (unanswered: %d)", len(m.out))
		s.Shutdown(ctx)
		if got := numatest.ReadFrom(m.stream, s, 5, 50*time.Millisecond); len(got) > 0 {
			m.fail("release", "a Read after Shutdown handed out %d messages", len(got))
		}
	}
	m.logf("close (unanswered: %d)", len(m.out))
	if err := s.Close(ctx); err != nil {
		m.fail("release", "Close: %v", err)
	}
	cancel()
	closed = true
	m.final()
	return
}

// step runs one random action.
func (m *model) step() {
	r := m.r
	switch n := r.IntN(100); {
	case n < 20:
		m.publish(1 + r.IntN(6))
	case n < 45:
		m.read(1+r.IntN(5), time.Duration(20+r.IntN(80))*time.Millisecond)
	case n < 62:
		m.ackSome()
	case n < 70:
		m.nackSome()
	case n < 76:
		m.injectFault()
	case n < 81:
		m.heal()
	case n < 83:
		m.logf("outage")
		m.b.SetDown(true)
		m.faulty, m.everFaulty = true, true
	case n < 86:
		m.restart()
	case n < 95:
		d := time.Duration(10+r.IntN(int(m.cfg.Lease/time.Millisecond))) * time.Millisecond
		m.logf("wait %s", d)
		time.Sleep(d) // lets time pass (leases, delays): not a synchronisation
	default:
		m.settle()
	}
}

func (m *model) publish(n int) {
	pubs := make([]memsource.Publication, n)
	for i := range pubs {
		size := 1 + m.r.IntN(max(m.cfg.MaxPayload/2, 1))
		if m.r.IntN(6) == 0 {
			size = 1 + m.r.IntN(m.cfg.MaxPayload) // now and then up to 1.5x the byte budget
		}
		key := ""
		if m.cfg.Keys > 0 && m.r.IntN(5) > 0 {
			key = string(rune('a' + m.r.IntN(m.cfg.Keys)))
		}
		pubs[i] = memsource.Publication{Payload: make([]byte, size), Key: key}
	}
	ids, err := m.b.PublishIDs(queueName, pubs...)
	if err != nil {
		m.fail("setup", "publish: %v", err)
		return
	}
	var desc []string
	for i, id := range ids {
		mm := &mmsg{id: id, seq: len(m.order), key: pubs[i].Key, size: len(pubs[i].Payload)}
		// What the adapter counts against MaxMessageBytes: the message as memsource makes it.
		asRead := &source.Message{ID: id, Payload: pubs[i].Payload, Headers: map[string]string{"x-mem-id": id}}
		if mm.key != "" {
			asRead.Keys = []string{mm.key}
		}
		if m.cfg.MaxMessageBytes > 0 && source.WireSize(asRead) > int64(m.cfg.MaxMessageBytes) {
			mm.mayVanish, mm.tooLarge = true, true
		}
		m.msgs[id] = mm
		m.order = append(m.order, mm)
		desc = append(desc, fmt.Sprintf("%s(%s,%dB)", id, cmp.Or(mm.key, "-"), mm.size))
	}
	m.logf("publish %s", strings.Join(desc, " "))
}

// read is one ReadFn call of numa on the current stream. It checks what it gets.
func (m *model) read(n int, timeout time.Duration) int {
	start := time.Now()
	msgs := numatest.ReadFrom(m.stream, m.s, n, timeout)
	took := time.Since(start)
	got := make([]string, len(msgs))
	for i, msg := range msgs {
		got[i] = string(msg.Offset().Value())
	}
	m.logf("read n=%d timeout=%s -> %v in %s (numa holds %d)", n, timeout, got, took.Round(time.Millisecond), len(m.out))
	if took > timeout+time.Second {
		m.fail("read", "Read(timeout %s) took %s", timeout, took)
	}
	if len(msgs) > n {
		m.fail("read", "Read(count %d) returned %d messages", n, len(msgs))
	}
	for _, id := range got {
		mm := m.msgs[id]
		if mm == nil {
			m.fail("read", "read unknown offset %q", id)
			continue
		}
		if mm.state == atNuma {
			m.fail("dup", "%s handed to numa while numa still holds it unanswered (two copies in flight)", id)
			continue
		}
		if m.cfg.OrderedKeys && mm.key != "" {
			for _, e := range m.order[:mm.seq] {
				if e.key != mm.key || e.state == acked || e.state == atNuma || e.state == orphaned {
					continue
				}
				if !m.b.Has(queueName, e.id) {
					continue // dead-lettered or dropped
				}
				m.fail("order", "key %q out of order: %s read (read %d times before) while the earlier %s is %s", mm.key, id, mm.reads, e.id, e.state)
			}
		}
		mm.state = atNuma
		mm.reads++
		m.out[id] = mm
	}
	return len(msgs)
}

func (m *model) pickOut(p float64) []*mmsg {
	var sel []*mmsg
	for _, mm := range m.out {
		if m.r.Float64() < p {
			sel = append(sel, mm)
		}
	}
	slices.SortFunc(sel, func(a, b *mmsg) int { return cmp.Compare(a.seq, b.seq) })
	m.r.Shuffle(len(sel), func(i, j int) { sel[i], sel[j] = sel[j], sel[i] })
	return sel
}

func offsetOf(mm *mmsg) sourcer.Offset { return sourcer.NewOffset([]byte(mm.id), 0) }

func (m *model) ackSome() {
	sel := m.pickOut(0.3 + 0.7*m.r.Float64())
	if len(sel) == 0 {
		return
	}
	ids := make([]string, len(sel))
	offs := make([]sourcer.Offset, len(sel))
	for i, mm := range sel {
		ids[i], offs[i] = mm.id, offsetOf(mm)
		mm.state = acked
		delete(m.out, mm.id)
	}
	// numa (main) re-sends acks: now and then an offset acked before rides along.
	if m.r.IntN(8) == 0 {
		for _, mm := range m.order {
			if mm.state == acked && m.out[mm.id] == nil {
				offs = append(offs, offsetOf(mm))
				ids = append(ids, mm.id+"(again)")
				break
			}
		}
	}
	if m.r.IntN(2) == 0 {
		m.logf("ack %v", ids)
		m.s.Ack(context.Background(), numatest.AckRequest(offs...))
		return
	}
	m.logf("ack one by one %v", ids)
	for _, o := range offs {
		m.s.Ack(context.Background(), numatest.AckRequest(o))
	}
}

func (m *model) nackSome() {
	sel := m.pickOut(0.2 + 0.5*m.r.Float64())
	if len(sel) == 0 {
		return
	}
	var desc []string
	items := make([]sourcer.NackOffset, len(sel))
	for i, mm := range sel {
		var o sourcer.NackOptions
		var d string
		switch k := m.r.IntN(10); {
		case k < 3: // no options
		case k < 8:
			ms := uint64(m.r.IntN(int(m.cfg.Lease / time.Millisecond)))
			o.Delay = &ms
		default: // a long delay: must not hold up the rest of the queue
			ms := uint64(2000 + m.r.IntN(2000))
			o.Delay = &ms
		}
		if o.Delay != nil {
			d = fmt.Sprintf(" delay=%dms", *o.Delay)
			m.maxNackDelay = max(m.maxNackDelay, time.Duration(*o.Delay)*time.Millisecond)
		}
		if m.r.IntN(4) == 0 {
			md := uint32(1 + m.r.IntN(3))
			o.MaxDeliveries = &md
			reason := "model"
			o.Reason = &reason
			mm.mayVanish = true
			if mm.minMaxDel == 0 || int(md) < mm.minMaxDel {
				mm.minMaxDel = int(md)
			}
			d += fmt.Sprintf(" max=%d", md)
		}
		items[i] = sourcer.NackOffset{Offset: offsetOf(mm), NackOptions: &o}
		desc = append(desc, mm.id+d)
		mm.state = nacked
		delete(m.out, mm.id)
	}
	m.logf("nack %v", desc)
	m.s.Nack(context.Background(), numatest.NackRequest(items...))
}

func (m *model) injectFault() {
	r := m.r
	ops := []string{memsource.OpReceive, memsource.OpAck, memsource.OpNack, memsource.OpExtend,
		memsource.OpDeadLetter, memsource.OpBacklog}
	op := ops[r.IntN(len(ops))]
	var f memsource.Fault
	switch k := r.IntN(10); {
	case k < 4:
		f.Err = memsource.ErrUnavailable
	case k < 5:
		f.Err = memsource.ErrThrottled
	case k < 6 && op != memsource.OpReceive && op != memsource.OpBacklog:
		f.Err = memsource.ErrDenied // permanent: the call is given up
	case k < 8 || op != memsource.OpReceive:
		f.Latency = time.Duration(10+r.IntN(200)) * time.Millisecond
	default:
		f.LoseResponse = true
		m.lostReceives = true
	}
	if r.IntN(2) == 0 {
		f.Times = 1 + r.IntN(5)
	}
	m.logf("fault %s %+v", op, f)
	m.b.SetFault(op, f)
	m.faulty, m.everFaulty = true, true
}

func (m *model) heal() {
	m.logf("heal")
	m.b.ClearFaults()
	m.b.SetDown(false)
	if m.faulty {
		m.healedAt = time.Now()
	}
	m.faulty = false
}

// restart is numa's read stream restarting: a Read on a new stream, then the old stream ends. What
// numa held is forgotten (never answered).
func (m *model) restart() {
	old := m.endStream
	for id, mm := range m.out {
		mm.state = orphaned
		delete(m.out, id)
	}
	m.stream, m.endStream = context.WithCancel(context.Background())
	m.logf("restart numa's stream")
	m.read(1+m.r.IntN(5), time.Duration(20+m.r.IntN(80))*time.Millisecond)
	old()
}

// stallBound is how long numa may go without a message while the broker has readable ones.
func (m *model) stallBound() time.Duration { return 2*m.cfg.Lease + 2*time.Second }

// readable reports whether messages are there to be read: readable at the broker, or buffered here.
func (m *model) readable() (int, source.Snapshot) {
	snap := source.SnapshotOf(m.s)
	return m.b.Readable(queueName, m.cfg.OrderedKeys) + snap.Buffered, snap
}

// settle heals the broker, answers everything numa holds, checks that readable messages are read
// within the stall bound, then that Pending covers the backlog once things are quiet.
func (m *model) settle() {
	m.heal()
	m.ackAll()
	m.expectProgress()
	if m.err != nil {
		return
	}
	m.ackAll()
	// Quiet period: commits land, the cached backlog goes stale.
	deadline := time.Now().Add(3 * time.Second)
	for source.SnapshotOf(m.s).Committing > 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(250 * time.Millisecond)
	snap := source.SnapshotOf(m.s)
	p := m.s.Pending(context.Background())
	backlog := m.b.Len(queueName)
	held := snap.Buffered + snap.InFlight + snap.Delayed
	m.logf("pending %d (broker backlog %d, held %d)", p, backlog, held)
	if p >= 0 && p < int64(held) {
		m.fail("pending", "Pending %d is below what the source itself holds (%d)", p, held)
	}
	if p >= 0 && p < int64(backlog) && snap.Committing == 0 {
		m.fail("pending", "Pending %d is below the broker's backlog %d after a quiet period", p, backlog)
	}
}

func (m *model) ackAll() {
	if len(m.out) == 0 {
		return
	}
	var offs []sourcer.Offset
	var ids []string
	for _, mm := range m.order {
		if m.out[mm.id] != nil {
			offs = append(offs, offsetOf(mm))
			ids = append(ids, mm.id)
			mm.state = acked
			delete(m.out, mm.id)
		}
	}
	m.logf("ack all %v", ids)
	m.s.Ack(context.Background(), numatest.AckRequest(offs...))
}

// expectProgress: numa reads and answers; if anything is readable, a message must arrive within the
// stall bound.
func (m *model) expectProgress() {
	n, _ := m.readable()
	if n == 0 {
		return
	}
	start := time.Now()
	for {
		if m.read(5, 100*time.Millisecond) > 0 || m.err != nil {
			return
		}
		n, snap := m.readable()
		if n == 0 {
			return
		}
		if time.Since(start) > m.stallBound() && time.Since(m.healedAt) > m.stallBound() {
			m.fail("stall", " %d messages readable (broker %d, buffered %d; delayed %d, in flight %d, committing %d) but none read for %s",
				n, n-snap.Buffered, snap.Buffered, snap.Delayed, snap.InFlight, snap.Committing, time.Since(start).Round(time.Millisecond))
			return
		}
	}
}

// drain runs numa as usual (read, ack all) with the broker healthy until nothing is readable and
// nothing is held, or no more can come within the bounds.
func (m *model) drain() {
	m.logf("drain")
	last := time.Now()
	// Delayed messages (nacked with a delay, or after a failed dead-letter) become readable later.
	quiet := m.stallBound() + m.maxNackDelay + 2*time.Second
	for m.err == nil {
		got := m.read(10, 100*time.Millisecond)
		m.check()
		m.ackAll()
		if got > 0 {
			last = time.Now()
			continue
		}
		n, snap := m.readable()
		switch {
		case n > 0 && time.Since(last) > m.stallBound() && time.Since(m.healedAt) > m.stallBound():
			m.fail("stall", "while draining: %d readable (buffered %d), delayed %d, committing %d, none read for %s",
				n, snap.Buffered, snap.Delayed, snap.Committing, time.Since(last).Round(time.Millisecond))
			return
		case n == 0 && snap.Delayed == 0 && snap.Committing == 0 && m.b.Len(queueName) == m.waitingAtBroker():
			return
		case time.Since(last) > quiet:
			m.logf("drain ends: broker still holds %d (not readable yet)", m.b.Len(queueName))
			return
		}
	}
}

// waitingAtBroker counts messages the broker holds that numa did not ack and that may legitimately
// still wait there (nacked with a delay, or a dead-letter fallback): anything else should have been read.
func (m *model) waitingAtBroker() int {
	n := 0
	for _, mm := range m.order {
		if mm.state != acked && m.b.Has(queueName, mm.id) && (mm.state == nacked || mm.mayVanish) {
			n++
		}
	}
	return n
}

// check verifies the adapter's budgets and in-flight set after a step.
func (m *model) check() {
	snap := source.SnapshotOf(m.s)
	c := m.cfg
	if held := snap.Buffered + snap.InFlight; held > c.Prefetch {
		m.fail("prefetch", "holds %d messages (buffered %d + in flight %d) with Prefetch %d", held, snap.Buffered, snap.InFlight, c.Prefetch)
	} else if snap.HeldBytes > c.PrefetchBytes && held > 1 {
		m.fail("bytes", "holds %d bytes in %d messages with PrefetchBytes %d", snap.HeldBytes, held, c.PrefetchBytes)
	}
	if snap.Delayed > c.Prefetch {
		m.fail("delayed", "delays %d messages locally with Prefetch %d", snap.Delayed, c.Prefetch)
	} else if snap.DelayedBytes > c.PrefetchBytes && snap.Delayed > 1 {
		m.fail("delayed", "delays %d bytes in %d messages locally with PrefetchBytes %d", snap.DelayedBytes, snap.Delayed, c.PrefetchBytes)
	}
	for i := 1; i < len(snap.InFlightIDs); i++ {
		if snap.InFlightIDs[i] == snap.InFlightIDs[i-1] {
			m.fail("dup", "message %s is in flight twice", snap.InFlightIDs[i])
		}
	}
}

// final checks after Close that no message was lost.
func (m *model) final() {
	var lost []string
	for _, mm := range m.order {
		if mm.state == acked || mm.mayVanish || m.b.Has(queueName, mm.id) {
			continue
		}
		lost = append(lost, mm.id+"("+mm.state.String()+")")
	}
	if len(lost) > 0 {
		m.fail("lost", " %v are gone from the broker, but numa never acked them and none may be dead-lettered or dropped", lost)
	}
	// Dead-lettered or dropped for MaxDeliveries before numa had read it that often: a delivery numa
	// never saw was counted (unless a lost receive response made the broker count one).
	var early []string
	for _, mm := range m.order {
		if mm.state == acked || mm.tooLarge || mm.minMaxDel == 0 || m.b.Has(queueName, mm.id) || m.lostReceives {
			continue
		}
		if mm.reads < mm.minMaxDel {
			early = append(early, fmt.Sprintf("%s(read %d times, MaxDeliveries %d)", mm.id, mm.reads, mm.minMaxDel))
		}
	}
	if len(early) > 0 {
		m.fail("early", "%v were dead-lettered or dropped before numa had read them MaxDeliveries times", early)
	}
	if !m.everFaulty {
		if n, _ := m.b.Leased(queueName); n > 0 {
			var desc []string
			for _, id := range m.b.LeasedIDs(queueName) {
				desc = append(desc, fmt.Sprintf("%s(%s, %d deliveries)", id, m.msgs[id].state, m.b.Deliveries(queueName, id)))
			}
			m.fail("release", "after Close the broker still has %d messages leased: held messages were not released: %v", n, desc)
		}
	}
	m.logf("done: %d published, %d acked by numa, %d dead-lettered, %d still at the broker",
		len(m.order), countState(m.order, acked), len(m.b.DeadLetters(queueName)), m.b.Len(queueName))
}

func countState(ms []*mmsg, st mstate) int {
	n := 0
	for _, mm := range ms {
		if mm.state == st {
			n++
		}
	}
	return n
}
