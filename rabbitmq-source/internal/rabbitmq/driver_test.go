package rabbitmq

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/numaflow-connectors/sources/common/server"
	"github.com/numaflow-connectors/sources/common/source"
)

// fakeChannel records the calls the driver makes and delivers what a test pushes.
type fakeChannel struct {
	amqpChannel // calls a test does not expect panic

	mu         sync.Mutex
	calls      []string
	consumers  map[string]chan amqp.Delivery
	closeErr   chan *amqp.Error
	cancels    chan string
	consumeErr error
	qos        []int
	// cancelBlock, when set, holds Cancel until it is closed (a broker that does not answer).
	cancelBlock chan struct{}
}

func newFakeChannel() *fakeChannel {
	return &fakeChannel{consumers: map[string]chan amqp.Delivery{}}
}

func (c *fakeChannel) record(format string, args ...any) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls = append(c.calls, fmt.Sprintf(format, args...))
}

func (c *fakeChannel) callList() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.calls)
}

func (c *fakeChannel) Qos(n, _ int, _ bool) error {
	c.mu.Lock()
	c.qos = append(c.qos, n)
	c.mu.Unlock()
	return nil
}

func (c *fakeChannel) Consume(_, tag string, _, _, _, _ bool, _ amqp.Table) (<-chan amqp.Delivery, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.consumeErr != nil {
		return nil, c.consumeErr
	}
	ch := make(chan amqp.Delivery, 100)
	c.consumers[tag] = ch
	return ch, nil
}

func (c *fakeChannel) Cancel(tag string, _ bool) error {
	c.mu.Lock()
	block := c.cancelBlock
	c.mu.Unlock()
	if block != nil {
		<-block
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if ch, ok := c.consumers[tag]; ok {
		close(ch)
		delete(c.consumers, tag)
	}
	return nil
}

func (c *fakeChannel) Ack(tag uint64, multiple bool) error {
	c.record("ack %d %v", tag, multiple)
	return nil
}

func (c *fakeChannel) Nack(tag uint64, _, requeue bool) error {
	c.record("nack %d requeue=%v", tag, requeue)
	return nil
}

func (c *fakeChannel) NotifyClose(r chan *amqp.Error) chan *amqp.Error {
	c.mu.Lock()
	c.closeErr = r
	c.mu.Unlock()
	return r
}

func (c *fakeChannel) NotifyCancel(r chan string) chan string {
	c.mu.Lock()
	c.cancels = r
	c.mu.Unlock()
	return r
}

func (c *fakeChannel) Close() error { return nil }

// cancelByBroker ends every consumer as basic.cancel from the broker does (its queue was deleted):
// the cancel notification, then the deliveries channel closed.
func (c *fakeChannel) cancelByBroker() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for tag, ch := range c.consumers {
		if c.cancels != nil {
			c.cancels <- tag
		}
		close(ch)
		delete(c.consumers, tag)
	}
}

// deliver pushes deliveries with tags to the current consumer (its buffer holds them).
func (c *fakeChannel) deliver(tags ...uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, t := range tags {
		for _, ch := range c.consumers {
			ch <- amqp.Delivery{DeliveryTag: t, Body: []byte(fmt.Sprint("m", t)), RoutingKey: "rk", Exchange: "x"}
			break
		}
	}
}

// consuming reports whether a consumer was started (false for a nil channel).
func (c *fakeChannel) consuming() bool {
	if c == nil {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.consumers) > 0
}

// send pushes one delivery to the current consumer, waiting (up to 5 s) while a rewindow replaces it:
// the broker keeps what it has not delivered.
func (c *fakeChannel) send(d amqp.Delivery) {
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		c.mu.Lock()
		for _, ch := range c.consumers {
			ch <- d
			c.mu.Unlock()
			return
		}
		c.mu.Unlock()
	}
}

