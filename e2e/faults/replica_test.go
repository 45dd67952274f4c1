package faults

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/numaflow-connectors/sources/common/numatest"
	"github.com/numaflow-connectors/sources/common/proctest"
)

// ---- payloads ----

// makePayloads returns n unique payloads of 100-200 bytes: a 7-digit index, a colon, filler.
func makePayloads(n int, rng *rand.Rand) [][]byte {
	const letters = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
	out := make([][]byte, n)
	for i := range out {
		size := 100 + rng.IntN(101)
		b := make([]byte, size)
		copy(b, fmt.Sprintf("%07d:", i))
		for j := 8; j < size; j++ {
			b[j] = letters[rng.IntN(len(letters))]
		}
		out[i] = b
	}
	return out
}

// indexOf returns the index a payload of makePayloads carries.
func indexOf(p []byte) (int, bool) {
	if len(p) < 8 || p[7] != ':' {
		return 0, false
	}
	i, err := strconv.Atoi(string(p[:7]))
	return i, err == nil
}

// newRand returns a seeded generator and logs the seed, so a failing run can be replayed (FAULTS_SEED).
func newRand(t *testing.T) *rand.Rand {
	seed := uint64(time.Now().UnixNano())
	if s, err := strconv.ParseUint(os.Getenv("FAULTS_SEED"), 10, 64); err == nil {
		seed = s
	}
	t.Logf("seed %d (FAULTS_SEED replays it)", seed)
	return rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
}

// ---- ledger: every delivery the test's clients saw ----

type delivery struct {
	at      time.Time
	replica int
	acked   time.Time // when the source confirmed the ack of this delivery (zero: never)
}

type ledger struct {
	mu      sync.Mutex
	n       int
	dels    [][]delivery
	unique  int
	total   int
	unknown int
	byRep   map[int]int
}

func newLedger(n int) *ledger {
	return &ledger{n: n, dels: make([][]delivery, n), byRep: map[int]int{}}
}

// record notes a batch read by replica and returns the message indices in it.
func (l *ledger) record(replica int, msgs []numatest.Message) []int {
	return l.recordAt(replica, msgs, time.Now())
}

func (l *ledger) recordAt(replica int, msgs []numatest.Message, now time.Time) []int {
	l.mu.Lock()
	defer l.mu.Unlock()
	idx := make([]int, 0, len(msgs))
	for _, m := range msgs {
		i, ok := indexOf(m.Payload)
		if !ok || i >= l.n {
			l.unknown++
			continue
		}
		if len(l.dels[i]) == 0 {
			l.unique++
		}
		l.dels[i] = append(l.dels[i], delivery{at: now, replica: replica})
		l.total++
		l.byRep[replica]++
		idx = append(idx, i)
	}
	return idx
}

func (l *ledger) uniqueCount() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.unique
}

func (l *ledger) complete() bool { return l.uniqueCount() == l.n }

// duplicates is deliveries beyond the first, over every message.
func (l *ledger) duplicates() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.total - l.unique
}

func (l *ledger) missing() []int {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []int
	for i, d := range l.dels {
		if len(d) == 0 {
			out = append(out, i)
		}
	}
	return out
}

// perReplica is how many deliveries each replica made.
func (l *ledger) perReplica() map[int]int {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := map[int]int{}
	for k, v := range l.byRep {
		out[k] = v
	}
	return out
}

// deliveredAfter reports how many of idx were delivered after t0 (by replica, or by any when
// replica < 0) and when the last of those first deliveries after t0 happened.
func (l *ledger) deliveredAfter(idx []int, t0 time.Time, replica int) (n int, last time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, i := range idx {
		for _, d := range l.dels[i] {
			if d.at.After(t0) && (replica < 0 || d.replica == replica) {
				n++
				if d.at.After(last) {
					last = d.at
				}
				break
			}
		}
	}
	return n, last
}

// acked notes that the source confirmed the ack of the latest delivery of each of idx.
func (l *ledger) acked(idx []int) {
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, i := range idx {
		if n := len(l.dels[i]); n > 0 {
			l.dels[i][n-1].acked = now
		}
	}
}

