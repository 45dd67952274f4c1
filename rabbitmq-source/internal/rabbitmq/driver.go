package rabbitmq

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/numaflow-connectors/sources/common/source"
)

// driver implements source.Driver over one queue, through one connection and one channel at a time
// (a session, session.go). Delivery tags belong to a session: an answer for an older session's tag
// is never sent on a newer channel.
type driver struct {
	queue     string
	tag       string // consumer tag base and connection name
	holdLimit time.Duration
	reconnect time.Duration // longest wait between reconnection attempts
	dlx       string
	dlxKey    string
	dlReject  bool
	dial      dialFunc
	log       *slog.Logger
	now       func() time.Time
	idPrefix  string // unique to this process: ids of messages without a message-id

	// The adapter's receive budget (server.Env.Budget): the window is sized from it.
	prefetch      int
	prefetchBytes int64
	maxMessage    int64 // MAX_MESSAGE_BYTES (0: unknown): bounds the window before a size is seen

	startOnce sync.Once
	runCtx    context.Context // the supervisor's; cancelled by Close
	stopRun   context.CancelFunc
	runWG     sync.WaitGroup
	resize    chan struct{} // the window should change: the supervisor re-consumes
	retry     chan struct{} // the broker is back (a check passed): reconnect without waiting
	stopRecv  chan struct{} // closed by StopReceiving: no consumer is started again
	stopOnce  sync.Once

	mu      sync.Mutex
	sess    *session      // the connected session; nil while (re)connecting
	lastErr error         // why the last connection attempt failed; nil after a success
	gen     uint64        // numbers sessions
	changed chan struct{} // closed (and replaced) when sess or lastErr changes
	sizeEst int64         // payload size estimate for the window (0: none seen yet)
	logged  map[uint64]bool

	stale   atomic.Int64 // answers dropped: their channel was lost or their delivery handed back
	expired atomic.Int64 // deliveries handed back at the hold limit
	lost    atomic.Int64 // sessions lost (connection or channel closed)
	reacked atomic.Int64 // redeliveries acked at once: numa had acked them on a lost channel

	ackedIDs idMemory[bool] // message-ids whose ack was dropped (under mu; see ack.go)
	unread   idMemory[int]  // deliveries by message-id returned to the broker before the adapter took them (under mu; see receive.go)

	// sendMu is held from choosing the tags of an ack, nack or hand-back until they are sent, so a
	// multiple ack never covers a tag another call has taken out of live but not yet answered.
	sendMu sync.Mutex

	// The driver's other connections (link.go): probe for passive declares, pub for dead letters.
	probe, pub *link
	bg         sync.WaitGroup // background closes and connection.blocked watchers; Close waits

	closeOnce sync.Once
	closeErr  error
}

var (
	_ source.Driver         = (*driver)(nil)
	_ source.DeadLetterer   = (*driver)(nil)
	_ source.Checker        = (*driver)(nil)
	_ source.Preflighter    = (*driver)(nil)
	_ source.ReceiveStopper = (*driver)(nil)
)

// Capabilities: one receive at a time (it takes what the channel has), local redelivery of nacks
// (RabbitMQ has no delayed nack), and the hold limit as lease so the adapter reports deliveries that
// reach it.
func (d *driver) Capabilities() source.Capabilities {
	return source.Capabilities{
		ReceiveConcurrency: 1,
		AckConcurrency:     1,
		// RabbitMQ has no lease to renew: a delivery stays with this channel until consumer_timeout.
		// The driver hands back what it held for the hold limit; the adapter logs it as a maximum
		// extension reached. Extend calls are answered locally.
		Lease:           d.holdLimit,
		MaxExtension:    d.holdLimit,
		LocalRedelivery: true,
	}
}

// Receive takes up to max deliveries the channel has received; it waits for the first one until ctx
// ends or for receiveWait, whichever is first.
func (d *driver) Receive(ctx context.Context, max int) ([]*source.Message, error) {
	return d.receive(ctx, max)
}

