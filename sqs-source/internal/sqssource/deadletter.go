package sqssource

import (
	"context"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/service/sqs"

	"github.com/numaflow-connectors/sources/common/source"
)

// deadLetter sends the message to SQS_DEAD_LETTER_QUEUE_URL with its body, its attributes and
// attributes for the reason, the source queue, the original message id and receive count, then
// deletes it from the source queue. On a FIFO dead-letter queue the message keeps its group (or uses
// its id as the group) and its id is the deduplication id, so a retry after a failed delete does not
// send it twice. Without a dead-letter queue it returns source.ErrNoDeadLetter.
func (d *driver) deadLetter(ctx context.Context, msg *source.Message, reason string) error {
	if d.cfg.DeadLetterQueueURL == "" {
		return source.ErrNoDeadLetter
	}
	rh, ok := msg.Handle.(string)
	if !ok || rh == "" {
		return d.entryError("dead-lettering a message of", "ReceiptHandleIsInvalid", fmt.Sprintf("handle of type %T is not a receipt handle", msg.Handle), true)
	}
	in := &sqs.SendMessageInput{
		QueueUrl:          &d.cfg.DeadLetterQueueURL,
		MessageBody:       ptr(string(msg.Payload)),
		MessageAttributes: deadLetterAttributes(msg, reason, d.cfg.QueueURL),
	}
	if d.dlqFIFO {
		group := msg.Headers[HeaderGroupID]
		if group == "" {
			group = msg.ID
		}
		in.MessageGroupId = &group
		in.MessageDeduplicationId = ptr(msg.ID)
	}
	if _, err := d.api.SendMessage(ctx, in); err != nil {
		return fmt.Errorf("sending message %s to dead-letter queue %s: %w", msg.ID, d.cfg.DeadLetterQueueURL, err)
	}
	if _, err := d.api.DeleteMessage(ctx, &sqs.DeleteMessageInput{QueueUrl: &d.cfg.QueueURL, ReceiptHandle: &rh}); err != nil {
		return fmt.Errorf("deleting dead-lettered message %s from queue %s: %w", msg.ID, d.cfg.QueueURL, err)
	}
	return nil
}
