package redisstreams

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/numaflow-connectors/sources/common/source"
)

// streamBatch is the handles of one stream within a batch call, with their positions in the call.
type streamBatch struct {
	stream string
	ids    []string
	idx    []int
}

// byStream groups handles per stream in order of first appearance; handles that are not ours fail.
func (d *driver) byStream(op string, handles []source.Handle, failed map[int]error) []*streamBatch {
	var out []*streamBatch
	for i, h := range handles {
		hd, ok := h.(handle)
		if !ok || hd.stream == "" || hd.id == "" {
			failed[i] = d.entryError(op, "", "", fmt.Sprintf("not a redis-streams handle: %T", h))
			continue
		}
		j := slices.IndexFunc(out, func(b *streamBatch) bool { return b.stream == hd.stream })
		if j < 0 {
			out = append(out, &streamBatch{stream: hd.stream})
			j = len(out) - 1
		}
		out[j].ids = append(out[j].ids, hd.id)
		out[j].idx = append(out[j].idx, i)
	}
	return out
}

// ack acks the entries with one pipelined XACK per stream (then XDEL with REDIS_DELETE_ON_ACK). An
// entry that is no longer pending (acked twice) is fine.
func (d *driver) ack(ctx context.Context, handles []source.Handle) error {
	failed := map[int]error{}
	batches := d.byStream("acking", handles, failed)
	if len(batches) > 0 {
		pipe := d.api.Pipeline()
		acks := make([]*redis.IntCmd, len(batches))
		dels := make([]*redis.IntCmd, len(batches))
		for i, b := range batches {
			acks[i] = pipe.XAck(ctx, b.stream, d.group, b.ids...)
			if d.delOnAck {
				dels[i] = pipe.XDel(ctx, b.stream, b.ids...)
			}
		}
		_, _ = pipe.Exec(ctx) // each command's error is read below
		for i, b := range batches {
			err := acks[i].Err()
			if err != nil {
				err = fmt.Errorf("acking %d entries of stream %s in group %s: %w", len(b.ids), b.stream, d.group, err)
			} else if dels[i] != nil && dels[i].Err() != nil {
				err = fmt.Errorf("deleting %d acked entries of stream %s: %w", len(b.ids), b.stream, dels[i].Err())
			}
			if err != nil {
				for _, j := range b.idx {
					failed[j] = err
				}
			}
		}
	}
	return source.BatchResult(len(handles), failed)
}

// release hands entries back. The adapter redelivers nacked entries itself (LocalRedelivery), so Nack is
// only called at shutdown, with delay 0, to release held entries: they are claimed to ourselves with
// their idle time set past REDIS_CLAIM_MIN_IDLE, and another replica picks them up on its next claim
// pass (every REDIS_CLAIM_MIN_IDLE/2) instead of after a whole claim idle time. With a delay, the idle
// time is set so they become claimable once the delay has passed.
func (d *driver) release(ctx context.Context, handles []source.Handle, delay time.Duration) error {
	idle := d.claimIdle + time.Second
	if delay > 0 {
		idle = max(d.claimIdle-delay, 0)
	}
	return d.claimOwn(ctx, "releasing", handles, &idle)
}

// claimOwn runs XCLAIM ... JUSTID (with IDLE when idle is set) on the entries this consumer still
// owns, checked first with XPENDING per entry, so an entry another replica has claimed is not taken
// back. The XCLAIM's min-idle-time is the least idle time XPENDING reported for them: an entry another
// replica claims between the check and the XCLAIM has its idle time reset to about 0, and is left to
// that replica (with 0, the XCLAIM took it back); ours only grew idler meanwhile. JUSTID leaves the
// delivery count alone; without idle it resets the idle time (Extend), so no other replica's XAUTOCLAIM
// takes the entry. An entry no longer ours (acked, deleted, or claimed by another consumer after our
// lease lapsed) fails with invalid_argument and is left alone.
func (d *driver) claimOwn(ctx context.Context, op string, handles []source.Handle, idle *time.Duration) error {
	failed := map[int]error{}
	for _, b := range d.byStream(op, handles, failed) {
		fail := func(err error) {
			for _, j := range b.idx {
				failed[j] = err
			}
		}
		pipe := d.api.Pipeline()
		checks := make([]*redis.XPendingExtCmd, len(b.ids))
		for i, id := range b.ids {
			checks[i] = pipe.XPendingExt(ctx, &redis.XPendingExtArgs{Stream: b.stream, Group: d.group, Start: id, End: id, Count: 1, Consumer: d.consumer})
		}
		if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
			fail(fmt.Errorf("%s entries of stream %s: reading the pending list: %w", op, b.stream, err))
			continue
		}
		var owned []string
		var minIdle time.Duration
		for i, c := range checks {
			if ps, err := c.Result(); err == nil && len(ps) == 1 {
				if len(owned) == 0 || ps[0].Idle < minIdle {
					minIdle = ps[0].Idle
				}
				owned = append(owned, b.ids[i])
			}
		}
		claimed := map[string]bool{}
		if len(owned) > 0 {
			args := make([]any, 0, 9+len(owned))
			args = append(args, "XCLAIM", b.stream, d.group, d.consumer, max(minIdle.Milliseconds(), 0))
			for _, id := range owned {
				args = append(args, id)
			}
			if idle != nil {
				args = append(args, "IDLE", idle.Milliseconds())
			}
			args = append(args, "JUSTID")
			v, err := d.api.Do(ctx, args...).Result()
			if err != nil {
				fail(fmt.Errorf("%s entries of stream %s in group %s: %w", op, b.stream, d.group, err))
				continue
			}
			for _, id := range parseIDs(v) {
				claimed[id] = true
			}
		}
		for i, id := range b.ids {
			if !claimed[id] {
				failed[b.idx[i]] = d.entryError(op, b.stream, id,
					"no longer pending for consumer "+d.consumer+" (acked, deleted, or claimed by another consumer)")
			}
		}
	}
	return source.BatchResult(len(handles), failed)
}
