package pubsubsource

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/numaflow-connectors/sources/common/source"
)

// deadLetter publishes the message to PUBSUB_DEAD_LETTER_TOPIC (data, attributes and x-dead-letter-*
// attributes with the reason, fitted to Pub/Sub's limits: deadLetterRequest), waits until the service
// has stored it, then acks the original. Without a topic, or when the message's data alone is over
// Pub/Sub's publish request limit, it returns source.ErrNoDeadLetter (the adapter's
// DEAD_LETTER_FALLBACK applies; with nack, the subscription's own dead-letter policy, if any).
// publishedKeep is how long a dead letter's publish is remembered while the original's ack is retried
// (the adapter retries for ACK_RETRY_TIMEOUT, 30 s by default, then nacks: the message may come back
// and be acked normally, and its entry would stay for good).
const publishedKeep = time.Hour

func (d *driver) deadLetter(ctx context.Context, msg *source.Message, reason string) error {
	if d.pub == nil {
		return source.ErrNoDeadLetter
	}
	d.publishedM.Lock()
	_, done := d.published[msg.ID]
	d.publishedM.Unlock()
	if !done { // a retry after a failed ack must not publish the message twice
		req, fit, err := deadLetterRequest(msg, d.dlTopic, d.name, reason)
		if err != nil {
			d.log.Warn("message cannot be dead-lettered to the topic: its data alone is over Pub/Sub's publish request limit (10 MB); DEAD_LETTER_FALLBACK applies",
				"subscription", d.name, "id", msg.ID, "dead_letter_topic", d.dlTopic, "bytes", len(msg.Payload), "error", err)
			return err
		}
		if _, err := d.pub.Publish(ctx, req, noRetry); err != nil {
			return fmt.Errorf("publishing message %s to dead-letter topic %s: %w", msg.ID, d.dlTopic, err)
		}
		d.logFit(ctx, msg, fit)
		d.publishedM.Lock()
		now := time.Now()
		for id, at := range d.published { // a message acked normally after all is never asked again
			if now.Sub(at) > publishedKeep {
				delete(d.published, id)
			}
		}
		d.published[msg.ID] = now
		d.publishedM.Unlock()
	}
	err := d.Ack(ctx, []source.Handle{msg.Handle})
	var be *source.BatchError
	if errors.As(err, &be) {
		for _, e := range be.Failed {
			err = e
		}
	}
	if err != nil {
		return err
	}
	d.publishedM.Lock()
	delete(d.published, msg.ID)
	d.publishedM.Unlock()
	return nil
}

// logFit logs, once the dead letter is published, what it left out or moved to fit Pub/Sub's limits:
// a warning when something was left out, else (attributes moved into AttrDeadLetterAttributes) an
// info line.
func (d *driver) logFit(ctx context.Context, msg *source.Message, fit dlFit) {
	if len(fit.folded)+len(fit.dropped)+len(fit.shed) == 0 {
		return
	}
	level := slog.LevelInfo
	if len(fit.dropped)+len(fit.shed) > 0 {
		level = slog.LevelWarn
	}
	args := []any{"subscription", d.name, "id", msg.ID, "dead_letter_topic", d.dlTopic}
	for _, a := range []struct {
		key  string
		keys []string
	}{{"folded_attributes", fit.folded}, {"dropped_attributes", fit.dropped}, {"cut_dead_letter_attributes", fit.shed}} {
		if len(a.keys) > 0 {
			args = append(args, a.key, a.keys)
		}
	}
	d.log.Log(ctx, level, "dead letter fitted to Pub/Sub's limits (100 attributes, 1024-byte values, 10 MB per publish request)", args...)
}
