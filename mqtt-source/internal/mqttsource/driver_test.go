package mqttsource

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/autopaho"
	"github.com/eclipse/paho.golang/paho"
	"github.com/gorilla/websocket"

	"github.com/numaflow-connectors/sources/common/source"
)

// receiveN receives until n messages came or a second passed.
func receiveN(t *testing.T, d *driver, n int) []*source.Message {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Second)
	defer cancel()
	var out []*source.Message
	for len(out) < n {
		msgs, err := d.Receive(ctx, n-len(out))
		if err != nil {
			t.Fatalf("receive: %v", err)
		}
		if len(msgs) == 0 {
			break
		}
		out = append(out, msgs...)
	}
	if len(out) != n {
		t.Fatalf("received %d messages, want %d", len(out), n)
	}
	return out
}

func handles(msgs ...*source.Message) []source.Handle {
	hs := make([]source.Handle, len(msgs))
	for i, m := range msgs {
		hs[i] = m.Handle
	}
	return hs
}

func TestReceiveInOrderAndAckOnce(t *testing.T) {
	d, _ := newFakeDriver(t, nil)
	conn := &fakeConn{}
	for i := uint16(1); i <= 3; i++ {
		d.deliver(conn, pub(i, "factory/a/temperature", string(rune('a'+i-1))))
	}
	msgs := receiveN(t, d, 3)
	for i, m := range msgs {
		if string(m.Payload) != string(rune('a'+i)) {
			t.Fatalf("message %d is %q: not in arrival order", i, m.Payload)
		}
	}
	if msgs[0].ID == msgs[1].ID {
		t.Fatalf("two deliveries share the id %q", msgs[0].ID)
	}
	if len(conn.acks()) != 0 {
		t.Fatalf("acknowledged before numa acked: %v", conn.acks())
	}
	if err := d.Ack(t.Context(), handles(msgs[2], msgs[0])); err != nil {
		t.Fatalf("ack: %v", err)
	}
	if err := d.Ack(t.Context(), handles(msgs[2], msgs[0], msgs[1])); err != nil {
		t.Fatalf("second ack: %v", err)
	}
	if got := conn.acks(); !slices.Equal(got, []uint16{3, 1, 2}) {
		t.Fatalf("acknowledged packets %v, want each once (3, 1, then 2; paho puts them in order)", got)
	}
}

func TestAckOfLostConnectionIsInvalid(t *testing.T) {
	d, _ := newFakeDriver(t, nil)
	old := &fakeConn{}
	d.deliver(old, pub(1, "factory/a/temperature", "held"))
	d.deliver(old, pub(2, "factory/a/temperature", "queued"))
	held := receiveN(t, d, 1)
	d.connectionDown()
	d.connectionUp(true)
	// The queued message of the lost connection is gone: the broker sends it again.
	fresh := &fakeConn{}
	d.deliver(fresh, pub(1, "factory/a/temperature", "queued"))
	again := receiveN(t, d, 1)
	if string(again[0].Payload) != "queued" {
		t.Fatalf("received %q after the reconnect, want only the redelivery", again[0].Payload)
	}
	err := d.Ack(t.Context(), handles(held...))
	if code := source.Classify(d, err); code != source.InvalidArgument {
		t.Fatalf("ack of a lost connection's delivery: %v (%s), want invalid_argument", err, code)
	}
	if len(old.acks())+len(fresh.acks()) != 0 {
		t.Fatalf("a stale handle was acknowledged on a connection (old %v, new %v): packet ids are reused", old.acks(), fresh.acks())
	}
	if err := d.Ack(t.Context(), handles(again...)); err != nil || !slices.Equal(fresh.acks(), []uint16{1}) {
		t.Fatalf("ack on the new connection: %v, acks %v", err, fresh.acks())
	}
}

