package rabbitmq

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"sort"
	"strconv"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/numaflow-connectors/sources/common/source"
)

// receiveWait is the longest a Receive waits for a first delivery before it returns empty.
const receiveWait = 2 * time.Second

// errorWait is how long a Receive without a connection waits for a reconnection under way before it
// reports why there is none.
const errorWait = 500 * time.Millisecond

// Headers the driver adds to every message.
const (
	HeaderIDSource      = "x-rabbitmq-id-source" // message-id or delivery
	HeaderMessageID     = "x-rabbitmq-message-id"
	HeaderContentType   = "x-rabbitmq-content-type"
	HeaderEncoding      = "x-rabbitmq-content-encoding"
	HeaderRoutingKey    = "x-rabbitmq-routing-key"
	HeaderExchange      = "x-rabbitmq-exchange"
	HeaderRedelivered   = "x-rabbitmq-redelivered"
	HeaderDeliveryCount = "x-rabbitmq-delivery-count"
	HeaderCorrelationID = "x-rabbitmq-correlation-id"
	HeaderType          = "x-rabbitmq-type"
	HeaderAppID         = "x-rabbitmq-app-id"
	HeaderTimestamp     = "x-rabbitmq-timestamp"
)

// Values of HeaderIDSource.
const (
	IDFromMessageID = "message-id" // the publisher's message-id: stable across redeliveries
	IDFromDelivery  = "delivery"   // no message-id: unique to this delivery, a redelivery gets another
)

// handle is a delivery tag and the session it belongs to, with the publisher's message-id (if any).
type handle struct {
	gen uint64
	tag uint64
	id  string // the message-id property; "" when the publisher set none
}

// receive waits for the current session to have deliveries and takes up to max of them. After
// StopReceiving it returns nothing: what is queued then goes back to the broker (stop.go).
func (d *driver) receive(ctx context.Context, limit int) ([]*source.Message, error) {
	if d.receivingStopped() {
		return nil, nil
	}
	d.start(ctx)
	timer := time.NewTimer(receiveWait)
	defer timer.Stop()
	var errTimer *time.Timer
	for {
		d.mu.Lock()
		s, lastErr, changed := d.sess, d.lastErr, d.changed
		if d.receivingStopped() {
			d.mu.Unlock()
			return nil, nil
		}
		if s != nil && len(s.queue) > 0 {
			n := min(limit, len(s.queue))
			took := make([]amqp.Delivery, n)
			copy(took, s.queue)
			clear(s.queue[:n])
			s.queue = s.queue[n:]
			now := d.now()
			unread := make([]int, n)
			for i := range took {
				unread[i] = d.takeUnreadLocked(took[i].MessageId, now)
			}
			d.mu.Unlock()
			out := make([]*source.Message, n)
			for i := range took {
				out[i] = d.toMessage(s.gen, &took[i], now)
				out[i].Deliveries = max(out[i].Deliveries-unread[i], min(out[i].Deliveries, 1))
			}
			return out, nil
		}
		d.mu.Unlock()
		var data <-chan struct{}
		var failing <-chan time.Time
		if s != nil {
			data = s.data
		} else if lastErr != nil {
			// Not connected: report why, unless an attempt under way succeeds within errorWait.
			if errTimer == nil {
				errTimer = time.NewTimer(errorWait)
				defer errTimer.Stop()
			}
			failing = errTimer.C
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-timer.C:
			return nil, lastErr
		case <-failing:
			return nil, lastErr
		case <-changed:
		case <-data:
		case <-d.stopRecv:
		}
	}
}

// Deliveries the driver had queued and the adapter never took, which went back to the broker (the
// session was lost, or the hold limit handed them back), count in a quorum queue's x-delivery-count,
// but numa never saw them: MaxDeliveries counts deliveries to numa. They are remembered by message-id
// (d.unread) and taken off the broker's count of the message's next delivery here. Without a
// message-id a redelivery cannot be matched.

// addUnreadLocked remembers a queued delivery of message-id id returned to the broker unread. Caller
// holds mu.
func (d *driver) addUnreadLocked(id string) {
	if id != "" {
		d.unread.update(id, d.now(), func(n int) int { return n + 1 })
	}
}

// takeUnreadLocked returns (and forgets) how many deliveries of message-id id went back unread.
// Caller holds mu.
func (d *driver) takeUnreadLocked(id string, now time.Time) int {
	n, _ := d.unread.take(id, now)
	return n
}

