package drivertest

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/numaflow-connectors/sources/common/numatest"
	"github.com/numaflow-connectors/sources/common/proctest"
	"github.com/numaflow-connectors/sources/common/source"
)

// partition is deliberately not 0, so a source that ignores Options.Partition is caught.
const partition = 3

// Run runs the conformance suite twice: in process (the adapter's sourcer methods called directly)
// and over a real unix socket served by numaflow-go's server and driven by numatest, as numa would.
// Cases run in parallel, each with its own harness (fresh resource).
func Run(t *testing.T, newHarness NewHarness) {
	for _, mode := range []string{"in_process", "socket"} {
		t.Run(mode, func(t *testing.T) {
			for _, c := range cases {
				t.Run(c.name, func(t *testing.T) {
					t.Parallel()
					ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
					defer cancel()
					h, err := newHarness(ctx, t)
					if err != nil {
						t.Fatalf("creating harness: %v", err)
					}
					t.Cleanup(h.Close)
					f := &fixture{t: t, ctx: ctx, h: h, caps: h.Capabilities(), socket: mode == "socket", logs: proctest.LogWriter(t)}
					if f.caps.MaxPayload == 0 {
						f.caps.MaxPayload = 1 << 20
					}
					c.fn(f)
				})
			}
		})
	}
}

type fixture struct {
	t      *testing.T
	ctx    context.Context
	h      Harness
	caps   Capabilities
	socket bool
	logs   io.Writer
}

var cases = []struct {
	name string
	fn   func(f *fixture)
}{
	{"read_returns_at_most_count", testReadAtMostCount},
	{"empty_read_waits_until_timeout", testEmptyReadWaits},
	{"read_returns_when_data_arrives", testReadWakesOnData},
	{"acked_message_never_comes_back", testAckedNeverReturns},
	{"nacked_message_comes_back_with_same_offset", testNackRedelivers},
	{"nack_delay_is_honoured", testNackDelay},
	{"max_deliveries_dead_letters", testMaxDeliveries},
	{"close_releases_held_messages_at_once", testCloseReleases},
	{"crash_redelivers_after_lease", testCrashRedelivers},
	{"lease_keeper_holds_slow_message", testLeaseKeeper},
	{"double_and_unknown_acks_are_harmless", testDoubleAck},
	{"payloads_round_trip", testPayloads},
	{"headers_keys_event_time", testMapping},
	{"missing_resource_is_not_found", testMissing},
	{"close_is_idempotent", testCloseIdempotent},
	{"pending_reaches_zero_after_drain", testPending},
	{"pending_counts_the_batch_being_written", testPendingDuringBatch},
	{"partitions_match_offsets", testPartitions},
}

// ---- replicas ----

// replica is one running source (adapter over a fresh driver) and the numa client that drives it.
type replica struct {
	f      *fixture
	src    *source.Source
	reg    *prometheus.Registry
	numa   numaClient
	closed bool
	stop   func()
}

type numaClient interface {
	read(ctx context.Context, n int, timeout time.Duration) ([]numatest.Message, error)
	ack(ctx context.Context, offsets []numatest.Offset) error
	nack(ctx context.Context, items []numatest.NackItem) error
	pending(ctx context.Context) (int64, error)
	partitions(ctx context.Context) ([]int32, error)
}

func (f *fixture) replica() *replica {
	return f.replicaOf(f.h.MakeDriver)
}

func (f *fixture) replicaOf(open func(context.Context) (source.Driver, error)) *replica {
	f.t.Helper()
	d, err := open(f.ctx)
	if err != nil {
		f.t.Fatalf("opening driver: %v", err)
	}
	reg := prometheus.NewRegistry()
	log := slog.New(slog.NewTextHandler(f.logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	src, err := source.New(d, source.Options{
		Partition: partition, ReadBatchSize: 100, AckRetry: 5 * time.Second,
		ReleaseWait: 300 * time.Millisecond, PendingRefresh: 100 * time.Millisecond,
		// The broker's largest payload is delivered (testPayloads), as in a pipeline whose inter-step
		// buffer takes it: room for it and for its keys, headers and framing.
		MaxMessageBytes: max(f.caps.MaxPayload+64<<10, source.DefaultMaxMessageBytes),
	}, log, reg)
	if err != nil {
		f.t.Fatalf("creating source: %v", err)
	}
	r := &replica{f: f, src: src, reg: reg}
	if f.socket {
		r.numa, r.stop = serve(f.t, src)
	} else {
		r.numa, r.stop = inProcess{src}, func() {}
	}
	f.t.Cleanup(func() { r.close() })
	return r
}

// close shuts the replica down as on SIGTERM: release what it holds, close the driver.
func (r *replica) close() {
	if r.closed {
		return
	}
	r.closed = true
	r.stop()
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.f.ctx), 20*time.Second)
	defer cancel()
	if err := r.src.Close(ctx); err != nil {
		r.f.t.Errorf("closing source: %v", err)
	}
}