// A resumed session's broker sends its unacknowledged messages right after CONNACK, and paho can hand
// them over before autopaho reports the connection up: acknowledging one in that moment must reach
// the broker. Refused, it would never be sent again on that connection, and every later
// acknowledgement would wait behind it (MQTT acknowledges in order) until the next reconnect.
func TestAckBeforeConnectionUpIsSent(t *testing.T) {
	d, _ := newFakeDriver(t, nil)
	d.connectionDown()
	fresh := &fakeConn{}
	d.deliver(fresh, pub(7, "factory/a/temperature", "redelivered"))
	msgs := receiveN(t, d, 1)
	if err := d.Ack(t.Context(), handles(msgs...)); err != nil || !slices.Equal(fresh.acks(), []uint16{7}) {
		t.Fatalf("ack before the connection was reported up: %v, acks %v", err, fresh.acks())
	}
	d.connectionUp(true)
}

// A message id from MQTT_ID_PROPERTY: a second copy replaces the first at the adapter, so acknowledging
// the copy acknowledges both (an unacknowledged first copy would hold every later acknowledgement).
func TestAckOfCopyAcksEarlierCopies(t *testing.T) {
	d, _ := newFakeDriver(t, func(c *Config) { c.IDProperty = "msg-id" })
	conn := &fakeConn{}
	d.deliver(conn, pub(1, "factory/a/temperature", "x", "msg-id", "m1"))
	d.deliver(conn, pub(2, "factory/a/temperature", "y", "msg-id", "m2"))
	d.deliver(conn, pub(3, "factory/a/temperature", "x", "msg-id", "m1"))
	msgs := receiveN(t, d, 3)
	if msgs[0].ID != "m1" || msgs[2].ID != "m1" || msgs[1].ID != "m2" {
		t.Fatalf("ids %q %q %q, want the property's values", msgs[0].ID, msgs[1].ID, msgs[2].ID)
	}
	if err := d.Ack(t.Context(), handles(msgs[2])); err != nil {
		t.Fatal(err)
	}
	if got := conn.acks(); !slices.Equal(got, []uint16{1, 3}) {
		t.Fatalf("acknowledged %v, want both copies of m1 (1, 3)", got)
	}
}

