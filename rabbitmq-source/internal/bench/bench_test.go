package bench

import (
	"context"
	"flag"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/numaflow-connectors/sources/common/benchkit"
	"github.com/numaflow-connectors/sources/common/proctest"
	"github.com/numaflow-connectors/sources/rabbitmq-source/rabbitmqtest"
)

var (
	benchMessages = flag.Int("rabbitmq.messages", 100_000, "messages per throughput run")
	benchPayload  = flag.Int("rabbitmq.payload", 1024, "payload bytes per message")
)

const batch = 500 // numa's default readBatchSize

func TestMain(m *testing.M) { rabbitmqtest.Main(m) }

// BenchmarkThroughput: 100,000 persistent messages of 1 KiB (with message-ids) through the connector
// binary over the real socket (benchkit: numatest playing numa, batches of 500, timeout 1 s), against a
// raw amqp091-go loop (basic.consume with prefetch 1000, one basic.ack multiple per 500, no gRPC) on
// the same node in the same run, for a classic and a quorum queue, then the memsource connector (the
// protocol ceiling). Reports, per queue type, the rates, the ratios, the connector's CPU per message,
// numatest's, the machine's and the broker's, and peak RSS; the connector's CPU profile of each queue
// type is written to BENCH_PROFILE_DIR (rabbitmq-source-classic, rabbitmq-source-quorum).
func BenchmarkThroughput(b *testing.B) {
	node := rabbitmqtest.Shared(b)
	bin := proctest.Build(b, filepath.Join("..", ".."), "rabbitmq-source")
	type phase struct {
		kind   string
		src    benchkit.Result
		raw    float64
		rawUse benchkit.Usage
	}
	for i := 0; i < b.N; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
		var runs []phase
		for _, kind := range []string{rabbitmqtest.Classic, rabbitmqtest.Quorum} {
			q := fmt.Sprintf("bench-src-%s-%d", kind, time.Now().UnixNano())
			node.DeclareQueue(b, q, kind, nil)
			fill(ctx, b, node, q, *benchMessages, *benchPayload)
			src := benchkit.DrainWatching(ctx, b, bin, "rabbitmq-source-"+kind,
				[]string{"RABBITMQ_URL=" + node.URL(), "RABBITMQ_QUEUE=" + q}, *benchMessages, node.CPUTime)
			rq := fmt.Sprintf("bench-raw-%s-%d", kind, time.Now().UnixNano())
			node.DeclareQueue(b, rq, kind, nil)
			fill(ctx, b, node, rq, *benchMessages, *benchPayload)
			raw, rawUse := runRaw(ctx, b, node, rq, *benchMessages)
			runs = append(runs, phase{kind, src, raw, rawUse})
		}
		ceiling := benchkit.Ceiling(ctx, b, *benchMessages, *benchPayload)
		cancel()
		b.ReportMetric(ceiling.Rate, "ceiling_msg/s")
		for _, r := range runs {
			r.src.Report(b, r.kind+"_source_")
			b.ReportMetric(r.raw, r.kind+"_raw_msg/s")
			r.rawUse.Report(b, r.kind+"_raw_")
			b.ReportMetric(100*r.src.Rate/r.raw, r.kind+"_ratio_%")
			b.ReportMetric(100*r.src.Rate/ceiling.Rate, r.kind+"_ceiling_ratio_%")
			b.Logf("%s queue, %d messages of %d bytes: source %s; raw loop %.0f msg/s (ratio %.0f%%), %s; memsource ceiling %s (ratio %.0f%%)",
				r.kind, *benchMessages, *benchPayload, r.src, r.raw, 100*r.src.Rate/r.raw, r.rawUse, ceiling, 100*r.src.Rate/ceiling.Rate)
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

// runRaw drains the queue with a plain amqp091-go consumer: prefetch 1000, basic.ack multiple every
// 500. The rate and the machine's and the node's CPU run from the first message to the last ack.
func runRaw(ctx context.Context, b *testing.B, node *rabbitmqtest.Node, queue string, n int) (float64, benchkit.Usage) {
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
	meter := benchkit.Meter{Broker: node.CPUTime}
	for got := 0; got < n; {
		select {
		case d := <-deliveries:
			if first.IsZero() {
				meter.Start()
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
	use := meter.Stop(n)
	return float64(n-1) / last.Sub(first).Seconds(), use
}
