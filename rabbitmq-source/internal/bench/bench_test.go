package bench

import (
	"context"
	"flag"
	"fmt"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/numaflow-connectors/sources/common/numatest"
	"github.com/numaflow-connectors/sources/common/proctest"
	"github.com/numaflow-connectors/sources/rabbitmq-source/rabbitmqtest"
)

var (
	benchMessages = flag.Int("rabbitmq.messages", 100_000, "messages per throughput run")
	benchPayload  = flag.Int("rabbitmq.payload", 1024, "payload bytes per message")
)

const batch = 500 // numa's default readBatchSize

func TestMain(m *testing.M) { rabbitmqtest.Main(m) }

// BenchmarkThroughput: 100,000 persistent messages of 1 KiB (with message-ids), batch 500, timeout
// 1 s, through the real socket with numatest, against a raw amqp091-go loop (basic.consume with
// prefetch 1000, one basic.ack multiple per 500, no gRPC) on the same node in the same run, for a
// classic and a quorum queue. Reports both rates, the ratio and the connector's peak RSS (VmHWM).
func BenchmarkThroughput(b *testing.B) {
	node := rabbitmqtest.Shared(b)
	bin := proctest.Build(b, filepath.Join("..", ".."), "rabbitmq-source")
	for i := 0; i < b.N; i++ {
		for _, kind := range []string{rabbitmqtest.Classic, rabbitmqtest.Quorum} {
			ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
			q := fmt.Sprintf("bench-src-%s-%d", kind, time.Now().UnixNano())
			node.DeclareQueue(b, q, kind, nil)
			fill(ctx, b, node, q, *benchMessages, *benchPayload)
			src, rss := runSource(ctx, b, bin, node, q, *benchMessages, nil)

			rq := fmt.Sprintf("bench-raw-%s-%d", kind, time.Now().UnixNano())
			node.DeclareQueue(b, rq, kind, nil)
			fill(ctx, b, node, rq, *benchMessages, *benchPayload)
			raw := runRaw(ctx, b, node, rq, *benchMessages)
			cancel()

			b.ReportMetric(src, kind+"_source_msg/s")
			b.ReportMetric(raw, kind+"_raw_msg/s")
			b.ReportMetric(100*src/raw, kind+"_ratio_%")
			b.ReportMetric(float64(rss)/(1<<20), kind+"_peak_rss_MiB")
			b.Logf("%s queue, %d messages of %d bytes: source %.0f msg/s, raw loop %.0f msg/s, ratio %.0f%%, source peak RSS %.1f MiB",
				kind, *benchMessages, *benchPayload, src, raw, 100*src/raw, float64(rss)/(1<<20))
		}
	}
}

// fill publishes n persistent messages of size bytes with message-ids, confirmed in windows of 1,000.
func fill(ctx context.Context, b *testing.B, node *rabbitmqtest.Node, queue string, n, size int) {
	b.Helper()
	c, err := amqp.Dial(node.URL())
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	pad := strings.Repeat("x", max(size-8, 0))
	for start := 0; start < n; start += 1000 {
		msgs := make([]amqp.Publishing, 0, 1000)
		for j := start; j < min(start+1000, n); j++ {
			msgs = append(msgs, amqp.Publishing{Body: fmt.Appendf(nil, "%08d%s", j, pad), MessageId: fmt.Sprint(queue, "-", j)})
		}
		if err := rabbitmqtest.PublishOn(ctx, c, "", queue, msgs...); err != nil {
			b.Fatalf("filling %s: %v", queue, err)
		}
	}
}

// runSource drains the queue through the connector binary (numa's loop: read 500, ack them) and
// returns the steady rate (first to last message) and the process's peak resident set size.
func runSource(ctx context.Context, b *testing.B, bin string, node *rabbitmqtest.Node, queue string, n int, env []string) (float64, int64) {
	b.Helper()
	p, c := startSource(ctx, b, bin, node, queue, env)
	defer p.Kill()
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

// runRaw drains the queue with a plain amqp091-go consumer: prefetch 1000, basic.ack multiple every 500.
func runRaw(ctx context.Context, b *testing.B, node *rabbitmqtest.Node, queue string, n int) float64 {
	b.Helper()
	c, err := amqp.Dial(node.URL())
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	ch, err := c.Channel()
	if err != nil {
		b.Fatal(err)
	}
	if err := ch.Qos(2*batch, 0, false); err != nil {
		b.Fatal(err)
	}
	deliveries, err := ch.Consume(queue, "raw", false, false, false, false, nil)
	if err != nil {
		b.Fatal(err)
	}
	var first, last time.Time
	for got := 0; got < n; {
		select {
		case d := <-deliveries:
			if first.IsZero() {
				first = time.Now()
			}
			got++
			if got%batch == 0 || got == n {
				if err := d.Ack(true); err != nil {
					b.Fatal(err)
				}
			}
			last = time.Now()
		case <-ctx.Done():
			b.Fatalf("raw loop: %d of %d", got, n)
		}
	}
	return float64(n-1) / last.Sub(first).Seconds()
}
