package rabbitmq

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/numaflow-connectors/sources/common/numatest"
	"github.com/numaflow-connectors/sources/common/server"
	"github.com/numaflow-connectors/sources/common/source"
	"github.com/numaflow-connectors/sources/rabbitmq-source/rabbitmqtest"
)

// StopReceiving (shutdown): the consumer is cancelled and never started again, what the driver queued
// for Receive goes back to the broker, and what the adapter holds stays answerable.

// supervisorDone returns a channel closed once the driver's supervisor and forwarders have returned.
func supervisorDone(d *driver) <-chan struct{} {
	done := make(chan struct{})
	go func() { d.runWG.Wait(); close(done) }()
	return done
}

// With a consumer: StopReceiving cancels it and nacks (requeue) what Receive has not taken, except a
// second copy of a message the adapter holds; acks of what the adapter holds still go out; no resize,
// widen or lost channel starts a consumer again; a second call returns at once.
func TestStopReceivingCancelsTheConsumer(t *testing.T) {
	b := &fakeBroker{}
	d := newFakeDriver(t, b) // prefetch 50, 1 MiB
	c := awaitConsumer(t, b, d)
	c.send(amqp.Delivery{DeliveryTag: 1, MessageId: "a", Body: []byte("a")})
	waitFor(t, "the window widened", func() bool { d.mu.Lock(); defer d.mu.Unlock(); return d.sess.target == 100 })
	held := receiveN(t, d, 1)
	for i, id := range []string{"b", "a", "c", "", "d"} { // tags 2-6; 3 is a second copy of "a"
		c.send(amqp.Delivery{DeliveryTag: uint64(i + 2), MessageId: id, Body: []byte(id)})
	}
	queued := func() int { d.mu.Lock(); defer d.mu.Unlock(); return len(d.sess.queue) }
	waitFor(t, "5 deliveries queued", func() bool { return queued() == 5 })
	held = append(held, receiveN(t, d, 1)...) // the adapter holds 1 ("a") and 2
	d.mu.Lock()
	s := d.sess
	d.mu.Unlock()

	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
	defer cancel()
	if err := d.StopReceiving(ctx); err != nil {
		t.Fatalf("StopReceiving: %v", err)
	}
	if c.consuming() {
		t.Fatal("the consumer is still active after StopReceiving")
	}
	want := []string{"nack 4 requeue=true", "nack 5 requeue=true", "nack 6 requeue=true"}
	if got := c.callList(); !slices.Equal(got, want) {
		t.Errorf("calls after StopReceiving = %q, want the queued deliveries handed back (3 stays with its twin): %q", got, want)
	}
	began := time.Now()
	if msgs, err := d.Receive(t.Context(), 10); len(msgs) != 0 || err != nil || time.Since(began) > 500*time.Millisecond {
		t.Errorf("Receive after StopReceiving = %d messages, %v after %s; want none at once", len(msgs), err, time.Since(began))
	}
	if err := d.StopReceiving(t.Context()); err != nil {
		t.Errorf("second StopReceiving: %v", err)
	}

	// What the adapter holds is still answered on the channel: "a" with its second copy.
	if err := d.Ack(t.Context(), handlesOf(held)); err != nil {
		t.Fatalf("Ack after StopReceiving: %v", err)
	}
	if got := c.callList()[len(want):]; !slices.Equal(got, []string{"ack 3 true"}) {
		t.Errorf("acks after StopReceiving = %q, want 1 and 2 with 3, the second copy of a, as one multiple ack", got)
	}
	d.mu.Lock()
	live, left := len(s.live), len(s.queue)
	d.mu.Unlock()
	if live != 0 || left != 0 {
		t.Errorf("after the acks: %d live, %d queued; want none", live, left)
	}

	// Neither a new window nor a lost channel starts a consumer again.
	c.mu.Lock()
	qos := len(c.qos)
	c.mu.Unlock()
	d.mu.Lock()
	d.sizeEst = 900 << 10 // a window of 2
	d.mu.Unlock()
	for range 2 { // the second is taken once serve is done with the first
		d.resize <- struct{}{}
	}
	waitFor(t, "the resizes taken", func() bool { return len(d.resize) == 0 })
	c.mu.Lock()
	if len(c.qos) != qos || len(c.consumers) != 0 {
		t.Errorf("a new window after StopReceiving started a consumer (basic.qos %v)", c.qos)
	}
	c.mu.Unlock()
	c.kill(&amqp.Error{Code: amqp.ConnectionForced, Reason: "CONNECTION_FORCED"})
	select {
	case <-supervisorDone(d):
	case <-time.After(5 * time.Second):
		t.Fatal("the supervisor still runs 5 s after the channel was lost")
	}
	if c.consuming() || b.channel(1) != nil {
		t.Errorf("a consumer or a connection after StopReceiving (new connection: %v)", b.channel(1) != nil)
	}
}

