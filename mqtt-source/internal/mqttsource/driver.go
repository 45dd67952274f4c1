package mqttsource

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/numaflow-connectors/sources/common/source"
)

// mqttAPI is the part of autopaho's ConnectionManager the driver uses.
type mqttAPI interface {
	Subscribe(ctx context.Context, s *paho.Subscribe) (*paho.Suback, error)
	Publish(ctx context.Context, p *paho.Publish) (*paho.PublishResponse, error)
	AwaitConnection(ctx context.Context) error
	Disconnect(ctx context.Context) error
}

// acker acknowledges one delivery on the connection it arrived on (*paho.Client): paho sends the
// acknowledgements in the order the messages arrived, each once every earlier one is acknowledged.
type acker interface {
	Ack(p *paho.Publish) error
}

// driver implements source.Driver over one MQTT session.
type driver struct {
	api          mqttAPI
	stop         context.CancelFunc // ends the connection manager
	log          *slog.Logger
	clientID     string
	filters      []string
	group        string
	qos          byte
	skipRetained bool
	dlq          string
	mapper       mapper
	maxQueue     int   // most deliveries waiting for Receive (queued, handed back, read by paho) before the connection is read no further
	maxBytes     int64 // most bytes waiting for Receive, likewise
	now          func() time.Time
	wg           sync.WaitGroup // subscribe calls started on connection up
	onClose      func()         // called at the end of Close (tests: a harness reuses the client id)

	closeOnce sync.Once
	closeErr  error

	mu            sync.Mutex
	closed        bool
	connected     bool
	everConnected bool        // a connection was up once (connectionUp logs a first start apart)
	upAt          time.Time   // when the current or last connection came up
	shortLived    int         // connections in a row that were lost within stableConnection (backoff.go)
	conn          acker       // the connection the current deliveries arrived on; nil before the first
	downErr       error       // why the last connection attempt or connection failed
	subscribed    bool        // the current connection's SUBSCRIBE was accepted
	subErr        error       // why it was refused
	subAt         time.Time   // when the last SUBSCRIBE was sent
	queue         []*delivery // received, not yet returned by Receive, in arrival order
	queueBytes    int64       // payload bytes in queue
	requeued      []*delivery // handed back by Nack, each due at its time
	requeuedBytes int64       // payload bytes in requeued
	inPaho        []int64     // sizes of PUBLISH packets read from the connection, not yet delivered (flow.go)
	inPahoBytes   int64
	gated         bool                   // the connection's reader waits for room (flow.go)
	gateOpened    time.Time              // when it last stopped waiting
	held          map[string][]*delivery // id -> unacknowledged deliveries of the current connection, oldest first
	staleWarned   acker                  // the connection a message of a stale subscription was logged for
	wake          chan struct{}          // closed and replaced whenever the state above changes
}

var (
	_ source.Driver       = (*driver)(nil)
	_ source.DeadLetterer = (*driver)(nil)
	_ source.Checker      = (*driver)(nil)
	_ acker               = (*paho.Client)(nil)
)

// Capabilities: one receive at a time, no lease (the broker never redelivers to a connected client),
// local redelivery of nacks (MQTT has no nack).
func (d *driver) Capabilities() source.Capabilities {
	return source.Capabilities{
		MaxReceive:         d.maxQueue,
		ReceiveConcurrency: 1,
		AckConcurrency:     1,
		// MQTT cannot make a message readable again: the adapter keeps a nacked message and hands it
		// out again itself after the delay; what it gives up comes back from this driver's requeue.
		LocalRedelivery: true,
		// MQTT acknowledges in order (paho sends them so): DEAD_LETTER_FALLBACK defaults to drop.
		OrderedAcks: true,
	}
}

// Receive returns what the broker sent, handed-back deliveries first once due; it waits for messages
// until ctx is done, and reports the connection's failure after waiting downWait for a reconnection.
func (d *driver) Receive(ctx context.Context, limit int) ([]*source.Message, error) {
	return d.receive(ctx, limit)
}

// Ack acknowledges deliveries: paho sends each acknowledgement once every earlier message of the
// connection is acknowledged. A delivery of a lost connection fails as invalid_argument (the broker
// sends it again on the resumed session).
func (d *driver) Ack(_ context.Context, handles []source.Handle) error {
	return d.ack(handles)
}

// Nack hands deliveries back to this driver, to be returned by Receive after delay: MQTT has no way to
// give a message back to the broker short of dropping the connection.
func (d *driver) Nack(_ context.Context, handles []source.Handle, delay time.Duration) error {
	return d.requeue(handles, delay)
}

// Extend is never called: Capabilities.Lease is 0.
func (d *driver) Extend(context.Context, []source.Handle, time.Duration) error { return nil }

// Backlog is unknown: MQTT brokers do not tell a client how many messages wait for it.
func (d *driver) Backlog(context.Context) (int64, error) { return -1, nil }

// ErrorCode classifies CONNACK, SUBACK and PUBACK reason codes and the driver's own errors.
func (d *driver) ErrorCode(err error) source.Code { return errorCode(err) }

// Close stops the connection manager after a moment for paho to send the acknowledgements already
// released, and disconnects normally: the broker keeps the session for MQTT_SESSION_EXPIRY with every
// message not acknowledged. Idempotent.
func (d *driver) Close(ctx context.Context) error {
	d.closeOnce.Do(func() {
		d.mu.Lock()
		d.closed = true
		d.broadcast()
		d.mu.Unlock()
		t := time.NewTimer(3 * ackFlushInterval)
		select {
		case <-t.C:
		case <-ctx.Done():
		}
		t.Stop()
		if d.api != nil {
			if err := d.api.Disconnect(ctx); err != nil && !errors.Is(err, context.Canceled) {
				d.closeErr = fmt.Errorf("disconnecting from the broker: %w", err)
			}
		}
		d.stop()
		d.wg.Wait()
		if d.onClose != nil {
			d.onClose()
		}
	})
	return d.closeErr
}

// DeadLetter publishes a copy to MQTT_DEAD_LETTER_TOPIC (QoS 1), then acknowledges the original.
func (d *driver) DeadLetter(ctx context.Context, msg *source.Message, reason string) error {
	return d.deadLetter(ctx, msg, reason)
}

// Check waits for the connection and the subscription, and reports why either failed.
func (d *driver) Check(ctx context.Context) error {
	return d.check(ctx)
}

// broadcast wakes every waiter; d.mu must be held.
func (d *driver) broadcast() {
	close(d.wake)
	d.wake = make(chan struct{})
}
