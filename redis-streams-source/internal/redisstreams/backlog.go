package redisstreams

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"
)

// backlog is the sum over the streams of the entries not yet delivered to the group (undelivered)
// and its pending count (delivered, not yet acked, by any consumer). It never reports less than what
// the group can still read, and is exact in the cases undelivered lists.
func (d *driver) backlog(ctx context.Context) (int64, error) {
	var total int64
	for _, s := range d.streams {
		gs, err := d.api.XInfoGroups(ctx, s).Result()
		if err != nil {
			return -1, fmt.Errorf("reading the backlog of stream %s: %w", s, err)
		}
		i := slices.IndexFunc(gs, func(g redis.XInfoGroup) bool { return g.Name == d.group })
		if i < 0 {
			return -1, fmt.Errorf("reading the backlog of group %s on stream %s: %w", d.group, s, errGroupMissing)
		}
		// Read after the group: entries added meanwhile are counted (high), never missed.
		st, err := d.api.XInfoStream(ctx, s).Result()
		switch {
		case err != nil && strings.HasPrefix(err.Error(), "NOPERM"):
			// A user without +xinfo|stream: Redis's lag alone, as before that permission was asked for.
			if !d.noStreamInfo.Swap(true) {
				d.log.Warn("no permission for XINFO STREAM: pending is the group's lag alone, unknown when Redis cannot tell it", "stream", s, "error", err)
			}
			st = nil
		case err != nil:
			return -1, fmt.Errorf("reading the length of stream %s: %w", s, err)
		}
		n, ok := undelivered(gs[i], st)
		if !ok {
			return -1, nil
		}
		total += n + gs[i].Pending
	}
	return total, nil
}

// undelivered is how many entries of the stream come after the group's last-delivered-id: exact when
// the stream is empty, when the group has delivered its last entry (0), when the group's position is
// before the first entry, trimmed past or never read (the stream's length), and when Redis's lag is
// intact; otherwise an upper bound, never above the stream's length. Redis's lag (entries-added minus
// the group's entries-read) is NULL when entries after the group's position were deleted, and stays
// high by the entries trimmed past the group after it reads on (Redis 7.0 reports it even once the
// group has read everything): so it is used only as an upper bound, and not trusted at the edges.
// ok is false when it cannot be told: without st (no permission for XINFO STREAM) Redis's lag is
// all there is, and it may be NULL; or an ID does not parse.
func undelivered(g redis.XInfoGroup, st *redis.XInfoStream) (n int64, ok bool) {
	if st == nil {
		return g.Lag, g.Lag >= 0
	}
	if st.Length <= 0 {
		return 0, true
	}
	pos, ok := parseID(g.LastDeliveredID)
	if !ok {
		return 0, false
	}
	last := st.LastEntry.ID // the newest entry; servers that omit it report the last generated ID
	if last == "" {
		last = st.LastGeneratedID
	}
	if l, ok := parseID(last); ok && !pos.less(l) {
		return 0, true // the group has delivered everything, whatever its lag says
	}
	first, haveFirst := parseID(st.FirstEntry.ID)
	if pos == (entryID{}) || haveFirst && pos.less(first) {
		return st.Length, true // every entry in the stream comes after the group's position
	}
	// The group's position is inside the stream: at least the first entry is not after it.
	bound := st.Length
	if haveFirst {
		bound--
	}
	// Redis 7 keeps the counters the lag is computed from (entries-added >= length); servers without
	// them (older Redis, embedded fakes) report no lag or a made-up one.
	if st.EntriesAdded >= st.Length {
		if g.Lag >= 0 {
			bound = min(bound, g.Lag)
		} else if g.EntriesRead > 0 {
			// NULL lag (entries deleted after the group's position): the entries added since the
			// group's reads began, less those it read, still bound what is left.
			bound = min(bound, st.EntriesAdded-g.EntriesRead)
		}
	}
	return max(bound, 1), true // the group is before the last entry: at least that one is left
}

// entryID is a parsed stream entry ID (milliseconds-sequence), ordered as Redis orders them.
type entryID struct{ ms, seq uint64 }

func (a entryID) less(b entryID) bool { return a.ms < b.ms || a.ms == b.ms && a.seq < b.seq }

// parseID parses "ms-seq" (or "ms"); ok is false for anything else, including "".
func parseID(s string) (entryID, bool) {
	msPart, seqPart, hasSeq := strings.Cut(s, "-")
	ms, err := strconv.ParseUint(msPart, 10, 64)
	if err != nil {
		return entryID{}, false
	}
	var seq uint64
	if hasSeq {
		if seq, err = strconv.ParseUint(seqPart, 10, 64); err != nil {
			return entryID{}, false
		}
	}
	return entryID{ms, seq}, true
}