// Without a connection StopReceiving only marks the driver stopped: the supervisor, which was
// reconnecting, never connects and consumes again.
func TestStopReceivingWhileDisconnected(t *testing.T) {
	b := &fakeBroker{dialErr: fmt.Errorf("dial tcp: %w", errors.New("connection refused"))}
	d := newFakeDriver(t, b)
	if _, err := d.Receive(t.Context(), 10); err == nil {
		t.Fatal("Receive without a broker: no error")
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Second)
	defer cancel()
	began := time.Now()
	if err := d.StopReceiving(ctx); err != nil || time.Since(began) > 100*time.Millisecond {
		t.Fatalf("StopReceiving without a connection = %v after %s, want nil at once", err, time.Since(began))
	}
	b.mu.Lock()
	b.dialErr = nil // the broker is back
	b.mu.Unlock()
	select { // as a passing check does: reconnect without waiting out the backoff
	case d.retry <- struct{}{}:
	default:
	}
	select {
	case <-supervisorDone(d):
	case <-time.After(5 * time.Second):
		t.Fatal("the supervisor still runs 5 s after StopReceiving")
	}
	if b.channel(0) != nil {
		t.Errorf("connected and consumed after StopReceiving")
	}
	if msgs, err := d.Receive(t.Context(), 10); len(msgs) != 0 || err != nil {
		t.Errorf("Receive after StopReceiving = %d messages, %v", len(msgs), err)
	}
}

// A broker that does not answer basic.cancel: StopReceiving returns when its context ends.
func TestStopReceivingBoundedByContext(t *testing.T) {
	b := &fakeBroker{}
	d := newFakeDriver(t, b)
	c := awaitConsumer(t, b, d)
	block := make(chan struct{})
	c.mu.Lock()
	c.cancelBlock = block
	c.mu.Unlock()
	t.Cleanup(func() { close(block) }) // before the driver's Close (cleanups run last first)
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	began := time.Now()
	err := d.StopReceiving(ctx)
	if !errors.Is(err, context.DeadlineExceeded) || time.Since(began) > time.Second {
		t.Errorf("StopReceiving with a silent broker = %v after %s, want the deadline within 1 s", err, time.Since(began))
	}
}

// otherConsumer consumes the queue on a connection of its own (another replica), acking every
// delivery, and records what it got and when.
type otherConsumer struct {
	mu  sync.Mutex
	got []amqp.Delivery
	at  []time.Time
}

func consumeElsewhere(t *testing.T, f *fixture) *otherConsumer {
	t.Helper()
	ch, err := f.conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ch.Close() })
	if err := ch.Qos(1000, 0, false); err != nil {
		t.Fatal(err)
	}
	dls, err := ch.Consume(f.queue, "other-"+f.queue, false, false, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	o := &otherConsumer{}
	go func() {
		for dl := range dls {
			_ = dl.Ack(false)
			o.mu.Lock()
			o.got, o.at = append(o.got, dl), append(o.at, time.Now())
			o.mu.Unlock()
		}
	}()
	return o
}

func (o *otherConsumer) count() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.got)
}

