package numatest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	sourcepb "github.com/numaproj/numaflow-go/pkg/apis/proto/source/v1"
	"github.com/numaproj/numaflow-go/pkg/info"
	"github.com/numaproj/numaflow-go/pkg/sourcer"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// rawSource is a source.v1 server that answers every read request with results as given (a server
// not built on numaflow-go, or a broken one), then an end of transmission.
type rawSource struct {
	sourcepb.UnimplementedSourceServer
	results []*sourcepb.ReadResponse_Result
	parts   []int32
}

func (s *rawSource) ReadFn(stream sourcepb.Source_ReadFnServer) error {
	if _, err := stream.Recv(); err != nil {
		return err
	}
	if err := stream.Send(&sourcepb.ReadResponse{Status: &sourcepb.ReadResponse_Status{}, Handshake: &sourcepb.Handshake{Sot: true}}); err != nil {
		return err
	}
	for {
		if _, err := stream.Recv(); err != nil {
			return nil
		}
		for _, r := range s.results {
			if err := stream.Send(&sourcepb.ReadResponse{Result: r, Status: &sourcepb.ReadResponse_Status{}}); err != nil {
				return err
			}
		}
		if err := stream.Send(&sourcepb.ReadResponse{Status: &sourcepb.ReadResponse_Status{Eot: true}}); err != nil {
			return err
		}
	}
}

func (s *rawSource) AckFn(stream sourcepb.Source_AckFnServer) error {
	ok := &sourcepb.AckResponse_Result{Success: &emptypb.Empty{}}
	if _, err := stream.Recv(); err != nil {
		return err
	}
	if err := stream.Send(&sourcepb.AckResponse{Result: ok, Handshake: &sourcepb.Handshake{Sot: true}}); err != nil {
		return err
	}
	for {
		if _, err := stream.Recv(); err != nil {
			return nil
		}
		if err := stream.Send(&sourcepb.AckResponse{Result: ok}); err != nil {
			return err
		}
	}
}

func (s *rawSource) PartitionsFn(context.Context, *emptypb.Empty) (*sourcepb.PartitionsResponse, error) {
	return &sourcepb.PartitionsResponse{Result: &sourcepb.PartitionsResponse_Result{Partitions: s.parts}}, nil
}

func (s *rawSource) IsReady(context.Context, *emptypb.Empty) (*sourcepb.ReadyResponse, error) {
	return &sourcepb.ReadyResponse{Ready: true}, nil
}

// serveRaw serves src on a fresh socket with a server-info file saying si.
func serveRaw(t *testing.T, src sourcepb.SourceServer, si info.ServerInfo) Options {
	t.Helper()
	dir, err := os.MkdirTemp("", "numatest")
	if err != nil {
		t.Fatal(err)
	}
	opts := Options{Socket: filepath.Join(dir, "source.sock"), ServerInfoFile: filepath.Join(dir, "server-info")}
	writeInfo(t, opts.ServerInfoFile, si)
	lis, err := net.Listen("unix", opts.Socket)
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	sourcepb.RegisterSourceServer(g, src)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = g.Serve(lis)
	}()
	t.Cleanup(func() {
		g.Stop()
		<-done
		_ = os.RemoveAll(dir)
	})
	return opts
}

var goInfo = info.ServerInfo{Protocol: info.UDS, Language: info.Go, Version: "v0.12.0", MinimumNumaflowVersion: "1.4.0-z"}

