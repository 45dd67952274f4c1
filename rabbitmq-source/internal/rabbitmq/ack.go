package rabbitmq

import (
	"context"
	"fmt"
	"time"

	"github.com/numaflow-connectors/sources/common/source"
)

type answerOp int

const (
	opAck answerOp = iota
	opNack
	opExtend
)

var opNames = [...]string{"acking", "nacking", "extending"}

// answer acks, nacks (requeue) or checks the deliveries. Only deliveries of the current session that
// are still unanswered reach the broker: an ack or nack of a tag the channel does not hold would close
// the channel (PRECONDITION_FAILED, unknown delivery tag) and requeue everything it holds. So:
//
//   - a tag of a lost session (the broker requeued it) or one handed back at the hold limit is dropped:
//     counted, logged once per session, and reported as invalid_argument (not retried);
//   - a tag of the current session answered before is a no-op (acking twice is fine).
//
// A message-id is the message's offset, so deliveries with the same one are the same message (a
// publisher that retried a publish after a lost confirm sent it twice); the adapter keeps only the
// newest handle of a message, so an ack or nack of one delivery answers every other delivery of its
// message-id the channel holds the same way (twins). Otherwise the older tag would hold a prefetch
// slot, hold back multiple acks and count in Pending until the hold limit.
//
// Acks of the oldest unanswered tags go out as one basic.ack multiple=true.
//
// A nack with a delay (the adapter gives a message up with one: the growing delay of a message it
// could not dead-letter, or a nack its delayed pool had no room for) keeps the delivery unacked for
// the delay and nacks it then (nackLaterLocked): nacked at once, it would come straight back from
// the broker, and a message that can never be handed to numa (over MAX_MESSAGE_BYTES, no dead-letter
// target) went round thousands of times a second.
func (d *driver) answer(_ context.Context, handles []source.Handle, op answerOp, delay time.Duration) error {
	failed := map[int]error{}
	var tags []uint64
	var idx []int
	if op != opExtend {
		d.sendMu.Lock() // no tag leaves live unsent while another answer computes its multiple ack
		defer d.sendMu.Unlock()
	}
	d.mu.Lock()
	s := d.sess
	for i, h := range handles {
		hh, ok := h.(handle)
		switch {
		case !ok:
			failed[i] = &source.EntryError{Op: opNames[op], Resource: d.queue, Reason: fmt.Sprintf("not a delivery handle: %T", h), Code: source.InvalidArgument}
		case s == nil || hh.gen != s.gen:
			failed[i] = d.dropLocked(op, hh, "its channel was lost; the broker requeued it")
			d.rememberAckLocked(op, hh)
		case s.expired[hh.tag]:
			failed[i] = d.dropLocked(op, hh, "handed back at the hold limit; the broker requeued it")
			d.rememberAckLocked(op, hh)
		case op == opExtend:
			if _, live := s.live[hh.tag]; live {
				tags = append(tags, hh.tag)
			}
		default:
			if op == opNack && delay > 0 && d.nackLaterLocked(s, hh.tag, delay) {
				continue
			}
			if e, live := s.unholdLocked(hh.tag); live {
				tags = append(tags, hh.tag)
				idx = append(idx, i)
				tags = append(tags, s.twinsLocked(e.id)...)
			}
		}
	}
	if op == opAck && s != nil {
		tags = append(tags, d.reackQueuedLocked(s)...)
	}
	var minLive uint64
	for t := range s.liveOrNil() {
		if minLive == 0 || t < minLive {
			minLive = t
		}
	}
	d.mu.Unlock()
	if op == opExtend || len(tags) == 0 {
		return source.BatchResult(len(handles), failed)
	}
	if err := d.send(s, op, tags, minLive); err != nil {
		for _, i := range idx {
			failed[i] = fmt.Errorf("%s on queue %s: %w", opNames[op], d.queue, err)
		}
	}
	return source.BatchResult(len(handles), failed)
}

// nackLaterLocked keeps a live delivery of s for delay and reports whether it did; nackDue nacks it
// (requeue) once due, the hand-back at the hold limit if that comes first. Such deliveries hold
// slots of the prefetch window that the adapter does not count, so at most a quarter of the window
// is kept this way (at least one): the rest is nacked at once. Caller holds mu.
func (d *driver) nackLaterLocked(s *session, tag uint64, delay time.Duration) bool {
	if _, live := s.live[tag]; !live {
		return false
	}
	if _, held := s.later[tag]; !held && len(s.later) >= max(1, s.target/4) {
		return false
	}
	s.later[tag] = d.now().Add(delay)
	return true
}

