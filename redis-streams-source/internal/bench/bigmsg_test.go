package bench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/numaflow-connectors/sources/common/numatest"
	"github.com/numaflow-connectors/sources/common/proctest"
	"github.com/numaflow-connectors/sources/redis-streams-source/redistest"
)

// The big-message scenario of the memory verification: 400 entries of 1 MiB waiting, the connector
// configured for numa's batch of 500, numa backpressured (Read 10 with a 1 s timeout, ack 200 ms
// later), in a pod limited to 256 MiB.
const (
	bigCount     = 400
	bigSize      = 1 << 20
	bigBudgetMiB = 256
	bigRead      = 10
	bigAckDelay  = 200 * time.Millisecond
)

// bigCases: "bounded" is what the server derives from a 256 MiB cgroup (GOMEMLIMIT 90% of it,
// PREFETCH_BYTES a quarter); "unbounded" is the before, bounded by count only (GOMEMLIMIT=off is
// the runtime's default, spelled out so the test's own environment cannot leak a limit in).
var bigCases = []struct{ name, env string }{
	{"bounded", "GOMEMLIMIT=230MiB PREFETCH_BYTES=64Mi"},
	{"unbounded", "GOMEMLIMIT=off PREFETCH_BYTES=1Gi"},
}

// BenchmarkBigMessages measures the connector binary's peak RSS (VmHWM) while a backpressured numa
// drains 400 entries of 1 MiB over the unix socket, with and without the byte bound, and fails unless
// every entry is delivered and acked. Budget: the manifests' 256 MiB.
func BenchmarkBigMessages(b *testing.B) {
	srv := redistest.Shared(b)
	rdb := srv.Client(b)
	bin := proctest.Build(b, filepath.Join("..", ".."), "redis-streams-source")
	for i := 0; i < b.N; i++ {
		for _, c := range bigCases {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			stream := fmt.Sprintf("bench-big-%s-%d-%d", c.name, time.Now().UnixNano(), i)
			fillBig(ctx, b, rdb, stream)
			rss, took, got := runBig(ctx, b, bin, srv, stream, strings.Fields(c.env))
			rdb.Del(context.Background(), stream)
			cancel()
			b.ReportMetric(float64(rss)/(1<<20), c.name+"_peak_rss_MiB")
			b.ReportMetric(float64(got), c.name+"_acked")
			b.ReportMetric(took.Seconds(), c.name+"_s")
			b.Logf("%s (%s): %d of %d entries of %d KiB acked in %s, connector peak RSS %.1f MiB (budget %d MiB)",
				c.name, c.env, got, bigCount, bigSize>>10, took.Round(time.Millisecond), float64(rss)/(1<<20), bigBudgetMiB)
		}
		b.ReportMetric(bigBudgetMiB, "budget_MiB")
	}
}

// fillBig adds bigCount entries of bigSize bytes, each payload starting with its 6-digit index.
func fillBig(ctx context.Context, b *testing.B, rdb *redis.Client, stream string) {
	b.Helper()
	pad := strings.Repeat("x", bigSize-6)
	for start := 0; start < bigCount; start += 16 {
		pipe := rdb.Pipeline()
		for j := start; j < min(start+16, bigCount); j++ {
			pipe.XAdd(ctx, &redis.XAddArgs{Stream: stream, Values: []any{"payload", fmt.Sprintf("%06d", j) + pad}})
		}
		if _, err := pipe.Exec(ctx); err != nil {
			b.Fatalf("filling %s: %v", stream, err)
		}
	}
}

// runBig starts the connector with env on stream, drains it slowly and returns the connector's peak
// RSS, the time from its start to the last ack, and how many distinct entries were acked.
func runBig(ctx context.Context, b *testing.B, bin string, srv *redistest.Server, stream string, env []string) (int64, time.Duration, int) {
	b.Helper()
	dir, err := os.MkdirTemp("", "rbig")
	if err != nil {
		b.Fatal(err)
	}
	defer os.RemoveAll(dir)
	sock, info := filepath.Join(dir, "s.sock"), filepath.Join(dir, "info")
	start := time.Now()
	p, err := proctest.StartE(bin, nil, proctest.Options{Env: append([]string{
		"REDIS_URL=" + srv.URL(), "REDIS_STREAM=" + stream, "REDIS_GROUP=bench", "REDIS_PAYLOAD_FIELD=payload",
		"SOURCE_SOCKET=" + sock, "SOURCE_SERVER_INFO_FILE=" + info, "METRICS_ADDR=", "LOG_LEVEL=warn",
		"NUMAFLOW_READ_BATCH_SIZE=500", "NUMAFLOW_READ_TIMEOUT_MS=1000",
	}, env...)})
	if err != nil {
		b.Fatal(err)
	}
	defer p.Kill()
	c, err := numatest.Dial(ctx, numatest.Options{Socket: sock, ServerInfoFile: info})
	if err != nil {
		b.Fatalf("dialing the connector: %v\n%s", err, p.Output())
	}
	defer c.Close()
	// A backpressured numa: Read(10, 1 s), wait 200 ms, ack, until every message was acked.
	st, err := c.Run(ctx, numatest.LoopOptions{BatchSize: bigRead, Timeout: time.Second, AckDelay: bigAckDelay,
		Limit: bigCount, PendingEvery: -1, PartitionsEvery: -1})
	got := int(st.Acked)
	took := time.Since(start)
	rss := proctest.PeakRSS(p.Cmd.Process.Pid)
	if err != nil || got < bigCount {
		b.Fatalf("%v: %d of %d entries acked (%v)\n%s", env, got, bigCount, err, p.Output())
	}
	_ = p.Signal(syscall.SIGTERM)
	p.Wait(10 * time.Second)
	return rss, took, got
}
