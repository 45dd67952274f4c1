package redisstreams

import (
	"context"
	"fmt"
	"time"

	"github.com/numaflow-connectors/sources/common/source"
)

// claimPassMax bounds the time between two claim passes.
const claimPassMax = 5 * time.Second

// claim runs one page of the periodic XAUTOCLAIM pass over every stream: entries idle longer than
// REDIS_CLAIM_MIN_IDLE in any consumer's pending list (a crashed or scaled-down replica, or a
// released entry) become ours. At the end of a pass, consumers left with nothing pending are removed.
func (d *driver) claim(ctx context.Context, limit int) ([]*source.Message, error) {
	if d.claimCursor == nil {
		d.claimCursor = make(map[string]string, len(d.streams))
		for _, s := range d.streams {
			d.claimCursor[s] = "0-0"
		}
	}
	var msgs []*source.Message
	for _, s := range d.streams {
		cursor, ok := d.claimCursor[s]
		if !ok {
			continue
		}
		budget := limit - len(msgs)
		if budget <= 0 {
			break
		}
		v, err := d.api.Do(ctx, "XAUTOCLAIM", s, d.group, d.consumer, d.claimIdle.Milliseconds(), cursor, "COUNT", budget).Result()
		if err != nil {
			return msgs, d.claimError(s, msgs, err)
		}
		next, es, deleted, err := parseAutoClaim(v)
		if err != nil {
			return msgs, d.claimError(s, msgs, err)
		}
		if next == "0-0" || next == "" {
			delete(d.claimCursor, s)
		} else {
			d.claimCursor[s] = next
		}
		live, gone := splitDeleted(es)
		for _, id := range deleted {
			gone = append(gone, entry{id: id, deleted: true})
		}
		d.ackDeleted(ctx, s, gone)
		counts := d.deliveries(ctx, s, live)
		for _, e := range live {
			msgs = append(msgs, d.mapper.message(s, e, counts[e.id]))
		}
	}
	if len(msgs) > 0 {
		d.log.Info("claimed idle entries of other consumers", "entries", len(msgs), "min_idle", d.claimIdle.String())
	}
	if len(d.claimCursor) == 0 {
		d.claimCursor = nil
		// At least every 5 s: entries a stopping replica released are claimable at once, and only
		// entries idle longer than the claim idle are ever taken (held ones are kept fresh).
		d.nextClaim = d.now().Add(min(d.claimIdle/2, claimPassMax))
		d.removeIdleConsumers(ctx)
	}
	return msgs, nil
}

// claimError returns err for the adapter unless messages were already claimed in this call: those
// must reach the adapter (they are ours now), and the pass resumes at the next Receive.
func (d *driver) claimError(stream string, claimed []*source.Message, err error) error {
	if len(claimed) > 0 {
		return nil
	}
	if isNoGroup(err) {
		return err
	}
	return fmt.Errorf("claiming idle entries of stream %s in group %s: %w", stream, d.group, err)
}

// delConsumerIfEmpty deletes a consumer only if it has nothing pending, in one atomic step: a consumer
// that reads entries between a check and the delete would otherwise lose them from every pending list.
const delConsumerIfEmpty = `if #redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2]) == 0 then
  return redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
end
return -1`

// removeIdleConsumers deletes consumers that have nothing pending and were idle longer than
// REDIS_CLAIM_MIN_IDLE: those left behind by crashed or scaled-down replicas. Never ourselves. On Redis
// before 7.2 a live consumer waiting on an empty stream also looks idle; deleting it is harmless, since
// the delete is atomic with the check that it holds nothing and its next read creates it again.
// Failures (e.g. an ACL without EVAL) are only logged: it is housekeeping.
func (d *driver) removeIdleConsumers(ctx context.Context) {
	for _, s := range d.streams {
		cs, err := d.api.XInfoConsumers(ctx, s, d.group).Result()
		if err != nil {
			d.log.Debug("listing consumers failed", "stream", s, "group", d.group, "error", err)
			continue
		}
		for _, c := range cs {
			if c.Name == d.consumer || c.Pending > 0 || c.Idle <= d.claimIdle {
				continue
			}
			n, err := d.api.Do(ctx, "EVAL", delConsumerIfEmpty, 1, s, d.group, c.Name).Int64()
			switch {
			case err != nil:
				d.log.Warn("removing an idle consumer failed", "stream", s, "group", d.group, "consumer", c.Name, "error", err)
			case n == 0:
				d.log.Debug("removed idle consumer", "stream", s, "group", d.group, "consumer", c.Name, "idle", c.Idle.String())
			}
		}
	}
}