// dupReport explains every duplicate delivery by the kills: a redelivery is explained when a kill
// happened between it and the delivery before it.
type dupReport struct {
	perKill     []int           // redeliveries explained by each kill
	ackedBefore []int           // of those, how many the client had seen acknowledged before the kill
	maxLag      []time.Duration // per kill: the oldest acknowledged-then-redelivered ack, before the kill
	unexplained int             // redeliveries with no kill in between: a lease ran out, or a double send
	samples     []string        // a few unexplained ones, for the log
}

func (l *ledger) explain(kills []time.Time) dupReport {
	l.mu.Lock()
	defer l.mu.Unlock()
	rep := dupReport{perKill: make([]int, len(kills)), ackedBefore: make([]int, len(kills)), maxLag: make([]time.Duration, len(kills))}
	for _, ds := range l.dels {
		for j := 1; j < len(ds); j++ {
			prev, cur := ds[j-1], ds[j]
			k := -1 // the first kill after the earlier delivery: the one that cut it short
			for i, kt := range kills {
				if kt.After(prev.at) && kt.Before(cur.at) {
					k = i
					break
				}
			}
			if k < 0 {
				rep.unexplained++
				if len(rep.samples) < 3 {
					rep.samples = append(rep.samples, fmt.Sprintf("deliveries %v (kills %v)", ds, kills))
				}
				continue
			}
			rep.perKill[k]++
			if !prev.acked.IsZero() && prev.acked.Before(kills[k]) {
				rep.ackedBefore[k]++
				rep.maxLag[k] = max(rep.maxLag[k], kills[k].Sub(prev.acked))
			}
		}
	}
	return rep
}

// waitFor polls cond every 10 ms until it holds or ctx ends.
func waitFor(ctx context.Context, cond func() bool) bool {
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			return cond()
		case <-t.C:
		}
	}
	return true
}

// checkAll fails t unless every message was delivered and nothing unknown was.
func checkAll(t *testing.T, l *ledger) {
	t.Helper()
	if m := l.missing(); len(m) > 0 {
		t.Errorf("%d of %d messages never delivered (first: %v)", len(m), l.n, m[:min(len(m), 10)])
	}
	if l.unknown > 0 {
		t.Errorf("%d deliveries carried a payload that was never published", l.unknown)
	}
}

// ---- replicas: one connector process (restartable) and its numa client ----

type replica struct {
	t           *testing.T
	name        string
	bin         string
	id          int
	env         []string
	sock, info  string
	metricsAddr string

	mu      sync.Mutex
	proc    *proctest.Process
	client  *numatest.Client
	gen     int
	stopped bool             // the test killed or stopped the current process on purpose
	unacked map[int]struct{} // read by the client, not yet acknowledged by the source
	acks    []ackRec         // recent acks of this process
	killed  *killRec         // the kill of the current process, once it happened
}

type ackRec struct {
	at time.Time
	n  int
}

// newReplica prepares replica id of k's connector reading res through addr. extra env is added last.
func newReplica(t *testing.T, k *kit, res resource, id int, addr string, extra ...string) *replica {
	t.Helper()
	dir, err := os.MkdirTemp("", "f") // unix socket paths are limited to 108 bytes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	r := &replica{
		t: t, name: k.name, bin: binaries[k.name], id: id,
		sock: filepath.Join(dir, "s.sock"), info: filepath.Join(dir, "info"),
		metricsAddr: "127.0.0.1:" + strconv.Itoa(proctest.FreePort(t)),
	}
	r.env = append(res.env(addr),
		"SOURCE_SOCKET="+r.sock, "SOURCE_SERVER_INFO_FILE="+r.info, "METRICS_ADDR="+r.metricsAddr,
		"NUMAFLOW_REPLICA="+strconv.Itoa(id), "NUMAFLOW_PIPELINE_NAME=faults", "NUMAFLOW_VERTEX_NAME=in",
		"NUMAFLOW_POD=faults-in-"+strconv.Itoa(id), "LOG_FORMAT=text", "LOG_LEVEL=info")
	r.env = append(r.env, extra...)
	return r
}

// start runs the connector process (again) and dials it. A metrics port another process took after
// FreePort chose it (the connector exits: address already in use) gets a new one, up to twice.
func (r *replica) start(ctx context.Context) error {
	for attempt := 0; ; attempt++ {
		err := r.startOnce(ctx)
		if !errors.Is(err, errMetricsPortTaken) || attempt == 2 {
			return err
		}
		r.metricsAddr = "127.0.0.1:" + strconv.Itoa(proctest.FreePort(r.t))
		for i, kv := range r.env {
			if strings.HasPrefix(kv, "METRICS_ADDR=") {
				r.env[i] = "METRICS_ADDR=" + r.metricsAddr
			}
		}
	}
}