// numa turns a ReadFn result into its message and fails the read (a "user code error") when the result
// has no offset or an empty one, and panics when it has no event time. numatest used to hand such
// messages to the test as if numa had taken them.
func TestReadRefusesResultsNumaRefuses(t *testing.T) {
	now := timestamppb.New(time.UnixMilli(1_700_000_000_000))
	good := &sourcepb.ReadResponse_Result{Payload: []byte("p"), Offset: &sourcepb.Offset{Offset: []byte("o-1")}, EventTime: now}
	tests := []struct {
		name string
		r    *sourcepb.ReadResponse_Result
		want string
	}{
		{"no offset", &sourcepb.ReadResponse_Result{Payload: []byte("p"), EventTime: now}, "no offset"},
		{"empty offset", &sourcepb.ReadResponse_Result{Payload: []byte("p"), Offset: &sourcepb.Offset{}, EventTime: now}, "empty offset"},
		{"no event time", &sourcepb.ReadResponse_Result{Payload: []byte("p"), Offset: &sourcepb.Offset{Offset: []byte("o-2")}}, "no event time"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := dial(t, serveRaw(t, &rawSource{results: []*sourcepb.ReadResponse_Result{good, tt.r}}, goInfo))
			msgs, err := c.Read(context.Background(), 10, time.Second)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Read = %d messages, error %v; want an error saying %q, as numa fails this read", len(msgs), err, tt.want)
			}
		})
	}

	// A source on numaflow-go's own server can send an empty offset too (sourcer.NewOffset(nil, 0)).
	t.Run("empty offset from numaflow-go", func(t *testing.T) {
		src := newTestSource(0)
		src.push(sourcer.NewMessage([]byte("p"), sourcer.NewOffset(nil, 0), time.Now()))
		c := dial(t, serve(t, src))
		msgs, err := c.Read(context.Background(), 10, time.Second)
		if err == nil {
			t.Fatalf("Read = %d messages with offsets %q and no error; numa refuses an empty offset", len(msgs), offsets(msgs))
		}
	})
}

// numa keeps a partition id as 16 bits (partition_id as u16): an offset of partition -1 or 70000 is
// acked as partition 65535 or 4464, and reported partitions are cut the same way (watermarks under
// another processor). numatest passed such ids through unchanged, so acks matched.
func TestPartitionsOutsideSixteenBitsAreRefused(t *testing.T) {
	now := timestamppb.Now()
	for _, p := range []int32{-1, 65536, 70000} {
		t.Run(fmt.Sprint(p), func(t *testing.T) {
			r := &sourcepb.ReadResponse_Result{Payload: []byte("p"), Offset: &sourcepb.Offset{Offset: []byte("o-1"), PartitionId: p}, EventTime: now}
			c := dial(t, serveRaw(t, &rawSource{results: []*sourcepb.ReadResponse_Result{r}}, goInfo))
			if msgs, err := c.Read(context.Background(), 10, time.Second); err == nil {
				t.Errorf("Read = %+v and no error; numa would ack this offset as partition %d", msgs, uint16(p))
			}
			c2 := dial(t, serveRaw(t, &rawSource{parts: []int32{0, p}}, goInfo))
			if parts, _, err := c2.Partitions(context.Background()); err == nil {
				t.Errorf("Partitions = %v and no error; numa takes partition %d as %d", parts, p, uint16(p))
			}
		})
	}
	// The whole range is fine.
	r := &sourcepb.ReadResponse_Result{Payload: []byte("p"), Offset: &sourcepb.Offset{Offset: []byte("o-1"), PartitionId: 65535}, EventTime: now}
	c := dial(t, serveRaw(t, &rawSource{results: []*sourcepb.ReadResponse_Result{r}, parts: []int32{0, 65535}}, goInfo))
	if msgs, err := c.Read(context.Background(), 10, time.Second); err != nil || len(msgs) != 1 || msgs[0].Offset.Partition != 65535 {
		t.Errorf("Read = %+v, %v", msgs, err)
	}
	if parts, _, err := c.Partitions(context.Background()); err != nil || len(parts) != 2 {
		t.Errorf("Partitions = %v, %v", parts, err)
	}
}

// numa sends nacks only to an SDK whose language it knows, from that language's first SDK with nacks
// (Go, Java and Python 0.11.0, Rust 0.4.0). numatest looked at the version alone, as if every SDK
// were Go's.
func TestNackSupportFollowsTheLanguage(t *testing.T) {
	tests := []struct {
		lang, version string
		want          bool
	}{
		{"go", "v0.12.0", true},
		{"go", "v0.10.3", false},
		{"", "v0.12.0", false},       // no language: numa assumes no nacks
		{"golang", "v0.12.0", false}, // not a language numa knows
		{"java", "0.11.2", true},
		{"python", "0.11.0", true},
		{"rust", "0.4.0", true},
		{"rust", "0.3.1", false},
	}
	for _, tt := range tests {
		t.Run(tt.lang+" "+tt.version, func(t *testing.T) {
			si := info.ServerInfo{Protocol: info.UDS, Language: info.Language(tt.lang), Version: tt.version, MinimumNumaflowVersion: "1.4.0-z"}
			c := dial(t, serveRaw(t, &rawSource{}, si))
			if got := c.NackSupported(); got != tt.want {
				t.Errorf("NackSupported = %v for language %q version %q; numa says %v", got, tt.lang, tt.version, tt.want)
			}
		})
	}
}

