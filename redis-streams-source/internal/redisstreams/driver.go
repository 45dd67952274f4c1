package redisstreams

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

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

	noStreamInfo atomic.Bool  // XINFO STREAM was refused (NOPERM), logged once
	dlAdded      deadLettered // copied to the dead-letter stream, ack not yet landed

	// Receive state. Receive runs one call at a time (ReceiveConcurrency 1); mu also keeps a second
	// caller safe.
	mu          sync.Mutex
	groupsReady bool
	replay      map[string]string // stream -> next ID of our own pending list to replay; empty when done
	// replayed is set when the replay in progress follows an error in this process, not a start: its
	// re-read adds one to the delivery count of each entry that no delivery to numa accounts for.
	replayed    bool
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

// Capabilities: one receive at a time, the claim idle time as lease, local redelivery of nacks.
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

// Receive returns this consumer's own pending entries first, then due claims, then new entries.
func (d *driver) Receive(ctx context.Context, limit int) ([]*source.Message, error) {
	return d.receive(ctx, limit)
}

// Ack acks the entries (XACK, then XDEL with REDIS_DELETE_ON_ACK); acking twice is fine.
func (d *driver) Ack(ctx context.Context, handles []source.Handle) error {
	return d.ack(ctx, handles)
}

// Nack releases held entries to the next claim pass of any replica (only called at shutdown).
func (d *driver) Nack(ctx context.Context, handles []source.Handle, delay time.Duration) error {
	return d.release(ctx, handles, delay)
}

// Extend resets the idle time of entries this consumer still owns; others fail as invalid_argument.
func (d *driver) Extend(ctx context.Context, handles []source.Handle, _ time.Duration) error {
	return d.claimOwn(ctx, "extending", handles, nil)
}

// Backlog is the entries not yet delivered to the group plus its pending count over every stream (an
// upper bound when Redis cannot tell exactly, see undelivered).
func (d *driver) Backlog(ctx context.Context) (int64, error) {
	return d.backlog(ctx)
}

// ErrorCode classifies by Redis reply prefix (see errors.go); a missing group is not_found.
func (d *driver) ErrorCode(err error) source.Code {
	if errors.Is(err, errGroupMissing) {
		return source.NotFound
	}
	return errorCode(err)
}

// Close closes the Redis client. Idempotent.
func (d *driver) Close(context.Context) error {
	d.closeOnce.Do(func() {
		if err := d.api.Close(); err != nil {
			d.closeErr = fmt.Errorf("closing the redis client: %w", err)
		}
	})
	return d.closeErr
}

// DeadLetter copies the entry to REDIS_DEAD_LETTER_STREAM, then acks it.
func (d *driver) DeadLetter(ctx context.Context, msg *source.Message, reason string) error {
	return d.deadLetter(ctx, msg, reason)
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

// Check pings Redis and checks that every stream has the group (or that the source may create it).
func (d *driver) Check(ctx context.Context) error {
	return d.check(ctx)
}
