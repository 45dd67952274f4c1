package pubsubsource

import (
	"context"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	pb "cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"

	"github.com/numaflow-connectors/sources/common/benchkit"
	"github.com/numaflow-connectors/sources/common/proctest"
	"github.com/numaflow-connectors/sources/pubsub-source/pubsubtest"
)

const (
	benchMessages = 20000
	benchPayload  = 1024
)

// rawPullers and rawBatch are the raw loop's concurrency and batch: 4 pullers of 500, the
// concurrency a production Pub/Sub consumer uses.
const (
	rawPullers = 4
	rawBatch   = 500
)

// BenchmarkSocket is `make bench` for this connector: 20,000 messages of 1 KiB published once to a
// topic with two subscriptions; a raw client loop (4 concurrent pullers, each unary Pull(500) then
// Acknowledge) drains one, and the connector binary over its socket (benchkit: numatest as numa, Read
// 500 / 1 s, then Ack) drains the other, then the memsource ceiling runs over the same socket path.
// Reports the rates, the ratios, the connector's CPU per message and peak RSS.
func BenchmarkSocket(b *testing.B) {
	emu := pubsubtest.Shared(b)
	bin := proctest.Build(b, filepath.Join("..", ".."), "pubsub-source")
	// The Java emulator serves a cold first round at half the rate of later ones (its JIT): one
	// untimed raw round warms it, and the order of the two timed phases alternates between runs, so
	// neither side always gets the warmer emulator.
	warmup(b, emu)
	for i := 0; i < b.N; i++ {
		topic := emu.CreateTopic(b, "bench")
		rawSub := emu.CreateSubscription(b, "bench-raw", pubsubtest.Subscription{Topic: topic, AckDeadline: 30 * time.Second})
		connSub := emu.CreateSubscription(b, "bench-conn", pubsubtest.Subscription{Topic: topic, AckDeadline: 30 * time.Second})
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		publishBench(b, ctx, emu, topic)
		var raw float64
		var rawUse benchkit.Usage
		var conn benchkit.Result
		connector := func() {
			conn = benchkit.DrainWatching(ctx, b, bin, "pubsub-source", []string{
				"PUBSUB_EMULATOR_HOST=" + emu.Host, "PUBSUB_SUBSCRIPTION=" + connSub, "PUBSUB_ACK_DEADLINE=30s",
			}, benchMessages, emu.CPUTime)
		}
		if benchRuns.Add(1)%2 == 0 {
			connector()
			raw, rawUse = rawLoop(b, ctx, emu, rawSub)
		} else {
			raw, rawUse = rawLoop(b, ctx, emu, rawSub)
			connector()
		}
		ceiling := benchkit.Ceiling(ctx, b, benchMessages, benchPayload)
		cancel()
		conn.Report(b, "source_")
		b.ReportMetric(raw, "raw_msg/s")
		rawUse.Report(b, "raw_")
		b.ReportMetric(100*conn.Rate/raw, "ratio_%")
		b.ReportMetric(ceiling.Rate, "ceiling_msg/s")
		b.ReportMetric(100*conn.Rate/ceiling.Rate, "ceiling_ratio_%")
		b.Logf("%s emulator, %d x %d B: raw client (%d pullers of %d) %.0f msg/s, %s; connector %s (%.0f%% of raw); memsource ceiling %s",
			emu.Kind, benchMessages, benchPayload, rawPullers, rawBatch, raw, rawUse, conn, 100*conn.Rate/raw, ceiling)
	}
}

// benchRuns counts BenchmarkSocket's timed rounds (it runs once per -count).
var benchRuns atomic.Int64

// warmup publishes one round of messages to a subscription of its own and drains it with the raw
// loop, untimed.
func warmup(b *testing.B, emu *pubsubtest.Emulator) {
	topic := emu.CreateTopic(b, "warmup")
	sub := emu.CreateSubscription(b, "warmup", pubsubtest.Subscription{Topic: topic, AckDeadline: 30 * time.Second})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	publishBench(b, ctx, emu, topic)
	_, _ = rawLoop(b, ctx, emu, sub)
}

// publishBench publishes benchMessages payloads of benchPayload bytes to topic.
func publishBench(b *testing.B, ctx context.Context, emu *pubsubtest.Emulator, topic string) {
	payload := make([]byte, benchPayload)
	msgs := make([]*pb.PubsubMessage, benchMessages)
	for j := range msgs {
		msgs[j] = &pb.PubsubMessage{Data: payload}
	}
	if _, err := emu.Publish(ctx, topic, msgs...); err != nil {
		b.Fatal(err)
	}
}

// rawLoop drains sub with the plain generated client: rawPullers goroutines, each Pull(rawBatch) then
// Acknowledge, until every message was acked. The rate and the machine's CPU use run from the first
// message to the last ack.
func rawLoop(b *testing.B, ctx context.Context, emu *pubsubtest.Emulator, sub string) (float64, benchkit.Usage) {
	_, sc, err := emu.Clients()
	if err != nil {
		b.Fatal(err)
	}
	var mu sync.Mutex
	meter := benchkit.Meter{Broker: emu.CPUTime}
	got := 0
	var first, last time.Time
	var wg sync.WaitGroup
	for range rawPullers {
		wg.Go(func() {
			for ctx.Err() == nil {
				mu.Lock()
				done := got >= benchMessages
				mu.Unlock()
				if done {
					return
				}
				pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
				resp, err := sc.Pull(pctx, &pb.PullRequest{Subscription: sub, MaxMessages: rawBatch})
				cancel()
				if err != nil || len(resp.GetReceivedMessages()) == 0 {
					continue // an empty wait that ran out
				}
				meter.Start()
				mu.Lock()
				if first.IsZero() {
					first = time.Now()
				}
				mu.Unlock()
				ids := make([]string, len(resp.GetReceivedMessages()))
				for j, rm := range resp.GetReceivedMessages() {
					ids[j] = rm.GetAckId()
				}
				if err := sc.Acknowledge(ctx, &pb.AcknowledgeRequest{Subscription: sub, AckIds: ids}); err != nil {
					b.Error(err)
					return
				}
				meter.Mark()
				mu.Lock()
				got += len(ids)
				last = time.Now()
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	use := meter.Stop(got)
	if got < benchMessages {
		b.Fatalf("raw loop read %d of %d", got, benchMessages)
	}
	return float64(got-1) / last.Sub(first).Seconds(), use
}