var errMetricsPortTaken = errors.New("the metrics port was taken")

func (r *replica) startOnce(ctx context.Context) error {
	_ = os.Remove(r.info) // a stale file would send the client to the socket before it is served
	p, err := proctest.StartE(r.bin, nil, proctest.Options{Env: r.env})
	if err != nil {
		return err
	}
	r.mu.Lock()
	gen := r.gen + 1
	r.mu.Unlock()
	t := r.t
	t.Cleanup(func() {
		p.Kill()
		if t.Failed() {
			t.Logf("replica %d, process %d output (tail):\n%s", r.id, gen, tail(p.Output(), 40))
		}
	})
	dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	go func() { // a process that exits will never serve: stop waiting for it
		select {
		case <-p.Done():
			cancel()
		case <-dctx.Done():
		}
	}()
	c, err := numatest.Dial(dctx, numatest.Options{Socket: r.sock, ServerInfoFile: r.info})
	if err != nil {
		p.Kill()
		if strings.Contains(p.Output(), "starting the metrics server failed") && strings.Contains(p.Output(), "address already in use") {
			return fmt.Errorf("replica %d: %w: %s\n%s", r.id, errMetricsPortTaken, r.metricsAddr, tail(p.Output(), 40))
		}
		return fmt.Errorf("replica %d: %w\n%s", r.id, err, tail(p.Output(), 40))
	}
	r.mu.Lock()
	r.proc, r.client, r.gen, r.stopped = p, c, gen, false
	r.unacked, r.acks, r.killed = map[int]struct{}{}, nil, nil
	r.mu.Unlock()
	return nil
}

func (r *replica) mustStart(ctx context.Context) {
	r.t.Helper()
	if err := r.start(ctx); err != nil {
		r.t.Fatal(err)
	}
}

func (r *replica) pid() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.proc.Cmd.Process.Pid
}

func (r *replica) process() *proctest.Process {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.proc
}

// killRec is what a replica held when it was killed: the bound on the duplicates the kill may cause.
type killRec struct {
	at          time.Time
	unacked     []int // read by the client, ack not confirmed: the source will redeliver them
	recentAcked int   // acked within ackWindow before the kill: their commit may not have landed
	lastAcks    []ackRec
}

// ackWindow: an ack confirmed this recently may still be on its way to the broker (the adapter commits
// in the background) when the process dies. SQS on fauxqs lands a read batch's acks (50 calls of 10)
// in 0.3-0.6 s when this test runs alone, and took 1.5 s once with every kit's tests sharing two
// cores: 2 s keeps the bound honest without failing on a busy machine.
const ackWindow = 2 * time.Second

// kill9 kills the process with SIGKILL, noting what it held. A batch the dead process had already sent
// and the client reads afterwards is added to the record by run.
func (r *replica) kill9() *killRec {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := time.Now()
	rec := &killRec{at: now}
	for i := range r.unacked {
		rec.unacked = append(rec.unacked, i)
	}
	for j := len(r.acks) - 1; j >= 0; j-- {
		if j == len(r.acks)-1 || now.Sub(r.acks[j].at) < ackWindow {
			rec.recentAcked += r.acks[j].n
		}
	}
	rec.lastAcks = append([]ackRec(nil), r.acks[max(0, len(r.acks)-3):]...)
	r.stopped, r.killed = true, rec
	r.proc.Kill()
	return rec
}

// sigterm sends SIGTERM and waits (up to 40 s) for the exit; it returns the status and how long the
// exit took.
func (r *replica) sigterm() (int, time.Duration) {
	r.mu.Lock()
	r.stopped = true
	p := r.proc
	r.mu.Unlock()
	start := time.Now()
	if err := p.Signal(syscall.SIGTERM); err != nil {
		r.t.Errorf("replica %d: sending SIGTERM: %v", r.id, err)
	}
	code, ok := p.Wait(40 * time.Second)
	took := time.Since(start)
	if !ok {
		r.t.Errorf("replica %d did not exit within 40 s of SIGTERM", r.id)
	}
	return code, took
}

