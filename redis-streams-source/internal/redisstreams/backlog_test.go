package redisstreams

import (
	"context"
	"testing"
	"time"

	"github.com/numaflow-connectors/sources/redis-streams-source/redistest"
)

// A group this source creates at REDIS_START_FROM=latest on a stream that already holds entries: Redis
// 7 keeps no entries-read for a group created at $, so its lag turns NULL as soon as an entry is added,
// and stays NULL until the group has read up to the newest entry. The backlog then was the whole
// stream's length (1000 here for 1 new entry): an autoscaler scales a source that keeps a long
// stream (a log capped by MAXLEN) to its maximum, although neither trim nor deletion happened.
func TestIntegrationBacklogOfAGroupCreatedAtLatest(t *testing.T) {
	srv := redistest.Shared(t)
	c := srv.Client(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	stream := redistest.Name(t)
	publishN(t, c, stream, 1000, "old")
	cfg := testConfig(srv.URL(), stream)
	cfg.StartFrom = StartLatest
	cfg.ReadCount = 5
	cfg.ClaimMinIdle = time.Hour
	d := openTest(ctx, t, cfg)
	if msgs, err := d.Receive(ctx, 5); err != nil || len(msgs) != 0 { // creates the group at the newest entry
		t.Fatalf("first receive: %d entries, %v; want none", len(msgs), err)
	}
	publishN(t, c, stream, 20, "new")
	if n, err := d.Backlog(ctx); n != 20 || err != nil {
		t.Errorf("backlog with 20 new entries = %d, %v; want 20", n, err)
	}
	if got, err := receiveUntil(t, d, 5, 10*time.Second); len(got) != 5 {
		t.Fatalf("received %d of 5 (%v)", len(got), err)
	}
	if n, err := d.Backlog(ctx); n != 20 || err != nil {
		t.Errorf("backlog with 15 new entries and 5 pending = %d, %v; want 20", n, err)
	}
}
