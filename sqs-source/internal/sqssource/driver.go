package sqssource

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/numaflow-connectors/sources/common/source"
)

// Capabilities the driver reports to the adapter.
const (
	// defaultReceiveConcurrency fills numa's default batch of 500 with receives of 10.
	defaultReceiveConcurrency = 50
	maxReceiveConcurrency     = 100
	ackConcurrency            = 8
	maxNackDelay              = 12 * time.Hour
)

// driver is the SQS source.Driver. Handles are receipt handles (string).
type driver struct {
	cfg      Config
	api      sqsAPI
	log      *slog.Logger
	fifo     bool
	dlqFIFO  bool
	receives int       // ReceiveConcurrency
	attempts *attempts // FIFO receive attempt ids (attempts.go)

	requests *requestCounter // nil in unit tests
	closeFn  func()          // releases the HTTP client; nil in unit tests

	checked    atomic.Bool
	dlqMaxSize atomic.Int64 // the dead-letter queue's MaximumMessageSize; 0 until known (deadletter.go)
	closeOnce  sync.Once

	// An empty queue stays empty while no receive of this driver returns a message: a zero backlog is
	// then reused for up to idleBacklogTTL, so an idle replica 0 (asked for pending every 5 s) makes
	// about one GetQueueAttributes call a minute instead of twelve.
	received  atomic.Uint64 // receives that returned messages
	zeroMu    sync.Mutex
	zeroAt    time.Time // when a zero backlog was read; zero time when none
	zeroRecvd uint64    // received when it was read
}

var (
	_ source.Driver       = (*driver)(nil)
	_ source.DeadLetterer = (*driver)(nil)
	_ source.Checker      = (*driver)(nil)
)

// Capabilities: batches of 10, parallel receives, the visibility timeout as lease, FIFO group order.
func (d *driver) Capabilities() source.Capabilities {
	return source.Capabilities{
		MaxReceive:         maxBatch,
		ReceiveConcurrency: d.receives,
		MaxAck:             maxBatch,
		AckConcurrency:     ackConcurrency,
		Lease:              d.cfg.VisibilityTimeout,
		MaxExtension:       d.cfg.MaxExtension,
		MaxNackDelay:       maxNackDelay,
		OrderedKeys:        d.fifo,
	}
}

// Receive makes one long poll (SQS_WAIT_TIME) for up to max messages on ctx; with SQS_WAIT_TIME=0s
// an empty answer returns after a pause of a second.
func (d *driver) Receive(ctx context.Context, max int) ([]*source.Message, error) {
	return d.receive(ctx, max)
}

// Ack deletes the messages; a receipt handle SQS refuses fails alone, classified invalid_argument.
func (d *driver) Ack(ctx context.Context, handles []source.Handle) error {
	return d.deleteMessages(ctx, handles)
}

// Nack makes the messages visible again after delay (whole seconds, at most 12 h); see changeVisibility.
func (d *driver) Nack(ctx context.Context, handles []source.Handle, delay time.Duration) error {
	return d.changeVisibility(ctx, handles, min(delay, maxNackDelay), true)
}

// Extend sets the visibility timeout of the messages to lease from now.
func (d *driver) Extend(ctx context.Context, handles []source.Handle, lease time.Duration) error {
	return d.changeVisibility(ctx, handles, min(lease, maxVisibility), false)
}

// Backlog is the queue's visible plus in-flight count (a zero reading is reused while idle).
func (d *driver) Backlog(ctx context.Context) (int64, error) {
	return d.cachedBacklog(ctx)
}

// ErrorCode classifies an error returned by the driver.
func (d *driver) ErrorCode(err error) source.Code { return errorCode(err) }

// Close releases the HTTP client's idle connections and logs how many SQS requests were made.
func (d *driver) Close(context.Context) error {
	d.closeOnce.Do(func() {
		if d.requests != nil {
			d.log.Info("sqs requests", "queue", d.cfg.QueueURL, "total", d.requests.total(), "by_operation", d.requests.snapshot())
		}
		if d.closeFn != nil {
			d.closeFn()
		}
	})
	return nil
}

// DeadLetter sends the message to SQS_DEAD_LETTER_QUEUE_URL, cut to its size limit, then deletes it
// from the queue; source.ErrNoDeadLetter when its body alone is over the limit.
func (d *driver) DeadLetter(ctx context.Context, msg *source.Message, reason string) error {
	return d.deadLetter(ctx, msg, reason)
}

// Check reads the queue's and the dead-letter queue's attributes, so a problem shows at start.
func (d *driver) Check(ctx context.Context) error {
	return d.check(ctx)
}
