package sqssource

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"
)

// idleBacklogTTL is how long a zero backlog is reused while no receive returns a message.
const idleBacklogTTL = time.Minute

// cachedBacklog is ApproximateNumberOfMessages (visible) + ApproximateNumberOfMessagesNotVisible (in flight
// at any replica, including messages nacked with a delay). Delayed messages (DelaySeconds) are not
// counted: they cannot be read yet and are counted once they become visible. A zero reading is reused
// for up to a minute while no receive of this driver returns a message (see idleBacklogTTL); SQS's own
// counts lag by about that much.
func (d *driver) cachedBacklog(ctx context.Context) (int64, error) {
	recvd := d.received.Load()
	d.zeroMu.Lock()
	idle := !d.zeroAt.IsZero() && d.zeroRecvd == recvd && time.Since(d.zeroAt) < idleBacklogTTL
	d.zeroMu.Unlock()
	if idle {
		return 0, nil
	}
	n, err := d.backlog(ctx)
	d.zeroMu.Lock()
	if err == nil && n == 0 {
		d.zeroAt, d.zeroRecvd = time.Now(), recvd
	} else {
		d.zeroAt = time.Time{}
	}
	d.zeroMu.Unlock()
	return n, err
}

func (d *driver) backlog(ctx context.Context) (int64, error) {
	out, err := d.api.GetQueueAttributes(ctx, &sqs.GetQueueAttributesInput{
		QueueUrl: &d.cfg.QueueURL,
		AttributeNames: []types.QueueAttributeName{
			types.QueueAttributeNameApproximateNumberOfMessages,
			types.QueueAttributeNameApproximateNumberOfMessagesNotVisible,
		},
	})
	if err != nil {
		return -1, fmt.Errorf("getting attributes of queue %s: %w", d.cfg.QueueURL, err)
	}
	var total int64
	for _, name := range []types.QueueAttributeName{
		types.QueueAttributeNameApproximateNumberOfMessages,
		types.QueueAttributeNameApproximateNumberOfMessagesNotVisible,
	} {
		n, err := strconv.ParseInt(out.Attributes[string(name)], 10, 64)
		if err != nil {
			return -1, fmt.Errorf("reading %s of queue %s: %w", name, d.cfg.QueueURL, err)
		}
		total += n
	}
	return total, nil
}