func TestNackHandsBackAfterDelay(t *testing.T) {
	d, _ := newFakeDriver(t, nil)
	conn := &fakeConn{}
	d.deliver(conn, pub(1, "factory/a/temperature", "again"))
	first := receiveN(t, d, 1)
	first[0].Payload = nil // the adapter may drop the body of what it releases
	start := time.Now()
	if err := d.Nack(t.Context(), handles(first...), 300*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	again := receiveN(t, d, 1)
	if took := time.Since(start); took < 250*time.Millisecond {
		t.Fatalf("handed back after %s, want the 300ms delay", took)
	}
	if again[0].ID != first[0].ID || string(again[0].Payload) != "again" || again[0].Handle != first[0].Handle {
		t.Fatalf("handed back %q %q, want the same id and payload", again[0].ID, again[0].Payload)
	}
	if len(conn.acks()) != 0 {
		t.Fatal("a nack acknowledged the message")
	}
}

func TestReceiveReportsConnectFailure(t *testing.T) {
	c := validConfig()
	filters, _ := parseTopics(c.Topics)
	d := newDriver(&c, "client-0", "g", filters, serverBudget(), testLogger(t))
	d.api = &fakeAPI{}
	defer d.Close(context.Background())
	d.connectError(autopaho.NewConnackError(errors.New("bad user name or password"), &paho.Connack{ReasonCode: 0x86}))
	start := time.Now()
	msgs, err := d.Receive(t.Context(), 10)
	if len(msgs) != 0 || err == nil {
		t.Fatalf("receive while refused: %d messages, %v", len(msgs), err)
	}
	if code := d.ErrorCode(err); code != source.PermissionDenied {
		t.Fatalf("refused connection classified %s, want permission_denied: %v", code, err)
	}
	if took := time.Since(start); took < downWait/2 || took > 3*downWait {
		t.Fatalf("receive reported the failure after %s, want about %s", took, downWait)
	}
	// A cancelled receive returns at once, with nothing.
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if msgs, err := d.Receive(ctx, 10); len(msgs) != 0 || (err != nil && d.ErrorCode(err) != source.PermissionDenied) {
		t.Fatalf("cancelled receive: %d, %v", len(msgs), err)
	}
}

func TestSubscribeRefused(t *testing.T) {
	d, api := newFakeDriver(t, func(c *Config) { c.Topics = "a/#,b/#" })
	api.mu.Lock()
	api.suback, api.subErr = &paho.Suback{Reasons: []byte{0x01, 0x87}}, errors.New("at least one requested subscription failed")
	api.mu.Unlock()
	d.connectionUp(true)
	d.subscribe(t.Context(), d.api)
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	err := d.Check(ctx)
	var re *ReasonError
	if !errors.As(err, &re) || re.Code != 0x87 || d.ErrorCode(err) != source.PermissionDenied {
		t.Fatalf("check after a refused subscription: %v", err)
	}
	if want := "subscribing to b/#"; re.Op != want {
		t.Fatalf("refusal names %q, want %q", re.Op, want)
	}
}

func TestSubscriptions(t *testing.T) {
	for _, tt := range []struct {
		group     string
		skip      bool
		topic     string
		retain    byte
		qos       int
		wantTopic string
	}{
		{"orders-in", false, "a/+", 1, 1, "$share/orders-in/a/+"},
		{"", true, "a/+", 2, 2, "a/+"},
	} {
		d, api := newFakeDriver(t, func(c *Config) { c.Topics, c.SkipRetained, c.QoS = tt.topic, tt.skip, tt.qos })
		d.group = tt.group
		d.subscribe(t.Context(), d.api)
		api.mu.Lock()
		s := api.subs[len(api.subs)-1].Subscriptions[0]
		api.mu.Unlock()
		if s.Topic != tt.wantTopic || s.RetainHandling != tt.retain || int(s.QoS) != tt.qos {
			t.Errorf("group %q: subscribed %+v, want topic %q retain handling %d qos %d", tt.group, s, tt.wantTopic, tt.retain, tt.qos)
		}
	}
}

func TestSkipRetained(t *testing.T) {
	d, _ := newFakeDriver(t, func(c *Config) { c.SkipRetained = true })
	conn := &fakeConn{}
	r := pub(1, "factory/a/temperature", "old")
	r.Retain = true
	d.deliver(conn, r)
	d.deliver(conn, pub(2, "factory/a/temperature", "new"))
	msgs := receiveN(t, d, 1)
	if string(msgs[0].Payload) != "new" || !slices.Equal(conn.acks(), []uint16{1}) {
		t.Fatalf("got %q, acks %v: the retained message must be acknowledged and skipped", msgs[0].Payload, conn.acks())
	}
	// Skipped, it still counts as delivered for the connection's reader (else the reader would wait
	// for bytes nobody will ever receive).
	d.publishRead(1 << 30)
	d.deliver(conn, r)
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.inPahoBytes != 0 || len(d.inPaho) != 0 {
		t.Fatalf("%d bytes of %d packets still counted as read and not delivered", d.inPahoBytes, len(d.inPaho))
	}
}

// More than the budget waiting for Receive blocks paho's delivery (so it reads the socket no further)
// until Receive makes room.
func TestDeliverBlocksBeyondBudget(t *testing.T) {
	d, _ := newFakeDriver(t, func(c *Config) { c.ReceiveMax = 2 })
	conn := &fakeConn{}
	d.deliver(conn, pub(1, "factory/a/temperature", "1"))
	d.deliver(conn, pub(2, "factory/a/temperature", "2"))
	done := make(chan struct{})
	go func() {
		d.deliver(conn, pub(3, "factory/a/temperature", "3"))
		close(done)
	}()
	select {
	case <-done:
		t.Fatal("a third message was queued beyond a receive maximum of 2")
	case <-time.After(100 * time.Millisecond):
	}
	receiveN(t, d, 2)
	select {
	case <-done:
	case <-time.After(time.Second):
		t.Fatal("delivery still blocked after receive made room")
	}
	receiveN(t, d, 1)
	// Big messages: the byte budget (1 MiB here) blocks as well, but one message always fits.
	big := string(make([]byte, 700<<10))
	d.deliver(conn, pub(4, "factory/a/temperature", big))
	done2 := make(chan struct{})
	go func() {
		d.deliver(conn, pub(5, "factory/a/temperature", big))
		close(done2)
	}()
	select {
	case <-done2:
		t.Fatal("1.4 MiB queued beyond a byte budget of 1 MiB")
	case <-time.After(100 * time.Millisecond):
	}
	receiveN(t, d, 1)
	<-done2
}

func TestCloseUnblocksAndIsIdempotent(t *testing.T) {
	d, api := newFakeDriver(t, func(c *Config) { c.ReceiveMax = 1 })
	conn := &fakeConn{}
	d.deliver(conn, pub(1, "factory/a/temperature", "1"))
	done := make(chan struct{})
	go func() {
		d.deliver(conn, pub(2, "factory/a/temperature", "2"))
		close(done)
	}()
	for range 3 {
		if err := d.Close(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	<-done
	if api.disc.Load() != 1 {
		t.Fatalf("disconnected %d times, want once", api.disc.Load())
	}
	if _, err := d.Receive(t.Context(), 1); !errors.Is(err, errClosed) {
		t.Fatalf("receive after close: %v", err)
	}
	if len(conn.acks()) != 0 {
		t.Fatal("close acknowledged messages numa never acked")
	}
}

func TestDeadLetter(t *testing.T) {
	d, api := newFakeDriver(t, func(c *Config) { c.DeadLetterTopic = "dlq/temperature" })
	conn := &fakeConn{}
	p := pub(7, "factory/a/temperature", "poison", "site", "x")
	p.Properties.ContentType = "text/plain"
	d.deliver(conn, p)
	m := receiveN(t, d, 1)[0]
	m.Deliveries = 3
	api.mu.Lock()
	api.pubErr = errors.New("connection lost")
	api.mu.Unlock()
	if err := d.DeadLetter(t.Context(), m, "bad input"); err == nil || len(conn.acks()) != 0 {
		t.Fatalf("failed publish: %v, acks %v; want an error and no acknowledgement", err, conn.acks())
	}
	api.mu.Lock()
	api.pubErr, api.pubResp = errors.New("error publishing: not authorized"), &paho.PublishResponse{ReasonCode: 0x87}
	api.mu.Unlock()
	if err := d.DeadLetter(t.Context(), m, "bad input"); d.ErrorCode(err) != source.PermissionDenied || len(conn.acks()) != 0 {
		t.Fatalf("publish refused in the PUBACK: %v (%s), acks %v; want permission_denied and no acknowledgement", err, d.ErrorCode(err), conn.acks())
	}
	api.mu.Lock()
	api.pubErr, api.pubResp = nil, nil
	api.mu.Unlock()
	if err := d.DeadLetter(t.Context(), m, "bad input"); err != nil {
		t.Fatal(err)
	}
	got := api.published[0]
	u := got.Properties.User
	if got.Topic != "dlq/temperature" || got.QoS != 1 || string(got.Payload) != "poison" || got.Properties.ContentType != "text/plain" ||
		u.Get("site") != "x" || u.Get(PropDeadLetterReason) != "bad input" || u.Get(PropDeadLetterDeliveries) != "3" ||
		u.Get(PropDeadLetterTopic) != "factory/a/temperature" {
		t.Fatalf("dead letter %+v, properties %+v", got, got.Properties)
	}
	if !slices.Equal(conn.acks(), []uint16{7}) {
		t.Fatalf("original acknowledged %v, want 7 once it was dead-lettered", conn.acks())
	}
	d2, _ := newFakeDriver(t, nil)
	if err := d2.DeadLetter(t.Context(), m, "x"); !errors.Is(err, source.ErrNoDeadLetter) {
		t.Fatalf("without a topic: %v, want ErrNoDeadLetter", err)
	}
}

func TestMapping(t *testing.T) {
	d, _ := newFakeDriver(t, func(c *Config) { c.EventTimeProperty = "ts" })
	conn := &fakeConn{}
	p := pub(1, "factory/a/temperature", "p", "ts", "2026-01-02T03:04:05.5Z", "tag", "a", "tag", "b", HeaderTopic, "forged")
	p.Properties.ContentType, p.Properties.ResponseTopic, p.Properties.CorrelationData = "application/json", "replies", []byte{0xff, 0}
	d.deliver(conn, p)
	q := pub(2, "factory/b/temperature", "q", "ts", "1700000000123")
	q.QoS = 2
	d.deliver(conn, q)
	d.deliver(conn, pub(3, "factory/c/temperature", "r", "ts", "yesterday"))
	before := time.Now()
	msgs := receiveN(t, d, 3)
	h := msgs[0].Headers
	want := map[string]string{
		HeaderTopic: "factory/a/temperature", HeaderQoS: "1", HeaderRetain: "false", HeaderDup: "false",
		HeaderContentType: "application/json", HeaderResponseTopic: "replies",
		HeaderCorrelationData: base64.StdEncoding.EncodeToString([]byte{0xff, 0}), "tag": "a,b", "ts": "2026-01-02T03:04:05.5Z",
	}
	for k, v := range want {
		if h[k] != v {
			t.Errorf("header %s = %q, want %q", k, h[k], v)
		}
	}
	if len(msgs[0].Keys) != 1 || msgs[0].Keys[0] != "factory/a/temperature" {
		t.Errorf("keys %q, want the topic", msgs[0].Keys)
	}
	if want := time.Date(2026, 1, 2, 3, 4, 5, 5e8, time.UTC); !msgs[0].EventTime.Equal(want) {
		t.Errorf("event time %s, want %s from RFC 3339", msgs[0].EventTime, want)
	}
	if want := time.UnixMilli(1700000000123); !msgs[1].EventTime.Equal(want) || msgs[1].Headers[HeaderQoS] != "2" {
		t.Errorf("event time %s, want %s from unix milliseconds (qos %s)", msgs[1].EventTime, want, msgs[1].Headers[HeaderQoS])
	}
	if et := msgs[2].EventTime; et.Before(before.Add(-time.Second)) || et.After(time.Now()) {
		t.Errorf("invalid event time property gave %s, want the receive time", et)
	}
}

func TestParseEventTime(t *testing.T) {
	for _, tt := range []struct {
		in string
		ok bool
	}{
		{"2026-01-02T03:04:05Z", true}, {"2026-01-02T03:04:05+02:00", true}, {"1700000000000", true},
		{"", false}, {"0", false}, {"-5", false}, {"soon", false}, {"2026-01-02", false},
		{time.Now().Add(48 * time.Hour).Format(time.RFC3339), false},
	} {
		if _, ok := parseEventTime(tt.in); ok != tt.ok {
			t.Errorf("parseEventTime(%q) ok = %v, want %v", tt.in, ok, tt.ok)
		}
	}
}

func TestErrorCode(t *testing.T) {
	for _, tt := range []struct {
		err  error
		want source.Code
	}{
		{autopaho.NewConnackError(errors.New("x"), &paho.Connack{ReasonCode: 0x86}), source.PermissionDenied},
		{autopaho.NewConnackError(errors.New("x"), &paho.Connack{ReasonCode: 0x87}), source.PermissionDenied},
		{autopaho.NewConnackError(errors.New("x"), &paho.Connack{ReasonCode: 0x89}), source.Unavailable},
		{autopaho.NewConnackError(errors.New("x"), &paho.Connack{ReasonCode: 0x9F}), source.Throttled},
		{&ReasonError{Op: "subscribing to a", Code: 0x87}, source.PermissionDenied},
		{&ReasonError{Op: "subscribing to a", Code: 0x9E}, source.FailedPrecondition},
		{&ReasonError{Op: "subscribing to a", Code: 0x8F}, source.InvalidArgument},
		{errDown, source.Unavailable},
		{autopaho.ConnectionDownError, source.Unavailable},
		{errClosed, source.Canceled},
		{fmt.Errorf("failed to connect to wss://b/mqtt: %w", &websocket.CloseError{Code: websocket.CloseAbnormalClosure, Text: "unexpected EOF"}), source.Unavailable},
		{fmt.Errorf("%w: %w", errConnLost, errors.New("ping handler error: no packet from the broker for 2s")), source.Unavailable},
		{errors.New("something else"), source.Unknown},
	} {
		if got := errorCode(tt.err); got != tt.want {
			t.Errorf("errorCode(%v) = %s, want %s", tt.err, got, tt.want)
		}
	}
}

func TestCapabilities(t *testing.T) {
	d, _ := newFakeDriver(t, func(c *Config) { c.ReceiveMax = 300 })
	c := d.Capabilities()
	if !c.LocalRedelivery || c.Lease != 0 || c.MaxReceive != 300 {
		t.Fatalf("capabilities %+v", c)
	}
	if n, err := d.Backlog(t.Context()); n != -1 || err != nil {
		t.Fatalf("backlog %d, %v; want -1 (unknown)", n, err)
	}
}

// The connection's reader waits while Receive Maximum messages, read or queued, wait for Receive (a
// broker may send more than its window), and goes on once Receive takes one.
func TestReaderWaitsAtReceiveMaximum(t *testing.T) {
	d, _ := newFakeDriver(t, func(c *Config) { c.ReceiveMax = 2 })
	conn := &fakeConn{}
	d.publishRead(10)
	d.publishRead(10)
	done := make(chan struct{})
	go func() {
		d.waitForRoom()
		close(done)
	}()
	d.deliver(conn, pub(1, "factory/a/temperature", "1")) // read 1 + queued 1: still 2
	select {
	case <-done:
		t.Fatal("the reader went on with 2 messages waiting and a receive maximum of 2")
	case <-time.After(100 * time.Millisecond):
	}
	d.mu.Lock()
	gated := d.gated
	d.mu.Unlock()
	if !gated {
		t.Fatal("the waiting reader is not marked gated: the pinger would count the wait as silence")
	}
	receiveN(t, d, 1)
	select {
	case <-done:
	case <-time.After(time.Second):
		t.Fatal("the reader still waits after receive took a message")
	}
}

// A broker may grant a shorter session expiry than MQTT_SESSION_EXPIRY asks for (MQTT 5, 3.2.2.3.2);
// the source then warns, since a replica away longer loses its messages.
func TestGrantedExpiry(t *testing.T) {
	u := func(v uint32) *uint32 { return &v }
	for _, tt := range []struct {
		ca     *paho.Connack
		got    uint32
		capped bool
	}{
		{&paho.Connack{}, 3600, false},
		{&paho.Connack{Properties: &paho.ConnackProperties{}}, 3600, false},
		{&paho.Connack{Properties: &paho.ConnackProperties{SessionExpiryInterval: u(3600)}}, 3600, false},
		{&paho.Connack{Properties: &paho.ConnackProperties{SessionExpiryInterval: u(300)}}, 300, true},
	} {
		if got, capped := grantedExpiry(tt.ca, 3600); got != tt.got || capped != tt.capped {
			t.Errorf("grantedExpiry(%+v, 3600) = %d, %v; want %d, %v", tt.ca.Properties, got, capped, tt.got, tt.capped)
		}
	}
}
