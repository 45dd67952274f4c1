package pubsubsource

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	pb "cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"

	"github.com/numaflow-connectors/sources/common/numatest"
	"github.com/numaflow-connectors/sources/common/proctest"
	"github.com/numaflow-connectors/sources/pubsub-source/pubsubtest"
)

const (
	benchMessages = 20000
	benchPayload  = 1024
)

// BenchmarkSocket is `make bench` for this connector: 20,000 messages of 1 KiB published once to a
// topic with two subscriptions; a raw client loop (unary Pull(500) + Acknowledge, one at a time)
// drains one, and the connector binary, driven over its socket by numatest exactly as numa drives it
// (Read 500 / 1 s, then Ack), drains the other. It reports both rates, their ratio and the
// connector's peak RSS.
func BenchmarkSocket(b *testing.B) {
	emu := pubsubtest.Shared(b)
	bin := proctest.Build(b, filepath.Join("..", ".."), "pubsub-source")
	for i := 0; i < b.N; i++ {
		topic := emu.CreateTopic(b, "bench")
		rawSub := emu.CreateSubscription(b, "bench-raw", pubsubtest.Subscription{Topic: topic, AckDeadline: 30 * time.Second})
		connSub := emu.CreateSubscription(b, "bench-conn", pubsubtest.Subscription{Topic: topic, AckDeadline: 30 * time.Second})
		payload := make([]byte, benchPayload)
		msgs := make([]*pb.PubsubMessage, benchMessages)
		for j := range msgs {
			msgs[j] = &pb.PubsubMessage{Data: payload}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		if _, err := emu.Publish(ctx, topic, msgs...); err != nil {
			b.Fatal(err)
		}
		raw := rawLoop(b, ctx, emu, rawSub)
		conn, rss := connectorLoop(b, ctx, emu, bin, connSub)
		cancel()
		b.ReportMetric(raw, "raw_msg/s")
		b.ReportMetric(conn, "socket_msg/s")
		b.ReportMetric(100*conn/raw, "ratio_%")
		b.ReportMetric(float64(rss)/(1<<20), "peak_rss_MiB")
		b.Logf("%s emulator, %d x %d B: raw client %.0f msg/s, connector over the socket %.0f msg/s (%.0f%%), connector peak RSS %.1f MiB",
			emu.Kind, benchMessages, benchPayload, raw, conn, 100*conn/raw, float64(rss)/(1<<20))
	}
}

// rawLoop drains sub with the plain generated client: Pull(500), Acknowledge, repeat.
func rawLoop(b *testing.B, ctx context.Context, emu *pubsubtest.Emulator, sub string) float64 {
	_, sc, err := emu.Clients()
	if err != nil {
		b.Fatal(err)
	}
	got := 0
	start := time.Now()
	for got < benchMessages && ctx.Err() == nil {
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		resp, err := sc.Pull(pctx, &pb.PullRequest{Subscription: sub, MaxMessages: 500})
		cancel()
		if err != nil {
			continue // an empty wait that ran out
		}
		ids := make([]string, len(resp.GetReceivedMessages()))
		for j, rm := range resp.GetReceivedMessages() {
			ids[j] = rm.GetAckId()
		}
		if len(ids) == 0 {
			continue
		}
		if err := sc.Acknowledge(ctx, &pb.AcknowledgeRequest{Subscription: sub, AckIds: ids}); err != nil {
			b.Fatal(err)
		}
		got += len(ids)
	}
	if got < benchMessages {
		b.Fatalf("raw loop read %d of %d", got, benchMessages)
	}
	return float64(got) / time.Since(start).Seconds()
}

// connectorLoop runs the connector binary on sub and drains it over the socket as numa would.
func connectorLoop(b *testing.B, ctx context.Context, emu *pubsubtest.Emulator, bin, sub string) (float64, int64) {
	dir, err := os.MkdirTemp("", "psb") // short: unix socket paths are limited
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = os.RemoveAll(dir) })
	sock, info := filepath.Join(dir, "source.sock"), filepath.Join(dir, "server-info")
	p := proctest.Start(b, bin, nil, proctest.Options{Env: []string{
		"PUBSUB_EMULATOR_HOST=" + emu.Host, "PUBSUB_SUBSCRIPTION=" + sub, "PUBSUB_ACK_DEADLINE=30s",
		"SOURCE_SOCKET=" + sock, "SOURCE_SERVER_INFO_FILE=" + info, "METRICS_ADDR=", "LOG_LEVEL=warn",
		"NUMAFLOW_READ_BATCH_SIZE=500", "NUMAFLOW_READ_TIMEOUT_MS=1000",
	}})
	dctx, dcancel := context.WithTimeout(ctx, 30*time.Second)
	c, err := numatest.Dial(dctx, numatest.Options{Socket: sock, ServerInfoFile: info})
	dcancel()
	if err != nil {
		b.Fatalf("dialing the connector: %v\n%s", err, p.Output())
	}
	defer c.Close()
	seen := make(map[string]bool, benchMessages)
	start := time.Now()
	for len(seen) < benchMessages && ctx.Err() == nil {
		msgs, err := c.Read(ctx, 500, time.Second)
		if err != nil {
			b.Fatalf("read: %v", err)
		}
		offs := make([]numatest.Offset, len(msgs))
		for j, m := range msgs {
			offs[j] = m.Offset
			seen[string(m.Offset.Value)] = true
		}
		if len(offs) > 0 {
			if err := c.Ack(ctx, offs); err != nil {
				b.Fatalf("ack: %v", err)
			}
		}
	}
	rate := float64(len(seen)) / time.Since(start).Seconds()
	if len(seen) < benchMessages {
		b.Fatalf("connector delivered %d of %d", len(seen), benchMessages)
	}
	return rate, proctest.PeakRSS(p.Cmd.Process.Pid)
}
