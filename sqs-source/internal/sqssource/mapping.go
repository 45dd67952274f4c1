package sqssource

import (
	"encoding/base64"
	"encoding/json"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"github.com/numaflow-connectors/sources/common/source"
)

// Headers the driver adds to every message (besides the message attributes).
const (
	HeaderMessageID       = "x-sqs-message-id"
	HeaderReceiveCount    = "x-sqs-receive-count"
	HeaderSentTimestamp   = "x-sqs-sent-timestamp"
	HeaderGroupID         = "x-sqs-group-id"
	HeaderDeduplicationID = "x-sqs-deduplication-id"

	HeaderSNSTopicARN    = "x-sns-topic-arn"
	HeaderSNSMessageID   = "x-sns-message-id"
	HeaderSNSSubject     = "x-sns-subject"
	HeaderSNSTimestamp   = "x-sns-timestamp"
	HeaderSNSUnwrapError = "x-sns-unwrap-error"
)

// toMessage maps one received SQS message. now is the receive time, used as event time only when SQS
// gave no SentTimestamp.
func toMessage(m types.Message, fifo, unwrapSNS bool, now time.Time) *source.Message {
	id, handle := deref(m.MessageId), deref(m.ReceiptHandle)
	msg := &source.Message{
		ID:        id,
		Handle:    handle,
		Payload:   []byte(deref(m.Body)),
		EventTime: now,
		Headers:   make(map[string]string, len(m.MessageAttributes)+5),
	}
	for name, v := range m.MessageAttributes {
		if s, ok := attributeString(v); ok {
			msg.Headers[name] = s
		}
	}
	attrs := m.Attributes
	msg.Headers[HeaderMessageID] = id
	if s := attrs[string(types.MessageSystemAttributeNameSentTimestamp)]; s != "" {
		msg.Headers[HeaderSentTimestamp] = s
		if ms, err := strconv.ParseInt(s, 10, 64); err == nil && ms > 0 {
			msg.EventTime = time.UnixMilli(ms)
		}
	}
	if s := attrs[string(types.MessageSystemAttributeNameApproximateReceiveCount)]; s != "" {
		msg.Headers[HeaderReceiveCount] = s
		if n, err := strconv.Atoi(s); err == nil && n > 0 {
			msg.Deliveries = n
		}
	}
	if g := attrs[string(types.MessageSystemAttributeNameMessageGroupId)]; g != "" {
		msg.Headers[HeaderGroupID] = g
		if fifo {
			msg.Keys = []string{g}
		}
	}
	if d := attrs[string(types.MessageSystemAttributeNameMessageDeduplicationId)]; d != "" {
		msg.Headers[HeaderDeduplicationID] = d
	}
	if unwrapSNS {
		unwrap(msg)
	}
	return msg
}

// attributeString renders a message attribute as a header value: String and Number types (and their
// custom subtypes such as Number.float) as they are, Binary types in standard base64.
func attributeString(v types.MessageAttributeValue) (string, bool) {
	t := deref(v.DataType)
	switch {
	case strings.HasPrefix(t, "Binary"):
		return base64.StdEncoding.EncodeToString(v.BinaryValue), true
	case v.StringValue != nil:
		return *v.StringValue, true
	}
	return "", false
}

// snsEnvelope is the JSON body SNS delivers to an SQS subscription without raw message delivery.
type snsEnvelope struct {
	Type              string                  `json:"Type"`
	MessageID         string                  `json:"MessageId"`
	TopicARN          string                  `json:"TopicArn"`
	Subject           string                  `json:"Subject"`
	Message           *string                 `json:"Message"`
	Timestamp         string                  `json:"Timestamp"`
	MessageAttributes map[string]snsAttribute `json:"MessageAttributes"`
}

// snsAttribute is one message attribute in an SNS envelope. Binary values are already base64 there.
type snsAttribute struct {
	Type  string `json:"Type"`
	Value string `json:"Value"`
}

// unwrap replaces msg's payload by the Message of the SNS envelope in it and adds the envelope's
// attributes and identifiers as headers. A body that is not an envelope is left as it is, with a
// header saying why.
func unwrap(msg *source.Message) {
	var env snsEnvelope
	if err := json.Unmarshal(msg.Payload, &env); err != nil {
		msg.Headers[HeaderSNSUnwrapError] = "body is not an SNS notification: not a JSON object"
		return
	}
	if env.Type != "Notification" || env.TopicARN == "" || env.Message == nil {
		msg.Headers[HeaderSNSUnwrapError] = "body is not an SNS notification: no Type Notification, TopicArn and Message"
		return
	}
	msg.Payload = []byte(*env.Message)
	for name, a := range env.MessageAttributes {
		if _, taken := msg.Headers[name]; !taken {
			msg.Headers[name] = a.Value
		}
	}
	msg.Headers[HeaderSNSTopicARN] = env.TopicARN
	if env.MessageID != "" {
		msg.Headers[HeaderSNSMessageID] = env.MessageID
	}
	if env.Subject != "" {
		msg.Headers[HeaderSNSSubject] = env.Subject
	}
	if env.Timestamp != "" {
		msg.Headers[HeaderSNSTimestamp] = env.Timestamp
	}
}

