package sqssource

import (
	"context"
	"fmt"
	"strconv"

	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"
)

// check asks SQS for the queue's attributes (and, until the first success, the dead-letter queue's,
// whose MaximumMessageSize dead letters are fitted to), so a missing queue or a missing permission
// shows in a clear message at start.
func (d *driver) check(ctx context.Context) error {
	out, err := d.api.GetQueueAttributes(ctx, &sqs.GetQueueAttributesInput{
		QueueUrl:       &d.cfg.QueueURL,
		AttributeNames: []types.QueueAttributeName{types.QueueAttributeNameRedrivePolicy, types.QueueAttributeNameVisibilityTimeout},
	})
	if err != nil {
		return fmt.Errorf("checking queue %s: %w", d.cfg.QueueURL, err)
	}
	if d.checked.Load() {
		return nil
	}
	if d.cfg.DeadLetterQueueURL != "" {
		dlq, err := d.api.GetQueueAttributes(ctx, &sqs.GetQueueAttributesInput{
			QueueUrl:       &d.cfg.DeadLetterQueueURL,
			AttributeNames: []types.QueueAttributeName{types.QueueAttributeNameQueueArn, types.QueueAttributeNameMaximumMessageSize},
		})
		if err != nil {
			return fmt.Errorf("checking dead-letter queue %s: %w", d.cfg.DeadLetterQueueURL, err)
		}
		// Dead letters are cut to fit it (deadletter.go).
		if n, err := strconv.ParseInt(dlq.Attributes[string(types.QueueAttributeNameMaximumMessageSize)], 10, 64); err == nil && n > 0 {
			d.dlqMaxSize.Store(n)
		}
	}
	if !d.checked.Swap(true) {
		redrive := out.Attributes[string(types.QueueAttributeNameRedrivePolicy)] != ""
		d.log.Info("queue reachable", "queue", d.cfg.QueueURL, "fifo", d.fifo,
			"dead_letter_queue", d.cfg.DeadLetterQueueURL, "redrive_policy", redrive)
		if d.cfg.DeadLetterQueueURL == "" && !redrive {
			d.log.Warn("no dead-letter queue: messages over numa's max deliveries are nacked and redelivered until they expire",
				"queue", d.cfg.QueueURL)
		}
	}
	return nil
}