// toMessage maps one delivery: offset, headers, keys, event time, delivery count.
func (d *driver) toMessage(gen uint64, dl *amqp.Delivery, now time.Time) *source.Message {
	h := make(map[string]string, len(dl.Headers)+10)
	for k, v := range dl.Headers {
		h[k] = stringify(v)
	}
	m := &source.Message{Handle: handle{gen: gen, tag: dl.DeliveryTag, id: dl.MessageId}, Payload: dl.Body, EventTime: now}
	if dl.MessageId != "" {
		m.ID = dl.MessageId
		h[HeaderIDSource] = IDFromMessageID
		h[HeaderMessageID] = dl.MessageId
	} else {
		m.ID = d.idPrefix + "-" + strconv.FormatUint(gen, 10) + "-" + strconv.FormatUint(dl.DeliveryTag, 10)
		h[HeaderIDSource] = IDFromDelivery
	}
	if !dl.Timestamp.IsZero() && dl.Timestamp.Unix() > 0 {
		m.EventTime = dl.Timestamp
		h[HeaderTimestamp] = strconv.FormatInt(dl.Timestamp.Unix(), 10)
	}
	if dl.RoutingKey != "" {
		m.Keys = []string{dl.RoutingKey}
	}
	set := func(k, v string) {
		if v != "" {
			h[k] = v
		}
	}
	set(HeaderContentType, dl.ContentType)
	set(HeaderEncoding, dl.ContentEncoding)
	set(HeaderRoutingKey, dl.RoutingKey)
	set(HeaderExchange, dl.Exchange)
	set(HeaderCorrelationID, dl.CorrelationId)
	set(HeaderType, dl.Type)
	set(HeaderAppID, dl.AppId)
	h[HeaderRedelivered] = strconv.FormatBool(dl.Redelivered)
	// Quorum queues count earlier deliveries in x-delivery-count (absent on the first); classic
	// queues only say redelivered, and the adapter counts for them (Deliveries 0).
	if n, ok := deliveryCount(dl.Headers); ok {
		m.Deliveries = n + 1
		h[HeaderDeliveryCount] = strconv.Itoa(m.Deliveries)
	}
	m.Headers = h
	return m
}

// deliveryCount reads x-delivery-count (quorum queues).
func deliveryCount(t amqp.Table) (int, bool) {
	v, ok := t["x-delivery-count"]
	if !ok {
		return 0, false
	}
	switch n := v.(type) {
	case int64:
		return int(n), true
	case int32:
		return int(n), true
	case int16:
		return int(n), true
	case int8:
		return int(n), true
	case int:
		return n, true
	case uint8:
		return int(n), true
	case uint16:
		return int(n), true
	case uint32:
		return int(n), true
	case uint64:
		if n <= math.MaxInt32 {
			return int(n), true
		}
	}
	return 0, false
}

// stringify renders an AMQP table value as header text: strings as they are, numbers and booleans in
// Go's notation, byte arrays as text, timestamps in RFC 3339, tables and arrays as JSON.
func stringify(v any) string {
	switch x := v.(type) {
	case nil:
		return ""
	case string:
		return x
	case []byte:
		return string(x)
	case bool:
		return strconv.FormatBool(x)
	case time.Time:
		return x.UTC().Format(time.RFC3339)
	case float32:
		return strconv.FormatFloat(float64(x), 'g', -1, 32)
	case float64:
		return strconv.FormatFloat(x, 'g', -1, 64)
	case amqp.Decimal:
		return decimalString(x)
	case amqp.Table, []any:
		b, err := json.Marshal(jsonable(x))
		if err != nil {
			return fmt.Sprint(x)
		}
		return string(b)
	}
	return fmt.Sprint(v)
}

// jsonable turns AMQP tables and arrays into values encoding/json renders readably (byte arrays as
// text, timestamps as RFC 3339, keys sorted by encoding/json).
func jsonable(v any) any {
	switch x := v.(type) {
	case amqp.Table:
		out := make(map[string]any, len(x))
		for k, e := range x {
			out[k] = jsonable(e)
		}
		return out
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = jsonable(e)
		}
		return out
	case []byte, time.Time, amqp.Decimal:
		return stringify(x)
	}
	return v
}

func decimalString(d amqp.Decimal) string {
	s := strconv.FormatInt(int64(d.Value), 10)
	if d.Scale == 0 {
		return s
	}
	neg := d.Value < 0
	if neg {
		s = s[1:]
	}
	for len(s) <= int(d.Scale) {
		s = "0" + s
	}
	s = s[:len(s)-int(d.Scale)] + "." + s[len(s)-int(d.Scale):]
	if neg {
		s = "-" + s
	}
	return s
}

// sortedTags returns tags in ascending order.
func sortedTags(tags []uint64) []uint64 {
	sort.Slice(tags, func(i, j int) bool { return tags[i] < tags[j] })
	return tags
}
