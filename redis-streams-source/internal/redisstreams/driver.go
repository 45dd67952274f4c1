package redisstreams

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/numaflow-connectors/sources/common/source"
)

// Batch sizes of the driver's calls.
const (
	maxAck         = 500
	ackConcurrency = 2
	replayPages    = 10 // pages of deleted-only entries skipped within one Receive
)

// errGroupMissing is reported by Check when the group does not exist and REDIS_CREATE_GROUP is false.
var errGroupMissing = errors.New("consumer group does not exist")

// driver implements source.Driver over one consumer group on one or more streams.
type driver struct {
	api       redisAPI
	log       *slog.Logger
	streams   []string
	group     string
	consumer  string
	startID   string
	create    bool
	claimIdle time.Duration
	maxExt    time.Duration
	block     time.Duration
	readCount int
	delOnAck  bool
	dlq       string
	dlqMaxLen int64
	mapper    mapper
	now       func() time.Time

	closeOnce sync.Once
	closeErr  error

	// Receive state. Receive runs one call at a time (ReceiveConcurrency 1); mu also keeps a second
	// caller safe.
	mu          sync.Mutex
	groupsReady bool
	replay      map[string]string // stream -> next ID of our own pending list to replay; empty when done
	claimCursor map[string]string // stream -> XAUTOCLAIM cursor of the pass in progress; nil between passes
	nextClaim   time.Time
	rotate      int
}

var (
	_ source.Driver        = (*driver)(nil)
	_ source.DeadLetterer  = (*driver)(nil)
	_ source.OffsetDecoder = (*driver)(nil)
	_ source.Checker       = (*driver)(nil)
)

// newDriver wires a driver over api; it makes no call.
func newDriver(cfg *Config, consumer string, api redisAPI, log *slog.Logger) *driver {
	return &driver{
		api:       api,
		log:       log,
		streams:   cfg.Streams(),
		group:     cfg.Group,
		consumer:  consumer,
		startID:   cfg.startID(),
		create:    cfg.CreateGroup,
		claimIdle: cfg.ClaimMinIdle,
		maxExt:    cfg.MaxExtension,
		block:     cfg.Block,
		readCount: cfg.ReadCount,
		delOnAck:  cfg.DeleteOnAck,
		dlq:       cfg.DeadLetterStream,
		dlqMaxLen: cfg.DeadLetterMaxLen,
		mapper:    mapper{payloadField: cfg.PayloadField, keyField: cfg.KeyField},
		now:       time.Now,
		replay:    map[string]string{},
	}
}

func (d *driver) Capabilities() source.Capabilities {
	return source.Capabilities{
		MaxReceive:         d.readCount,
		ReceiveConcurrency: 1,
		MaxAck:             maxAck,
		AckConcurrency:     ackConcurrency,
		// The idle time of a held entry is reset by Extend, so no other replica's XAUTOCLAIM takes it.
		Lease:        d.claimIdle,
		MaxExtension: d.maxExt,
		// Redis cannot make a pending entry readable again on demand (no XNACK before Redis 8): the
		// adapter keeps a nacked entry and hands it out again itself after the nack delay.
		LocalRedelivery: true,
	}
}

func (d *driver) ErrorCode(err error) source.Code {
	if errors.Is(err, errGroupMissing) {
		return source.NotFound
	}
	return errorCode(err)
}

// ---- receive ----

// Receive returns up to limit entries: first this consumer's own pending entries (at start and after a
// reconnect or a recreated group), then, about every REDIS_CLAIM_MIN_IDLE/2, entries other consumers
// left idle too long (XAUTOCLAIM), otherwise new entries (XREADGROUP ... BLOCK).
func (d *driver) Receive(ctx context.Context, limit int) ([]*source.Message, error) {
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
		d.startReplay()
	}
	msgs, err := d.receive(ctx, limit)
	if err == nil {
		return msgs, nil
	}
	if isNoGroup(err) {
		return d.noGroup(ctx, err)
	}
	// A read whose reply was lost (connection dropped, or ctx cancelled mid-read) left entries in our
	// pending list that nobody returned: replay it once the connection is back.
	d.startReplay()
	return nil, err
}