// nackDue nacks (requeue) the deliveries kept for a nack delay that is over, with the other
// deliveries of their message-id (twins).
func (d *driver) nackDue(s *session) {
	d.sendMu.Lock()
	defer d.sendMu.Unlock()
	d.mu.Lock()
	now := d.now()
	var tags []uint64
	for tag, due := range s.later {
		if now.Before(due) {
			continue
		}
		if e, live := s.unholdLocked(tag); live { // takes it out of later too
			tags = append(tags, tag)
			tags = append(tags, s.twinsLocked(e.id)...)
		}
	}
	d.mu.Unlock()
	for _, t := range tags {
		if err := s.ch.Nack(t, false, true); err != nil {
			return // the channel is going: the broker requeues the rest
		}
	}
}

// liveOrNil is s.live, or nil for no session.
func (s *session) liveOrNil() map[uint64]liveEntry {
	if s == nil {
		return nil
	}
	return s.live
}

// send acks or nacks (requeue) tags on s's channel. Acks below every tag still live (minLive; 0: none
// live) are covered by one basic.ack multiple=true of the highest of them.
func (d *driver) send(s *session, op answerOp, tags []uint64, minLive uint64) error {
	if op == opNack {
		for _, t := range tags {
			if err := s.ch.Nack(t, false, true); err != nil {
				return err
			}
		}
		return nil
	}
	tags = sortedTags(tags)
	i := 0
	for i < len(tags) && (minLive == 0 || tags[i] < minLive) {
		i++
	}
	if i > 1 {
		if err := s.ch.Ack(tags[i-1], true); err != nil {
			return err
		}
	} else {
		i = 0
	}
	for _, t := range tags[i:] {
		if err := s.ch.Ack(t, false); err != nil {
			return err
		}
	}
	return nil
}

// dropLocked counts an answer that must not reach the broker and logs the first of each session.
// Caller holds mu.
func (d *driver) dropLocked(op answerOp, h handle, why string) error {
	d.stale.Add(1)
	if !d.logged[h.gen] {
		d.logged[h.gen] = true
		d.log.Warn("answers for deliveries the channel no longer holds are dropped (the broker redelivers them)",
			"op", opNames[op], "session", h.gen, "reason", why)
	}
	return &source.EntryError{Op: opNames[op], Resource: d.queue, Reason: "delivery " + why, Code: source.InvalidArgument, Err: errStaleTag}
}

// Acks that could not reach the broker (their channel was lost, or the delivery was handed back) are
// remembered by message-id for a while (d.ackedIDs): numa has the message, so when the broker
// redelivers it the source acks it at once instead of handing it out again (forward).

// rememberAckLocked records a dropped ack of a message with a message-id. Caller holds mu.
func (d *driver) rememberAckLocked(op answerOp, h handle) {
	if op == opAck && h.id != "" {
		d.ackedIDs.put(h.id, true, d.now())
	}
}

// reackQueuedLocked takes out of s's queue the redeliveries of messages whose ack was just dropped
// (they came back before the ack did, and the adapter has not taken them yet) and returns their tags
// to ack now. Caller holds mu.
func (d *driver) reackQueuedLocked(s *session) []uint64 {
	if d.ackedIDs.len() == 0 || len(s.queue) == 0 {
		return nil
	}
	var tags []uint64
	kept := s.queue[:0]
	for _, dl := range s.queue {
		if d.ackedBeforeLocked(dl.MessageId) {
			tags = append(tags, dl.DeliveryTag)
			s.unholdLocked(dl.DeliveryTag)
			continue
		}
		kept = append(kept, dl)
	}
	clear(s.queue[len(kept):])
	s.queue = kept
	d.reacked.Add(int64(len(tags)))
	return tags
}

// ackedBeforeLocked reports (and forgets) whether numa acked this message-id on a lost channel.
// Caller holds mu.
func (d *driver) ackedBeforeLocked(id string) bool {
	if id == "" {
		return false
	}
	_, ok := d.ackedIDs.take(id, d.now())
	return ok
}
