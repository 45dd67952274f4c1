package pubsubsource

import (
	"context"
	"errors"
	"fmt"

	pb "cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"

	"github.com/numaflow-connectors/sources/common/source"
)

// deadLetter publishes the message to PUBSUB_DEAD_LETTER_TOPIC (data, attributes and x-dead-letter-*
// attributes with the reason), waits until the service has stored it, then acks the original. Without
// a topic it returns source.ErrNoDeadLetter (the subscription's own dead-letter policy, if any, then
// applies to the nacked message).
func (d *driver) deadLetter(ctx context.Context, msg *source.Message, reason string) error {
	if d.pub == nil {
		return source.ErrNoDeadLetter
	}
	d.publishedM.Lock()
	done := d.published[msg.ID]
	d.publishedM.Unlock()
	if !done { // a retry after a failed ack must not publish the message twice
		req := &pb.PublishRequest{Topic: d.dlTopic, Messages: []*pb.PubsubMessage{deadLetterMessage(msg, d.name, reason)}}
		if _, err := d.pub.Publish(ctx, req, noRetry); err != nil {
			return fmt.Errorf("publishing message %s to dead-letter topic %s: %w", msg.ID, d.dlTopic, err)
		}
		d.publishedM.Lock()
		d.published[msg.ID] = true
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
