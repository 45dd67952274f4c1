package mqttsource

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/eclipse/paho.golang/paho"
)

// Timing of subscriptions and of Receive while the broker is unreachable.
const (
	subscribeTimeout = 10 * time.Second
	// resubscribeEvery is how often a refused subscription is tried again.
	resubscribeEvery = 5 * time.Second
	// downWait is how long Receive waits for a lost connection to come back before it reports the failure.
	downWait = time.Second
)

// errDown is reported while the connection is down and no cause is known yet.
var errDown = errors.New("not connected to the broker")

// errConnLost wraps why an established connection failed: whatever the cause (a network error, a silent
// broker noticed by the pinger, a broken packet), the connection is gone and autopaho reconnects, so it
// is unavailable unless the cause has a code of its own.
var errConnLost = errors.New("connection to the broker lost")

// connectionUp records a new connection. The deliveries of an earlier connection are stale from now on:
// the broker sends them again on the resumed session.
func (d *driver) connectionUp(sessionPresent bool) {
	d.mu.Lock()
	first := !d.everConnected
	d.connected, d.everConnected, d.downErr = true, true, nil
	d.upAt = d.now()
	d.subscribed, d.subErr = false, nil
	d.broadcast()
	d.mu.Unlock()
	switch {
	case sessionPresent:
		d.log.Info("connected; the broker resumed the session")
	case first:
		d.log.Info("connected; the broker had no session for this client id (first start, or it expired)")
	default:
		d.log.Warn("reconnected but the broker had no session: it expired or the broker lost it, and with it any message not acknowledged")
	}
}

// grantedExpiry is the session expiry interval the broker set in its CONNACK when it is shorter than
// the one asked for (MQTT 5, 3.2.2.3.2: a broker may cap it), and whether it did.
func grantedExpiry(ca *paho.Connack, asked uint32) (uint32, bool) {
	if ca == nil || ca.Properties == nil || ca.Properties.SessionExpiryInterval == nil {
		return asked, false
	}
	got := *ca.Properties.SessionExpiryInterval
	return got, got < asked
}

// connectionDown records a lost connection and drops what it delivered and Receive did not return: the
// broker sends it again. It reports whether to reconnect (not once closed).
func (d *driver) connectionDown() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.connected {
		d.countLifetimeLocked(d.now().Sub(d.upAt))
	}
	d.connected, d.subscribed = false, false
	if d.downErr == nil {
		d.downErr = errDown
	}
	d.dropStaleLocked()
	d.conn = nil
	d.inPaho, d.inPahoBytes = nil, 0 // the lost connection's packets were all delivered or dropped
	d.broadcast()
	if !d.closed {
		d.log.Warn("connection to the broker lost; reconnecting", "error", d.downErr)
	}
	return !d.closed
}

// connectError records why a connection attempt failed (autopaho retries with backoff).
func (d *driver) connectError(err error) {
	d.mu.Lock()
	d.downErr = fmt.Errorf("connecting to the broker: %w", err)
	d.broadcast()
	d.mu.Unlock()
	d.log.Debug("connection attempt failed", "error", err)
}

// clientError records why an established connection failed.
func (d *driver) clientError(err error) {
	d.mu.Lock()
	d.downErr = fmt.Errorf("%w: %w", errConnLost, err)
	d.mu.Unlock()
}

// dropStaleLocked forgets the deliveries of the current connection that Receive has not returned or
// that were handed back; QoS 0 messages are kept (the broker never sends them again). d.mu is held.
func (d *driver) dropStaleLocked() {
	keep := func(ds []*delivery) []*delivery {
		out := ds[:0]
		for _, x := range ds {
			switch {
			case x.pub.QoS == 0:
				out = append(out, x)
			case x.queued:
				x.queued = false
				d.queueBytes -= int64(len(x.pub.Payload))
			case x.back:
				x.back = false
				d.requeuedBytes -= int64(len(x.pub.Payload))
			}
		}
		clear(ds[len(out):])
		return out
	}
	d.queue = keep(d.queue)
	d.requeued = keep(d.requeued)
	clear(d.held)
}

// goLocked runs f in a goroutine Close waits for, unless the driver is closed.
func (d *driver) goLocked(f func()) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.closed {
		d.wg.Go(f) // under d.mu: Close sets closed under it before it waits
	}
}

// subscribe subscribes every filter through api (as $share/<group>/<filter> when sharing) and records the outcome.
// Subscribing again on a resumed session is harmless: the subscriptions are replaced, and retained
// messages are sent only for subscriptions that did not exist.
func (d *driver) subscribe(ctx context.Context, api mqttAPI) {
	ctx, cancel := context.WithTimeout(ctx, subscribeTimeout)
	defer cancel()
	s := &paho.Subscribe{}
	retain := byte(1) // send retained messages only for a new subscription
	if d.skipRetained {
		retain = 2 // never
	}
	for _, f := range d.filters {
		s.Subscriptions = append(s.Subscriptions, paho.SubscribeOptions{Topic: d.subscription(f), QoS: d.qos, RetainHandling: retain})
	}
	d.mu.Lock()
	d.subAt = d.now()
	d.mu.Unlock()
	sa, err := api.Subscribe(ctx, s)
	err = subscribeResult(d.filters, sa, err)
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed || !d.connected {
		return
	}
	d.subscribed, d.subErr = err == nil, err
	d.broadcast()
	if err != nil {
		d.log.Error("subscribing failed; retrying", "error", err, "kind", errorCode(err).String())
		return
	}
	d.log.Info("subscribed", "filters", d.filters, "share_group", d.group)
}

// subscription is the filter as subscribed: shared when a group is set.
func (d *driver) subscription(filter string) string {
	if d.group == "" {
		return filter
	}
	return "$share/" + d.group + "/" + filter
}

// subscribeResult turns a SUBACK into an error naming the first refused filter.
func subscribeResult(filters []string, sa *paho.Suback, err error) error {
	if sa != nil {
		for i, code := range sa.Reasons {
			if code >= 0x80 && i < len(filters) {
				reason := ""
				if sa.Properties != nil {
					reason = sa.Properties.ReasonString
				}
				return &ReasonError{Op: "subscribing to " + filters[i], Code: code, Reason: reason}
			}
		}
	}
	if err != nil {
		return fmt.Errorf("subscribing: %w", err)
	}
	return nil
}

// check waits until the connection is up and the subscription is answered, and reports a failure.
func (d *driver) check(ctx context.Context) error {
	for {
		d.mu.Lock()
		err, connected, subscribed, wake := d.stateErrLocked(), d.connected, d.subscribed, d.wake
		d.mu.Unlock()
		switch {
		case subscribed:
			return nil
		case connected && err != nil:
			return err // the subscription was refused
		}
		select {
		case <-ctx.Done():
			if err != nil {
				return err
			}
			return ctx.Err()
		case <-wake:
		}
	}
}

// stateErrLocked is why the source cannot receive now, nil when it can. d.mu is held.
func (d *driver) stateErrLocked() error {
	switch {
	case !d.connected && d.downErr != nil:
		return d.downErr
	case !d.connected:
		return errDown
	}
	return d.subErr
}