func (r *replica) closeClient() {
	r.mu.Lock()
	c := r.client
	r.mu.Unlock()
	if c != nil {
		_ = c.Close()
	}
}

// loopOpts drive run.
type loopOpts struct {
	batch       uint64        // default 500 (numa's readBatchSize)
	ackDelay    time.Duration // a slow pipeline: wait this long before acking a batch
	slowBatches int           // ackDelay applies to the first slowBatches batches only (0: all)
	hold        bool          // read and never ack
	// holdLast: when done says true after a batch was read, return without acking that batch (a numa
	// about to die holding it).
	holdLast bool
	restart  bool // start the process again after the test killed it, as Kubernetes would
	// done is asked after every read (empty tells whether it returned nothing); true ends the loop.
	done func(empty bool) bool
}

// run plays numa's loop (read, ack all, read again) and records every delivery in l. It returns nil
// when ctx ends, done says so, or the test stopped the process (and restart is off); an error when a
// call failed for any other reason.
func (r *replica) run(ctx context.Context, l *ledger, o loopOpts) error {
	if o.batch == 0 {
		o.batch = 500
	}
	batches := 0
	for ctx.Err() == nil {
		r.mu.Lock()
		c, gen := r.client, r.gen
		r.mu.Unlock()
		msgs, err := c.Read(ctx, o.batch, time.Second)
		if err == nil && len(msgs) > 0 {
			// Under r.mu, so a kill9 sees the batch either not yet read or read and unacked.
			r.mu.Lock()
			at := time.Now()
			late := r.gen == gen && r.killed != nil
			if late {
				// Sent by the process before it was killed (it sat in the client's buffer): in flight at the kill.
				at = r.killed.at.Add(-time.Microsecond)
			}
			idx := l.recordAt(r.id, msgs, at)
			if late {
				r.killed.unacked = append(r.killed.unacked, idx...)
			}
			if r.gen == gen {
				for _, i := range idx {
					r.unacked[i] = struct{}{}
				}
			}
			r.mu.Unlock()
			batches++
			if o.holdLast && o.done != nil && o.done(false) {
				return nil
			}
			if !o.hold {
				if o.ackDelay > 0 && (o.slowBatches == 0 || batches <= o.slowBatches) {
					sleepCtx(ctx, o.ackDelay)
				}
				offs := make([]numatest.Offset, len(msgs))
				for i, m := range msgs {
					offs[i] = m.Offset
				}
				err = c.Ack(ctx, offs)
				if err == nil {
					r.mu.Lock()
					l.acked(idx)
					if r.gen == gen {
						for _, i := range idx {
							delete(r.unacked, i)
						}
						r.acks = append(r.acks, ackRec{time.Now(), len(idx)})
						if len(r.acks) > 64 {
							r.acks = r.acks[len(r.acks)-32:]
						}
					}
					r.mu.Unlock()
				}
			}
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			r.mu.Lock()
			stopped := r.stopped && r.gen == gen
			r.mu.Unlock()
			if !stopped {
				return fmt.Errorf("replica %d: %w", r.id, err)
			}
			_ = c.Close()
			if !o.restart {
				return nil
			}
			r.process().Kill() // make sure the old one is gone
			if err := r.start(ctx); err != nil {
				return err
			}
			continue
		}
		// With holdLast only the check right after a read may end the loop: asked again here, after
		// the ack, done could turn true on other replicas' deliveries and the loop would end holding
		// nothing.
		if o.done != nil && !o.holdLast && o.done(len(msgs) == 0) {
			return nil
		}
	}
	return nil
}

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// ---- process and health probes ----

// cpuTime is the user+system CPU time the process has used (from /proc/<pid>/stat, in clock ticks of
// 10 ms, USER_HZ on Linux).
func cpuTime(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("parsing /proc/%d/stat: %q", pid, s)
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("parsing /proc/%d/stat: %q", pid, s)
	}
	return time.Duration(ut+st) * 10 * time.Millisecond, nil
}

var probeClient = &http.Client{Timeout: 500 * time.Millisecond}

// readyz returns the status of GET /readyz (0 when it could not be asked).
func (r *replica) readyz() int {
	resp, err := probeClient.Get("http://" + r.metricsAddr + "/readyz")
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func secs(d time.Duration) string { return fmt.Sprintf("%.2fs", d.Seconds()) }