func (d *driver) receive(ctx context.Context, limit int) ([]*source.Message, error) {
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

// claimPassMax bounds the time between two claim passes.
const claimPassMax = 5 * time.Second

func (d *driver) startReplay() {
	for _, s := range d.streams {
		d.replay[s] = "0"
	}
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
				msgs = append(msgs, d.mapper.message(se.stream, e, counts[e.id]))
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
	d.startReplay()
	return nil, nil
}

// ensureGroups creates the group on every stream (and the stream) unless it exists.
func (d *driver) ensureGroups(ctx context.Context) error {
	for _, s := range d.streams {
		err := d.api.XGroupCreateMkStream(ctx, s, d.group, d.startID).Err()
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

// ---- ack, extend, release ----

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

// Ack acks the entries with one pipelined XACK per stream (then XDEL with REDIS_DELETE_ON_ACK). An
// entry that is no longer pending (acked twice) is fine.
func (d *driver) Ack(ctx context.Context, handles []source.Handle) error {
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

// Extend resets the idle time of entries this consumer still owns (XCLAIM to ourselves with JUSTID,
// which leaves the delivery count alone), so no other replica's XAUTOCLAIM takes them. An entry no
// longer ours (acked, deleted, or claimed by another consumer after our lease lapsed) fails with
// invalid_argument and is left alone.
func (d *driver) Extend(ctx context.Context, handles []source.Handle, _ time.Duration) error {
	return d.claimOwn(ctx, "extending", handles, nil)
}

// Nack hands entries back. The adapter redelivers nacked entries itself (LocalRedelivery), so Nack is
// only called at shutdown, with delay 0, to release held entries: they are claimed to ourselves with
// their idle time set past REDIS_CLAIM_MIN_IDLE, and another replica picks them up on its next claim
// pass (every REDIS_CLAIM_MIN_IDLE/2) instead of after a whole claim idle time. With a delay, the idle
// time is set so they become claimable once the delay has passed.
func (d *driver) Nack(ctx context.Context, handles []source.Handle, delay time.Duration) error {
	idle := d.claimIdle + time.Second
	if delay > 0 {
		idle = max(d.claimIdle-delay, 0)
	}
	return d.claimOwn(ctx, "releasing", handles, &idle)
}

// claimOwn runs XCLAIM ... JUSTID (with IDLE when idle is set) on the entries this consumer still owns,
// checked first with XPENDING per entry, so an entry another replica has claimed is not taken back.
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
		for i, c := range checks {
			if ps, err := c.Result(); err == nil && len(ps) == 1 {
				owned = append(owned, b.ids[i])
			}
		}
		claimed := map[string]bool{}
		if len(owned) > 0 {
			args := make([]any, 0, 9+len(owned))
			args = append(args, "XCLAIM", b.stream, d.group, d.consumer, 0)
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

// ---- backlog ----

// Backlog is the sum over the streams of the group's lag (entries not yet delivered to the group) and
// its pending count (delivered, not yet acked, by any consumer); -1 when Redis cannot tell the lag.
func (d *driver) Backlog(ctx context.Context) (int64, error) {
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
		if gs[i].Lag < 0 {
			return -1, nil // Redis cannot tell (entries deleted past the group's position)
		}
		total += gs[i].Lag + gs[i].Pending
	}
	return total, nil
}

// ---- dead letters ----

// DeadLetter copies the entry (its fields as they are in the stream, plus the reason, the source
// stream, the entry ID and the delivery count) to REDIS_DEAD_LETTER_STREAM, then acks it. The copy is
// added before the ack, so a failure in between leaves a duplicate copy at worst, never a loss.
func (d *driver) DeadLetter(ctx context.Context, msg *source.Message, reason string) error {
	if d.dlq == "" {
		return source.ErrNoDeadLetter
	}
	h, ok := msg.Handle.(handle)
	if !ok {
		return d.entryError("dead-lettering", "", "", fmt.Sprintf("not a redis-streams handle: %T", msg.Handle))
	}
	fields, err := d.entryFields(ctx, h, msg)
	if err != nil {
		return err
	}
	values := make([]any, 0, len(fields)+8)
	for _, f := range fields {
		values = append(values, f)
	}
	values = append(values, FieldDeadLetterReason, reason, FieldDeadLetterStream, h.stream, FieldDeadLetterID, h.id,
		FieldDeadLetterDeliveries, strconv.Itoa(msg.Deliveries))
	args := &redis.XAddArgs{Stream: d.dlq, Values: values}
	if d.dlqMaxLen > 0 {
		args.MaxLen, args.Approx = d.dlqMaxLen, true
	}
	if err := d.api.XAdd(ctx, args).Err(); err != nil {
		return fmt.Errorf("adding entry %s of stream %s to dead-letter stream %s: %w", h.id, h.stream, d.dlq, err)
	}
	if err := d.Ack(ctx, []source.Handle{h}); err != nil {
		return fmt.Errorf("acking dead-lettered entry: %w", err)
	}
	return nil
}

// entryFields reads the entry's fields from the stream (XRANGE id id, in order). An entry trimmed
// meanwhile is rebuilt from the message.
func (d *driver) entryFields(ctx context.Context, h handle, msg *source.Message) ([]string, error) {
	v, err := d.api.Do(ctx, "XRANGE", h.stream, h.id, h.id).Result()
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("reading entry %s of stream %s: %w", h.id, h.stream, err)
	}
	if es, err := parseEntries(v); err == nil && len(es) == 1 && !es[0].deleted {
		return es[0].fields, nil
	}
	field := d.mapper.payloadField
	if field == "" {
		field = "payload"
	}
	fields := []string{field, string(msg.Payload)}
	for k, v := range msg.Headers {
		if !strings.HasPrefix(k, "x-redis-") {
			fields = append(fields, k, v)
		}
	}
	return fields, nil
}

// HandleFromID rebuilds the handle of an offset ("<stream>:<entry id>") this process never handed out,
// so acks numa re-sends after a restart still reach Redis.
func (d *driver) HandleFromID(id string) (source.Handle, bool) {
	stream, eid, ok := splitMessageID(id)
	if !ok || !slices.Contains(d.streams, stream) {
		return nil, false
	}
	return handle{stream: stream, id: eid}, true
}

// ---- check, close ----

// Check pings Redis and checks that every stream has the group (or that the source may create it).
func (d *driver) Check(ctx context.Context) error {
	if err := d.api.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("connecting to redis: %w", err)
	}
	for _, s := range d.streams {
		gs, err := d.api.XInfoGroups(ctx, s).Result()
		if err != nil {
			if d.create && strings.Contains(strings.ToLower(err.Error()), "no such key") {
				continue // created at the first read
			}
			return fmt.Errorf("checking stream %s: %w", s, err)
		}
		if !d.create && !slices.ContainsFunc(gs, func(g redis.XInfoGroup) bool { return g.Name == d.group }) {
			return fmt.Errorf("checking group %s on stream %s (REDIS_CREATE_GROUP is false): %w", d.group, s, errGroupMissing)
		}
	}
	return nil
}

func (d *driver) Close(context.Context) error {
	d.closeOnce.Do(func() {
		if err := d.api.Close(); err != nil {
			d.closeErr = fmt.Errorf("closing the redis client: %w", err)
		}
	})
	return d.closeErr
}
