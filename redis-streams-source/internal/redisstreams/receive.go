package redisstreams

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/numaflow-connectors/sources/common/source"
)

// receive returns up to limit entries: first this consumer's own pending entries (at start and after a
// reconnect or a recreated group), then, about every REDIS_CLAIM_MIN_IDLE/2, entries other consumers
// left idle too long (XAUTOCLAIM), otherwise new entries (XREADGROUP ... BLOCK).
func (d *driver) receive(ctx context.Context, limit int) ([]*source.Message, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if limit <= 0 || limit > d.readCount {
		limit = d.readCount
	}
	if !d.groupsReady {
		if d.create {
			if err := d.ensureGroups(ctx); err != nil {
				return nil, err
			}
		}
		d.groupsReady = true
		d.startReplay(false)
	}
	msgs, err := d.nextBatch(ctx, limit)
	if err == nil {
		return msgs, nil
	}
	if isNoGroup(err) {
		return d.noGroup(ctx, err)
	}
	// A read whose reply was lost (connection dropped, or ctx cancelled mid-read) left entries in our
	// pending list that nobody returned: replay it once the connection is back.
	d.startReplay(true)
	return nil, err
}

// nextBatch replays our own pending list first, then runs a claim pass when one is due, then reads
// new entries.
func (d *driver) nextBatch(ctx context.Context, limit int) ([]*source.Message, error) {
	if len(d.replay) > 0 {
		msgs, err := d.replayPending(ctx, limit)
		if err != nil || len(msgs) > 0 {
			return msgs, err
		}
	}
	if !d.now().Before(d.nextClaim) {
		msgs, err := d.claim(ctx, limit)
		if err != nil || len(msgs) > 0 {
			return msgs, err
		}
	}
	return d.read(ctx, limit)
}

// startReplay makes the next receives re-read our own pending list from its start. again says this
// process read the list before (a receive failed): see deliveryCount.
func (d *driver) startReplay(again bool) {
	for _, s := range d.streams {
		d.replay[s] = "0"
	}
	d.replayed = again
}

// deliveryCount is what a replayed entry's pending-list delivery count (n, 0 when unknown) says of its
// deliveries to numa, this one included. Re-reading a pending list adds one to the count of every
// entry in it. At start that is right: the entries' earlier deliveries went to a previous process,
// and this one is a new delivery. After a failed receive in this process it is not: an entry the
// adapter holds was not delivered to numa again (the adapter keeps its own count), and one whose read
// reply was lost never reached numa; counting the re-read dead-lettered messages a delivery early
// after every dropped connection (a failover, a proxy restart).
func (d *driver) deliveryCount(n int) int {
	if d.replayed && n > 1 {
		return n - 1
	}
	return n
}

// read reads new entries, blocking up to REDIS_BLOCK. COUNT applies per stream, so it is split over
// the streams; with fewer slots than streams, a rotating subset is read so every stream gets its turn.
func (d *driver) read(ctx context.Context, limit int) ([]*source.Message, error) {
	streams, count := d.streams, limit/len(d.streams)
	if count == 0 {
		streams = make([]string, 0, limit)
		for i := range limit {
			streams = append(streams, d.streams[(d.rotate+i)%len(d.streams)])
		}
		d.rotate = (d.rotate + limit) % len(d.streams)
		count = 1
	}
	ids := make([]string, len(streams))
	for i := range ids {
		ids[i] = ">"
	}
	res, err := d.readGroup(ctx, streams, ids, count, d.block)
	if err != nil {
		return nil, err
	}
	var msgs []*source.Message
	for _, se := range res {
		for _, e := range se.entries {
			if e.deleted { // not possible for new entries; harmless
				continue
			}
			msgs = append(msgs, d.mapper.message(se.stream, e, 1))
		}
	}
	return msgs, nil
}

// replayPending re-reads this consumer's own pending list (XREADGROUP with an ID instead of >), page by
// page. Entries deleted or trimmed while pending come back without fields: they are acked away.
func (d *driver) replayPending(ctx context.Context, limit int) ([]*source.Message, error) {
	for range replayPages {
		var streams, ids []string
		for _, s := range d.streams {
			if id, ok := d.replay[s]; ok {
				streams, ids = append(streams, s), append(ids, id)
			}
		}
		if len(streams) == 0 {
			return nil, nil
		}
		count := max(limit/len(streams), 1)
		if limit < len(streams) {
			streams, ids = streams[:limit], ids[:limit]
		}
		res, err := d.readGroup(ctx, streams, ids, count, -1)
		if err != nil {
			return nil, err
		}
		got := map[string]bool{}
		var msgs []*source.Message
		for _, se := range res {
			got[se.stream] = len(se.entries) > 0
			if len(se.entries) == 0 {
				continue
			}
			d.replay[se.stream] = se.entries[len(se.entries)-1].id
			live, gone := splitDeleted(se.entries)
			d.ackDeleted(ctx, se.stream, gone)
			counts := d.deliveries(ctx, se.stream, live)
			for _, e := range live {
				msgs = append(msgs, d.mapper.message(se.stream, e, d.deliveryCount(counts[e.id])))
			}
		}
		for _, s := range streams {
			if !got[s] {
				delete(d.replay, s) // replayed to the end
			}
		}
		if len(msgs) > 0 {
			d.log.Info("replaying own pending entries", "entries", len(msgs), "consumer", d.consumer)
			return msgs, nil
		}
	}
	return nil, nil
}

