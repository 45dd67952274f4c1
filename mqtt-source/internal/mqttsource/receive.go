package mqttsource

import (
	"context"
	"errors"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/numaflow-connectors/sources/common/source"
)

// errClosed is returned by Receive after Close.
var errClosed = errors.New("driver closed")

// delivery is one delivery of one message on one connection: the driver's ack handle.
type delivery struct {
	conn   acker // the connection it arrived on
	pub    *paho.Publish
	id     string
	due    time.Time // when handed back: when Receive may return it again
	queued bool      // in queue, counted in queueBytes
	back   bool      // in requeued (handed back), counted in requeuedBytes
}

// onPublish takes a message from paho (one at a time, in arrival order).
func (d *driver) onPublish(pr paho.PublishReceived) (bool, error) {
	d.deliver(pr.Client, pr.Packet)
	return true, nil
}

// deliver queues one message that arrived on conn for Receive. While the read-ahead budget is full
// (queued and handed-back deliveries, see waitingLocked) it waits: the connection's reader (flow.go)
// has stopped already, and for WebSocket connections, which it does not read, this is what stops paho,
// once its channel of Receive Maximum packets is full. Receive makes room: it takes the queue, and the
// handed-back deliveries once they are due.
//
// The message counts as read (flow.go) until it is queued, so the reader never sees the room it
// briefly has between the two and reads past Receive Maximum.
func (d *driver) deliver(conn acker, p *paho.Publish) {
	if d.skipRetained && p.Retain {
		d.discard(conn, p)
		return
	}
	if !d.filtered(p.Topic) {
		// A subscription of an earlier configuration: the session the broker resumed keeps every
		// subscription it ever had, and MQTT cannot list them to unsubscribe.
		d.mu.Lock()
		warn := d.staleWarned != conn
		d.staleWarned = conn
		d.mu.Unlock()
		if warn {
			d.log.Warn("a message on a topic no filter of MQTT_TOPICS matches: the resumed session still holds a "+
				"subscription of an earlier configuration; its messages are acknowledged and dropped. To end it, "+
				"drain the source and change MQTT_CLIENT_ID, or wait for MQTT_SESSION_EXPIRY with the source stopped",
				"topic", p.Topic, "filters", d.filters)
		}
		d.discard(conn, p)
		return
	}
	del := &delivery{conn: conn, pub: p, id: d.mapper.id(p)}
	size := int64(len(p.Payload))
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.conn != del.conn {
		d.dropStaleLocked()
		d.conn = del.conn
	}
	for !d.closed {
		if n, bytes := d.waitingLocked(); n == 0 || (n < d.maxQueue && bytes+size <= d.maxBytes) {
			break // room, or nothing waits: one message always passes
		}
		wake := d.wake
		d.mu.Unlock()
		<-wake
		d.mu.Lock()
	}
	if d.conn == del.conn {
		d.publishDeliveredLocked() // (a connection lost while this waited had its count reset already)
	}
	if d.closed {
		return // not acknowledged: the session keeps it for the next connection
	}
	del.queued = true
	d.queue = append(d.queue, del)
	d.queueBytes += size
	if p.QoS > 0 {
		d.held[del.id] = append(d.held[del.id], del)
	}
	d.broadcast()
}

// discard acknowledges a message that is not delivered (a retained one with MQTT_SKIP_RETAINED, one of a
// stale subscription): MQTT acknowledges in order, so one left unacknowledged would hold back the rest.
func (d *driver) discard(conn acker, p *paho.Publish) {
	d.mu.Lock()
	d.publishDeliveredLocked()
	d.broadcast() // room for the connection's reader
	d.mu.Unlock()
	if p.QoS > 0 {
		_ = conn.Ack(p)
	}
}

// filtered reports whether a filter of MQTT_TOPICS matches topic.
func (d *driver) filtered(topic string) bool {
	for _, f := range d.filters {
		if topicMatches(f, topic) {
			return true
		}
	}
	return false
}

