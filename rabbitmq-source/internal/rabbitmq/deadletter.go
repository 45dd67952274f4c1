package rabbitmq

import (
	"context"
	"fmt"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/numaflow-connectors/sources/common/source"
)

// Headers of a message published to RABBITMQ_DEAD_LETTER_EXCHANGE.
const (
	HeaderDeadLetterReason     = "x-dead-letter-reason"
	HeaderDeadLetterDeliveries = "x-dead-letter-deliveries"
	HeaderDeadLetterQueue      = "x-dead-letter-queue"
)

// deadLetter publishes msg to the dead-letter exchange and waits for the broker's confirm, then acks
// the delivery; or rejects it (basic.nack requeue=false) to the queue's own dead-letter exchange.
func (d *driver) deadLetter(ctx context.Context, msg *source.Message, reason string) error {
	h, ok := msg.Handle.(handle)
	if !ok {
		return fmt.Errorf("dead-lettering from queue %s: not a delivery handle: %T", d.queue, msg.Handle)
	}
	switch {
	case d.dlx != "":
		if err := d.publishDeadLetter(ctx, msg, reason); err != nil {
			return err
		}
		// Published: a stale tag now only means the broker redelivers the original (a duplicate in
		// the dead-letter exchange, never a loss), so only a failed send is an error.
		err := d.answer(ctx, []source.Handle{h}, opAck, 0)
		if err != nil && errorCode(err) != source.InvalidArgument {
			return err
		}
		return nil
	case d.dlReject:
		return d.reject(h)
	}
	return source.ErrNoDeadLetter
}

// reject sends basic.nack requeue=false for a live delivery of the current session, and for every
// other delivery of its message-id the channel holds (twins, see answer).
func (d *driver) reject(h handle) error {
	d.sendMu.Lock()
	defer d.sendMu.Unlock()
	d.mu.Lock()
	s := d.sess
	var err error
	var tags []uint64
	switch {
	case s == nil || h.gen != s.gen:
		err = d.dropLocked(opNack, h, "its channel was lost; the broker requeued it")
	case s.expired[h.tag]:
		err = d.dropLocked(opNack, h, "handed back at the hold limit; the broker requeued it")
	default:
		e, live := s.unholdLocked(h.tag)
		if !live {
			d.mu.Unlock()
			return nil // answered already
		}
		tags = append([]uint64{h.tag}, s.twinsLocked(e.id)...)
	}
	d.mu.Unlock()
	if err != nil {
		return err
	}
	for _, t := range tags {
		if err := s.ch.Nack(t, false, false); err != nil {
			return fmt.Errorf("rejecting to the dead-letter exchange of queue %s: %w", d.queue, err)
		}
	}
	return nil
}

// publishDeadLetter publishes a copy of msg (payload, headers, reason) with mandatory set and waits
// for the confirm; an unroutable or nacked publish is an error. It runs on the pub link. While the
// broker blocks that connection (a resource alarm: it reads nothing from it, so no confirm comes
// until the alarm clears) a publish fails at once with errBlocked (throttled), and so does the one
// under way when the block arrives: the adapter retries later, and its acks are never held up
// behind a dead letter.
func (d *driver) publishDeadLetter(ctx context.Context, msg *source.Message, reason string) error {
	l := d.pub
	conn, err := d.take(ctx, l)
	if err != nil {
		return err
	}
	defer l.release()
	if blocked, why, _ := l.blocked(); blocked {
		return fmt.Errorf("publishing a dead letter to exchange %s: %w (%s)", d.dlx, errBlocked, why)
	}
	headers := amqp.Table{}
	for k, v := range msg.Headers {
		headers[k] = v
	}
	headers[HeaderDeadLetterReason] = reason
	headers[HeaderDeadLetterDeliveries] = int64(msg.Deliveries)
	headers[HeaderDeadLetterQueue] = d.queue
	key := d.dlxKey
	if key == "" {
		key = msg.Headers[HeaderRoutingKey]
	}
	pub := amqp.Publishing{
		Headers: headers, Body: msg.Payload, DeliveryMode: amqp.Persistent,
		ContentType: msg.Headers[HeaderContentType], ContentEncoding: msg.Headers[HeaderEncoding],
		Timestamp: msg.EventTime,
	}
	if msg.Headers[HeaderIDSource] == IDFromMessageID {
		pub.MessageId = msg.ID
	}
	var dc *amqp.DeferredConfirmation
	_, err = guarded(ctx, conn, func() error {
		if l.pubs == nil {
			ch, err := conn.Channel()
			if err != nil {
				return fmt.Errorf("opening a channel for dead letters of queue %s: %w", d.queue, err)
			}
			if err := ch.Confirm(false); err != nil {
				return fmt.Errorf("enabling publisher confirms for dead letters of queue %s: %w", d.queue, err)
			}
			l.pubs, l.rets = ch, ch.NotifyReturn(make(chan amqp.Return, 1))
		}
		var err error
		dc, err = l.pubs.PublishWithDeferredConfirmWithContext(ctx, d.dlx, key, true, false, pub)
		if err != nil {
			return fmt.Errorf("publishing a dead letter to exchange %s: %w", d.dlx, err)
		}
		return nil
	})
	if err != nil {
		d.drop(ctx, l, conn)
		return err
	}
	_, _, blockedCh := l.blocked()
	select {
	case <-dc.Done():
	case <-blockedCh:
		// The broker blocked the connection on this publish: its confirm (and a basic.return) comes
		// only after the alarm. Keep the connection (a new one would be blocked as well) but not the
		// channel, so a late return of this publish is never taken for the next one's.
		d.retire(l)
		_, why, _ := l.blocked()
		return fmt.Errorf("publishing a dead letter to exchange %s: %w (%s)", d.dlx, errBlocked, why)
	case <-ctx.Done():
		d.drop(ctx, l, conn) // the confirm may still come: a fresh connection keeps them apart
		return fmt.Errorf("waiting for the confirm of a dead letter to exchange %s: %w", d.dlx, ctx.Err())
	}
	// A basic.return comes before the confirm of the same publish.
	select {
	case r := <-l.rets:
		return fmt.Errorf("publishing a dead letter to exchange %s with key %q: %w (%d %s)", d.dlx, key, errReturned, r.ReplyCode, r.ReplyText)
	default:
	}
	if !dc.Acked() {
		d.retire(l) // a missing exchange closes the channel (and nacks what it had in flight)
		return fmt.Errorf("publishing a dead letter to exchange %s: %w", d.dlx, errNotConfirmed)
	}
	return nil
}

// retire stops using the pub link's channel and closes it in the background (its close-ok may only
// come after an alarm; closing the connection ends the wait). Caller holds the link.
func (d *driver) retire(l *link) {
	ch := l.pubs
	l.pubs, l.rets = nil, nil
	if ch == nil {
		return
	}
	d.bg.Add(1)
	go func() {
		defer d.bg.Done()
		_ = ch.Close()
	}()
}
