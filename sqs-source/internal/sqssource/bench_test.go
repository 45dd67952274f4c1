package sqssource

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"github.com/numaflow-connectors/sources/common/benchkit"
	"github.com/numaflow-connectors/sources/common/numatest"
	"github.com/numaflow-connectors/sources/common/proctest"
	"github.com/numaflow-connectors/sources/common/server"
	"github.com/numaflow-connectors/sources/common/source"
	"github.com/numaflow-connectors/sources/sqs-source/sqstest"
)

var (
	benchMessages = flag.Int("sqs.messages", 20000, "messages per throughput run")
	benchIdle     = flag.Duration("sqs.idle", time.Minute, "idle period over which requests are counted")
)

const (
	benchPayload    = 1024
	benchBatch      = 500 // numa's default readBatchSize
	benchVisibility = 10 * time.Second
)

// BenchmarkThroughput compares the connector (adapter + driver, served over a real unix socket and
// driven by numatest as numa would) with a raw SDK loop (ReceiveMessage 10 + DeleteMessageBatch, same
// concurrency) on fauxqs, counts SQS requests per 1,000 messages and per idle minute, and reports the
// peak RSS of the source phase. `make bench` runs it once (-benchtime 1x).
func BenchmarkThroughput(b *testing.B) {
	srv := sqstest.Shared(b)
	for i := 0; i < b.N; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
		// A fresh queue per phase: on fauxqs, draining a queue a second time stalls for a visibility
		// timeout (some receives are lost and come back late), whichever loop drains it.
		queue := func(phase string) string {
			return srv.CreateQueue(b, fmt.Sprintf("bench-%s-%d-%d", phase, time.Now().UnixNano(), i), nil)
		}

		url := queue("source")
		fill(ctx, b, srv, url, *benchMessages)
		src, bin := runSource(ctx, b, srv, url, *benchMessages)

		url = queue("raw")
		fill(ctx, b, srv, url, *benchMessages)
		raw := runRaw(ctx, b, srv, url, *benchMessages, (benchBatch+maxBatch-1)/maxBatch)
		rawUse := raw.machine

		idle := runIdle(ctx, b, srv, queue("idle"), *benchIdle)
		ceiling := benchkit.Ceiling(ctx, b, *benchMessages, benchPayload)
		cancel()

		ratio := src.rate() / raw.rate()
		bin.Report(b, "source_")
		b.ReportMetric(raw.rate(), "raw_msg/s")
		rawUse.Report(b, "raw_")
		b.ReportMetric(100*ratio, "ratio_%")
		b.ReportMetric(100*src.rate()/ceiling.Rate, "ceiling_ratio_%")
		b.ReportMetric(ceiling.Rate, "ceiling_msg/s")
		b.ReportMetric(src.perThousand(), "source_req/1000msg")
		b.ReportMetric(raw.perThousand(), "raw_req/1000msg")
		b.ReportMetric(idle, "idle_req/min")
		for _, r := range []struct {
			name string
			benchRun
		}{{"source", src}, {"raw", raw}} {
			b.Logf("%-6s %d msgs, %.0f msg/s (first to last message %s), %d requests = %.0f per 1,000 msgs %v, longest gap %s, stalled %s",
				r.name, r.msgs, r.rate(), r.span.Round(time.Millisecond), r.requests, r.perThousand(), r.byOp,
				r.gap.Round(time.Millisecond), r.stalled.Round(time.Millisecond))
		}
		b.Logf("connector: %s", bin)
		b.Logf("ratio %.0f%% (%.0f%% without stalls) of the raw loop, %.0f%% of the memsource ceiling (%s); idle: %.1f requests per minute on replica 0 (pending asked every 5 s)",
			100*ratio, 100*src.rateNoStall()/raw.rateNoStall(), 100*src.rate()/ceiling.Rate, ceiling, idle)
	}
}

type benchRun struct {
	msgs, requests, dups int
	took                 time.Duration // start of the phase (start-up included) to the last message
	span                 time.Duration // first to last message
	gap                  time.Duration // longest time between two messages
	stalled              time.Duration // sum of gaps over stallGap
	byOp                 map[string]int64
	machine              benchkit.Usage // the raw loop's: first to last message
}

// stallGap: a pause this long between two messages is a stall (fauxqs losing receives until their
// visibility timeout), not throughput.
const stallGap = time.Second

