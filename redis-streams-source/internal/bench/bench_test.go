package bench

import (
	"context"
	"flag"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/numaflow-connectors/sources/common/benchkit"
	"github.com/numaflow-connectors/sources/common/proctest"
	"github.com/numaflow-connectors/sources/redis-streams-source/redistest"
)

var (
	benchEntries = flag.Int("redis.entries", 200_000, "entries per throughput run")
	benchPayload = flag.Int("redis.payload", 1024, "payload bytes per entry")
)

const batch = 500 // numa's default readBatchSize

func TestMain(m *testing.M) { redistest.Main(m) }

// BenchmarkThroughput: 200,000 entries of 1 KiB through the connector binary over the real socket
// (benchkit: numatest playing numa, batches of 500), against a raw go-redis loop (XREADGROUP COUNT 500
// + pipelined XACK, no gRPC) on the same server and the memsource connector (the protocol ceiling) in
// the same run. Reports the rates, the ratios, the connector's CPU per message and peak RSS; the
// connector's CPU profile is written to BENCH_PROFILE_DIR.
func BenchmarkThroughput(b *testing.B) {
	srv := redistest.Shared(b)
	rdb := srv.Client(b)
	bin := proctest.Build(b, filepath.Join("..", ".."), "redis-streams-source")
	for i := 0; i < b.N; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
		srcStream := fmt.Sprintf("bench-src-%d-%d", time.Now().UnixNano(), i)
		fill(ctx, b, rdb, srcStream, *benchEntries)
		src := benchkit.DrainWatching(ctx, b, bin, "redis-streams-source", []string{
			"REDIS_URL=" + srv.URL(), "REDIS_STREAM=" + srcStream, "REDIS_GROUP=bench", "REDIS_PAYLOAD_FIELD=payload",
		}, *benchEntries, srv.CPUTime)

		rawStream := fmt.Sprintf("bench-raw-%d-%d", time.Now().UnixNano(), i)
		fill(ctx, b, rdb, rawStream, *benchEntries)
		raw, rawUse := runRaw(ctx, b, rdb, rawStream, *benchEntries, srv.CPUTime)
		rdb.Del(ctx, srcStream, rawStream)
		ceiling := benchkit.Ceiling(ctx, b, *benchEntries, *benchPayload)
		cancel()

		src.Report(b, "source_")
		b.ReportMetric(raw, "raw_msg/s")
		rawUse.Report(b, "raw_")
		b.ReportMetric(100*src.Rate/raw, "ratio_%")
		b.ReportMetric(ceiling.Rate, "ceiling_msg/s")
		b.ReportMetric(100*src.Rate/ceiling.Rate, "ceiling_ratio_%")
		b.Logf("%d entries of %d bytes: source %s; raw loop %.0f msg/s (ratio %.0f%%), %s; memsource ceiling %s (ratio %.0f%%)",
			*benchEntries, *benchPayload, src, raw, 100*src.Rate/raw, rawUse, ceiling, 100*src.Rate/ceiling.Rate)
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

// runRaw drains the stream with a plain go-redis loop: XREADGROUP COUNT 500 then one pipelined XACK.
func runRaw(ctx context.Context, b *testing.B, rdb *redis.Client, stream string, n int, broker func() time.Duration) (float64, benchkit.Usage) {
	b.Helper()
	if err := rdb.XGroupCreateMkStream(ctx, stream, "raw", "0").Err(); err != nil {
		b.Fatal(err)
	}
	got := 0
	var first, last time.Time
	meter := benchkit.Meter{Broker: broker}
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
				meter.Start()
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
	use := meter.Stop(got)
	return float64(n-1) / last.Sub(first).Seconds(), use
}
