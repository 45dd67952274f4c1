package bench

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/numaflow-connectors/sources/common/benchkit"
	"github.com/numaflow-connectors/sources/common/proctest"
	"github.com/numaflow-connectors/sources/mqtt-source/mqtttest"
)

// BenchmarkBigMessages measures the connector binary's peak RSS (VmHWM) while a backpressured numa
// drains 400 messages of 1 MiB over the unix socket, with and without the byte bound (benchkit's big
// message scenario), and fails unless every message is delivered and acked.
func BenchmarkBigMessages(b *testing.B) {
	srv := mqtttest.Shared(b)
	bin := proctest.Build(b, filepath.Join("..", ".."), "mqtt-source")
	pub := srv.Connect(b, "")
	benchkit.BigMessages(b, bin, "messages", func(ctx context.Context, c benchkit.BigCase, run int) []string {
		topic := fmt.Sprintf("bench-big-%s-%d-%d", c.Name, time.Now().UnixNano(), run)
		srv.Session(b, topic+"-src-0", time.Hour, 1, "$share/"+topic+"/"+topic)
		for j := range benchkit.BigCount {
			if err := pub.Publish(ctx, topic, 1, nil, []byte(benchkit.BigPayload(j))); err != nil {
				b.Fatalf("filling %s: %v", topic, err)
			}
		}
		return connectorEnv(srv, topic)
	})
}
