package rabbitmq

import (
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

func TestToMessage(t *testing.T) {
	d := &driver{idPrefix: "rmq-p"}
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	ts := time.Date(2025, 6, 7, 8, 9, 10, 0, time.UTC)
	t.Run("message-id, quorum count, timestamp", func(t *testing.T) {
		dl := &amqp.Delivery{DeliveryTag: 9, MessageId: "m-1", Timestamp: ts, RoutingKey: "orders.eu", Exchange: "x",
			ContentType: "application/json", Redelivered: true, Body: []byte("{}"),
			Headers: amqp.Table{"x-delivery-count": int64(2), "n": int32(5), "b": true, "f": 1.5, "raw": []byte("bytes"),
				"tbl": amqp.Table{"k": "v"}, "arr": []any{"a", int64(1)}, "dec": amqp.Decimal{Scale: 2, Value: -1234}}}
		m := d.toMessage(3, dl, now)
		if m.ID != "m-1" || m.Handle != (handle{gen: 3, tag: 9, id: "m-1"}) || !m.EventTime.Equal(ts) || m.Deliveries != 3 {
			t.Errorf("id %q handle %v event %s deliveries %d", m.ID, m.Handle, m.EventTime, m.Deliveries)
		}
		if len(m.Keys) != 1 || m.Keys[0] != "orders.eu" {
			t.Errorf("keys %q", m.Keys)
		}
		want := map[string]string{HeaderIDSource: IDFromMessageID, HeaderMessageID: "m-1", HeaderRoutingKey: "orders.eu",
			HeaderExchange: "x", HeaderContentType: "application/json", HeaderRedelivered: "true", HeaderDeliveryCount: "3",
			"n": "5", "b": "true", "f": "1.5", "raw": "bytes", "tbl": `{"k":"v"}`, "arr": `["a",1]`, "dec": "-12.34",
			HeaderTimestamp: "1749283750"}
		for k, v := range want {
			if m.Headers[k] != v {
				t.Errorf("header %s = %q, want %q", k, m.Headers[k], v)
			}
		}
	})
	t.Run("no message-id, classic", func(t *testing.T) {
		m := d.toMessage(4, &amqp.Delivery{DeliveryTag: 11}, now)
		if m.ID != "rmq-p-4-11" || m.Headers[HeaderIDSource] != IDFromDelivery || !m.EventTime.Equal(now) || m.Deliveries != 0 || m.Keys != nil {
			t.Errorf("message %+v", m)
		}
	})
}
