package rabbitmq

import (
	"context"
	"errors"
	"fmt"
)

// Stopping the consumer at shutdown (StopReceiving). The adapter then releases what it holds with
// basic.nack requeue=true; while this channel still consumes, the broker may push a released message
// straight back here, where it would wait unanswered until Close (and on a quorum queue count one more
// delivery when it is returned again). So the consumer is cancelled first and none is started again:
// not by a rewindow or widen, not after a reconnection (the supervisor does not reconnect any more).
// The channel stays open: deliveries already pushed stay live, and the adapter's acks and releases of
// them go out on it as usual until Close.
//
// What the driver has queued but Receive has not taken goes back with basic.nack requeue=true at once,
// after the cancel (so it goes to another consumer, not back here). Leaving it to the channel's close
// at Close would return it as well, only RELEASE_WAIT later: on RabbitMQ before 4.3 both returns count
// one delivery on a quorum queue, from 4.3 neither does, so the count is the same and the nack only
// saves the wait. Two exceptions: a redelivery of a message numa acked on a lost channel is acked
// (as Receive would have done), and a second copy of a message-id whose other delivery the adapter
// holds stays queued, to be answered with it (ack.go, twins).

// errStopped: consume refuses to start a consumer after StopReceiving.
var errStopped = errors.New("receiving stopped")

// receivingStopped reports whether StopReceiving was called.
func (d *driver) receivingStopped() bool {
	select {
	case <-d.stopRecv:
		return true
	default:
		return false
	}
}

// stopReceiving marks the driver stopped and waits, while ctx lasts, until serve has cancelled the
// current session's consumer and handed back its queue. Without a session (never connected, or
// reconnecting) there is nothing to wait for: consume refuses from now on, and a consumer started as
// this runs is cancelled by serve. Idempotent.
func (d *driver) stopReceiving(ctx context.Context) error {
	d.stopOnce.Do(func() { close(d.stopRecv) })
	d.mu.Lock()
	s := d.sess
	d.mu.Unlock()
	if s == nil {
		return nil
	}
	select {
	case <-s.stopped:
		return nil
	case <-s.done: // lost: the broker requeued everything it held
		return nil
	case <-ctx.Done():
		return fmt.Errorf("cancelling the consumer of queue %s: %w", d.queue, ctx.Err())
	}
}

// stopConsuming cancels s's consumer, if it has one, and hands back what is queued (serve runs it once
// StopReceiving was called). An error means the channel is going: the broker requeues everything.
func (d *driver) stopConsuming(s *session) error {
	defer close(s.stopped)
	if s.fwd != nil {
		if err := d.cancelConsumer(s); err != nil {
			return err
		}
	}
	acked, nacked, kept := d.returnQueued(s)
	d.log.Info("consumer cancelled: receiving stopped", "consumer", s.ctag, "handed_back", nacked,
		"acked", acked, "kept_with_twin", kept, "held", d.liveCount(s))
	return nil
}

// returnQueued empties s's queue: redeliveries of messages numa acked on a lost channel are acked,
// twins of deliveries the adapter holds stay queued, the rest is nacked (requeue). It returns how many
// of each.
func (d *driver) returnQueued(s *session) (acked, nacked, kept int) {
	d.sendMu.Lock() // no multiple ack is computed over tags taken out of live here and not yet answered
	defer d.sendMu.Unlock()
	d.mu.Lock()
	acks := d.reackQueuedLocked(s)
	queued := make(map[uint64]bool, len(s.queue))
	for _, dl := range s.queue {
		queued[dl.DeliveryTag] = true
	}
	var nacks []uint64
	rest := s.queue[:0]
	for _, dl := range s.queue {
		if s.twinHeldLocked(dl.MessageId, queued) {
			rest = append(rest, dl)
			continue
		}
		s.unholdLocked(dl.DeliveryTag)
		nacks = append(nacks, dl.DeliveryTag)
	}
	clear(s.queue[len(rest):])
	s.queue = rest
	d.mu.Unlock()
	for _, t := range acks {
		if s.ch.Ack(t, false) != nil {
			return len(acks), len(nacks), len(rest) // the channel is going: the broker requeues the rest
		}
	}
	for _, t := range nacks {
		if s.ch.Nack(t, false, true) != nil {
			break
		}
	}
	return len(acks), len(nacks), len(rest)
}

// twinHeldLocked reports whether a live delivery of message-id id is not in queued, i.e. was handed to
// the adapter. Caller holds mu.
func (s *session) twinHeldLocked(id string, queued map[uint64]bool) bool {
	if id == "" {
		return false
	}
	for _, t := range s.byID[id] {
		if !queued[t] {
			return true
		}
	}
	return false
}