// rate is the steady-state throughput: messages between the first and the last arrival.
func (r benchRun) rate() float64 { return float64(r.msgs-1) / r.span.Seconds() }

// rateNoStall is rate without the stalls.
func (r benchRun) rateNoStall() float64 { return float64(r.msgs-1) / (r.span - r.stalled).Seconds() }
func (r benchRun) perThousand() float64 { return 1000 * float64(r.requests) / float64(r.msgs) }

// fill sends n messages of benchPayload bytes with SendMessageBatch, 8 calls at a time.
func fill(ctx context.Context, b testing.TB, srv *sqstest.Server, url string, n int) {
	b.Helper()
	body := strings.Repeat("x", benchPayload-6)
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				start := int(next.Add(maxBatch)) - maxBatch
				if start >= n {
					return
				}
				var entries []types.SendMessageBatchRequestEntry
				for i := start; i < min(start+maxBatch, n); i++ {
					entries = append(entries, types.SendMessageBatchRequestEntry{Id: aws.String(strconv.Itoa(i - start)),
						MessageBody: aws.String(fmt.Sprintf("%06d", i) + body)})
				}
				out, err := srv.Client().SendMessageBatch(ctx, &sqs.SendMessageBatchInput{QueueUrl: &url, Entries: entries})
				if err == nil && len(out.Failed) > 0 {
					err = fmt.Errorf("%d entries failed", len(out.Failed))
				}
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		b.Fatalf("filling %s: %v", url, err)
	}
}

// tracker records distinct messages and the longest gap between two arrivals.
type tracker struct {
	mu          sync.Mutex
	seen        map[string]bool
	dups        int
	first, last time.Time
	gap         time.Duration
	stalled     time.Duration
}

func (t *tracker) run(requests int, byOp map[string]int64, took time.Duration) benchRun {
	t.mu.Lock()
	defer t.mu.Unlock()
	return benchRun{msgs: len(t.seen), requests: requests, byOp: byOp, dups: t.dups, took: took,
		span: t.last.Sub(t.first), gap: t.gap, stalled: t.stalled}
}

func (t *tracker) add(id string) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := time.Now()
	if t.first.IsZero() {
		t.first = now
	}
	if gap := now.Sub(t.last); !t.last.IsZero() {
		t.gap = max(t.gap, gap)
		if gap >= stallGap {
			t.stalled += gap
		}
	}
	t.last = now
	if t.seen[id] {
		t.dups++
	}
	t.seen[id] = true
	return len(t.seen)
}

// serveSource runs the connector over the driver on a fresh unix socket and connects numatest to it.
func serveSource(ctx context.Context, b testing.TB, srv *sqstest.Server, url string, counter *requestCounter) (*numatest.Client, func()) {
	b.Helper()
	cfg := testConfig(url, "")
	cfg.VisibilityTimeout = benchVisibility
	cfg.WaitTime = 20 * time.Second
	d := openAt(ctx, b, srv, cfg, counter)
	s, err := source.New(d, source.Options{ReadBatchSize: benchBatch}, nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "sqsb")
	if err != nil {
		b.Fatal(err)
	}
	sock, infoFile := filepath.Join(dir, "source.sock"), filepath.Join(dir, "server-info")
	sctx, scancel := context.WithCancel(ctx)
	served := make(chan error, 1)
	go func() {
		served <- server.ServeSource(sctx, s, server.Listen{Socket: sock, ServerInfoFile: infoFile})
	}()
	c, err := numatest.Dial(ctx, numatest.Options{Socket: sock, ServerInfoFile: infoFile})
	if err != nil {
		scancel()
		b.Fatalf("dialing the source: %v", err)
	}
	return c, func() {
		_ = c.Close()
		scancel()
		<-served
		cctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := s.Close(cctx); err != nil {
			b.Errorf("closing source: %v", err)
		}
		_ = os.RemoveAll(dir)
	}
}

