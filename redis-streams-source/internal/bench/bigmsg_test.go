package bench

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/numaflow-connectors/sources/common/benchkit"
	"github.com/numaflow-connectors/sources/common/proctest"
	"github.com/numaflow-connectors/sources/redis-streams-source/redistest"
)

// BenchmarkBigMessages measures the connector binary's peak RSS (VmHWM) while a backpressured numa
// drains 400 entries of 1 MiB over the unix socket, with and without the byte bound (benchkit's big
// message scenario), and fails unless every entry is delivered and acked.
func BenchmarkBigMessages(b *testing.B) {
	srv := redistest.Shared(b)
	rdb := srv.Client(b)
	bin := proctest.Build(b, filepath.Join("..", ".."), "redis-streams-source")
	benchkit.BigMessages(b, bin, "entries", func(ctx context.Context, c benchkit.BigCase, run int) []string {
		stream := fmt.Sprintf("bench-big-%s-%d-%d", c.Name, time.Now().UnixNano(), run)
		b.Cleanup(func() { rdb.Del(context.Background(), stream) })
		for start := 0; start < benchkit.BigCount; start += 16 {
			pipe := rdb.Pipeline()
			for j := start; j < min(start+16, benchkit.BigCount); j++ {
				pipe.XAdd(ctx, &redis.XAddArgs{Stream: stream, Values: []any{"payload", benchkit.BigPayload(j)}})
			}
			if _, err := pipe.Exec(ctx); err != nil {
				b.Fatalf("filling %s: %v", stream, err)
			}
		}
		return []string{"REDIS_URL=" + srv.URL(), "REDIS_STREAM=" + stream, "REDIS_GROUP=bench", "REDIS_PAYLOAD_FIELD=payload"}
	})
}