// kill closes the channel as the broker would.
func (c *fakeChannel) kill(e *amqp.Error) {
	c.mu.Lock()
	r := c.closeErr
	for tag, ch := range c.consumers {
		close(ch)
		delete(c.consumers, tag)
	}
	c.mu.Unlock()
	r <- e
}

type fakeConn struct {
	ch     *fakeChannel
	blocks []chan amqp.Blocking // under ch.mu
	closed bool                 // under ch.mu
}

var _ amqpConn = (*fakeConn)(nil)

func (c *fakeConn) Channel() (amqpChannel, error)                   { return c.ch, nil }
func (c *fakeConn) NotifyClose(r chan *amqp.Error) chan *amqp.Error { return r }
func (c *fakeConn) NotifyBlocked(r chan amqp.Blocking) chan amqp.Blocking {
	c.ch.mu.Lock()
	defer c.ch.mu.Unlock()
	c.blocks = append(c.blocks, r)
	return r
}
func (c *fakeConn) Abort() { _ = c.Close() }
func (c *fakeConn) Close() error {
	c.ch.mu.Lock()
	defer c.ch.mu.Unlock()
	if !c.closed {
		c.closed = true
		for _, b := range c.blocks {
			close(b)
		}
	}
	for tag, ch := range c.ch.consumers {
		close(ch)
		delete(c.ch.consumers, tag)
	}
	return nil
}

// fakeBroker hands out one fake channel per connection.
type fakeBroker struct {
	mu      sync.Mutex
	chans   []*fakeChannel
	dialErr error
}

func (b *fakeBroker) dial(context.Context) (amqpConn, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.dialErr != nil {
		return nil, b.dialErr
	}
	ch := newFakeChannel()
	b.chans = append(b.chans, ch)
	return &fakeConn{ch: ch}, nil
}

func (b *fakeBroker) channel(i int) *fakeChannel {
	b.mu.Lock()
	defer b.mu.Unlock()
	if i >= len(b.chans) {
		return nil
	}
	return b.chans[i]
}

// awaitConsumer starts d's session (a Receive starts it) and returns channel 0 once its consumer is
// up.
func awaitConsumer(t *testing.T, b *fakeBroker, d *driver) *fakeChannel {
	t.Helper()
	waitFor(t, "a consumer", func() bool {
		_, _ = d.Receive(context.Background(), 0)
		return b.channel(0).consuming()
	})
	return b.channel(0)
}

func newFakeDriver(t *testing.T, b *fakeBroker) *driver {
	cfg := testConfig("amqp://u:p@127.0.0.1:1/", "q")
	d := newDriver(&cfg, "tag", server.Budget{Messages: 50, Bytes: 1 << 20}, b.dial, testLogger(t))
	t.Cleanup(func() { _ = d.Close(context.Background()) })
	return d
}

func receiveN(t *testing.T, d *driver, n int) []*source.Message {
	t.Helper()
	var out []*source.Message
	deadline := time.Now().Add(5 * time.Second)
	for len(out) < n && time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		msgs, err := d.Receive(ctx, n-len(out))
		cancel()
		if err != nil && !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Receive: %v", err)
		}
		out = append(out, msgs...)
	}
	if len(out) != n {
		t.Fatalf("received %d of %d", len(out), n)
	}
	return out
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func handlesOf(msgs []*source.Message) []source.Handle {
	hs := make([]source.Handle, len(msgs))
	for i, m := range msgs {
		hs[i] = m.Handle
	}
	return hs
}

