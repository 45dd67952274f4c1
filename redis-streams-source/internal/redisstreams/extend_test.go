package redisstreams

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/numaflow-connectors/sources/common/source"
	"github.com/numaflow-connectors/sources/redis-streams-source/redistest"
)

// claimRaceAPI lets another consumer claim an entry (as its XAUTOCLAIM would once our lease lapsed)
// between our XPENDING check and our XCLAIM: the interleaving a stalled replica meets.
type claimRaceAPI struct {
	redisAPI
	before func()
}

func (a *claimRaceAPI) Do(ctx context.Context, args ...any) *redis.Cmd {
	if len(args) > 0 && args[0] == "XCLAIM" && a.before != nil {
		a.before()
		a.before = nil
	}
	return a.redisAPI.Do(ctx, args...)
}

// An entry another replica claims while our extension runs (after the XPENDING check that it is still
// ours, before our XCLAIM) must stay with that replica: XCLAIM with a min-idle of 0 took it back, so
// both replicas handed it to numa, against the README's "one another replica claimed after a stall is
// not taken back".
func TestIntegrationExtendDoesNotTakeBackAnEntryClaimedMeanwhile(t *testing.T) {
	srv := redistest.Shared(t)
	c := srv.Client(t)
	ctx := context.Background()
	stream := redistest.Name(t)
	d := openTest(ctx, t, testConfig(srv.URL(), stream))
	publishN(t, c, stream, 2, "held")
	held, _ := receiveUntil(t, d, 2, 10*time.Second)
	if len(held) != 2 {
		t.Fatalf("received %d of 2", len(held))
	}
	time.Sleep(100 * time.Millisecond) // some idle time, as an entry due for extension has
	stolen := held[1].Handle.(handle).id
	d.api = &claimRaceAPI{redisAPI: d.api, before: func() {
		if err := c.XClaimJustID(ctx, &redis.XClaimArgs{Stream: stream, Group: "g", Consumer: "other", Messages: []string{stolen}}).Err(); err != nil {
			t.Errorf("the other replica's claim: %v", err)
		}
	}}
	err := d.Extend(ctx, handles(held), testClaimIdle)
	for _, p := range pendingOf(t, c, stream) {
		if p.ID == stolen && p.Consumer != "other" {
			t.Errorf("entry %s claimed by another consumer during our extension is %s's again", stolen, p.Consumer)
		}
		if p.ID != stolen && p.Consumer != d.consumer {
			t.Errorf("our own entry %s is %s's after the extension", p.ID, p.Consumer)
		}
	}
	var be *source.BatchError
	if !errors.As(err, &be) || len(be.Failed) != 1 || be.Failed[1] == nil {
		t.Errorf("Extend: %v, want the entry claimed meanwhile failed alone", err)
	}
}
