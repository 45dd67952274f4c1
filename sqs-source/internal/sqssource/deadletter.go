package sqssource

import (
	"context"
	"encoding/base64"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"unicode/utf8"

	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"github.com/numaflow-connectors/sources/common/source"
)

const (
	// maxMessageSize is SQS's largest message, body and attributes together: the dead-letter queue's
	// limit until its MaximumMessageSize is known (check.go, or SQS's refusal of a larger one).
	maxMessageSize = 1 << 20
	// minReasonBytes is how short the reason is cut, to make a dead letter fit, before the message's
	// own attributes are dropped.
	minReasonBytes = 256
)

// deadLetter sends the message to SQS_DEAD_LETTER_QUEUE_URL with its body, its attributes and
// attributes for the reason, the source queue, the original message id and receive count, then
// deletes it from the source queue. On a FIFO dead-letter queue the message keeps its group (or uses
// its id as the group) and its id is the deduplication id, so a retry after a failed delete does not
// send it twice. What does not fit the dead-letter queue's size limit is cut (fitDeadLetter); a body
// that alone exceeds it cannot be dead-lettered. Without a dead-letter queue, or for such a body, it
// returns source.ErrNoDeadLetter.
func (d *driver) deadLetter(ctx context.Context, msg *source.Message, reason string) error {
	if d.cfg.DeadLetterQueueURL == "" {
		return source.ErrNoDeadLetter
	}
	rh, ok := msg.Handle.(string)
	if !ok || rh == "" {
		return d.entryError("dead-lettering a message of", "ReceiptHandleIsInvalid", fmt.Sprintf("handle of type %T is not a receipt handle", msg.Handle), true)
	}
	body, encoded := string(msg.Payload), false
	if !validSQSText(body) { // possible after SQS_UNWRAP_SNS: the envelope escaped what SQS refuses
		body, encoded = base64.StdEncoding.EncodeToString(msg.Payload), true
	}
	in := &sqs.SendMessageInput{
		QueueUrl:    &d.cfg.DeadLetterQueueURL,
		MessageBody: &body,
	}
	dl := *msg
	dl.Payload = []byte(body)
	if d.dlqFIFO {
		group := msg.Headers[HeaderGroupID]
		if group == "" {
			group = msg.ID
		}
		in.MessageGroupId = &group
		in.MessageDeduplicationId = ptr(msg.ID)
	}
	for {
		limit := d.deadLetterLimit()
		attrs := deadLetterAttributes(msg, reason, d.cfg.QueueURL)
		if encoded {
			attrs[AttrDeadLetterBodyEncoding] = types.MessageAttributeValue{DataType: ptr("String"), StringValue: ptr("base64")}
		}
		fit, err := d.fitDeadLetter(&dl, attrs, limit)
		if err != nil {
			return err
		}
		if len(fit) == 0 {
			fit = nil
		}
		in.MessageAttributes = fit
		_, err = d.api.SendMessage(ctx, in)
		if err == nil {
			break
		}
		// A dead-letter queue whose limit was not known refuses a larger message and names its limit:
		// fit the message to it and send once more.
		if n, ok := refusedSize(err); ok && n < limit {
			d.dlqMaxSize.Store(int64(n))
			continue
		}
		return fmt.Errorf("sending message %s to dead-letter queue %s: %w", msg.ID, d.cfg.DeadLetterQueueURL, err)
	}
	if _, err := d.api.DeleteMessage(ctx, &sqs.DeleteMessageInput{QueueUrl: &d.cfg.QueueURL, ReceiptHandle: &rh}); err != nil {
		return fmt.Errorf("deleting dead-lettered message %s from queue %s: %w", msg.ID, d.cfg.QueueURL, err)
	}
	return nil
}

// deadLetterLimit is the dead-letter queue's MaximumMessageSize when known, else SQS's maximum.
func (d *driver) deadLetterLimit() int {
	if n := d.dlqMaxSize.Load(); n > 0 {
		return int(n)
	}
	return maxMessageSize
}