// After the channel is lost, answers for its tags never reach the new channel (that would close it
// with PRECONDITION_FAILED): they are dropped, counted and reported as invalid_argument.
func TestStaleTagsAfterChannelLoss(t *testing.T) {
	b := &fakeBroker{}
	d := newFakeDriver(t, b)
	go func() {
		waitFor(t, "a consumer", func() bool { return b.channel(0).consuming() })
		b.channel(0).deliver(1, 2, 3)
	}()
	old := receiveN(t, d, 3)
	b.channel(0).kill(&amqp.Error{Code: amqp.ConnectionForced, Reason: "CONNECTION_FORCED - closed via management plugin"})
	waitFor(t, "a second session", func() bool { return b.channel(1).consuming() })
	waitFor(t, "the new session in use", func() bool { d.mu.Lock(); defer d.mu.Unlock(); return d.sess != nil && d.sess.gen == 2 })
	b.channel(1).deliver(1, 2)
	fresh := receiveN(t, d, 2)

	err := d.Ack(t.Context(), append(handlesOf(old), fresh[0].Handle))
	var be *source.BatchError
	if !errors.As(err, &be) || len(be.Failed) != 3 {
		t.Fatalf("Ack = %v, want the 3 stale handles failed", err)
	}
	for i := range 3 {
		if c := source.Classify(d, be.Failed[i]); c != source.InvalidArgument {
			t.Errorf("stale handle %d classified %s, want invalid_argument", i, c)
		}
	}
	if got := b.channel(1).callList(); !slices.Equal(got, []string{"ack 1 false"}) {
		t.Errorf("calls on the new channel = %q, want only the fresh ack", got)
	}
	if got := b.channel(0).callList(); len(got) != 0 {
		t.Errorf("calls on the lost channel = %q", got)
	}
	if s := d.stats(); s.Stale != 3 || s.Lost != 1 {
		t.Errorf("stats = %+v, want 3 stale answers and 1 lost session", s)
	}
	// Acking twice on the live channel is a no-op.
	if err := d.Ack(t.Context(), []source.Handle{fresh[0].Handle}); err != nil {
		t.Errorf("double ack: %v", err)
	}
	if got := b.channel(1).callList(); len(got) != 1 {
		t.Errorf("double ack reached the broker: %q", got)
	}
}

// Acks of the oldest unanswered tags go out as one multiple ack; a tag below a live one is acked alone.
func TestAckMultiple(t *testing.T) {
	b := &fakeBroker{}
	d := newFakeDriver(t, b)
	go func() {
		waitFor(t, "a consumer", func() bool { return b.channel(0).consuming() })
		b.channel(0).deliver(1, 2, 3, 4, 5, 6)
	}()
	msgs := receiveN(t, d, 6)
	// 1-3 acked while 4-6 are live: one multiple ack of 3.
	if err := d.Ack(t.Context(), handlesOf(msgs[:3])); err != nil {
		t.Fatal(err)
	}
	// 6 alone while 4 and 5 are live: a single ack.
	if err := d.Ack(t.Context(), handlesOf(msgs[5:])); err != nil {
		t.Fatal(err)
	}
	if err := d.Nack(t.Context(), handlesOf(msgs[3:5]), 0); err != nil {
		t.Fatal(err)
	}
	want := []string{"ack 3 true", "ack 6 false", "nack 4 requeue=true", "nack 5 requeue=true"}
	if got := b.channel(0).callList(); !slices.Equal(got, want) {
		t.Errorf("calls = %q, want %q", got, want)
	}
	if err := d.Extend(t.Context(), handlesOf(msgs), time.Minute); err != nil {
		t.Errorf("Extend of answered handles of the live channel: %v", err)
	}
}

// A delivery held for the hold limit is handed back (nack requeue) before consumer_timeout would
// close the channel; its later answer is dropped.
func TestHoldLimitHandsBack(t *testing.T) {
	b := &fakeBroker{}
	d := newFakeDriver(t, b)
	d.holdLimit = 200 * time.Millisecond
	go func() {
		waitFor(t, "a consumer", func() bool { return b.channel(0).consuming() })
		b.channel(0).deliver(7)
	}()
	msgs := receiveN(t, d, 1)
	waitFor(t, "the hand-back", func() bool { return d.stats().Expired == 1 })
	if got := b.channel(0).callList(); !slices.Equal(got, []string{"nack 7 requeue=true"}) {
		t.Errorf("calls = %q", got)
	}
	err := d.Ack(t.Context(), handlesOf(msgs))
	if source.Classify(d, err) != source.InvalidArgument {
		t.Errorf("ack after the hand-back = %v, want invalid_argument", err)
	}
	if got := b.channel(0).callList(); len(got) != 1 {
		t.Errorf("ack after the hand-back reached the broker: %q", got)
	}
}