// kill stops the replica as kill -9 would: nothing is released or committed.
func (r *replica) kill() {
	if r.closed {
		return
	}
	r.closed = true
	r.stop()
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.f.ctx), 20*time.Second)
	defer cancel()
	r.src.Kill(ctx)
}

func (r *replica) read(n int, timeout time.Duration) []numatest.Message {
	r.f.t.Helper()
	msgs, err := r.numa.read(r.f.ctx, n, timeout)
	if err != nil {
		r.f.t.Fatalf("read: %v", err)
	}
	for _, m := range msgs {
		if len(m.Offset.Value) == 0 {
			r.f.t.Fatalf("message with an empty offset")
		}
	}
	return msgs
}

func (r *replica) ack(msgs ...numatest.Message) {
	r.f.t.Helper()
	if err := r.numa.ack(r.f.ctx, offsetsOf(msgs)); err != nil {
		r.f.t.Fatalf("ack: %v", err)
	}
}

func (r *replica) nack(opts *numatest.NackOptions, msgs ...numatest.Message) {
	r.f.t.Helper()
	items := make([]numatest.NackItem, len(msgs))
	for i, m := range msgs {
		items[i] = numatest.NackItem{Offset: m.Offset, Options: opts}
	}
	if err := r.numa.nack(r.f.ctx, items); err != nil {
		r.f.t.Fatalf("nack: %v", err)
	}
}

// collect reads until n distinct messages arrived or within passed; it acks them when ack is true.
// Redeliveries of a message already collected are returned as extra entries only when keepDups.
func (r *replica) collect(n int, within time.Duration, ack bool) []numatest.Message {
	r.f.t.Helper()
	seen := map[string]bool{}
	var out []numatest.Message
	deadline := time.Now().Add(within)
	for len(out) < n && time.Now().Before(deadline) {
		msgs := r.read(100, 500*time.Millisecond)
		for _, m := range msgs {
			if !seen[string(m.Offset.Value)] {
				seen[string(m.Offset.Value)] = true
				out = append(out, m)
			}
		}
		if ack && len(msgs) > 0 {
			r.ack(msgs...)
		}
	}
	return out
}

func (r *replica) counter(name string, labels map[string]string) float64 {
	mfs, err := r.reg.Gather()
	if err != nil {
		r.f.t.Fatalf("gathering metrics: %v", err)
	}
	total := 0.0
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if matches(m, labels) {
				total += m.GetCounter().GetValue() + m.GetGauge().GetValue()
			}
		}
	}
	return total
}

func matches(m *dto.Metric, labels map[string]string) bool {
	for k, v := range labels {
		found := false
		for _, lp := range m.GetLabel() {
			if lp.GetName() == k && lp.GetValue() == v {
				found = true
			}
		}
		if !found {
			return false
		}
	}
	return true
}

func offsetsOf(msgs []numatest.Message) []numatest.Offset {
	out := make([]numatest.Offset, len(msgs))
	for i, m := range msgs {
		out[i] = m.Offset
	}
	return out
}

func (f *fixture) publish(pubs ...Publication) {
	f.t.Helper()
	if err := f.h.Publish(f.ctx, pubs); err != nil {
		f.t.Fatalf("publishing: %v", err)
	}
}

func (f *fixture) publishN(n int, prefix string) []string {
	f.t.Helper()
	pubs := make([]Publication, n)
	want := make([]string, n)
	for i := range pubs {
		want[i] = fmt.Sprintf("%s-%03d", prefix, i)
		pubs[i] = Publication{Payload: []byte(want[i])}
	}
	f.publish(pubs...)
	return want
}

func (f *fixture) redelivery() time.Duration {
	if f.caps.Redelivery > 0 {
		return f.caps.Redelivery
	}
	return 3 * time.Second
}

func eventually(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", within, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func payloads(msgs []numatest.Message) []string {
	out := make([]string, len(msgs))
	for i, m := range msgs {
		out[i] = string(m.Payload)
	}
	return out
}