// fitDeadLetter makes the message and attrs fit limit bytes as SQS counts them (the body, plus each
// attribute's name, data type and value), logging what it cut: first the reason down to
// minReasonBytes, then the message's own attributes (largest first), then the dead-letter attributes
// other than the reason, then the rest of the reason. A body over limit by itself cannot be
// dead-lettered: it returns source.ErrNoDeadLetter (wrapped), and the adapter's fallback applies.
func (d *driver) fitDeadLetter(msg *source.Message, attrs map[string]types.MessageAttributeValue, limit int) (map[string]types.MessageAttributeValue, error) {
	body := len(msg.Payload)
	if body > limit {
		d.log.Warn("message too large for the dead-letter queue; DEAD_LETTER_FALLBACK applies", "id", msg.ID,
			"queue", d.cfg.QueueURL, "dead_letter_queue", d.cfg.DeadLetterQueueURL, "body_bytes", body, "max_bytes", limit)
		return nil, fmt.Errorf("dead-lettering message %s: its body of %d bytes exceeds the %d bytes dead-letter queue %s takes: %w",
			msg.ID, body, limit, d.cfg.DeadLetterQueueURL, source.ErrNoDeadLetter)
	}
	size := body + attributesSize(attrs)
	if size <= limit {
		return attrs, nil
	}
	over := func() int { return body + attributesSize(attrs) - limit }
	reasonLen := len(deref(attrs[AttrDeadLetterReason].StringValue))
	shortenReason(attrs, over(), minReasonBytes)
	var dropped []string
	for over() > 0 {
		name := largestCopied(attrs)
		if name == "" {
			break
		}
		delete(attrs, name)
		dropped = append(dropped, name)
	}
	for _, name := range []string{AttrDeadLetterReceiveCount, AttrDeadLetterSourceQueue, AttrDeadLetterMessageID} {
		if _, ok := attrs[name]; ok && over() > 0 {
			delete(attrs, name)
			dropped = append(dropped, name)
		}
	}
	shortenReason(attrs, over(), 1)
	d.log.Warn("dead letter cut to fit the dead-letter queue", "id", msg.ID, "dead_letter_queue", d.cfg.DeadLetterQueueURL,
		"size_bytes", size, "max_bytes", limit, "reason_bytes", reasonLen,
		"reason_kept_bytes", len(deref(attrs[AttrDeadLetterReason].StringValue)), "dropped_attributes", dropped)
	return attrs, nil
}

// ourAttributes are the dead-letter attributes the driver adds (dead-letter-headers is the message's
// own attributes folded into one).
var ourAttributes = []string{AttrDeadLetterReason, AttrDeadLetterSourceQueue, AttrDeadLetterMessageID, AttrDeadLetterReceiveCount,
	AttrDeadLetterBodyEncoding}

// largestCopied names the largest attribute copied from the message (the first by name among equals),
// or "" when none is left.
func largestCopied(attrs map[string]types.MessageAttributeValue) string {
	best, bestSize := "", -1
	for name, v := range attrs {
		if slices.Contains(ourAttributes, name) {
			continue
		}
		if n := attributeSize(name, v); n > bestSize || (n == bestSize && name < best) {
			best, bestSize = name, n
		}
	}
	return best
}

// shortenReason cuts the reason attribute by over bytes, but not below floor bytes; when floor is 1
// and no byte of it fits, it removes the attribute.
func shortenReason(attrs map[string]types.MessageAttributeValue, over, floor int) {
	v, ok := attrs[AttrDeadLetterReason]
	if !ok || over <= 0 {
		return
	}
	reason := deref(v.StringValue)
	keep := len(reason) - over
	if keep < 1 && floor <= 1 {
		delete(attrs, AttrDeadLetterReason)
		return
	}
	keep = max(keep, floor)
	if keep >= len(reason) {
		return
	}
	if reason = truncate(reason, keep); reason == "" { // SQS takes no empty value
		delete(attrs, AttrDeadLetterReason)
		return
	}
	v.StringValue = &reason
	attrs[AttrDeadLetterReason] = v
}

// truncate cuts s to at most n bytes on a character boundary, ending in "..." when there is room.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	const mark = "..."
	cut := n
	if n > len(mark) {
		cut = n - len(mark)
	}
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	if n > len(mark) {
		return s[:cut] + mark
	}
	return s[:cut]
}

// attributesSize is the size SQS counts for message attributes: each name, data type and value.
func attributesSize(attrs map[string]types.MessageAttributeValue) int {
	n := 0
	for name, v := range attrs {
		n += attributeSize(name, v)
	}
	return n
}

func attributeSize(name string, v types.MessageAttributeValue) int {
	return len(name) + len(deref(v.DataType)) + len(deref(v.StringValue)) + len(v.BinaryValue)
}

// refusedSizeRE finds the limit in SQS's refusal of a message over a queue's MaximumMessageSize
// ("... Reason: Message must be shorter than 262144 bytes.").
var refusedSizeRE = regexp.MustCompile(`shorter than ([0-9]+) bytes`)

// refusedSize returns the size limit named by SQS's refusal of a message too large for the queue.
func refusedSize(err error) (int, bool) {
	if errorCode(err) != source.InvalidArgument {
		return 0, false
	}
	m := refusedSizeRE.FindStringSubmatch(err.Error())
	if m == nil {
		return 0, false
	}
	n, convErr := strconv.Atoi(m[1])
	return n, convErr == nil && n > 0
}