// A failing connection is reported by Receive, classified, and retried in the background.
func TestReceiveReportsConnectErrors(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want source.Code
	}{
		{"missing queue", &amqp.Error{Code: amqp.NotFound, Reason: "NOT_FOUND - no queue 'q'"}, source.NotFound},
		{"access refused", &amqp.Error{Code: amqp.AccessRefused, Reason: "ACCESS_REFUSED"}, source.PermissionDenied},
		{"vhost missing", &amqp.Error{Code: amqp.InvalidPath, Reason: "vhost not found"}, source.NotFound},
		{"dial refused", fmt.Errorf("dial tcp: %w", errors.New("connection refused")), source.Unknown},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := &fakeBroker{dialErr: tc.err}
			d := newFakeDriver(t, b)
			ctx, cancel := context.WithTimeout(t.Context(), 3*time.Second)
			defer cancel()
			_, err := d.Receive(ctx, 10)
			if err == nil || !errors.Is(err, tc.err) {
				t.Fatalf("Receive error = %v, want %v", err, tc.err)
			}
			if got := d.ErrorCode(err); got != tc.want {
				t.Errorf("ErrorCode = %s, want %s", got, tc.want)
			}
		})
	}
	// A consume refused on a missing queue is not_found too.
	b := &fakeBroker{}
	d := newFakeDriver(t, b)
	d.mu.Lock()
	d.dial = func(ctx context.Context) (amqpConn, error) {
		c, _ := b.dial(ctx)
		c.(*fakeConn).ch.consumeErr = &amqp.Error{Code: amqp.NotFound, Reason: "NOT_FOUND"}
		return c, nil
	}
	d.mu.Unlock()
	_, err := d.Receive(t.Context(), 10)
	if source.Classify(d, err) != source.NotFound {
		t.Errorf("consume on a missing queue: %v (%s)", err, source.Classify(d, err))
	}
}

// The prefetch window is the adapter's two pools, in count and in bytes at the observed size.
func TestWindowFor(t *testing.T) {
	d := &driver{prefetch: 1000, prefetchBytes: 64 << 20}
	tests := []struct {
		est  int64
		want int
	}{
		{0, initialWindow},
		{1024, 2000},
		{512 << 10, 256},
		{64 << 20, 2},
		{200 << 20, 1},
	}
	for _, tc := range tests {
		if got := d.windowFor(tc.est); got != tc.want {
			t.Errorf("windowFor(%d) = %d, want %d", tc.est, got, tc.want)
		}
	}
}