// Ack sends basic.ack for deliveries of the current channel; see answer for the others.
func (d *driver) Ack(ctx context.Context, handles []source.Handle) error {
	return d.answer(ctx, handles, opAck, 0)
}

// Nack sends basic.nack requeue=true. RabbitMQ has no delayed nack, and the adapter keeps delayed
// nacks itself and calls Nack only to give messages up; one it gives up with a delay is kept unacked
// for the delay, within a share of the prefetch window (see answer).
func (d *driver) Nack(ctx context.Context, handles []source.Handle, delay time.Duration) error {
	return d.answer(ctx, handles, opNack, delay)
}

// Extend makes no broker call: a delivery of the current channel is held until it is answered or
// reaches the hold limit. Others fail as invalid_argument.
func (d *driver) Extend(ctx context.Context, handles []source.Handle, _ time.Duration) error {
	return d.answer(ctx, handles, opExtend, 0)
}

// Backlog is the queue's ready messages (passive queue.declare) plus the deliveries this replica
// holds unanswered.
func (d *driver) Backlog(ctx context.Context) (int64, error) {
	return d.backlog(ctx)
}

// StopReceiving cancels the consumer for good (shutdown): the broker pushes nothing more here, what
// the driver holds queued for Receive goes back to the broker at once, and what the adapter holds stays
// answerable until Close. Without a connection it only keeps the driver from consuming again.
func (d *driver) StopReceiving(ctx context.Context) error {
	return d.stopReceiving(ctx)
}

// ErrorCode classifies AMQP reply codes and the driver's own errors (errors.go).
func (d *driver) ErrorCode(err error) source.Code { return errorCode(err) }

// Close stops reconnecting and closes the connections (the broker requeues what is unanswered). ctx
// bounds it: a connection that does not answer its close in time (a blocked one, a silent network)
// has its socket closed. Idempotent.
func (d *driver) Close(ctx context.Context) error {
	d.closeOnce.Do(func() {
		d.startOnce.Do(func() {}) // a driver never started stays so
		if d.stopRun != nil {
			d.stopRun()
		}
		waitCtx(ctx, d.runWG.Wait)
		d.mu.Lock()
		s := d.sess
		d.sess = nil
		d.mu.Unlock()
		if s != nil {
			cctx, cancel := context.WithTimeout(ctx, closeWait)
			err := closeConn(cctx, s.conn)
			cancel()
			if err != nil && !isClosed(err) {
				d.closeErr = fmt.Errorf("closing the connection to %s: %w", d.queue, err)
			}
		}
		d.shut(ctx, d.probe)
		d.shut(ctx, d.pub)
		waitCtx(ctx, d.bg.Wait)
	})
	return d.closeErr
}

// DeadLetter publishes the message to RABBITMQ_DEAD_LETTER_EXCHANGE with confirms and acks it, or
// rejects it to the queue's own dead-letter exchange (RABBITMQ_DEAD_LETTER_REJECT).
func (d *driver) DeadLetter(ctx context.Context, msg *source.Message, reason string) error {
	return d.deadLetter(ctx, msg, reason)
}

// Check connects and declares the queue passively: it reports a missing queue or refused access.
// A passing check also cuts the supervisor's reconnection backoff short.
func (d *driver) Check(ctx context.Context) error {
	_, err := d.queueDepth(ctx)
	if err == nil {
		select {
		case d.retry <- struct{}{}:
		default:
		}
	}
	return err
}

// driverStats are the driver's own counters, for logs and tests.
type driverStats struct {
	Stale   int64 // answers dropped because their channel was lost or their delivery handed back
	Expired int64 // deliveries handed back at the hold limit
	Lost    int64 // sessions lost
	Reacked int64 // redeliveries acked at once because numa had acked them on a lost channel
}

func (d *driver) stats() driverStats {
	return driverStats{Stale: d.stale.Load(), Expired: d.expired.Load(), Lost: d.lost.Load(), Reacked: d.reacked.Load()}
}

// waitCtx runs wait but gives up when ctx ends.
func waitCtx(ctx context.Context, wait func()) {
	done := make(chan struct{})
	go func() { wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
	}
}
