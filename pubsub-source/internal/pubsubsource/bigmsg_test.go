package pubsubsource

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	pb "cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"

	"github.com/numaflow-connectors/sources/common/benchkit"
	"github.com/numaflow-connectors/sources/common/proctest"
	"github.com/numaflow-connectors/sources/pubsub-source/pubsubtest"
)

// BenchmarkBigMessages measures the connector binary's peak RSS (VmHWM) while a backpressured numa
// drains 400 messages of 1 MiB over the unix socket, with and without the byte bound (benchkit's big
// message scenario), and fails unless every message is delivered and acked.
func BenchmarkBigMessages(b *testing.B) {
	// A private emulator: the shared one runs with a 256 MiB Java heap, which 400 MiB of stored
	// messages exhaust (java.lang.OutOfMemoryError on publish). JAVA_OPTS comes after the launcher's
	// JAVA_TOOL_OPTIONS on the java command line, so its -Xmx wins.
	b.Setenv("JAVA_OPTS", "-Xmx2g")
	emu := pubsubtest.Start(b)
	bin := proctest.Build(b, filepath.Join("..", ".."), "pubsub-source")
	benchkit.BigMessages(b, bin, "messages ("+emu.Kind+" emulator)", func(ctx context.Context, c benchkit.BigCase, run int) []string {
		topic := emu.CreateTopic(b, "big")
		sub := emu.CreateSubscription(b, "big-"+c.Name, pubsubtest.Subscription{Topic: topic, AckDeadline: 30 * time.Second})
		fillBig(ctx, b, emu, topic)
		return []string{"PUBSUB_EMULATOR_HOST=" + emu.Host, "PUBSUB_SUBSCRIPTION=" + sub, "PUBSUB_ACK_DEADLINE=30s"}
	})
}

// fillBig publishes benchkit.BigCount messages of benchkit.BigPayload, 8 per
// request (a request may not exceed 10 MB).
func fillBig(ctx context.Context, b *testing.B, emu *pubsubtest.Emulator, topic string) {
	b.Helper()
	for start := 0; start < benchkit.BigCount; start += 8 {
		var msgs []*pb.PubsubMessage
		for j := start; j < min(start+8, benchkit.BigCount); j++ {
			msgs = append(msgs, &pb.PubsubMessage{Data: []byte(benchkit.BigPayload(j))})
		}
		if _, err := emu.Publish(ctx, topic, msgs...); err != nil {
			b.Fatal(err)
		}
	}
}
