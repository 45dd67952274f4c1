package redisstreams

import (
	"context"
	"testing"
	"time"

	"github.com/numaproj/numaflow-go/pkg/sourcer"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/numaflow-connectors/sources/common/numatest"
	"github.com/numaflow-connectors/sources/common/source"
	"github.com/numaflow-connectors/sources/redis-streams-source/redistest"
)

// An entry numa read once and nacked once with MaxDeliveries 2 gets its second try, although Redis
// dropped the connection in between (a failover, a proxy restart): the driver's replay of its pending
// list after the failed receive adds one to the entry's delivery count in Redis, and that re-read is
// not a delivery to numa. It was counted as one, and the entry was dead-lettered without its second try.
func TestIntegrationDroppedConnectionIsNotADelivery(t *testing.T) {
	srv := redistest.Shared(t)
	c := srv.Client(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	stream := redistest.Name(t)
	cfg := testConfig(srv.URL(), stream)
	cfg.DeadLetterStream = stream + ":dlq"
	cfg.ClaimMinIdle, cfg.Block = 20*time.Second, 5*time.Second
	d := openTest(ctx, t, cfg)
	src, err := source.New(d, source.Options{ReadBatchSize: 10}, testLogger(t), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close(context.WithoutCancel(ctx))
	publishN(t, c, stream, 1, "m")
	msgs := numatest.ReadFrom(ctx, src, 10, 3*time.Second)
	if len(msgs) != 1 {
		t.Fatalf("read %d entries, want 1", len(msgs))
	}
	time.Sleep(500 * time.Millisecond) // the adapter's next receive is blocked in XREADGROUP
	if err := c.Do(ctx, "CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes").Err(); err != nil {
		t.Fatal(err)
	}
	// The receive fails, the adapter backs off, and the driver replays its pending list.
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if p := pendingOf(t, c, stream); len(p) == 1 && p[0].RetryCount >= 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the pending list was not replayed after the dropped connection: %+v", pendingOf(t, c, stream))
		}
	}
	two, reason := uint32(2), "first failure"
	src.Nack(ctx, numatest.NackRequest(sourcer.NackOffset{Offset: msgs[0].Offset(),
		NackOptions: &sourcer.NackOptions{MaxDeliveries: &two, Reason: &reason}}))
	again := numatest.ReadFrom(ctx, src, 10, 3*time.Second)
	if dl, _ := c.XRange(ctx, cfg.DeadLetterStream, "-", "+").Result(); len(dl) > 0 {
		t.Fatalf("numa saw the entry once and nacked it once with MaxDeliveries 2, but it was dead-lettered: %v", dl[0].Values)
	}
	if len(again) != 1 {
		t.Fatalf("the nacked entry was not read again: %d entries", len(again))
	}
}