// In a pipeline numa writes each message to the ISB under an id made from its offset, and JetStream
// drops an id it saw in the last 60 s; numa then acks the message as written. A source that reuses an
// offset for another message loses that message. numatest forwarded it (OnBatch) as if it arrived.
func TestRunDropsAnOffsetReusedWithinTheISBWindow(t *testing.T) {
	src := newTestSource(0)
	c := dial(t, serve(t, src))
	at := time.UnixMilli(1_700_000_000_000)
	src.push(sourcer.NewMessage([]byte("first"), sourcer.NewOffset([]byte("x"), 0), at))
	var forwarded []string
	run := func() {
		t.Helper()
		if _, err := c.Run(context.Background(), LoopOptions{Timeout: 50 * time.Millisecond, Idle: 1,
			OnBatch: func(ms []Message) {
				for _, m := range ms {
					forwarded = append(forwarded, string(m.Payload))
				}
			}}); err != nil {
			t.Fatal(err)
		}
	}
	run()
	// The offset is acked (written); the source hands it out again for another message.
	src.push(sourcer.NewMessage([]byte("second"), sourcer.NewOffset([]byte("x"), 0), at))
	run()
	if want := []string{"first"}; !slices.Equal(forwarded, want) {
		t.Errorf("forwarded %q; numa's ISB drops the reused offset's message (%q is lost), want %q", forwarded, forwarded[len(forwarded)-1], want)
	}
	// numa acks the dropped message as if written.
	if _, acks, _, _ := src.snapshot(); len(acks) != 2 || !slices.Equal(acks[1], []string{"x"}) {
		t.Errorf("ack requests %v, want x acked twice", acks)
	}
}

// The ISB's window: an offset written more than DedupWindow ago, or any offset with the window off
// (a MonoVertex), is forwarded again; a nacked offset was never written.
func TestRunDedupWindow(t *testing.T) {
	src := newTestSource(0)
	c := dial(t, serve(t, src))
	at := time.UnixMilli(1_700_000_000_000)
	msg := func(p, off string) sourcer.Message {
		m := sourcer.NewMessage([]byte(p), sourcer.NewOffset([]byte(off), 0), at)
		src.mu.Lock()
		src.byOffset[off] = m // what a nack puts back
		src.mu.Unlock()
		return m
	}
	run := func(window time.Duration, decide func(Message) Decision) (Stats, []string) {
		t.Helper()
		var got []string
		st, err := c.Run(context.Background(), LoopOptions{Timeout: 50 * time.Millisecond, Idle: 1, DedupWindow: window, Decide: decide,
			OnBatch: func(ms []Message) {
				for _, m := range ms {
					got = append(got, string(m.Payload))
				}
			}})
		if err != nil {
			t.Fatal(err)
		}
		return st, got
	}
	nackOnce := map[string]bool{}
	src.push(msg("a", "x"), msg("b", "y"))
	if _, got := run(0, func(m Message) Decision {
		if string(m.Offset.Value) == "y" && !nackOnce["y"] {
			nackOnce["y"] = true
			return Nack(nil)
		}
		return Ack
	}); !slices.Equal(got, []string{"a", "b", "b"}) {
		t.Errorf("forwarded %q, want a, b and b's redelivery after its nack", got)
	}
	// x was written.
	src.push(msg("a2", "x"), msg("z", "z"))
	st, got := run(0, nil)
	if !slices.Equal(got, []string{"z"}) || st.Deduplicated != 1 || st.Acked != 2 {
		t.Errorf("within the window: forwarded %q, stats %+v; want z only, x deduplicated and acked", got, st)
	}
	src.push(msg("a3", "x"))
	if _, got := run(-1, nil); !slices.Equal(got, []string{"a3"}) {
		t.Errorf("window off: forwarded %q, want a3", got)
	}
	time.Sleep(30 * time.Millisecond)
	src.push(msg("a4", "x"))
	if _, got := run(20*time.Millisecond, nil); !slices.Equal(got, []string{"a4"}) {
		t.Errorf("after the window: forwarded %q, want a4", got)
	}
}

