package numatest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/numaproj/numaflow-go/pkg/info"
	"github.com/numaproj/numaflow-go/pkg/sourcer"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// nackRec is one entry of a NackFn request as the source saw it.
type nackRec struct {
	offset string
	opts   *sourcer.NackOptions
}

// testSource is a tiny sourcer.Sourcer: it serves a queue of messages, puts nacked ones back and
// records every request.
type testSource struct {
	mu       sync.Mutex
	queue    []sourcer.Message
	byOffset map[string]sourcer.Message
	wake     chan struct{}
	counts   []uint64    // Count of every read request
	acks     [][]string  // offsets of every ack request
	nacks    [][]nackRec // entries of every nack request
	pending  int64
	parts    []int32
	total    *int32
	pendings int
}

func newTestSource(n int) *testSource {
	s := &testSource{byOffset: map[string]sourcer.Message{}, wake: make(chan struct{}, 1), parts: []int32{0}}
	s.add(n)
	return s
}

func (s *testSource) msg(i int) sourcer.Message {
	off := fmt.Sprintf("off-%d", i)
	return sourcer.NewMessage([]byte(fmt.Sprintf("payload-%d", i)), sourcer.NewOffset([]byte(off), 0),
		time.UnixMilli(1_700_000_000_000+int64(i))).
		WithKeys([]string{fmt.Sprintf("k%d", i%3)}).
		WithHeaders(map[string]string{"i": fmt.Sprint(i)})
}

// add appends n numbered messages (continuing the numbering).
func (s *testSource) add(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	base := len(s.byOffset)
	for i := base; i < base+n; i++ {
		m := s.msg(i)
		s.byOffset[string(m.Offset().Value())] = m
		s.queue = append(s.queue, m)
	}
	s.signal()
}

// push appends m as is (to emit an offset twice).
func (s *testSource) push(ms ...sourcer.Message) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.queue = append(s.queue, ms...)
	s.signal()
}

func (s *testSource) signal() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

func (s *testSource) Read(ctx context.Context, req sourcer.ReadRequest, ch chan<- sourcer.Message) {
	deadline := time.NewTimer(req.TimeOut())
	defer deadline.Stop()
	s.mu.Lock()
	s.counts = append(s.counts, req.Count())
	s.mu.Unlock()
	for {
		s.mu.Lock()
		n := min(int(req.Count()), len(s.queue))
		batch := slices.Clone(s.queue[:n])
		s.queue = s.queue[n:]
		s.mu.Unlock()
		if n > 0 {
			for _, m := range batch {
				select {
				case ch <- m:
				case <-ctx.Done():
					return
				}
			}
			return
		}
		select {
		case <-s.wake:
		case <-deadline.C:
			return
		case <-ctx.Done():
			return
		}
	}
}

func (s *testSource) Ack(_ context.Context, req sourcer.AckRequest) {
	var offs []string
	for _, o := range req.Offsets() {
		offs = append(offs, string(o.Value()))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.acks = append(s.acks, offs)
}

func (s *testSource) Nack(_ context.Context, req sourcer.NackRequest) {
	var recs []nackRec
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, n := range req.Offsets() {
		off := string(n.Offset.Value())
		recs = append(recs, nackRec{offset: off, opts: n.NackOptions})
		s.queue = append(s.queue, s.byOffset[off])
	}
	s.nacks = append(s.nacks, recs)
	s.signal()
}

func (s *testSource) Pending(context.Context) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pendings++
	return s.pending
}

func (s *testSource) ActivePartitions(context.Context) []int32 { return s.parts }
func (s *testSource) TotalPartitions(context.Context) *int32   { return s.total }

func (s *testSource) snapshot() (counts []uint64, acks [][]string, nacks [][]nackRec, pendings int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.counts), slices.Clone(s.acks), slices.Clone(s.nacks), s.pendings
}

// serve runs numaflow-go's real server for src on a socket in a fresh directory.
func serve(t *testing.T, src sourcer.Sourcer) Options {
	t.Helper()
	dir, err := os.MkdirTemp("", "numatest")
	if err != nil {
		t.Fatal(err)
	}
	// Test binaries carry no dependency versions, so the SDK writes an empty version.
	opts := Options{Socket: filepath.Join(dir, "source.sock"), ServerInfoFile: filepath.Join(dir, "server-info"), SDKVersion: "v0.12.0"}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	srv := sourcer.NewServer(src, sourcer.WithSockAddr(opts.Socket), sourcer.WithServerInfoFilePath(opts.ServerInfoFile))
	go func() { done <- srv.Start(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("server: %v", err)
		}
		_ = os.RemoveAll(dir)
	})
	return opts
}

