package pubsubsource

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/numaflow-connectors/sources/common/source"
)

// Limits and tuning of the unary data plane.
const (
	// maxReceive is max_messages of one Pull.
	maxReceive = 500
	// receiveConcurrency is the most Pulls at once (the adapter adds them only while pulls bring
	// messages); 1 when the subscription orders messages, so batches of one key cannot swap places.
	receiveConcurrency = 4
	// fullReceive: a Pull that brings any message counts as full. Pub/Sub answers with what it has at
	// hand, fewer than asked while more wait (the emulator at most 100 of 500), so a pull that waited
	// for a whole batch would keep the source at one Pull at a time.
	fullReceive = 1
	// maxAckIDs is the most ack IDs per Acknowledge or ModifyAckDeadline call ...
	maxAckIDs = 1000
	// ... and maxAckBytes the most bytes of ack IDs per call, well under the 512 KiB request limit.
	maxAckBytes = 384 << 10
	// ackConcurrency is the most Acknowledge/ModifyAckDeadline calls at once.
	ackConcurrency = 4
	// pullWait is the deadline of one Pull: the service answers an empty pull by then.
	pullWait = 5 * time.Second
	// minEmptyPull is the shortest time an empty Receive takes, so a server that answers an empty
	// pull at once does not turn the receiver into a hot loop.
	minEmptyPull = 500 * time.Millisecond
	// settingsTimeout bounds one GetSubscription call that reads the subscription's settings.
	settingsTimeout = 5 * time.Second
	// settingsEvery is how often the settings are read again once known, to notice changes.
	settingsEvery = 5 * time.Minute
	// settingsRetry is the first wait before the settings are read again after a failure; it doubles
	// up to settingsRetryMax.
	settingsRetry    = time.Second
	settingsRetryMax = time.Minute
	// orderedGap is how long, after a pull on a subscription that may order messages, the next pull
	// waits when the adapter was told it may pull in parallel (the settings were unknown at start): the
	// adapter takes the first pull's messages in before the next pull can bring later ones of a key.
	orderedGap = 20 * time.Millisecond
)

// driver is the Pub/Sub source driver.
type driver struct {
	sub     subscriberAPI
	pub     publisherAPI  // nil without PUBSUB_DEAD_LETTER_TOPIC
	backlog backlogReader // nil with PUBSUB_PENDING=off
	log     *slog.Logger
	// Pre-flight checks only (preflight.go).
	subIAM   iamAPI
	topicIAM topicIAMAPI // nil without PUBSUB_DEAD_LETTER_TOPIC
	pre      preflightEnv
	project  string

	name       string // projects/P/subscriptions/S
	dlTopic    string // projects/P/topics/T, or ""
	lease      time.Duration
	maxExtend  time.Duration
	closers    []func() error
	pullWait   time.Duration // deadline of one Pull (pullWait; shorter in tests)
	pullOK     atomic.Bool   // the last Pull that ended succeeded (empty or not)
	pullDenied atomic.Bool   // the last Pull that ended was refused for permission
	closeOnce  sync.Once
	closeErr   error
	publishedM sync.Mutex
	published  map[string]time.Time // message IDs published to the dead-letter topic and not yet acked, with when

	// The subscription's settings (settings.go): nil until a GetSubscription succeeded; read again in
	// the background until they are known, then every settingsEvery.
	settings      atomic.Pointer[subSettings]
	settingsEvery time.Duration
	settingsRetry time.Duration
	// What Capabilities told the adapter, and the gate that keeps pulls one at a time while the
	// subscription may order messages but the adapter was told it may pull in parallel.
	capsOnce sync.Once
	capsSet  atomic.Bool // caps is filled in
	caps     source.Capabilities
	gate     *pullGate
	// The background settings reader (watchSettings), stopped by Close.
	bgCancel context.CancelFunc
	bgDone   chan struct{}
}

var (
	_ source.Driver       = (*driver)(nil)
	_ source.DeadLetterer = (*driver)(nil)
	_ source.Checker      = (*driver)(nil)
)

// Capabilities: batches of 500 pulled and 1000 acked, PUBSUB_ACK_DEADLINE as lease, key order when
// ordered. The adapter asks once; the answer is fixed from then on (see settings.go for what follows
// when the settings were unknown then).
func (d *driver) Capabilities() source.Capabilities {
	d.capsOnce.Do(func() {
		s := d.settings.Load()
		ordered := s == nil || s.ordered
		conc := receiveConcurrency
		if s != nil && s.ordered {
			conc = 1
		}
		d.caps = source.Capabilities{
			MaxReceive:         maxReceive,
			ReceiveConcurrency: conc,
			FullReceive:        fullReceive,
			MaxAck:             maxAckIDs,
			AckConcurrency:     ackConcurrency,
			Lease:              d.lease,
			MaxExtension:       d.maxExtend,
			MaxNackDelay:       maxAckDeadline,
			OrderedKeys:        ordered,
		}
		d.capsSet.Store(true)
	})
	return d.caps
}

// Receive makes one Pull of up to max messages on ctx, bounded by the service's own 5 s wait.
func (d *driver) Receive(ctx context.Context, max int) ([]*source.Message, error) {
	return d.receive(ctx, max)
}

// Ack acknowledges the deliveries; with exactly-once delivery, refused ack IDs fail one by one.
func (d *driver) Ack(ctx context.Context, handles []source.Handle) error {
	return d.acknowledge(ctx, handles)
}

// Nack sets the deliveries' ack deadline to delay (whole seconds, at most 600 s; 0: available at once).
func (d *driver) Nack(ctx context.Context, handles []source.Handle, delay time.Duration) error {
	return d.modify(ctx, ackIDs(handles), delay)
}

// Extend sets the deliveries' ack deadline to lease from now.
func (d *driver) Extend(ctx context.Context, handles []source.Handle, lease time.Duration) error {
	return d.modify(ctx, ackIDs(handles), lease)
}

// Backlog is Cloud Monitoring's num_undelivered_messages with PUBSUB_PENDING=monitoring, else -1.
func (d *driver) Backlog(ctx context.Context) (int64, error) {
	if d.backlog == nil {
		return -1, nil
	}
	return d.backlog.Backlog(ctx)
}

// ErrorCode classifies by gRPC status (see errors.go).
func (d *driver) ErrorCode(err error) source.Code { return errorCode(err) }

// Close stops the settings reader and closes the clients. Idempotent.
func (d *driver) Close(context.Context) error {
	d.closeOnce.Do(func() {
		d.stopSettings()
		var errs []error
		for _, c := range d.closers {
			if err := c(); err != nil && !strings.Contains(err.Error(), "the client connection is closing") {
				errs = append(errs, err)
			}
		}
		if len(errs) > 0 {
			d.closeErr = fmt.Errorf("closing Pub/Sub clients: %w", errors.Join(errs...))
		}
	})
	return d.closeErr
}

// DeadLetter publishes the message to PUBSUB_DEAD_LETTER_TOPIC, then acks the original.
func (d *driver) DeadLetter(ctx context.Context, msg *source.Message, reason string) error {
	return d.deadLetter(ctx, msg, reason)
}

// Check reads the subscription, so a missing subscription or permission shows at start.
func (d *driver) Check(ctx context.Context) error {
	return d.check(ctx)
}