// Before a message size is seen, the window holds no more messages of MAX_MESSAGE_BYTES than
// PREFETCH_BYTES does (at least one), as the adapter's first receives: the broker pushes the whole
// window before the first delivery shows how big messages are, so a restart with a backlog of 50 MiB
// messages must not take ten of them into a 64 MiB budget. The first small delivery widens it.
func TestFirstWindowFitsTheByteBudgetAtMaxMessageBytes(t *testing.T) {
	cfg := testConfig("amqp://u:p@127.0.0.1:1/", "q")
	for _, tc := range []struct {
		name string
		b    server.Budget
		want int
	}{
		{"defaults", server.Budget{Messages: 1000, Bytes: 64 << 20, MaxMessageBytes: 4 << 20}, initialWindow},
		{"64 MiB messages, 64 MiB budget", server.Budget{Messages: 1000, Bytes: 64 << 20, MaxMessageBytes: 64 << 20}, 1},
		{"4 MiB messages, 16 MiB budget", server.Budget{Messages: 1000, Bytes: 16 << 20, MaxMessageBytes: 4 << 20}, 4},
		{"budget below one message", server.Budget{Messages: 1000, Bytes: 1 << 20, MaxMessageBytes: 4 << 20}, 1},
		{"small count budget", server.Budget{Messages: 2, Bytes: 64 << 20, MaxMessageBytes: 1 << 20}, 4},
		{"MAX_MESSAGE_BYTES unknown", server.Budget{Messages: 1000, Bytes: 1 << 20}, initialWindow},
	} {
		d := newDriver(&cfg, "tag", tc.b, nil, testLogger(t))
		if got := d.windowFor(0); got != tc.want {
			t.Errorf("%s: first window %d, want %d", tc.name, got, tc.want)
		}
	}

	// The first consumer's prefetch, then a small delivery widens it.
	b := &fakeBroker{}
	d := newDriver(&cfg, "tag", server.Budget{Messages: 50, Bytes: 64 << 20, MaxMessageBytes: 64 << 20}, b.dial, testLogger(t))
	t.Cleanup(func() { _ = d.Close(context.Background()) })
	c := awaitConsumer(t, b, d)
	c.mu.Lock()
	first := c.qos[0]
	c.mu.Unlock()
	if first != 1 {
		t.Fatalf("first prefetch %d with PREFETCH_BYTES 64 MiB and MAX_MESSAGE_BYTES 64 MiB, want 1", first)
	}
	c.send(amqp.Delivery{DeliveryTag: 1, Body: make([]byte, 1024)})
	target := func() int { d.mu.Lock(); defer d.mu.Unlock(); return d.sess.target }
	waitFor(t, "the window for 1 KiB deliveries", func() bool { return target() == 100 })
}

// A bigger payload narrows the window at once: the consumer is replaced with a smaller prefetch.
func TestWindowFollowsMessageSize(t *testing.T) {
	b := &fakeBroker{}
	d := newFakeDriver(t, b) // prefetch 50, 1 MiB
	c := awaitConsumer(t, b, d)
	c.send(amqp.Delivery{DeliveryTag: 1, Body: make([]byte, 100)})
	target := func() int { d.mu.Lock(); defer d.mu.Unlock(); return d.sess.target }
	waitFor(t, "a wider window", func() bool { return target() == 100 })
	c.send(amqp.Delivery{DeliveryTag: 2, Body: make([]byte, 256<<10)})
	waitFor(t, "a narrower window", func() bool { return target() == 8 })
	// The new consumer's prefetch leaves room for the two deliveries still unanswered.
	c.mu.Lock()
	if last := c.qos[len(c.qos)-1]; last != 6 {
		t.Errorf("prefetch of the narrowed consumer = %d, want 8 - 2 unanswered", last)
	}
	c.mu.Unlock()
	// Both deliveries stay live on the channel.
	msgs := receiveN(t, d, 2)
	if err := d.Ack(t.Context(), handlesOf(msgs)); err != nil {
		t.Fatal(err)
	}
}

// The window follows the whole size of a delivery, headers included (PREFETCH_BYTES counts them): a
// small body under large headers must not open a window sized for the body alone.
func TestWindowCountsHeaders(t *testing.T) {
	b := &fakeBroker{}
	d := newFakeDriver(t, b) // prefetch 50, 1 MiB: the window is 2 MiB
	c := awaitConsumer(t, b, d)
	big := amqp.Table{"trace": string(make([]byte, 100<<10))}
	c.send(amqp.Delivery{DeliveryTag: 1, Body: []byte("x"), Headers: big})
	target := func() int { d.mu.Lock(); defer d.mu.Unlock(); return d.sess.target }
	waitFor(t, "the window sized from the delivery", func() bool { return target() != initialWindow })
	if got := target(); got > 2*(1<<20)/(100<<10) {
		t.Fatalf("window %d for deliveries of 100 KiB headers and a 1-byte body: %d KiB unacked allowed, want at most 2 MiB",
			got, got*100)
	}
}