// deadLetterAttributes are the attributes the driver puts on a message it moves to the dead-letter
// queue.
const (
	AttrDeadLetterReason       = "dead-letter-reason"
	AttrDeadLetterSourceQueue  = "dead-letter-source-queue"
	AttrDeadLetterMessageID    = "dead-letter-message-id"
	AttrDeadLetterReceiveCount = "dead-letter-receive-count"
	// AttrDeadLetterHeaders carries the message's headers as a JSON object when they do not fit in
	// SQS's 10 message attributes next to the four above.
	AttrDeadLetterHeaders = "dead-letter-headers"
	// AttrDeadLetterBodyEncoding is "base64" when the dead letter's body is the original payload in
	// base64: SQS refuses a body with characters outside its set (control characters, which an
	// unwrapped SNS message may hold), and the dead letter must not fail for good.
	AttrDeadLetterBodyEncoding = "dead-letter-body-encoding"
	maxMessageAttributes       = 10
)

// isSystemHeader reports whether a header was made by this driver rather than copied from a message
// attribute.
func isSystemHeader(name string) bool {
	return strings.HasPrefix(name, "x-sqs-") || strings.HasPrefix(name, "x-sns-")
}

// deadLetterAttributes builds the attributes of a dead-lettered message: the reason, the source queue,
// the original message id and receive count, and the message's own attributes (as String values; as
// one JSON attribute when there are too many for SQS's limit of 10).
func deadLetterAttributes(msg *source.Message, reason, queueURL string) map[string]types.MessageAttributeValue {
	if reason == "" {
		reason = "unspecified"
	}
	str := func(s string) types.MessageAttributeValue {
		return types.MessageAttributeValue{DataType: ptr("String"), StringValue: ptr(sqsText(s))}
	}
	out := map[string]types.MessageAttributeValue{
		AttrDeadLetterReason:      str(reason),
		AttrDeadLetterSourceQueue: str(queueURL),
		AttrDeadLetterMessageID:   str(msg.ID),
	}
	count := msg.Deliveries
	if s, ok := msg.Headers[HeaderReceiveCount]; ok {
		if n, err := strconv.Atoi(s); err == nil && n > count {
			count = n
		}
	}
	if count > 0 {
		out[AttrDeadLetterReceiveCount] = types.MessageAttributeValue{DataType: ptr("Number"), StringValue: ptr(strconv.Itoa(count))}
	}
	own := map[string]string{}
	for name, v := range msg.Headers {
		if !isSystemHeader(name) && v != "" && !strings.HasPrefix(name, "dead-letter-") {
			own[name] = v
		}
	}
	if len(own) == 0 {
		return out
	}
	if len(out)+len(own) <= maxMessageAttributes {
		for name, v := range own {
			out[name] = str(v)
		}
		return out
	}
	b, _ := json.Marshal(own) // a map of strings always marshals
	out[AttrDeadLetterHeaders] = str(string(b))
	return out
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

func ptr[T any](v T) *T { return &v }

// sqsChar reports whether SQS takes r in a message body or a String attribute value: tab, LF, CR and
// #x20-#xD7FF, #xE000-#xFFFD, #x10000-#x10FFFF (XML's characters).
func sqsChar(r rune) bool {
	return r == '\t' || r == '\n' || r == '\r' || r >= 0x20 && r <= 0xD7FF || r >= 0xE000 && r <= 0xFFFD || r >= 0x10000 && r <= 0x10FFFF
}

// sqsText returns s with every character SQS refuses (and every byte that is not UTF-8) replaced by
// U+FFFD: numa's nack reason (a UDF's error text, with terminal colour escapes, say) and copied
// attribute values go into a dead letter's attributes, and one refused character failed the dead
// letter for good.
func sqsText(s string) string {
	if validSQSText(s) {
		return s
	}
	return strings.Map(func(r rune) rune {
		if r == utf8.RuneError || !sqsChar(r) {
			return '\uFFFD'
		}
		return r
	}, strings.ToValidUTF8(s, "\uFFFD"))
}

// validSQSText reports whether SQS takes s as it is.
func validSQSText(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if !sqsChar(r) {
			return false
		}
	}
	return true
}