func dial(t *testing.T, opts Options) *Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := Dial(ctx, opts)
	if err != nil {
		t.Fatalf("dialing: %v", err)
	}
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Errorf("closing: %v", err)
		}
	})
	return c
}

func offsets(ms []Message) []string {
	var out []string
	for _, m := range ms {
		out = append(out, string(m.Offset.Value))
	}
	return out
}

func names(from, to int) []string {
	var out []string
	for i := from; i < to; i++ {
		out = append(out, fmt.Sprintf("off-%d", i))
	}
	return out
}

func TestReadAndAck(t *testing.T) {
	src := newTestSource(10)
	c := dial(t, serve(t, src))
	if !c.NackSupported() {
		t.Errorf("NackSupported = false for numaflow-go %q, want true", c.ServerInfo().Version)
	}
	ctx := context.Background()

	got, err := c.Read(ctx, 4, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if want := names(0, 4); !slices.Equal(offsets(got), want) {
		t.Fatalf("read offsets %v, want %v", offsets(got), want)
	}
	m := got[1]
	if string(m.Payload) != "payload-1" || m.Offset.Partition != 0 || !m.EventTime.Equal(time.UnixMilli(1_700_000_000_001)) ||
		!slices.Equal(m.Keys, []string{"k1"}) || m.Headers["i"] != "1" {
		t.Errorf("message 1 = %+v", m)
	}
	if err := c.Ack(ctx, []Offset{got[2].Offset, got[0].Offset}); err != nil {
		t.Fatal(err)
	}
	_, acks, _, _ := src.snapshot()
	if want := [][]string{{"off-2", "off-0"}}; !slices.EqualFunc(acks, want, slices.Equal) {
		t.Errorf("acks %v, want %v", acks, want)
	}

	// The rest arrive in the next read; a read with nothing left waits for its timeout.
	got, err = c.Read(ctx, 100, time.Second)
	if err != nil || len(got) != 6 {
		t.Fatalf("second read: %d messages, %v", len(got), err)
	}
	start := time.Now()
	got, err = c.Read(ctx, 100, 200*time.Millisecond)
	if err != nil || len(got) != 0 {
		t.Fatalf("empty read: %d messages, %v", len(got), err)
	}
	if d := time.Since(start); d < 150*time.Millisecond {
		t.Errorf("empty read returned after %s, want about the 200ms timeout", d)
	}
	if ok, err := c.Ready(ctx); !ok || err != nil {
		t.Errorf("Ready = %v, %v", ok, err)
	}
}

func TestRunAcksInReadOrderAndStopsAtLimit(t *testing.T) {
	src := newTestSource(1000)
	c := dial(t, serve(t, src))
	var batches int
	st, err := c.Run(context.Background(), LoopOptions{BatchSize: 100, Limit: 250, OnBatch: func([]Message) { batches++ }})
	if err != nil {
		t.Fatal(err)
	}
	if st.Read != 250 || st.Acked != 250 || st.Batches != 3 || batches != 3 || st.Duplicates != 0 {
		t.Errorf("stats %+v, onBatch %d", st, batches)
	}
	counts, acks, nacks, _ := src.snapshot()
	if want := []uint64{100, 100, 50}; !slices.Equal(counts, want) {
		t.Errorf("read counts %v, want %v", counts, want)
	}
	if len(acks) != 3 || len(nacks) != 0 {
		t.Fatalf("%d ack requests and %d nack requests, want 3 and 0", len(acks), len(nacks))
	}
	if all := slices.Concat(acks...); !slices.Equal(all, names(0, 250)) {
		t.Errorf("acked %v..., want off-0..off-249 in order", all[:5])
	}
}

func TestRunNacksCarryOptions(t *testing.T) {
	src := newTestSource(20)
	c := dial(t, serve(t, src))
	delay, maxDel, reason := uint64(1500), uint32(3), "test"
	seen := map[string]int{}
	st, err := c.Run(context.Background(), LoopOptions{
		BatchSize: 10, Timeout: 100 * time.Millisecond, Idle: 1,
		Decide: func(m Message) Decision {
			seen[string(m.Offset.Value)]++
			var i int
			fmt.Sscanf(string(m.Offset.Value), "off-%d", &i)
			if i%5 == 0 && seen[string(m.Offset.Value)] == 1 {
				return Nack(&NackOptions{Delay: &delay, MaxDeliveries: &maxDel, Reason: &reason})
			}
			if i == 3 && seen[string(m.Offset.Value)] == 1 {
				return Nack(nil)
			}
			return Ack
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if st.Nacked != 5 || st.Acked != 20 || st.Read != 25 || st.EmptyReads != 1 {
		t.Errorf("stats %+v", st)
	}
	_, acks, nacks, _ := src.snapshot()
	if len(nacks) != 2 {
		t.Fatalf("nack requests %v, want 2 (one per batch with nacks)", nacks)
	}
	first := nacks[0]
	if len(first) != 3 || first[0].offset != "off-0" || first[1].offset != "off-3" || first[2].offset != "off-5" {
		t.Fatalf("first nack request %+v, want off-0, off-3, off-5 in read order", first)
	}
	o := first[0].opts
	if o == nil || o.Delay == nil || *o.Delay != delay || o.MaxDeliveries == nil || *o.MaxDeliveries != maxDel || o.Reason == nil || *o.Reason != reason {
		t.Errorf("options of off-0: %+v", o)
	}
	if first[1].opts != nil {
		t.Errorf("options of off-3: %+v, want none", first[1].opts)
	}
	if want := []string{"off-1", "off-2", "off-4", "off-6", "off-7", "off-8", "off-9"}; !slices.Equal(acks[0], want) {
		t.Errorf("first ack request %v, want %v", acks[0], want)
	}
	for _, off := range []string{"off-0", "off-3", "off-5", "off-10", "off-15"} {
		if seen[off] != 2 {
			t.Errorf("%s seen %d times, want 2 (nacked, then redelivered)", off, seen[off])
		}
	}
}

func TestRunPendingAndPartitions(t *testing.T) {
	src := newTestSource(0)
	src.pending = 42
	src.parts = []int32{3, 4}
	total := int32(8)
	src.total = &total
	c := dial(t, serve(t, src))

	p, err := c.Pending(context.Background())
	if err != nil || p != 42 {
		t.Errorf("Pending = %d, %v", p, err)
	}
	parts, tot, err := c.Partitions(context.Background())
	if err != nil || !slices.Equal(parts, []int32{3, 4}) || tot == nil || *tot != 8 {
		t.Errorf("Partitions = %v, %v, %v", parts, tot, err)
	}

	st, err := c.Run(context.Background(), LoopOptions{Timeout: 50 * time.Millisecond, Idle: 6, PendingEvery: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if st.LastPending != 42 || !slices.Equal(st.LastPartitions, []int32{3, 4}) || st.TotalPartitions == nil || *st.TotalPartitions != 8 {
		t.Errorf("stats %+v", st)
	}
	_, _, _, pendings := src.snapshot()
	// One direct call, then one before the first read and one about every 100ms over 6 x 50ms.
	if pendings < 3 || pendings > 5 {
		t.Errorf("PendingFn called %d times, want 3..5", pendings)
	}

	// Disabled: LastPending stays unknown.
	st, err = c.Run(context.Background(), LoopOptions{Timeout: 10 * time.Millisecond, Idle: 1, PendingEvery: -1, PartitionsEvery: -1})
	if err != nil || st.LastPending != -1 || st.LastPartitions != nil {
		t.Errorf("disabled: stats %+v, %v", st, err)
	}
}

func TestRunDuplicates(t *testing.T) {
	src := newTestSource(0)
	c := dial(t, serve(t, src))
	a, b := src.msg(1), src.msg(2)
	// The same offset twice in one batch: numa forwards and acks it once.
	src.push(a, a, b)
	var forwarded [][]string
	st, err := c.Run(context.Background(), LoopOptions{Timeout: 50 * time.Millisecond, Idle: 1,
		OnBatch: func(ms []Message) { forwarded = append(forwarded, offsets(ms)) }})
	if err != nil {
		t.Fatal(err)
	}
	if st.Read != 3 || st.Duplicates != 1 || st.Acked != 2 {
		t.Errorf("stats %+v", st)
	}
	_, acks, _, _ := src.snapshot()
	if want := [][]string{{"off-1", "off-2"}}; !slices.EqualFunc(acks, want, slices.Equal) {
		t.Errorf("acks %v, want %v", acks, want)
	}
	if want := [][]string{{"off-1", "off-2"}}; !slices.EqualFunc(forwarded, want, slices.Equal) {
		t.Errorf("OnBatch got %v, want %v", forwarded, want)
	}

	// A held offset stays in flight: when the source emits it again, it is a duplicate. (A new one:
	// a's offset was written to the ISB, which would drop a again.)
	h := src.msg(3)
	src.push(h)
	reads := 0
	st, err = c.Run(context.Background(), LoopOptions{Timeout: 50 * time.Millisecond, Idle: 1,
		Decide: func(Message) Decision { return Hold },
		OnBatch: func([]Message) {
			if reads++; reads == 1 {
				src.push(h)
			}
		}})
	if err != nil {
		t.Fatal(err)
	}
	if st.Read != 2 || st.Held != 1 || st.Duplicates != 1 || st.Acked != 0 {
		t.Errorf("held: stats %+v", st)
	}
	if _, acks, _, _ := src.snapshot(); len(acks) != 1 {
		t.Errorf("ack requests %v, want none after the first run", acks)
	}
}

func TestRunIdleWaitsForReadTimeout(t *testing.T) {
	src := newTestSource(0)
	c := dial(t, serve(t, src))
	start := time.Now()
	st, err := c.Run(context.Background(), LoopOptions{Timeout: 60 * time.Millisecond, Idle: 3})
	if err != nil {
		t.Fatal(err)
	}
	if st.EmptyReads != 3 || st.Batches != 0 {
		t.Errorf("stats %+v", st)
	}
	if d := time.Since(start); d < 170*time.Millisecond {
		t.Errorf("3 empty reads of 60ms took %s", d)
	}
	if _, acks, _, _ := src.snapshot(); len(acks) != 0 {
		t.Errorf("empty batches sent acks: %v", acks)
	}
}

func TestRunStopFinishesBatch(t *testing.T) {
	src := newTestSource(50)
	c := dial(t, serve(t, src))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	st, err := c.Run(ctx, LoopOptions{BatchSize: 10, AckDelay: time.Hour, OnBatch: func([]Message) { cancel() }})
	if err != nil {
		t.Fatalf("Run after cancel: %v", err)
	}
	if st.Read != 10 || st.Acked != 10 {
		t.Errorf("stats %+v, want the first batch read and acked", st)
	}
	if _, acks, _, _ := src.snapshot(); len(acks) != 1 || len(acks[0]) != 10 {
		t.Errorf("acks %v", acks)
	}
	// The client is still usable.
	if got, err := c.Read(context.Background(), 5, time.Second); err != nil || len(got) != 5 {
		t.Errorf("read after stop: %d, %v", len(got), err)
	}
}

func TestReadCancelledBreaksClient(t *testing.T) {
	src := newTestSource(0)
	c := dial(t, serve(t, src))
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := c.Read(ctx, 10, 10*time.Second); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Read = %v, want deadline exceeded", err)
	}
	if _, err := c.Read(context.Background(), 10, time.Millisecond); err == nil {
		t.Error("read on a broken client succeeded")
	}
}

func TestDialTimesOutWithoutServer(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := Dial(ctx, Options{Socket: filepath.Join(dir, "s.sock"), ServerInfoFile: filepath.Join(dir, "info")})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Dial = %v, want deadline exceeded", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Dial took %s", d)
	}

	// A complete server-info file but no socket: the wait for IsReady times out too.
	writeInfo(t, filepath.Join(dir, "info"), info.ServerInfo{Protocol: info.UDS, Language: info.Go, Version: "v0.12.0"})
	ctx2, cancel2 := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel2()
	if _, err := Dial(ctx2, Options{Socket: filepath.Join(dir, "s.sock"), ServerInfoFile: filepath.Join(dir, "info")}); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Dial with no socket = %v, want deadline exceeded", err)
	}
}

func TestDialWaitsForLateServer(t *testing.T) {
	src := newTestSource(1)
	dir, err := os.MkdirTemp("", "numatest")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	opts := Options{Socket: filepath.Join(dir, "source.sock"), ServerInfoFile: filepath.Join(dir, "server-info")}
	sctx, scancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	// The server comes up while Dial is already waiting.
	timer := time.AfterFunc(300*time.Millisecond, func() {
		done <- sourcer.NewServer(src, sourcer.WithSockAddr(opts.Socket), sourcer.WithServerInfoFilePath(opts.ServerInfoFile)).Start(sctx)
	})
	defer func() {
		scancel()
		if timer.Stop() {
			return
		}
		<-done
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := Dial(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got, err := c.Read(ctx, 10, time.Second); err != nil || len(got) != 1 {
		t.Errorf("read %d, %v", len(got), err)
	}
}

func writeInfo(t *testing.T, path string, si info.ServerInfo) {
	t.Helper()
	b, err := json.Marshal(si)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, append(b, info.END...), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestOldSDKGetsNoNacks(t *testing.T) {
	src := newTestSource(5)
	opts := serve(t, src)
	// Wait for the real server, then point the client at an info file claiming an old SDK.
	dial(t, opts)
	old := filepath.Join(filepath.Dir(opts.Socket), "old-info")
	writeInfo(t, old, info.ServerInfo{Protocol: info.UDS, Language: info.Go, Version: "v0.10.3", MinimumNumaflowVersion: "1.2.0-z"})
	c := dial(t, Options{Socket: opts.Socket, ServerInfoFile: old, SDKVersion: "v0.12.0"})
	if c.NackSupported() {
		t.Fatal("NackSupported = true for v0.10.3")
	}
	st, err := c.Run(context.Background(), LoopOptions{Timeout: 50 * time.Millisecond, Idle: 1,
		Decide: func(Message) Decision { return Nack(nil) }})
	if err != nil {
		t.Fatal(err)
	}
	if st.NackSkipped != 5 || st.Nacked != 0 {
		t.Errorf("stats %+v", st)
	}
	if _, _, nacks, _ := src.snapshot(); len(nacks) != 0 {
		t.Errorf("nacks sent to an old SDK: %v", nacks)
	}

	// A source that needs a newer numa than the one played is refused.
	future := filepath.Join(filepath.Dir(opts.Socket), "future-info")
	writeInfo(t, future, info.ServerInfo{Protocol: info.UDS, Language: info.Go, Version: "v9.0.0", MinimumNumaflowVersion: "9.0.0"})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := Dial(ctx, Options{Socket: opts.Socket, ServerInfoFile: future}); err == nil {
		t.Error("Dial accepted a source needing numaflow 9.0.0")
	}
}

func TestEmptyVersionGetsNoNacks(t *testing.T) {
	opts := serve(t, newTestSource(0))
	opts.SDKVersion = ""
	if c := dial(t, opts); c.NackSupported() {
		t.Errorf("NackSupported = true for version %q", c.ServerInfo().Version)
	}
}

func TestCloseIsIdempotent(t *testing.T) {
	c := dial(t, serve(t, newTestSource(0)))
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Read(context.Background(), 1, time.Millisecond); err == nil {
		t.Error("read after Close succeeded")
	}
}

func TestSemver(t *testing.T) {
	tests := []struct {
		v       string
		atLeast bool // >= 0.11.0
		bad     bool
	}{
		{v: "v0.12.0", atLeast: true},
		{v: "0.11.0", atLeast: true},
		{v: "v0.11.0-rc1", atLeast: false},
		{v: "v0.11.1-0.20250101000000-abcdef123456", atLeast: true},
		{v: "v0.10.9", atLeast: false},
		{v: "v1.0.0+meta", atLeast: true},
		{v: "", bad: true},
		{v: "(devel)", bad: true},
		{v: "0.11", bad: true},
		{v: "01.2.3", bad: true},
	}
	for _, tt := range tests {
		v, err := parseSemver(tt.v)
		if (err != nil) != tt.bad {
			t.Errorf("parseSemver(%q) error %v, want bad=%v", tt.v, err, tt.bad)
			continue
		}
		if err == nil && (v.compare(nackMinSDKVersion[info.Go]) >= 0) != tt.atLeast {
			t.Errorf("%q >= 0.11.0 = %v, want %v", tt.v, !tt.atLeast, tt.atLeast)
		}
	}
	a, _ := parseSemver("1.4.0-z")
	if a.compare(numaVersion) >= 0 {
		t.Error("1.4.0-z should be below 1.8.3")
	}
	r1, _ := parseSemver("1.0.0-rc.2")
	r2, _ := parseSemver("1.0.0-rc.10")
	if r1.compare(r2) >= 0 {
		t.Error("rc.2 should be below rc.10")
	}
}