// runSource drains n messages through the connector binary over its socket (benchkit: numa's loop,
// batches of 500) and returns the run (requests from the connector's exit log) and what benchkit
// measured of the process.
func runSource(ctx context.Context, b *testing.B, srv *sqstest.Server, url string, n int) (benchRun, benchkit.Result) {
	b.Helper()
	bin := proctest.Build(b, filepath.Join("..", ".."), "sqs-source")
	env := append(srv.Env(), "SQS_QUEUE_URL="+url, "SQS_WAIT_TIME=20s",
		fmt.Sprintf("SQS_VISIBILITY_TIMEOUT=%s", benchVisibility), "LOG_LEVEL=info")
	res := benchkit.DrainWatching(ctx, b, bin, "sqs-source", env, n, srv.CPUTime)
	run := benchRun{msgs: res.Messages, span: time.Duration(float64(res.Messages-1) / res.Rate * float64(time.Second))}
	for _, line := range strings.Split(res.Output, "\n") {
		var rec struct {
			Msg   string           `json:"msg"`
			Total int              `json:"total"`
			ByOp  map[string]int64 `json:"by_operation"`
		}
		if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == "sqs requests" {
			run.requests, run.byOp = rec.Total, rec.ByOp
		}
	}
	if run.requests == 0 {
		b.Fatalf("the connector logged no request counts at exit:\n%s", res.Output)
	}
	return run, res
}

// runRaw is the baseline: workers each loop ReceiveMessage(10) + DeleteMessageBatch.
func runRaw(ctx context.Context, b *testing.B, srv *sqstest.Server, url string, n, workers int) benchRun {
	b.Helper()
	counter := &requestCounter{}
	cfg := srv.AWSConfig()
	// The same connection pool as the driver's, so neither side pays for connection churn.
	tr0 := http.DefaultTransport.(*http.Transport).Clone()
	tr0.MaxIdleConns = 2 * (maxReceiveConcurrency + ackConcurrency)
	tr0.MaxIdleConnsPerHost = maxReceiveConcurrency + ackConcurrency
	cfg.HTTPClient = &http.Client{Transport: &countingTransport{base: tr0, counter: counter}}
	client := sqs.NewFromConfig(cfg)
	tr := &tracker{seen: map[string]bool{}}
	meter := benchkit.Meter{Broker: srv.CPUTime}
	var done atomic.Bool
	var wg sync.WaitGroup
	start := time.Now()
	var took time.Duration
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !done.Load() && rctx.Err() == nil {
				out, err := client.ReceiveMessage(rctx, &sqs.ReceiveMessageInput{QueueUrl: &url, MaxNumberOfMessages: 10,
					WaitTimeSeconds: 20, VisibilityTimeout: int32(benchVisibility / time.Second),
					MessageSystemAttributeNames: []types.MessageSystemAttributeName{types.MessageSystemAttributeNameAll},
					MessageAttributeNames:       []string{"All"}})
				if err != nil || len(out.Messages) == 0 {
					continue
				}
				meter.Start()
				entries := make([]types.DeleteMessageBatchRequestEntry, len(out.Messages))
				for i, m := range out.Messages {
					entries[i] = types.DeleteMessageBatchRequestEntry{Id: aws.String(strconv.Itoa(i)), ReceiptHandle: m.ReceiptHandle}
				}
				_, _ = client.DeleteMessageBatch(rctx, &sqs.DeleteMessageBatchInput{QueueUrl: &url, Entries: entries})
				for _, m := range out.Messages {
					if tr.add(*m.MessageId) >= n && !done.Swap(true) {
						meter.Mark()
						took = time.Since(start)
						cancel() // ends the other workers' long polls
					}
				}
			}
		}()
	}
	wg.Wait()
	if !done.Load() {
		b.Fatalf("raw run ended before %d messages", n)
	}
	r := tr.run(int(counter.total()), counter.snapshot(), took)
	r.machine = meter.Stop(r.msgs)
	return r
}

// runIdle serves the source on the (now empty) queue for d, reading as numa does and asking for
// pending every 5 s as numa does on replica 0, and returns SQS requests per minute.
func runIdle(ctx context.Context, b *testing.B, srv *sqstest.Server, url string, d time.Duration) float64 {
	b.Helper()
	counter := &requestCounter{}
	c, stop := serveSource(ctx, b, srv, url, counter)
	defer stop()
	// Let start-up settle (the first receive and the first backlog reading), then count.
	if _, err := c.Read(ctx, benchBatch, time.Second); err != nil {
		b.Fatal(err)
	}
	base := counter.total()
	start := time.Now()
	lastPending := time.Time{}
	for time.Since(start) < d {
		if time.Since(lastPending) >= 5*time.Second {
			lastPending = time.Now()
			if _, err := c.Pending(ctx); err != nil {
				b.Fatal(err)
			}
		}
		if _, err := c.Read(ctx, benchBatch, time.Second); err != nil {
			b.Fatal(err)
		}
	}
	return float64(counter.total()-base) / time.Since(start).Minutes()
}
