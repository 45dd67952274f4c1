package mqttsource

import (
	"context"
	"fmt"
	"strconv"

	"github.com/eclipse/paho.golang/paho"

	"github.com/numaflow-connectors/sources/common/source"
)

// User properties added to a dead-lettered copy.
const (
	PropDeadLetterReason     = "dead-letter-reason"
	PropDeadLetterTopic      = "dead-letter-topic"
	PropDeadLetterDeliveries = "dead-letter-deliveries"
)

// deadLetter publishes a copy of the message to the dead-letter topic at QoS 1 (its payload, content
// type, response topic, correlation data and user properties, plus the reason, the original topic and
// the delivery count), waits for the broker's PUBACK, then acknowledges the original.
func (d *driver) deadLetter(ctx context.Context, msg *source.Message, reason string) error {
	if d.dlq == "" {
		return source.ErrNoDeadLetter
	}
	x, ok := msg.Handle.(*delivery)
	if !ok {
		return d.entryError("dead-lettering", "not a delivery of this source")
	}
	p := &paho.Publish{Topic: d.dlq, QoS: 1, Payload: msg.Payload, Properties: &paho.PublishProperties{}}
	if op := x.pub.Properties; op != nil {
		p.Properties.ContentType = op.ContentType
		p.Properties.ResponseTopic = op.ResponseTopic
		p.Properties.CorrelationData = op.CorrelationData
		p.Properties.PayloadFormat = op.PayloadFormat
		p.Properties.User = append(p.Properties.User, op.User...)
	}
	p.Properties.User = append(p.Properties.User,
		paho.UserProperty{Key: PropDeadLetterReason, Value: reason},
		paho.UserProperty{Key: PropDeadLetterTopic, Value: x.pub.Topic},
		paho.UserProperty{Key: PropDeadLetterDeliveries, Value: strconv.Itoa(msg.Deliveries)})
	resp, err := d.api.Publish(ctx, p)
	// Refused in the PUBACK (e.g. not authorized), or accepted with no subscription matching it: an
	// MQTT topic keeps nothing by itself, so the broker discarded the copy, and acknowledging the
	// original would lose the message while reporting it dead-lettered.
	if resp != nil && (resp.ReasonCode >= 0x80 || resp.ReasonCode == noMatchingSubscribers) {
		re := &ReasonError{Op: "publishing to dead-letter topic " + d.dlq, Code: resp.ReasonCode}
		if resp.Properties != nil {
			re.Reason = resp.Properties.ReasonString
		}
		if re.Code == noMatchingSubscribers && re.Reason == "" {
			re.Reason = "no matching subscribers: the broker discarded the copy (subscribe a persistent session to the topic)"
		}
		return re
	}
	if err != nil {
		return fmt.Errorf("publishing to dead-letter topic %s: %w", d.dlq, err)
	}
	return d.ack([]source.Handle{x})
}
