package sqssource

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"github.com/numaflow-connectors/sources/common/source"
)

// Capabilities the driver reports to the adapter.
const (
	// defaultReceiveConcurrency fills numa's default batch of 500 with receives of 10.
	defaultReceiveConcurrency = 50
	maxReceiveConcurrency     = 100
	ackConcurrency            = 8
	maxNackDelay              = 12 * time.Hour
	idleBacklogTTL            = time.Minute
)

// driver is the SQS source.Driver. Handles are receipt handles (string).
type driver struct {
	cfg      Config
	api      sqsAPI
	log      *slog.Logger
	fifo     bool
	dlqFIFO  bool
	receives int // ReceiveConcurrency

	requests *requestCounter // nil in unit tests
	closeFn  func()          // releases the HTTP client; nil in unit tests

	checked   atomic.Bool
	closeOnce sync.Once

	// An empty queue stays empty while no receive of this driver returns a message: a zero backlog is
	// then reused for up to idleBacklogTTL, so an idle replica 0 (asked for pending every 5 s) makes
	// about one GetQueueAttributes call a minute instead of twelve.
	received  atomic.Uint64 // receives that returned messages
	zeroMu    sync.Mutex
	zeroAt    time.Time // when a zero backlog was read; zero time when none
	zeroRecvd uint64    // received when it was read
}

var (
	_ source.Driver       = (*driver)(nil)
	_ source.DeadLetterer = (*driver)(nil)
	_ source.Checker      = (*driver)(nil)
)

// newDriver wires a driver over api; it makes no call.
func newDriver(cfg Config, api sqsAPI, log *slog.Logger) *driver {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &driver{
		cfg:      cfg,
		api:      api,
		log:      log,
		fifo:     isFIFO(cfg.QueueURL),
		dlqFIFO:  cfg.DeadLetterQueueURL != "" && isFIFO(cfg.DeadLetterQueueURL),
		receives: defaultReceiveConcurrency,
	}
}

func (d *driver) Capabilities() source.Capabilities {
	return source.Capabilities{
		MaxReceive:         maxBatch,
		ReceiveConcurrency: d.receives,
		MaxAck:             maxBatch,
		AckConcurrency:     ackConcurrency,
		Lease:              d.cfg.VisibilityTimeout,
		MaxExtension:       d.cfg.MaxExtension,
		MaxNackDelay:       maxNackDelay,
		OrderedKeys:        d.fifo,
	}
}

