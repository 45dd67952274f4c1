package bench

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/numaflow-connectors/sources/common/numatest"
	"github.com/numaflow-connectors/sources/common/proctest"
	"github.com/numaflow-connectors/sources/rabbitmq-source/rabbitmqtest"
)

// The big-message scenario: 400 messages of 512 KiB waiting (the size at which a minimal amqp091-go
// consumer with a count prefetch reached 369 MiB), the connector configured for numa's batch of 500,
// numa backpressured (Read 10 with a 1 s timeout, ack 200 ms later), in a pod limited to 256 MiB.
const (
	bigCount     = 400
	bigSize      = 512 << 10
	bigBudgetMiB = 256
	bigRead      = 10
	bigAckDelay  = 200 * time.Millisecond
)

// bigCases: "bounded" is what the server derives from a 256 MiB cgroup (GOMEMLIMIT 90% of it,
// PREFETCH_BYTES a quarter); "unbounded" lifts the byte budget so only the count prefetch bounds it.
var bigCases = []struct{ name, env string }{
	{"bounded", "GOMEMLIMIT=230MiB PREFETCH_BYTES=64Mi"},
	{"unbounded", "GOMEMLIMIT=off PREFETCH_BYTES=1Gi"},
}

// BenchmarkBigMessages measures the connector binary's peak RSS (VmHWM) while a backpressured numa
// drains 400 messages of 512 KiB over the unix socket, with and without the byte budget, and the peak
// of a minimal amqp091-go consumer with prefetch 1000 on the same queue contents; it fails unless every
// message is delivered and acked.
func BenchmarkBigMessages(b *testing.B) {
	node := rabbitmqtest.Shared(b)
	bin := proctest.Build(b, filepath.Join("..", ".."), "rabbitmq-source")
	for i := 0; i < b.N; i++ {
		for _, c := range bigCases {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			q := fmt.Sprintf("bench-big-%s-%d", c.name, time.Now().UnixNano())
			node.DeclareQueue(b, q, rabbitmqtest.Classic, nil)
			fill(ctx, b, node, q, bigCount, bigSize)
			rss, took, got := runBig(ctx, b, bin, node, q, strings.Fields(c.env))
			cancel()
			b.ReportMetric(float64(rss)/(1<<20), c.name+"_peak_rss_MiB")
			b.ReportMetric(float64(got), c.name+"_acked")
			b.ReportMetric(took.Seconds(), c.name+"_s")
			b.Logf("%s (%s): %d of %d messages of %d KiB acked in %s, connector peak RSS %.1f MiB (budget %d MiB)",
				c.name, c.env, got, bigCount, bigSize>>10, took.Round(time.Millisecond), float64(rss)/(1<<20), bigBudgetMiB)
		}
		b.ReportMetric(bigBudgetMiB, "budget_MiB")
	}
}

// runBig starts the connector with env on queue, drains it slowly and returns the connector's peak
// RSS, the time from its start to the last ack, and how many messages were acked.
func runBig(ctx context.Context, b *testing.B, bin string, node *rabbitmqtest.Node, queue string, env []string) (int64, time.Duration, int) {
	b.Helper()
	start := time.Now()
	p, c := startSource(ctx, b, bin, node, queue, env)
	defer p.Kill()
	defer c.Close()
	st, err := c.Run(ctx, numatest.LoopOptions{BatchSize: bigRead, Timeout: time.Second, AckDelay: bigAckDelay,
		Limit: bigCount, PendingEvery: -1, PartitionsEvery: -1})
	got := int(st.Acked)
	took := time.Since(start)
	rss := proctest.PeakRSS(p.Cmd.Process.Pid)
	if err != nil || got < bigCount {
		b.Fatalf("%v: %d of %d messages acked (%v)\n%s", env, got, bigCount, err, p.Output())
	}
	_ = p.Signal(syscall.SIGTERM)
	p.Wait(10 * time.Second)
	return rss, took, got
}

// startSource starts the connector binary on queue and dials it as numa.
func startSource(ctx context.Context, b *testing.B, bin string, node *rabbitmqtest.Node, queue string, env []string) (*proctest.Process, *numatest.Client) {
	b.Helper()
	dir := b.TempDir()
	sock, info := filepath.Join(dir, "s.sock"), filepath.Join(dir, "info")
	p, err := proctest.StartE(bin, nil, proctest.Options{Env: append([]string{
		"RABBITMQ_URL=" + node.URL(), "RABBITMQ_QUEUE=" + queue,
		"SOURCE_SOCKET=" + sock, "SOURCE_SERVER_INFO_FILE=" + info, "METRICS_ADDR=", "LOG_LEVEL=warn",
		"NUMAFLOW_READ_BATCH_SIZE=500", "NUMAFLOW_READ_TIMEOUT_MS=1000",
	}, env...)})
	if err != nil {
		b.Fatal(err)
	}
	c, err := numatest.Dial(ctx, numatest.Options{Socket: sock, ServerInfoFile: info})
	if err != nil {
		p.Kill()
		b.Fatalf("dialing the connector: %v\n%s", err, p.Output())
	}
	return p, c
}