// readGroup runs XREADGROUP over streams from ids (block < 0: no BLOCK) and returns the entries in the
// order of streams.
func (d *driver) readGroup(ctx context.Context, streams, ids []string, count int, block time.Duration) ([]streamEntries, error) {
	args := make([]any, 0, 9+2*len(streams))
	args = append(args, "XREADGROUP", "GROUP", d.group, d.consumer, "COUNT", count)
	if block >= 0 {
		args = append(args, "BLOCK", max(block.Milliseconds(), 1))
	}
	args = append(args, "STREAMS")
	for _, s := range streams {
		args = append(args, s)
	}
	for _, id := range ids {
		args = append(args, id)
	}
	v, err := d.api.Do(ctx, args...).Result()
	if errors.Is(err, redis.Nil) {
		return nil, nil // BLOCK ended with nothing
	}
	if err != nil {
		if isNoGroup(err) {
			return nil, err
		}
		return nil, fmt.Errorf("reading stream %s with group %s: %w", strings.Join(streams, ","), d.group, err)
	}
	res, err := parseStreams(v)
	if err != nil {
		return nil, fmt.Errorf("reading stream %s with group %s: %w", strings.Join(streams, ","), d.group, err)
	}
	// Config order, whatever order the reply had.
	slices.SortStableFunc(res, func(a, b streamEntries) int {
		return slices.Index(d.streams, a.stream) - slices.Index(d.streams, b.stream)
	})
	return res, nil
}

var noGroupRE = regexp.MustCompile(`No such key '([^']*)' or consumer group '([^']*)'`)

// noGroup handles a NOGROUP reply: the stream or the group is gone (deleted, or a failover to a replica
// that never had it). With REDIS_CREATE_GROUP the groups are created again and reading goes on, own
// pending list first; otherwise it is a not_found error naming the stream and the group.
func (d *driver) noGroup(ctx context.Context, err error) ([]*source.Message, error) {
	stream := strings.Join(d.streams, ",")
	if m := noGroupRE.FindStringSubmatch(err.Error()); m != nil {
		stream = m[1]
	}
	d.claimCursor = nil
	if !d.create {
		return nil, fmt.Errorf("reading stream %s with group %s (missing, and REDIS_CREATE_GROUP is false): %w", stream, d.group, err)
	}
	d.log.Warn("consumer group missing; creating it again", "stream", stream, "group", d.group, "start", d.startID)
	if err := d.ensureGroups(ctx); err != nil {
		d.groupsReady = false
		return nil, err
	}
	d.startReplay(true)
	return nil, nil
}

// ensureGroups creates the group on every stream (and the stream) unless it exists.
func (d *driver) ensureGroups(ctx context.Context) error {
	for _, s := range d.streams {
		err := d.createGroup(ctx, s)
		switch {
		case err == nil:
			d.log.Info("consumer group created", "stream", s, "group", d.group, "start", d.startID)
		case redis.HasErrorPrefix(err, "BUSYGROUP"):
		default:
			return fmt.Errorf("creating group %s on stream %s: %w", d.group, s, err)
		}
	}
	return nil
}

// createGroup creates the group on stream s (and the stream) at REDIS_START_FROM. At latest, on a
// Redis 7 stream that holds entries, the group starts at the stream's last ID with ENTRIESREAD set to
// its entries-added, both from one XINFO STREAM reply: Redis keeps no entries-read for a group created
// at $, so its lag is NULL from the first entry added until the group has read up to the newest one,
// and the backlog could only be bounded by the stream's length. Otherwise (an empty or missing stream,
// Redis 6.2, no permission) the group is created at $ as before.
func (d *driver) createGroup(ctx context.Context, s string) error {
	if d.startID == "$" {
		st, err := d.api.XInfoStream(ctx, s).Result()
		if err == nil && st.Length > 0 && st.EntriesAdded >= st.Length && st.LastGeneratedID != "" {
			err := d.api.Do(ctx, "XGROUP", "CREATE", s, d.group, st.LastGeneratedID, "ENTRIESREAD", st.EntriesAdded).Err()
			if err == nil || redis.HasErrorPrefix(err, "BUSYGROUP") {
				return err
			}
			// The stream deleted meanwhile, or a server that refuses ENTRIESREAD: the plain form.
		}
	}
	return d.api.XGroupCreateMkStream(ctx, s, d.group, d.startID).Err()
}

func splitDeleted(es []entry) (live, gone []entry) {
	for _, e := range es {
		if e.deleted {
			gone = append(gone, e)
		} else {
			live = append(live, e)
		}
	}
	return live, gone
}

// ackDeleted acks entries that were trimmed or deleted while pending, so they never stall a pending
// list. Failures are logged; the next replay or claim pass meets them again.
func (d *driver) ackDeleted(ctx context.Context, stream string, gone []entry) {
	if len(gone) == 0 {
		return
	}
	ids := make([]string, len(gone))
	for i, e := range gone {
		ids[i] = e.id
	}
	if err := d.api.XAck(ctx, stream, d.group, ids...).Err(); err != nil {
		d.log.Warn("acking deleted entries failed", "stream", stream, "entries", len(ids), "error", err)
		return
	}
	d.log.Info("acked pending entries deleted from the stream", "stream", stream, "entries", len(ids))
}

// deliveries returns the pending list's delivery count of each entry (missing when unknown).
func (d *driver) deliveries(ctx context.Context, stream string, es []entry) map[string]int {
	out := make(map[string]int, len(es))
	if len(es) == 0 {
		return out
	}
	pipe := d.api.Pipeline()
	cmds := make([]*redis.XPendingExtCmd, len(es))
	for i, e := range es {
		cmds[i] = pipe.XPendingExt(ctx, &redis.XPendingExtArgs{Stream: stream, Group: d.group, Start: e.id, End: e.id, Count: 1})
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		d.log.Debug("reading delivery counts failed", "stream", stream, "error", err)
	}
	for _, c := range cmds {
		if ps, err := c.Result(); err == nil && len(ps) == 1 {
			out[ps[0].ID] = int(ps[0].RetryCount)
		}
	}
	return out
}
