package redisstreams

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/numaproj/numaflow-go/pkg/sourcer"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/numaflow-connectors/sources/common/numatest"
	"github.com/numaflow-connectors/sources/common/source"
)

// ackFailAPI fails the XACKs of its first failures pipelines as a dropped connection would.
type ackFailAPI struct {
	*fakeAPI
	failures atomic.Int32
}

func (a *ackFailAPI) Pipeline() redis.Pipeliner {
	return &ackFailPipe{Pipeliner: a.fakeAPI.Pipeline(), api: a}
}

type ackFailPipe struct {
	redis.Pipeliner
	api  *ackFailAPI
	acks []*redis.IntCmd
}

func (p *ackFailPipe) XAck(ctx context.Context, stream, group string, ids ...string) *redis.IntCmd {
	c := p.Pipeliner.XAck(ctx, stream, group, ids...)
	p.acks = append(p.acks, c)
	return c
}

func (p *ackFailPipe) Exec(ctx context.Context) ([]redis.Cmder, error) {
	if len(p.acks) > 0 && p.api.failures.Add(-1) >= 0 {
		p.Pipeliner.Discard()
		for _, c := range p.acks {
			c.SetErr(redisDown{})
		}
		return nil, redisDown{}
	}
	return p.Pipeliner.Exec(ctx)
}

// A dead letter whose XACK fails for a moment (a failover of the source stream's node, a dropped
// connection) is retried by the adapter; every retry added the entry to the dead-letter stream again,
// so one poison entry left a copy per retry there (the README promises one duplicate at worst, after a
// crash between XADD and XACK).
func TestDeadLetterRetriedAfterAFailedAckIsAddedOnce(t *testing.T) {
	d, fake, c, _ := miniDriver(t, func(c *Config) { c.DeadLetterStream = "dlq" })
	api := &ackFailAPI{fakeAPI: fake}
	d.api = api
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	src, err := source.New(d, source.Options{ReadBatchSize: 10}, testLogger(t), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close(context.WithoutCancel(ctx))
	add(t, c, "s", "data", "poison")
	msgs := numatest.ReadFrom(ctx, src, 10, 3*time.Second)
	if len(msgs) != 1 {
		t.Fatalf("read %d entries, want 1", len(msgs))
	}
	api.failures.Store(3)
	one, reason := uint32(1), "poison"
	src.Nack(ctx, numatest.NackRequest(sourcer.NackOffset{Offset: msgs[0].Offset(),
		NackOptions: &sourcer.NackOptions{MaxDeliveries: &one, Reason: &reason}}))
	for ; ctx.Err() == nil; time.Sleep(50 * time.Millisecond) {
		if p, err := c.XPending(ctx, "s", "g").Result(); err == nil && p.Count == 0 {
			break
		}
	}
	if ctx.Err() != nil {
		t.Fatal("the dead-lettered entry was never acked")
	}
	dl, err := c.XRange(ctx, "dlq", "-", "+").Result()
	if err != nil {
		t.Fatal(err)
	}
	if len(dl) != 1 {
		t.Fatalf("one poison entry, its ack failed 3 times: %d copies in the dead-letter stream, want 1", len(dl))
	}
}
