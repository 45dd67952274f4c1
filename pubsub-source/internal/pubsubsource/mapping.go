package pubsubsource

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"time"

	"cloud.google.com/go/pubsub/v2"
	pb "cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	"google.golang.org/protobuf/proto"

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

// AttrDeadLetterAttributes holds, as one JSON object, the original attributes a dead letter had no
// room for: Pub/Sub takes at most 100 attributes per message, and the x-dead-letter-* attributes come
// first.
const AttrDeadLetterAttributes = "x-dead-letter-attributes"

// Pub/Sub's limits on a published message (https://cloud.google.com/pubsub/quotas#resource_limits):
// at most 100 attributes, each key at most 256 bytes and each value at most 1024 bytes, and a publish
// request of at most 10 MB (pubsub.MaxPublishRequestBytes, 10,000,000 bytes). The service refuses a
// message over any of them with InvalidArgument; the emulators do not check them.
const (
	maxAttrs          = 100
	maxAttrKey        = 256
	maxAttrValue      = 1024
	maxPublishRequest = pubsub.MaxPublishRequestBytes
)

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

// dlFit is what deadLetterRequest left out of a dead letter, or moved, to fit Pub/Sub's limits: keys
// of the original attributes, and of the x-dead-letter-* attributes left out or cut for the request
// size.
type dlFit struct {
	folded  []string // original attributes moved into AttrDeadLetterAttributes
	dropped []string // original attributes left out
	shed    []string // x-dead-letter-* attributes left out (or, the reason, cut) to fit the request size
}

// deadLetterRequest builds the Publish request of the dead letter of msg to topic: the original data
// and attributes (without the x-pubsub-* headers this driver added) plus x-dead-letter-* attributes,
// fitted to Pub/Sub's limits (maxAttrs and the rest) in this order:
//   - the x-dead-letter-* attributes first, each value cut to maxAttrValue;
//   - then the original attributes, in key order, as many as the attribute count leaves room for. When
//     some have no room (or cannot be attributes: a key taken by an x-dead-letter-* attribute, a key or
//     value over its limit), one slot goes to AttrDeadLetterAttributes, a JSON object holding as many of
//     them as fit maxAttrValue; the others are dropped;
//   - when the request is over maxPublishRequest, attributes are left out until it fits: that JSON
//     attribute, the original attributes (last key first), then x-dead-letter-publish-time, -ordering-key,
//     -deliveries, -subscription, the reason (cut first) and the message ID.
//
// When the data alone leaves no room in a publish request, it returns an error wrapping
// source.ErrNoDeadLetter: the message cannot be dead-lettered to a topic, and the adapter's
// DEAD_LETTER_FALLBACK applies.
func deadLetterRequest(msg *source.Message, topic, subscription, reason string) (*pb.PublishRequest, dlFit, error) {
	var fit dlFit
	if n := proto.Size(&pb.PublishRequest{Topic: topic, Messages: []*pb.PubsubMessage{{Data: msg.Payload}}}); n > maxPublishRequest {
		return nil, fit, fmt.Errorf("dead-lettering message %s: a publish request of its data alone is %d bytes, over Pub/Sub's %d: %w",
			msg.ID, n, int(maxPublishRequest), source.ErrNoDeadLetter)
	}
	attrs := make(map[string]string, min(len(msg.Headers)+6, maxAttrs))
	attrs[AttrDeadLetterReason] = truncate(reason, maxAttrValue)
	attrs[AttrDeadLetterSubscription] = truncate(subscription, maxAttrValue)
	attrs[AttrDeadLetterMessageID] = truncate(msg.ID, maxAttrValue)
	if msg.Deliveries > 0 {
		attrs[AttrDeadLetterDeliveries] = strconv.Itoa(msg.Deliveries)
	}
	if len(msg.Keys) > 0 {
		attrs[AttrDeadLetterOrderingKey] = truncate(msg.Keys[0], maxAttrValue)
	}
	if !msg.EventTime.IsZero() {
		attrs[AttrDeadLetterPublishTime] = msg.EventTime.UTC().Format(time.RFC3339Nano)
	}

	// The original attributes: those that can be attributes, and those that cannot.
	var fits, misfits []string
	for _, k := range slices.Sorted(maps.Keys(msg.Headers)) {
		switch k {
		case HeaderMessageID, HeaderOrderingKey, HeaderDeliveryAttempt, HeaderPublishTime:
			continue
		}
		if _, ours := attrs[k]; ours || len(k) > maxAttrKey || len(msg.Headers[k]) > maxAttrValue {
			misfits = append(misfits, k)
		} else {
			fits = append(fits, k)
		}
	}
	room := maxAttrs - len(attrs)
	direct := fits
	if len(misfits) > 0 || len(fits) > room {
		// One slot for the JSON attribute of those without room; without any that fits it, none.
		n := min(len(fits), room-1)
		fold, folded, dropped := foldAttrs(msg.Headers, slices.Concat(fits[n:], misfits))
		if len(folded) > 0 {
			direct, fit.folded, fit.dropped = fits[:n], folded, dropped
			attrs[AttrDeadLetterAttributes] = fold
		} else {
			n = min(len(fits), room)
			direct, fit.dropped = fits[:n], slices.Concat(fits[n:], misfits)
		}
	}
	for _, k := range direct {
		attrs[k] = msg.Headers[k]
	}

	m := &pb.PubsubMessage{Data: msg.Payload, Attributes: attrs}
	req := &pb.PublishRequest{Topic: topic, Messages: []*pb.PubsubMessage{m}}
	shed := []string{AttrDeadLetterAttributes}
	for i := len(direct) - 1; i >= 0; i-- {
		shed = append(shed, direct[i])
	}
	shed = append(shed, AttrDeadLetterPublishTime, AttrDeadLetterOrderingKey, AttrDeadLetterDeliveries,
		AttrDeadLetterSubscription, AttrDeadLetterReason, AttrDeadLetterMessageID)
	for i, k := range shed {
		over := proto.Size(req) - maxPublishRequest
		if over <= 0 {
			break
		}
		v, ok := attrs[k]
		switch {
		case !ok:
			continue
		case k == AttrDeadLetterReason && len(v) > over:
			if attrs[k] = truncate(v, len(v)-over); attrs[k] == "" {
				delete(attrs, k)
			}
			fit.shed = append(fit.shed, k)
			continue
		case k == AttrDeadLetterAttributes:
			fit.dropped = append(fit.dropped, fit.folded...)
			fit.folded = nil
		case i <= len(direct):
			fit.dropped = append(fit.dropped, k)
		default:
			fit.shed = append(fit.shed, k)
		}
		delete(attrs, k)
	}
	slices.Sort(fit.dropped)
	return req, fit, nil
}

// foldAttrs encodes as many of the attributes keys (in their order) as fit maxAttrValue into one
// JSON object; it returns the object and the keys it holds and left out.
func foldAttrs(attrs map[string]string, keys []string) (fold string, folded, dropped []string) {
	obj := make(map[string]string, len(keys))
	for _, k := range keys {
		obj[k] = attrs[k]
		b, err := json.Marshal(obj)
		if err != nil || len(b) > maxAttrValue {
			delete(obj, k)
			dropped = append(dropped, k)
			continue
		}
		fold, folded = string(b), append(folded, k)
	}
	return fold, folded, dropped
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