// Against the broker, through the adapter's shutdown: numa holds 5 of the 20 messages the driver has,
// and another replica consumes the queue. The 15 others are released and reach the other replica at
// once (RELEASE_WAIT is 3 s), none comes back to this replica, and each is returned once (quorum
// x-delivery-count at most 1); numa's acks during RELEASE_WAIT still commit, and the 3 it never acks
// go to the other replica after RELEASE_WAIT.
func TestIntegrationStopReceivingAtShutdown(t *testing.T) {
	f := newFixture(t, rabbitmqtest.Quorum, nil)
	const total, batch, releaseWait = 20, 5, 3 * time.Second
	if err := f.publish(t.Context(), pubs(total, "m", true)...); err != nil {
		t.Fatal(err)
	}
	cfg := f.config()
	cfg.ConsumerTag = "stop-" + f.queue
	d := openBudget(t.Context(), t, cfg, server.Budget{Messages: 2 * batch, Bytes: source.DefaultPrefetchBytes})
	src, err := source.New(d, source.Options{ReadBatchSize: batch, AckRetry: 5 * time.Second,
		ReleaseWait: releaseWait, PendingRefresh: 100 * time.Millisecond}, testLogger(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		_ = src.Close(ctx)
	})
	inFlight := readAll(t, src, batch, 15*time.Second, false)
	if len(inFlight) != batch {
		t.Fatalf("read %d of %d", len(inFlight), batch)
	}
	live := func() int {
		d.mu.Lock()
		defer d.mu.Unlock()
		if d.sess == nil {
			return -1
		}
		return len(d.sess.live)
	}
	waitFor(t, "all 20 delivered to this replica", func() bool { return live() == total })
	if ready, _ := queueCounts(t, f.node, f.queue); ready != 0 {
		t.Fatalf("%d messages ready before the shutdown, want 0", ready)
	}
	other := consumeElsewhere(t, f)

	began := time.Now()
	shut := make(chan struct{})
	go func() {
		defer close(shut)
		src.Shutdown(context.WithoutCancel(t.Context()))
	}()
	deadline := began.Add(releaseWait)
	for other.count() < total-batch && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	took := time.Since(began)
	t.Logf("%d of %d released messages at the other replica %s after the shutdown began", other.count(), total-batch, took.Round(time.Millisecond))
	if n := other.count(); n != total-batch || took > releaseWait/2 {
		t.Errorf("%d of %d released messages at the other replica after %s, want all within %s (RELEASE_WAIT %s)",
			n, total-batch, took, releaseWait/2, releaseWait)
	}
	if n := live(); n != batch {
		t.Errorf("this replica holds %d deliveries after the releases, want only the %d numa holds (released ones came back)", n, batch)
	}
	out, err := f.node.Ctl(t.Context(), "list_consumers", "queue_name", "consumer_tag")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out, cfg.ConsumerTag) {
		t.Errorf("this replica still consumes after StopReceiving:\n%s", out)
	}

	// numa acks 2 of the 5 it holds during RELEASE_WAIT: they are committed on the open channel.
	src.Ack(t.Context(), numatest.AckRequest(numatest.OffsetsOf(inFlight[:2])...))
	waitFor(t, "the 2 acks committed", func() bool { return live() == batch-2 })
	select {
	case <-shut:
	case <-time.After(2 * releaseWait):
		t.Fatal("Shutdown did not return")
	}
	waitFor(t, "the 3 unacked at the other replica", func() bool { return other.count() == total-2 })

	acked := bodies(inFlight[:2])
	other.mu.Lock()
	defer other.mu.Unlock()
	seen := map[string]int{}
	counts := map[int]int{}
	for _, dl := range other.got {
		seen[string(dl.Body)]++
		n, _ := deliveryCount(dl.Headers)
		counts[n]++
		if acked[string(dl.Body)] > 0 {
			t.Errorf("%s, acked by numa during RELEASE_WAIT, reached the other replica", dl.Body)
		}
	}
	t.Logf("x-delivery-count at the other replica: %v", counts)
	for b, n := range seen {
		if n > 1 {
			t.Errorf("%s delivered %d times to the other replica", b, n)
		}
	}
	for n := range counts {
		if n > 1 {
			t.Errorf("x-delivery-count %d at the other replica (%v): a released message was returned more than once", n, counts)
		}
	}
	if len(seen) != total-2 {
		t.Errorf("%d distinct messages at the other replica, want %d", len(seen), total-2)
	}
}
