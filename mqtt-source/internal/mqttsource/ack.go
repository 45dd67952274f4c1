package mqttsource

import (
	"slices"

	"github.com/numaflow-connectors/sources/common/source"
)

// ack acknowledges each delivery, and with it every earlier delivery of the same message id on the
// same connection (a publisher's duplicate, or a copy the adapter replaced by the newest handle), so no
// unacknowledged copy blocks the acknowledgements after it. Acknowledging twice is harmless.
func (d *driver) ack(handles []source.Handle) error {
	failed := map[int]error{}
	var send []*delivery
	d.mu.Lock()
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
		j := slices.Index(copies, x)
		if j < 0 {
			continue // acknowledged before
		}
		send = append(send, copies[:j+1]...)
		if rest := copies[j+1:]; len(rest) > 0 {
			d.held[x.id] = slices.Clone(rest)
		} else {
			delete(d.held, x.id)
		}
	}
	d.mu.Unlock()
	// paho sends each acknowledgement once every earlier message of the connection is acknowledged.
	for _, x := range send {
		_ = x.conn.Ack(x.pub) // fails only once the connection is gone: the broker sends it again
	}
	return source.BatchResult(len(handles), failed)
}

// entryError is the failure of one handle of a batch call: invalid_argument, never retried.
func (d *driver) entryError(op, reason string) *source.EntryError {
	return &source.EntryError{Op: op, Resource: "session " + d.clientID, Reason: reason, Code: source.InvalidArgument}
}
