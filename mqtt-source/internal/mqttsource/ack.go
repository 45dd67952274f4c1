package mqttsource

import (
	"slices"

	"github.com/numaflow-connectors/sources/common/source"
)

// ack acknowledges each delivery and every other copy of its message id held on the same connection,
// older or newer (a publisher's duplicate, a redelivery, a copy the adapter replaced by the handle it
// received last, which may be an older copy handed back and received again): they are one message by
// the id rule, numa has it, and a copy left unacknowledged would hold back every acknowledgement after
// it. Copies still waiting for Receive (queued or handed back) are dropped. Acknowledging twice is
// harmless.
func (d *driver) ack(handles []source.Handle) error {
	failed := map[int]error{}
	var send []*delivery
	d.mu.Lock()
	dropped := false
	for i, h := range handles {
		x, ok := h.(*delivery)
		switch {
		case !ok:
			failed[i] = d.entryError("acknowledging", "not a delivery of this source")
			continue
		case x.pub.QoS == 0:
			continue // nothing to acknowledge
		case x.conn != d.conn: // d.conn is the connection that delivered last, nil once it is lost
			// (not d.connected: a resumed session's messages can arrive before the connection is
			// reported up, and refusing their acks would hold every later one behind them)
			failed[i] = d.entryError("acknowledging", "the connection it arrived on was lost; the broker sends it again")
			continue
		}
		copies := d.held[x.id]
		if !slices.Contains(copies, x) {
			continue // acknowledged before (a copy held now arrived after that ack: it goes through numa)
		}
		delete(d.held, x.id)
		send = append(send, copies...)
		for _, c := range copies {
			dropped = d.unwaitLocked(c) || dropped
		}
	}
	if dropped {
		d.broadcast() // room for the reader
	}
	d.mu.Unlock()
	// paho sends each acknowledgement once every earlier message of the connection is acknowledged, so
	// the order of send does not matter.
	for _, x := range send {
		_ = x.conn.Ack(x.pub) // fails only once the connection is gone: the broker sends it again
	}
	return source.BatchResult(len(handles), failed)
}

// unwaitLocked takes x out of the queue or the requeue, if it waits there for Receive, and reports
// whether it did. d.mu is held.
func (d *driver) unwaitLocked(x *delivery) bool {
	size := int64(len(x.pub.Payload))
	switch {
	case x.queued:
		if i := slices.Index(d.queue, x); i >= 0 {
			d.queue = slices.Delete(d.queue, i, i+1)
		}
		x.queued = false
		d.queueBytes -= size
	case x.back:
		if i := slices.Index(d.requeued, x); i >= 0 {
			d.requeued = slices.Delete(d.requeued, i, i+1)
		}
		x.back = false
		d.requeuedBytes -= size
	default:
		return false
	}
	return true
}

// entryError is the failure of one handle of a batch call: invalid_argument, never retried.
func (d *driver) entryError(op, reason string) *source.EntryError {
	return &source.EntryError{Op: op, Resource: "session " + d.clientID, Reason: reason, Code: source.InvalidArgument}
}
