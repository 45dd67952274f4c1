package benchkit

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/numaflow-connectors/sources/common/numatest"
	"github.com/numaflow-connectors/sources/common/proctest"
)

// The big-message scenario of the memory verification: BigCount messages of BigSize bytes waiting,
// the connector configured for numa's batch of 500, numa backpressured (Read 10 with a 1 s timeout,
// ack 200 ms later), in a pod limited to BigBudgetMiB.
const (
	BigCount     = 400
	BigSize      = 1 << 20
	BigBudgetMiB = 256
	bigRead      = 10
	bigAckDelay  = 200 * time.Millisecond
)

// BigPayload is big message j's payload: its 6-digit index, then padding up to BigSize bytes.
func BigPayload(j int) string {
	return fmt.Sprintf("%06d", j) + strings.Repeat("x", BigSize-6)
}

// BigCase is one configuration of the scenario.
type BigCase struct {
	Name string
	Env  string // space-separated NAME=value settings of the connector
}

// bigMaxPayload is the max_payload of the ISB the scenario plays: raised, as 1 MiB messages need.
const bigMaxPayload = 2 << 20

// BigCases: "bounded" is what the server derives from a 256 MiB cgroup (GOMEMLIMIT 90% of it,
// PREFETCH_BYTES a quarter); "unbounded" is the before, bounded by count only (GOMEMLIMIT=off is the
// runtime's default, spelled out so the test's own environment cannot leak a limit in). Both raise
// MAX_MESSAGE_BYTES to 2 MiB, as a pipeline whose inter-step buffer takes 1 MiB messages must.
var BigCases = []BigCase{
	{"bounded", "GOMEMLIMIT=230MiB PREFETCH_BYTES=64Mi MAX_MESSAGE_BYTES=2097152"},
	{"unbounded", "GOMEMLIMIT=off PREFETCH_BYTES=1Gi MAX_MESSAGE_BYTES=2097152"},
}

// BigMessages runs the scenario for every BigCase: setup fills a fresh queue (stream, subscription)
// with BigCount messages of BigPayload and returns the connector's environment for it; the binary then
// serves a backpressured numa until every message is acked (or the benchmark fails). It reports, per
// case, the connector's peak RSS (VmHWM), the messages acked and the time from start to the last ack.
func BigMessages(b *testing.B, bin, what string, setup func(ctx context.Context, c BigCase, run int) []string) {
	for i := 0; i < b.N; i++ {
		for _, c := range BigCases {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			env := append(setup(ctx, c, i), strings.Fields(c.Env)...)
			rss, took, got := bigDrain(ctx, b, bin, env)
			cancel()
			b.ReportMetric(float64(rss)/(1<<20), c.Name+"_peak_rss_MiB")
			b.ReportMetric(float64(got), c.Name+"_acked")
			b.ReportMetric(took.Seconds(), c.Name+"_s")
			b.Logf("%s, %s (%s): %d of %d %s of %d KiB acked in %s, connector peak RSS %.1f MiB (budget %d MiB)",
				filepath.Base(bin), c.Name, c.Env, got, BigCount, what, BigSize>>10, took.Round(time.Millisecond), float64(rss)/(1<<20), BigBudgetMiB)
		}
		b.ReportMetric(BigBudgetMiB, "budget_MiB")
	}
}

// bigDrain starts the connector with env, drains it as a backpressured numa and returns its peak RSS,
// the time from its start to the last ack, and how many distinct messages were acked.
func bigDrain(ctx context.Context, b *testing.B, bin string, env []string) (int64, time.Duration, int) {
	b.Helper()
	start := time.Now()
	p, c, stop := startConnector(ctx, b, bin, nil, env)
	defer stop()
	st, err := c.Run(ctx, numatest.LoopOptions{BatchSize: bigRead, Timeout: time.Second, AckDelay: bigAckDelay,
		Limit: BigCount, PendingEvery: -1, PartitionsEvery: -1, MaxPayload: bigMaxPayload})
	got, took := int(st.Acked), time.Since(start)
	rss := proctest.PeakRSS(p.Cmd.Process.Pid)
	if err != nil || got < BigCount {
		b.Fatalf("%v: %d of %d messages acked (%v)\n%s", env, got, BigCount, err, p.Output())
	}
	return rss, took, got
}
