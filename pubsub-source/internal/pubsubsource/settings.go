package pubsubsource

import (
	"context"
	"sync"
	"time"

	pb "cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	"google.golang.org/grpc/status"
)

// subSettings are the subscription's settings the driver acts on or logs.
type subSettings struct {
	ordered     bool          // message ordering (immutable once the subscription exists)
	ackDeadline time.Duration // the subscription's own ack deadline: a pull leases for this long
	exactlyOnce bool
	dlTopic     string // the subscription's dead-letter policy: topic, "" without one
	maxAttempts int32  // ... and max_delivery_attempts
	detached    bool   // detached from its topic: every pull fails (errDetached)
}

func settingsOf(s *pb.Subscription) *subSettings {
	return &subSettings{
		ordered:     s.GetEnableMessageOrdering(),
		ackDeadline: time.Duration(s.GetAckDeadlineSeconds()) * time.Second,
		exactlyOnce: s.GetEnableExactlyOnceDelivery(),
		dlTopic:     s.GetDeadLetterPolicy().GetDeadLetterTopic(),
		maxAttempts: s.GetDeadLetterPolicy().GetMaxDeliveryAttempts(),
		detached:    s.GetDetached(),
	}
}

// applySettings takes the subscription's settings (from GetSubscription) and logs them when they are
// new or changed. Safe to call at any time, from any goroutine: readers see the old or the new value.
//
// What each setting changes:
//   - ack deadline: whether a pull is followed by a ModifyAckDeadline to PUBSUB_ACK_DEADLINE (skipped
//     only while the subscription's own deadline is known to be the same);
//   - message ordering: whether pulls run one at a time (see Capabilities and pullSlot). The adapter's
//     key-order handling is fixed when it starts; a subscription whose ordering differs from what it
//     was told is logged, since only a restart applies it;
//   - dead-letter policy: Pub/Sub fills in DeliveryAttempt only with one (the adapter then counts
//     MaxDeliveries across replicas); logged.
//   - detached: logged, with a warning when the subscription is found detached; the health check
//     then fails (errDetached) and pulls are refused, so the source stays not ready.
func (d *driver) applySettings(s *pb.Subscription) {
	n := settingsOf(s)
	old := d.settings.Swap(n)
	switch {
	case old == nil:
		d.log.Info("subscription settings", "subscription", d.name, "message_ordering", n.ordered,
			"ack_deadline", n.ackDeadline.String(), "exactly_once", n.exactlyOnce,
			"dead_letter_topic", n.dlTopic, "max_delivery_attempts", n.maxAttempts, "detached", n.detached)
	case *old != *n:
		d.log.Info("subscription settings changed", "subscription", d.name, "message_ordering", n.ordered,
			"ack_deadline", n.ackDeadline.String(), "exactly_once", n.exactlyOnce,
			"dead_letter_topic", n.dlTopic, "max_delivery_attempts", n.maxAttempts, "detached", n.detached,
			"previous_ack_deadline", old.ackDeadline.String(), "previous_dead_letter_topic", old.dlTopic,
			"previous_max_delivery_attempts", old.maxAttempts)
	}
	if n.detached && (old == nil || !old.detached) {
		d.log.Warn("the subscription is detached from its topic: its messages are gone and every pull fails; the source stays not ready",
			"subscription", d.name, "fix", fixDetached)
	}
	if d.capsSet.Load() && n.ordered && !d.caps.OrderedKeys && (old == nil || !old.ordered) {
		// Only a subscription recreated under the same name can do this (ordering is immutable).
		d.log.Warn("the subscription orders messages but the source started without key order; restart the source to keep key order on nacks",
			"subscription", d.name)
	}
}

// modackAfterPull reports whether pulled messages need their ack deadline set to PUBSUB_ACK_DEADLINE:
// unless the subscription's own is known to be the same.
func (d *driver) modackAfterPull() bool {
	s := d.settings.Load()
	return s == nil || s.ackDeadline != d.lease
}

// readSettings makes one GetSubscription call, bounded by settingsTimeout, and applies the result.
func (d *driver) readSettings(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, settingsTimeout)
	defer cancel()
	s, err := d.sub.GetSubscription(ctx, &pb.GetSubscriptionRequest{Subscription: d.name}, noRetry)
	if err != nil {
		return err
	}
	d.applySettings(s)
	return nil
}

// startSettings starts the background settings reader: until the settings are known it reads them
// again with a backoff (settingsRetry doubling to settingsRetryMax), then every settingsEvery to
// notice changes. Close stops it.
func (d *driver) startSettings() {
	ctx, cancel := context.WithCancel(context.Background()) //nolint:contextcheck // owned by Close
	d.bgCancel, d.bgDone = cancel, make(chan struct{})
	go func() {
		defer close(d.bgDone)
		d.watchSettings(ctx)
	}()
}

func (d *driver) stopSettings() {
	if d.bgCancel != nil {
		d.bgCancel()
		<-d.bgDone
	}
}

func (d *driver) watchSettings(ctx context.Context) {
	retry := d.settingsRetry
	failures := 0
	for {
		wait := d.settingsEvery
		if d.settings.Load() == nil || failures > 0 {
			wait = retry
			retry = min(2*retry, max(settingsRetryMax, d.settingsRetry))
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		err := d.readSettings(ctx)
		switch {
		case err == nil:
			if failures > 0 {
				d.log.Info("subscription settings read again", "subscription", d.name, "failures", failures)
			}
			failures, retry = 0, d.settingsRetry
		case ctx.Err() != nil:
			return
		default:
			failures++
			if failures == 1 || failures%10 == 0 {
				d.log.Debug("reading the subscription's settings failed; trying again", "subscription", d.name,
					"failures", failures, "error", err)
			}
		}
	}
}

// pullGate keeps pulls one at a time, each starting at least orderedGap after the previous one ended.
type pullGate struct {
	ch     chan struct{} // holds a token while a pull runs
	mu     sync.Mutex
	freeAt time.Time // the next pull starts no earlier
}

func newPullGate() *pullGate { return &pullGate{ch: make(chan struct{}, 1)} }

// enter waits for the gate; the returned function leaves it.
func (g *pullGate) enter(ctx context.Context) (func(), error) {
	select {
	case g.ch <- struct{}{}:
	case <-ctx.Done():
		return nil, status.FromContextError(ctx.Err()).Err()
	}
	g.mu.Lock()
	wait := time.Until(g.freeAt)
	g.mu.Unlock()
	if wait > 0 {
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			<-g.ch
			return nil, status.FromContextError(ctx.Err()).Err()
		}
	}
	return func() {
		g.mu.Lock()
		g.freeAt = time.Now().Add(orderedGap)
		g.mu.Unlock()
		<-g.ch
	}, nil
}

// pullSlot waits until this pull may run and returns the function that ends it. Pulls go through the
// gate while the subscription may order messages (ordering on, or settings unknown) and the adapter
// was told it may run several at once (the settings were unknown when it asked); otherwise it
// returns at once.
func (d *driver) pullSlot(ctx context.Context) (func(), error) {
	s := d.settings.Load()
	if d.Capabilities().ReceiveConcurrency == 1 || (s != nil && !s.ordered) {
		return func() {}, nil
	}
	return d.gate.enter(ctx)
}