// numa cannot write a message larger than the ISB's max_payload (1 MiB by default) and retries it
// forever: Run fails on it instead of passing it on, and passes it with the limit raised or off (a
// MonoVertex, or an ISB service with a larger max_payload).
func TestRunRefusesAMessageOverTheISBsMaxPayload(t *testing.T) {
	src := newTestSource(0)
	c := dial(t, serve(t, src))
	at := time.UnixMilli(1_700_000_000_000)
	big := sourcer.NewMessage(make([]byte, DefaultMaxPayload), sourcer.NewOffset([]byte("big"), 0), at).
		WithKeys([]string{"k"})
	src.push(big)
	_, err := c.Run(context.Background(), LoopOptions{Timeout: 50 * time.Millisecond, Idle: 1})
	if !errors.Is(err, ErrOverMaxPayload) {
		t.Fatalf("Run over a message of 1 MiB plus a key: %v, want ErrOverMaxPayload", err)
	}
	for _, limit := range []int{DefaultMaxPayload + 1, -1} {
		src.push(big)
		st, err := c.Run(context.Background(), LoopOptions{Timeout: 50 * time.Millisecond, Idle: 1, MaxPayload: limit, DedupWindow: -1})
		if err != nil || st.Acked != 1 {
			t.Errorf("MaxPayload %d: acked %d, %v; want the message acked", limit, st.Acked, err)
		}
	}
}

// backlogSource answers Pending from testSource's state: every message not yet acked, or, forgetful,
// only those not yet read (a source that subtracts what it handed out).
type backlogSource struct {
	*testSource
	forgetful bool
}

func (s *backlogSource) Pending(context.Context) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pendings++
	if s.forgetful {
		return int64(len(s.queue))
	}
	acked := map[string]bool{}
	for _, a := range s.acks {
		for _, o := range a {
			acked[o] = true
		}
	}
	return int64(len(s.byOffset) - len(acked))
}

// numa's lag reader runs on its own timer and waits for the source's actor, which is free while a
// batch is written to the ISB: Pending mostly lands between a Read and its Ack, when the batch is read
// but not acked, and the contract counts those messages in the backlog. Run called PendingFn only
// between batches, so a source that leaves them out (0 while numa holds the last batch: scale to
// zero) passed.
func TestRunPendingCountsReadButUnacked(t *testing.T) {
	run := func(forgetful, strict bool) (Stats, error) {
		t.Helper()
		c := dial(t, serve(t, &backlogSource{newTestSource(30), forgetful}))
		return c.Run(context.Background(), LoopOptions{BatchSize: 10, Timeout: 50 * time.Millisecond, Idle: 1,
			PendingEvery: time.Nanosecond, PendingStrict: strict})
	}
	st, err := run(false, true)
	if err != nil || st.Acked != 30 || st.PendingMidBatch != 3 || st.PendingShort != 0 {
		t.Errorf("honest source: stats %+v, %v; want 30 acked, Pending between each of the 3 reads and its ack, none short", st, err)
	}
	// The forgetful source answers 20, 10, then 0 with the last 10 read and not acked.
	st, err = run(true, true)
	if !errors.Is(err, ErrPendingBelowInFlight) || st.Acked != 20 || st.PendingShort != 1 {
		t.Errorf("forgetful source, strict: stats %+v, %v; want ErrPendingBelowInFlight at the third batch", st, err)
	}
	st, err = run(true, false)
	if err != nil || st.Acked != 30 || st.PendingShort != 1 {
		t.Errorf("forgetful source: stats %+v, %v; want 30 acked and 1 short answer counted", st, err)
	}
}

