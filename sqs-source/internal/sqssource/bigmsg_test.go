package sqssource

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"

	"github.com/numaflow-connectors/sources/common/numatest"
	"github.com/numaflow-connectors/sources/common/proctest"
	"github.com/numaflow-connectors/sources/sqs-source/sqstest"
)

// The big-message scenario of the memory verification: 400 messages of 1 MiB (SQS's largest body)
// waiting, the connector configured for numa's batch of 500, numa backpressured (Read 10 with a 1 s
// timeout, ack 200 ms later), in a pod limited to 256 MiB.
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
// drains 400 messages of 1 MiB from fauxqs over the unix socket, with and without the byte bound, and
// fails unless every message is delivered and acked. Budget: the manifests' 256 MiB.
func BenchmarkBigMessages(b *testing.B) {
	srv := sqstest.Shared(b)
	bin := proctest.Build(b, filepath.Join("..", ".."), "sqs-source")
	for i := 0; i < b.N; i++ {
		for _, c := range bigCases {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			url := srv.CreateQueue(b, fmt.Sprintf("bench-big-%s-%d-%d", c.name, time.Now().UnixNano(), i), nil)
			fillBig(ctx, b, srv, url)
			rss, took, got := runBig(ctx, b, bin, srv, url, strings.Fields(c.env))
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

// fillBig sends bigCount messages of bigSize bytes, each body starting with its 6-digit index. One
// SendMessage per message (a batch may not exceed 1 MiB in all), 8 at a time.
func fillBig(ctx context.Context, b *testing.B, srv *sqstest.Server, url string) {
	b.Helper()
	pad := strings.Repeat("x", bigSize-6)
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := int(next.Add(1)) - 1; j < bigCount; j = int(next.Add(1)) - 1 {
				body := fmt.Sprintf("%06d", j) + pad
				if _, err := srv.Client().SendMessage(ctx, &sqs.SendMessageInput{QueueUrl: &url, MessageBody: aws.String(body)}); err != nil {
					errs <- fmt.Errorf("message %d: %w", j, err)
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

// runBig starts the connector with env on url, drains it slowly and returns the connector's peak
// RSS, the time from its start to the last ack, and how many distinct messages were acked.
func runBig(ctx context.Context, b *testing.B, bin string, srv *sqstest.Server, url string, env []string) (int64, time.Duration, int) {
	b.Helper()
	dir, err := os.MkdirTemp("", "sqsbig")
	if err != nil {
		b.Fatal(err)
	}
	defer os.RemoveAll(dir)
	sock, info := filepath.Join(dir, "s.sock"), filepath.Join(dir, "info")
	start := time.Now()
	vars := append(srv.Env(), "SQS_QUEUE_URL="+url, "SQS_VISIBILITY_TIMEOUT="+strconv.Itoa(int(benchVisibility/time.Second))+"s",
		"SOURCE_SOCKET="+sock, "SOURCE_SERVER_INFO_FILE="+info, "METRICS_ADDR=", "LOG_LEVEL=warn",
		"NUMAFLOW_READ_BATCH_SIZE=500", "NUMAFLOW_READ_TIMEOUT_MS=1000")
	p, err := proctest.StartE(bin, nil, proctest.Options{Env: append(vars, env...)})
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
		b.Fatalf("%v: %d of %d messages acked (%v)\n%s", env, got, bigCount, err, p.Output())
	}
	_ = p.Signal(syscall.SIGTERM)
	p.Wait(10 * time.Second)
	return rss, took, got
}