// Receive makes one long poll (SQS_WAIT_TIME) for up to max messages, asking for every system and
// message attribute and setting SQS_VISIBILITY_TIMEOUT on what it returns.
func (d *driver) Receive(ctx context.Context, max int) ([]*source.Message, error) {
	n := min(max, maxBatch)
	if n <= 0 {
		n = maxBatch
	}
	in := &sqs.ReceiveMessageInput{
		QueueUrl:                    &d.cfg.QueueURL,
		MaxNumberOfMessages:         int32(n),
		WaitTimeSeconds:             int32(d.cfg.WaitTime / time.Second),
		VisibilityTimeout:           seconds(d.cfg.VisibilityTimeout),
		MessageSystemAttributeNames: []types.MessageSystemAttributeName{types.MessageSystemAttributeNameAll},
		MessageAttributeNames:       []string{"All"},
	}
	// The poll is bounded by the wait SQS honours (plus slack for a slow answer); the adapter does not
	// cancel a Receive in flight at shutdown.
	pctx, cancel := context.WithTimeout(ctx, d.cfg.WaitTime+15*time.Second)
	defer cancel()
	out, err := d.api.ReceiveMessage(pctx, in)
	if err != nil {
		return nil, fmt.Errorf("receiving from queue %s: %w", d.cfg.QueueURL, err)
	}
	if len(out.Messages) == 0 {
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

// Ack deletes the messages with DeleteMessageBatch. A receipt handle SQS refuses (invalid, or expired
// on a FIFO queue) is reported in a *source.BatchError with a ReceiptHandleIsInvalid error, classified
// InvalidArgument: the adapter logs and counts it and does not retry it; the message may come back
// (at-least-once). Deleting a message that is already gone succeeds at SQS.
func (d *driver) Ack(ctx context.Context, handles []source.Handle) error {
	return d.batch(ctx, handles, "deleting messages from", func(ctx context.Context, ids, receipts []string) (map[string]types.BatchResultErrorEntry, map[string]bool, error) {
		entries := make([]types.DeleteMessageBatchRequestEntry, len(ids))
		for i := range ids {
			entries[i] = types.DeleteMessageBatchRequestEntry{Id: &ids[i], ReceiptHandle: &receipts[i]}
		}
		out, err := d.api.DeleteMessageBatch(ctx, &sqs.DeleteMessageBatchInput{QueueUrl: &d.cfg.QueueURL, Entries: entries})
		if err != nil {
			return nil, nil, fmt.Errorf("deleting messages from queue %s: %w", d.cfg.QueueURL, err)
		}
		ok := make(map[string]bool, len(out.Successful))
		for _, s := range out.Successful {
			ok[deref(s.Id)] = true
		}
		return failedByID(out.Failed), ok, nil
	})
}

// Nack sets the visibility timeout of the messages to delay (rounded up to whole seconds, at most
// 12 h), so SQS delivers them again after it. A message that is no longer in flight is already
// visible: that counts as success.
func (d *driver) Nack(ctx context.Context, handles []source.Handle, delay time.Duration) error {
	return d.changeVisibility(ctx, handles, min(delay, maxNackDelay), true)
}

// Extend sets the visibility timeout of the messages to lease from now.
func (d *driver) Extend(ctx context.Context, handles []source.Handle, lease time.Duration) error {
	return d.changeVisibility(ctx, handles, min(lease, maxVisibility), false)
}

func (d *driver) changeVisibility(ctx context.Context, handles []source.Handle, to time.Duration, nack bool) error {
	vis := seconds(to)
	return d.batch(ctx, handles, "changing visibility of messages in", func(ctx context.Context, ids, receipts []string) (map[string]types.BatchResultErrorEntry, map[string]bool, error) {
		entries := make([]types.ChangeMessageVisibilityBatchRequestEntry, len(ids))
		for i := range ids {
			entries[i] = types.ChangeMessageVisibilityBatchRequestEntry{Id: &ids[i], ReceiptHandle: &receipts[i], VisibilityTimeout: vis}
		}
		out, err := d.api.ChangeMessageVisibilityBatch(ctx, &sqs.ChangeMessageVisibilityBatchInput{QueueUrl: &d.cfg.QueueURL, Entries: entries})
		if err != nil {
			return nil, nil, fmt.Errorf("changing visibility of messages in queue %s: %w", d.cfg.QueueURL, err)
		}
		ok := make(map[string]bool, len(out.Successful))
		for _, s := range out.Successful {
			ok[deref(s.Id)] = true
		}
		failed := failedByID(out.Failed)
		if nack {
			for id, f := range failed {
				if isNotInflight(deref(f.Code)) {
					delete(failed, id)
					ok[id] = true
				}
			}
		}
		return failed, ok, nil
	})
}

func isNotInflight(code string) bool {
	return code == "MessageNotInflight" || code == "AWS.SimpleQueueService.MessageNotInflight"
}

// batchCall runs one SQS batch call for entries with the given ids and receipt handles and returns
// the failed entries and the successful ids, by entry id.
type batchCall func(ctx context.Context, ids, receipts []string) (map[string]types.BatchResultErrorEntry, map[string]bool, error)

// batch runs call over handles in chunks of 10 and maps per-entry failures back to indexes of handles.
// The result is source.BatchResult's.
func (d *driver) batch(ctx context.Context, handles []source.Handle, op string, call batchCall) error {
	if len(handles) == 0 {
		return nil
	}
	failed := map[int]error{}
	for start := 0; start < len(handles); start += maxBatch {
		end := min(start+maxBatch, len(handles))
		var ids, receipts []string
		var idx []int
		for i := start; i < end; i++ {
			rh, ok := handles[i].(string)
			if !ok || rh == "" {
				failed[i] = d.entryError(op, "ReceiptHandleIsInvalid", fmt.Sprintf("handle of type %T is not a receipt handle", handles[i]), true)
				continue
			}
			ids = append(ids, strconv.Itoa(len(ids)))
			receipts = append(receipts, rh)
			idx = append(idx, i)
		}
		if len(ids) == 0 {
			continue
		}
		bad, good, err := call(ctx, ids, receipts)
		if err != nil {
			for _, i := range idx {
				failed[i] = err
			}
			continue
		}
		for j, id := range ids {
			switch f, isBad := bad[id]; {
			case isBad:
				failed[idx[j]] = d.entryError(op, deref(f.Code), deref(f.Message), f.SenderFault)
			case !good[id]:
				failed[idx[j]] = d.entryError(op, "MissingResult", "SQS reported neither success nor failure for the entry", false)
			}
		}
	}
	return source.BatchResult(len(handles), failed)
}

func failedByID(entries []types.BatchResultErrorEntry) map[string]types.BatchResultErrorEntry {
	m := make(map[string]types.BatchResultErrorEntry, len(entries))
	for _, e := range entries {
		m[deref(e.Id)] = e
	}
	return m
}

// Backlog is ApproximateNumberOfMessages (visible) + ApproximateNumberOfMessagesNotVisible (in flight
// at any replica, including messages nacked with a delay). Delayed messages (DelaySeconds) are not
// counted: they cannot be read yet and are counted once they become visible. A zero reading is reused
// for up to a minute while no receive of this driver returns a message (see idleBacklogTTL); SQS's own
// counts lag by about that much.
func (d *driver) Backlog(ctx context.Context) (int64, error) {
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

// DeadLetter sends the message to SQS_DEAD_LETTER_QUEUE_URL with its body, its attributes and
// attributes for the reason, the source queue, the original message id and receive count, then
// deletes it from the source queue. On a FIFO dead-letter queue the message keeps its group (or uses
// its id as the group) and its id is the deduplication id, so a retry after a failed delete does not
// send it twice. Without a dead-letter queue it returns source.ErrNoDeadLetter.
func (d *driver) DeadLetter(ctx context.Context, msg *source.Message, reason string) error {
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

// Check asks SQS for the queue's attributes (and, until the first success, the dead-letter queue's),
// so a missing queue or a missing permission shows in a clear message at start.
func (d *driver) Check(ctx context.Context) error {
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
		if _, err := d.api.GetQueueAttributes(ctx, &sqs.GetQueueAttributesInput{
			QueueUrl:       &d.cfg.DeadLetterQueueURL,
			AttributeNames: []types.QueueAttributeName{types.QueueAttributeNameQueueArn},
		}); err != nil {
			return fmt.Errorf("checking dead-letter queue %s: %w", d.cfg.DeadLetterQueueURL, err)
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

// ErrorCode classifies an error returned by the driver.
func (d *driver) ErrorCode(err error) source.Code { return errorCode(err) }

// Close releases the HTTP client's idle connections and logs how many SQS requests were made.
func (d *driver) Close(context.Context) error {
	d.closeOnce.Do(func() {
		if d.requests != nil {
			d.log.Info("sqs requests", "queue", d.cfg.QueueURL, "total", d.requests.Total(), "by_operation", d.requests.Snapshot())
		}
		if d.closeFn != nil {
			d.closeFn()
		}
	})
	return nil
}

// seconds rounds d up to whole seconds for SQS's integer timeouts.
func seconds(d time.Duration) int32 {
	if d <= 0 {
		return 0
	}
	return int32(math.Ceil(d.Seconds()))
}
