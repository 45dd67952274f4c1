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
		err := d.answer(ctx, []source.Handle{h}, opAck)
		if err != nil && errorCode(err) != source.InvalidArgument {
			return err
		}
		return nil
	case d.dlReject:
		return d.reject(h)
	}
	return source.ErrNoDeadLetter
}

// reject sends basic.nack requeue=false for a live delivery of the current session.
func (d *driver) reject(h handle) error {
	d.sendMu.Lock()
	defer d.sendMu.Unlock()
	d.mu.Lock()
	s := d.sess
	var err error
	switch {
	case s == nil || h.gen != s.gen:
		err = d.dropLocked(opNack, h, "its channel was lost; the broker requeued it")
	case s.expired[h.tag]:
		err = d.dropLocked(opNack, h, "handed back at the hold limit; the broker requeued it")
	default:
		if _, live := s.live[h.tag]; !live {
			d.mu.Unlock()
			return nil // answered already
		}
		delete(s.live, h.tag)
	}
	d.mu.Unlock()
	if err != nil {
		return err
	}
	if err := s.ch.Nack(h.tag, false, false); err != nil {
		return fmt.Errorf("rejecting to the dead-letter exchange of queue %s: %w", d.queue, err)
	}
	return nil
}

// publishDeadLetter publishes a copy of msg (payload, headers, reason) with mandatory set and waits
// for the confirm; an unroutable or nacked publish is an error.
func (d *driver) publishDeadLetter(ctx context.Context, msg *source.Message, reason string) error {
	d.dlMu.Lock()
	defer d.dlMu.Unlock()
	a, err := d.adminConn(ctx)
	if err != nil {
		return err
	}
	if a.pubs == nil {
		ch, err := a.conn.Channel()
		if err != nil {
			d.dropAdmin()
			return fmt.Errorf("opening a channel for dead letters of queue %s: %w", d.queue, err)
		}
		if err := ch.Confirm(false); err != nil {
			d.dropAdmin()
			return fmt.Errorf("enabling publisher confirms for dead letters of queue %s: %w", d.queue, err)
		}
		a.pubs, a.rets = ch, ch.NotifyReturn(make(chan amqp.Return, 1))
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
	dc, err := a.pubs.PublishWithDeferredConfirmWithContext(ctx, d.dlx, key, true, false, pub)
	if err != nil {
		d.dropAdmin()
		return fmt.Errorf("publishing a dead letter to exchange %s: %w", d.dlx, err)
	}
	acked, err := dc.WaitContext(ctx)
	if err != nil {
		d.dropAdmin() // the confirm may still come: a fresh channel keeps them apart
		return fmt.Errorf("waiting for the confirm of a dead letter to exchange %s: %w", d.dlx, err)
	}
	// A basic.return comes before the confirm of the same publish.
	select {
	case r := <-a.rets:
		return fmt.Errorf("publishing a dead letter to exchange %s with key %q: %w (%d %s)", d.dlx, key, errReturned, r.ReplyCode, r.ReplyText)
	default:
	}
	if !acked {
		return fmt.Errorf("publishing a dead letter to exchange %s: %w", d.dlx, errNotConfirmed)
	}
	return nil
}
