package bench

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/numaflow-connectors/sources/common/numatest"
	"github.com/numaflow-connectors/sources/common/proctest"
	"github.com/numaflow-connectors/sources/redis-streams-source/redistest"
)

var (
	benchEntries = flag.Int("redis.entries", 200_000, "entries per throughput run")
	benchPayload = flag.Int("redis.payload", 1024, "payload bytes per entry")
)

const batch = 500 // numa's default readBatchSize

func TestMain(m *testing.M) { redistest.Main(m) }

// BenchmarkThroughput: 200,000 entries of 1 KiB, batch 500, timeout 1 s, through the real socket
// with numatest, against a raw go-redis loop (XREADGROUP COUNT 500 + pipelined XACK, no gRPC) on the
// same server in the same run. Reports both rates, the ratio and the connector's peak RSS (VmHWM).
func BenchmarkThroughput(b *testing.B) {
	srv := redistest.Shared(b)
	rdb := srv.Client(b)
	bin := proctest.Build(b, filepath.Join("..", ".."), "redis-streams-source")
	for i := 0; i < b.N; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
		srcStream := fmt.Sprintf("bench-src-%d-%d", time.Now().UnixNano(), i)
		fill(ctx, b, rdb, srcStream, *benchEntries)
		src, rss := runSource(ctx, b, bin, srv, srcStream, *benchEntries)

		rawStream := fmt.Sprintf("bench-raw-%d-%d", time.Now().UnixNano(), i)
		fill(ctx, b, rdb, rawStream, *benchEntries)
		raw := runRaw(ctx, b, rdb, rawStream, *benchEntries)
		rdb.Del(ctx, srcStream, rawStream)
		cancel()

		b.ReportMetric(src, "source_msg/s")
		b.ReportMetric(raw, "raw_msg/s")
		b.ReportMetric(100*src/raw, "ratio_%")
		b.ReportMetric(float64(rss)/(1<<20), "peak_rss_MiB")
		b.Logf("%d entries of %d bytes: source %.0f msg/s, raw loop %.0f msg/s, ratio %.0f%%, source peak RSS %.1f MiB",
			*benchEntries, *benchPayload, src, raw, 100*src/raw, float64(rss)/(1<<20))
	}
}

// fill adds n entries with a payload field, pipelined 1,000 at a time.
func fill(ctx context.Context, b *testing.B, rdb *redis.Client, stream string, n int) {
	b.Helper()
	payload := strings.Repeat("x", *benchPayload)
	for start := 0; start < n; start += 1000 {
		pipe := rdb.Pipeline()
		for j := start; j < min(start+1000, n); j++ {
			pipe.XAdd(ctx, &redis.XAddArgs{Stream: stream, Values: []any{"payload", payload, "n", strconv.Itoa(j)}})
		}
		if _, err := pipe.Exec(ctx); err != nil {
			b.Fatalf("filling %s: %v", stream, err)
		}
	}
}

// runSource drains the stream through the connector binary and returns the steady rate (first to last
// message) and the process's peak resident set size.
func runSource(ctx context.Context, b *testing.B, bin string, srv *redistest.Server, stream string, n int) (float64, int64) {
	b.Helper()
	dir, err := os.MkdirTemp("", "rb")
	if err != nil {
		b.Fatal(err)
	}
	defer os.RemoveAll(dir)
	sock, info := filepath.Join(dir, "s.sock"), filepath.Join(dir, "info")
	p, err := proctest.StartE(bin, nil, proctest.Options{Env: []string{
		"REDIS_URL=" + srv.URL(), "REDIS_STREAM=" + stream, "REDIS_GROUP=bench", "REDIS_PAYLOAD_FIELD=payload",
		"SOURCE_SOCKET=" + sock, "SOURCE_SERVER_INFO_FILE=" + info, "METRICS_ADDR=", "LOG_LEVEL=warn",
		"NUMAFLOW_READ_BATCH_SIZE=500", "NUMAFLOW_READ_TIMEOUT_MS=1000",
	}})
	if err != nil {
		b.Fatal(err)
	}
	defer p.Kill()
	c, err := numatest.Dial(ctx, numatest.Options{Socket: sock, ServerInfoFile: info})
	if err != nil {
		b.Fatalf("dialing the connector: %v\n%s", err, p.Output())
	}
	defer c.Close()
	seen := make(map[string]struct{}, n)
	var first, last time.Time
	for len(seen) < n {
		msgs, err := c.Read(ctx, batch, time.Second)
		if err != nil {
			b.Fatalf("read: %v\n%s", err, p.Output())
		}
		if len(msgs) == 0 {
			continue
		}
		if first.IsZero() {
			first = time.Now()
		}
		offs := make([]numatest.Offset, len(msgs))
		for i, m := range msgs {
			offs[i] = m.Offset
			seen[string(m.Offset.Value)] = struct{}{}
		}
		if err := c.Ack(ctx, offs); err != nil {
			b.Fatalf("ack: %v", err)
		}
		last = time.Now()
	}
	rss := proctest.PeakRSS(p.Cmd.Process.Pid)
	_ = p.Signal(syscall.SIGTERM)
	p.Wait(10 * time.Second)
	return float64(n-1) / last.Sub(first).Seconds(), rss
}

// runRaw drains the stream with a plain go-redis loop: XREADGROUP COUNT 500 then one pipelined XACK.
func runRaw(ctx context.Context, b *testing.B, rdb *redis.Client, stream string, n int) float64 {
	b.Helper()
	if err := rdb.XGroupCreateMkStream(ctx, stream, "raw", "0").Err(); err != nil {
		b.Fatal(err)
	}
	got := 0
	var first, last time.Time
	for got < n {
		res, err := rdb.XReadGroup(ctx, &redis.XReadGroupArgs{Group: "raw", Consumer: "c", Streams: []string{stream, ">"},
			Count: batch, Block: time.Second}).Result()
		if err != nil && err != redis.Nil {
			b.Fatal(err)
		}
		for _, s := range res {
			if len(s.Messages) == 0 {
				continue
			}
			if first.IsZero() {
				first = time.Now()
			}
			ids := make([]string, len(s.Messages))
			for i, m := range s.Messages {
				ids[i] = m.ID
			}
			pipe := rdb.Pipeline()
			pipe.XAck(ctx, stream, "raw", ids...)
			if _, err := pipe.Exec(ctx); err != nil {
				b.Fatal(err)
			}
			got += len(ids)
			last = time.Now()
		}
	}
	return float64(n-1) / last.Sub(first).Seconds()
}
