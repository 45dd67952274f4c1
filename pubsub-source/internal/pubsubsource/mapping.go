package pubsubsource

import (
	"strconv"
	"time"

	pb "cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"

	"github.com/numaflow-connectors/sources/common/source"
)

// Headers the driver adds to the message attributes.
const (
	HeaderMessageID       = "x-pubsub-message-id"
	HeaderOrderingKey     = "x-pubsub-ordering-key"
	HeaderDeliveryAttempt = "x-pubsub-delivery-attempt"
	HeaderPublishTime     = "x-pubsub-publish-time"
)

// Attributes the driver puts on a message it dead-letters to PUBSUB_DEAD_LETTER_TOPIC, besides the
// original attributes.
const (
	AttrDeadLetterReason       = "x-dead-letter-reason"
	AttrDeadLetterSubscription = "x-dead-letter-subscription"
	AttrDeadLetterMessageID    = "x-dead-letter-message-id"
	AttrDeadLetterDeliveries   = "x-dead-letter-deliveries"
	AttrDeadLetterOrderingKey  = "x-dead-letter-ordering-key"
	AttrDeadLetterPublishTime  = "x-dead-letter-publish-time"
)

// maxAttrValue is Pub/Sub's limit on an attribute value (bytes).
const maxAttrValue = 1024

// toMessage maps one received message. Its handle is the ack ID; its ID the message ID, which is the
// same on every redelivery. Deliveries is the service's delivery attempt, which it counts only when
// the subscription has a dead-letter policy (0 otherwise: the adapter counts locally).
func toMessage(rm *pb.ReceivedMessage) *source.Message {
	pm := rm.GetMessage()
	h := make(map[string]string, len(pm.GetAttributes())+4)
	for k, v := range pm.GetAttributes() {
		h[k] = v
	}
	h[HeaderMessageID] = pm.GetMessageId()
	m := &source.Message{
		ID:         pm.GetMessageId(),
		Handle:     rm.GetAckId(),
		Payload:    pm.GetData(),
		Deliveries: int(rm.GetDeliveryAttempt()),
		Headers:    h,
	}
	if ts := pm.GetPublishTime(); ts != nil {
		m.EventTime = ts.AsTime()
		h[HeaderPublishTime] = m.EventTime.UTC().Format(time.RFC3339Nano)
	}
	if k := pm.GetOrderingKey(); k != "" {
		m.Keys = []string{k}
		h[HeaderOrderingKey] = k
	}
	if a := rm.GetDeliveryAttempt(); a > 0 {
		h[HeaderDeliveryAttempt] = strconv.Itoa(int(a))
	}
	return m
}

// deadLetterMessage builds what is published to the dead-letter topic: the original data and
// attributes (without the x-pubsub-* headers this driver added) plus x-dead-letter-* attributes.
func deadLetterMessage(msg *source.Message, subscription, reason string) *pb.PubsubMessage {
	attrs := make(map[string]string, len(msg.Headers)+6)
	for k, v := range msg.Headers {
		switch k {
		case HeaderMessageID, HeaderOrderingKey, HeaderDeliveryAttempt, HeaderPublishTime:
			continue
		}
		attrs[k] = v
	}
	attrs[AttrDeadLetterReason] = truncate(reason, maxAttrValue)
	attrs[AttrDeadLetterSubscription] = subscription
	attrs[AttrDeadLetterMessageID] = msg.ID
	if msg.Deliveries > 0 {
		attrs[AttrDeadLetterDeliveries] = strconv.Itoa(msg.Deliveries)
	}
	if len(msg.Keys) > 0 {
		attrs[AttrDeadLetterOrderingKey] = truncate(msg.Keys[0], maxAttrValue)
	}
	if !msg.EventTime.IsZero() {
		attrs[AttrDeadLetterPublishTime] = msg.EventTime.UTC().Format(time.RFC3339Nano)
	}
	return &pb.PubsubMessage{Data: msg.Payload, Attributes: attrs}
}

// truncate cuts s to at most n bytes without splitting a UTF-8 sequence.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	i := n
	for i > 0 && s[i]&0xC0 == 0x80 {
		i--
	}
	return s[:i]
}
