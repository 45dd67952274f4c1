package sqssource

import (
	"context"
	"fmt"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"github.com/numaflow-connectors/sources/common/source"
)

// shortPollPause is how long an empty receive waits before it returns when SQS_WAIT_TIME is 0s
// (short polling), so an idle queue costs about one request a second per receive rather than as many
// as SQS can answer.
const shortPollPause = time.Second

// receive makes one long poll (SQS_WAIT_TIME) for up to max messages, asking for every system and
// message attribute and setting SQS_VISIBILITY_TIMEOUT on what it returns. On a FIFO queue it is an
// attempt with a ReceiveRequestAttemptId, or the retry of one whose answer was lost (attempts.go).
func (d *driver) receive(ctx context.Context, max int) ([]*source.Message, error) {
	n := min(max, maxBatch)
	if n <= 0 {
		n = maxBatch
	}
	var at attempt
	if d.fifo {
		at = d.attempts.next(n, time.Now())
		n = at.n
	}
	in := &sqs.ReceiveMessageInput{
		QueueUrl:                    &d.cfg.QueueURL,
		MaxNumberOfMessages:         int32(n),
		WaitTimeSeconds:             int32(d.cfg.WaitTime / time.Second),
		VisibilityTimeout:           seconds(d.cfg.VisibilityTimeout),
		MessageSystemAttributeNames: []types.MessageSystemAttributeName{types.MessageSystemAttributeNameAll},
		MessageAttributeNames:       []string{"All"},
	}
	if d.fifo {
		in.ReceiveRequestAttemptId = &at.id // see attempts.go
	}
	// The poll is bounded by the wait SQS honours (plus slack for a slow answer); the adapter does not
	// cancel a Receive in flight at shutdown.
	pctx, cancel := context.WithTimeout(ctx, d.cfg.WaitTime+15*time.Second)
	defer cancel()
	out, err := d.api.ReceiveMessage(pctx, in)
	if err != nil {
		if d.fifo && ctx.Err() == nil { // not when the adapter stopped the receive (shutdown)
			d.attempts.failed(at, err)
		}
		return nil, fmt.Errorf("receiving from queue %s: %w", d.cfg.QueueURL, err)
	}
	if len(out.Messages) == 0 {
		if d.cfg.WaitTime == 0 {
			// Short polling answers at once: without a pause an idle queue would be asked back to back.
			pause(ctx, shortPollPause)
		}
		return nil, nil
	}
	d.received.Add(1)
	now := time.Now()
	msgs := make([]*source.Message, 0, len(out.Messages))
	for _, m := range out.Messages {
		if m.MessageId == nil || *m.MessageId == "" || m.ReceiptHandle == nil || *m.ReceiptHandle == "" {
			// Never seen from SQS; without an id or handle the message can be neither offset nor acked,
			// and it comes back after the visibility timeout.
			d.log.Warn("received message without id or receipt handle skipped", "queue", d.cfg.QueueURL)
			continue
		}
		msgs = append(msgs, toMessage(m, d.fifo, d.cfg.UnwrapSNS, now))
	}
	return msgs, nil
}

// pause waits for d or until ctx is done.
func pause(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}