// A PendingFn that came due while a batch was being written (AckDelay) is called before that batch's
// Ack, as numa's timer lands it; one due during an empty read waits for the next Read to return.
func TestRunPendingLandsWhereNumasTimerDoes(t *testing.T) {
	src := &backlogSource{testSource: newTestSource(4)}
	c := dial(t, serve(t, src))
	st, err := c.Run(context.Background(), LoopOptions{BatchSize: 1, Timeout: 50 * time.Millisecond, Idle: 1,
		AckDelay: 120 * time.Millisecond, PendingEvery: 100 * time.Millisecond, PendingStrict: true})
	if err != nil {
		t.Fatal(err)
	}
	// One before the first read, then one during each of the 4 batches' writes.
	if st.PendingMidBatch != 4 || st.PendingShort != 0 {
		t.Errorf("stats %+v; want PendingFn between each Read and its Ack", st)
	}
	if _, _, _, n := src.snapshot(); n != 5 {
		t.Errorf("PendingFn called %d times, want 5", n)
	}
}

// numa reads the server info before anything else and refuses to start with a source whose
// minimum_numaflow_version it cannot read or is above its own, or whose SDK version (for a language it
// knows) it cannot read or is older than it runs (Go and Java 0.9.0, Rust 0.2.0). numatest skipped a
// minimum it could not parse and never looked at the SDK's age, so a binary built with numaflow-go
// replaced by a local path (version "(devel)") passed every test and would not start in a pipeline.
func TestDialRefusesWhatNumaRefuses(t *testing.T) {
	tests := []struct {
		lang, version, min string
		refused            bool
	}{
		{"go", "v0.12.0", "1.4.0-z", false},
		{"go", "v0.12.0", "", false}, // no minimum: numa skips the check
		{"go", "v0.12.0", "1.8", false},
		{"go", "v0.12.0", " 1.8.3 ", false},
		{"go", "v0.12.0", "1.8.3-rc1", false},
		{"go", "v0.12.0", "1.9", true},
		{"go", "v0.12.0", "1.8.4-z", true},
		{"go", "v0.12.0", "v1.4.0", true}, // not a requirement numa can read
		{"go", "v0.12.0", "1.4.0-", true},
		{"go", "v0.12.0", "latest", true},
		{"go", "(devel)", "1.4.0-z", true},
		{"go", "v0.12.0-01", "1.4.0-z", true},
		{"go", "v0.8.5", "1.4.0-z", true},
		{"go", "v0.9.0-rc2", "1.4.0-z", true},
		{"go", "v0.9.0", "1.4.0-z", false},
		{"go", "v0.10.0-rc1", "1.4.0-z", false},
		{"go", "v0.11.1-0.20250101000000-abcdef123456", "1.4.0-z", false},
		{"go", "", "1.4.0-z", false},            // no version: numa skips the check
		{"", "(devel)", "1.4.0-z", false},       // no language: skipped
		{"golang", "(devel)", "1.4.0-z", false}, // a language numa does not know: skipped
		{"java", "0.8.2", "1.4.0-z", true},
		{"rust", "0.1.5", "1.4.0-z", true},
		{"rust", "0.2.0", "1.4.0-z", false},
		{"python", "0.8.0", "1.4.0-z", true},
		{"python", "0.9.0.post1", "1.4.0-z", false}, // PEP 440, not checked here
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s %q min %q", tt.lang, tt.version, tt.min), func(t *testing.T) {
			si := info.ServerInfo{Protocol: info.UDS, Language: info.Language(tt.lang), Version: tt.version, MinimumNumaflowVersion: tt.min}
			opts := serveRaw(t, &rawSource{}, si)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			c, err := Dial(ctx, opts)
			if err == nil {
				defer c.Close()
			}
			if refused := err != nil; refused != tt.refused {
				t.Errorf("Dial error %v; numa refuses this server info: %v", err, tt.refused)
			}
		})
	}
	// The version that stands in for an empty one (a test binary) is checked as the release's.
	opts := serveRaw(t, &rawSource{}, info.ServerInfo{Protocol: info.UDS, Language: info.Go, MinimumNumaflowVersion: "1.4.0-z"})
	opts.SDKVersion = "(devel)"
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if c, err := Dial(ctx, opts); err == nil {
		c.Close()
		t.Error("Dial accepted SDKVersion (devel)")
	}
}
