package pubsubsource

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	pb "cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"

	"github.com/numaflow-connectors/sources/common/numatest"
	"github.com/numaflow-connectors/sources/common/proctest"
	"github.com/numaflow-connectors/sources/pubsub-source/pubsubtest"
)

// The big-message scenario of the memory verification: 400 messages of 1 MiB waiting, the connector
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
// drains 400 messages of 1 MiB over the unix socket, with and without the byte bound, and fails
// unless every message is delivered and acked. Budget: the manifests' 256 MiB.
func BenchmarkBigMessages(b *testing.B) {
	// A private emulator: the shared one runs with a 256 MiB Java heap, which 400 MiB of stored
	// messages exhaust (java.lang.OutOfMemoryError on publish). JAVA_OPTS comes after the launcher's
	// JAVA_TOOL_OPTIONS on the java command line, so its -Xmx wins.
	b.Setenv("JAVA_OPTS", "-Xmx2g")
	emu := pubsubtest.Start(b)
	bin := proctest.Build(b, filepath.Join("..", ".."), "pubsub-source")
	for i := 0; i < b.N; i++ {
		for _, c := range bigCases {
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			topic := emu.CreateTopic(b, "big")
			sub := emu.CreateSubscription(b, "big-"+c.name, pubsubtest.Subscription{Topic: topic, AckDeadline: 30 * time.Second})
			fillBig(ctx, b, emu, topic)
			rss, took, got := runBig(ctx, b, emu, bin, sub, strings.Fields(c.env))
			cancel()
			b.ReportMetric(float64(rss)/(1<<20), c.name+"_peak_rss_MiB")
			b.ReportMetric(float64(got), c.name+"_acked")
			b.ReportMetric(took.Seconds(), c.name+"_s")
			b.Logf("%s emulator, %s (%s): %d of %d messages of %d KiB acked in %s, connector peak RSS %.1f MiB (budget %d MiB)",
				emu.Kind, c.name, c.env, got, bigCount, bigSize>>10, took.Round(time.Millisecond), float64(rss)/(1<<20), bigBudgetMiB)
		}
		b.ReportMetric(bigBudgetMiB, "budget_MiB")
	}
}

// fillBig publishes bigCount messages of bigSize bytes, each starting with its 6-digit index, 8 per
// request (a request may not exceed 10 MB).
func fillBig(ctx context.Context, b *testing.B, emu *pubsubtest.Emulator, topic string) {
	b.Helper()
	pad := strings.Repeat("x", bigSize-6)
	for start := 0; start < bigCount; start += 8 {
		var msgs []*pb.PubsubMessage
		for j := start; j < min(start+8, bigCount); j++ {
			msgs = append(msgs, &pb.PubsubMessage{Data: []byte(fmt.Sprintf("%06d", j) + pad)})
		}
		if _, err := emu.Publish(ctx, topic, msgs...); err != nil {
			b.Fatal(err)
		}
	}
}

// runBig starts the connector with env on sub, drains it slowly and returns the connector's peak
// RSS, the time from its start to the last ack, and how many distinct messages were acked.
func runBig(ctx context.Context, b *testing.B, emu *pubsubtest.Emulator, bin, sub string, env []string) (int64, time.Duration, int) {
	b.Helper()
	dir, err := os.MkdirTemp("", "psbig") // short: unix socket paths are limited
	if err != nil {
		b.Fatal(err)
	}
	defer os.RemoveAll(dir)
	sock, info := filepath.Join(dir, "s.sock"), filepath.Join(dir, "info")
	start := time.Now()
	p, err := proctest.StartE(bin, nil, proctest.Options{Env: append([]string{
		"PUBSUB_EMULATOR_HOST=" + emu.Host, "PUBSUB_SUBSCRIPTION=" + sub, "PUBSUB_ACK_DEADLINE=30s",
		"SOURCE_SOCKET=" + sock, "SOURCE_SERVER_INFO_FILE=" + info, "METRICS_ADDR=", "LOG_LEVEL=warn",
		"NUMAFLOW_READ_BATCH_SIZE=500", "NUMAFLOW_READ_TIMEOUT_MS=1000",
	}, env...)})
	if err != nil {
		b.Fatal(err)
	}
	defer p.Kill()
	dctx, dcancel := context.WithTimeout(ctx, 30*time.Second)
	c, err := numatest.Dial(dctx, numatest.Options{Socket: sock, ServerInfoFile: info})
	dcancel()
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