// receive returns up to limit deliveries: handed-back ones that are due, then new ones in order.
func (d *driver) receive(ctx context.Context, limit int) ([]*source.Message, error) {
	start := d.now()
	resubscribed := false
	for {
		d.mu.Lock()
		if d.closed {
			d.mu.Unlock()
			return nil, errClosed
		}
		now := d.now()
		if out := d.takeLocked(limit, now); len(out) > 0 {
			d.broadcast() // room for a blocked onPublish
			d.mu.Unlock()
			return out, nil
		}
		err := d.stateErrLocked()
		retry := d.connected && d.subErr != nil && now.Sub(d.subAt) >= resubscribeEvery
		wait := time.Duration(-1)
		for _, x := range d.requeued {
			if w := x.due.Sub(now); wait < 0 || w < wait {
				wait = w
			}
		}
		wake := d.wake
		d.mu.Unlock()
		if retry && !resubscribed {
			resubscribed = true
			d.subscribe(ctx, d.api)
			continue
		}
		if err != nil {
			left := downWait - d.now().Sub(start)
			if left <= 0 {
				return nil, err
			}
			if wait < 0 || left < wait {
				wait = left
			}
		}
		var timer *time.Timer
		var timeout <-chan time.Time
		if wait >= 0 {
			timer = time.NewTimer(wait)
			timeout = timer.C
		}
		select {
		case <-ctx.Done():
		case <-wake:
		case <-timeout:
		}
		if timer != nil {
			timer.Stop()
		}
		if ctx.Err() != nil {
			return nil, nil
		}
	}
}

// waitingLocked is what waits for Receive, counted against the read-ahead budget: the queue and the
// handed-back deliveries (the adapter's budgets no longer count them), in deliveries and payload bytes.
// d.mu is held.
func (d *driver) waitingLocked() (int, int64) {
	return len(d.queue) + len(d.requeued), d.queueBytes + d.requeuedBytes
}

// takeLocked removes up to limit deliveries (due handed-back ones first) and maps them. d.mu is held.
func (d *driver) takeLocked(limit int, now time.Time) []*source.Message {
	var out []*source.Message
	kept := d.requeued[:0]
	for _, x := range d.requeued {
		if len(out) < limit && !x.due.After(now) {
			x.back = false
			d.requeuedBytes -= int64(len(x.pub.Payload))
			out = append(out, d.mapper.message(x, now))
			continue
		}
		kept = append(kept, x)
	}
	clear(d.requeued[len(kept):])
	d.requeued = kept
	n := min(limit-len(out), len(d.queue))
	for _, x := range d.queue[:n] {
		x.queued = false
		d.queueBytes -= int64(len(x.pub.Payload))
		out = append(out, d.mapper.message(x, now))
	}
	clear(d.queue[:n])
	d.queue = d.queue[n:]
	return out
}

// requeue hands deliveries back to Receive after delay. They count against the read-ahead budget until
// Receive returns them: the adapter gives back what its own budgets have no room for. Deliveries of a
// lost connection are dropped: the broker sends them again.
func (d *driver) requeue(handles []source.Handle, delay time.Duration) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	due := d.now().Add(delay)
	failed := map[int]error{}
	for i, h := range handles {
		x, ok := h.(*delivery)
		switch {
		case !ok:
			failed[i] = d.entryError("handing back", "not a delivery of this source")
		case d.closed || (x.pub.QoS > 0 && x.conn != d.conn):
			// the session keeps it; the broker sends it again on the next connection
		case x.back: // handed back twice: the later delay holds
			x.due = due
		default:
			x.due, x.back = due, true
			d.requeued = append(d.requeued, x)
			d.requeuedBytes += int64(len(x.pub.Payload))
		}
	}
	d.broadcast()
	return source.BatchResult(len(handles), failed)
}
