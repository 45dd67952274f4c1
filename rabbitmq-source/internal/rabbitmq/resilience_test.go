package rabbitmq

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/numaflow-connectors/sources/common/source"
	"github.com/numaflow-connectors/sources/rabbitmq-source/rabbitmqtest"
)

// Consumer cancelled by the broker, duplicate message-ids, the prefetch after a narrowing, and dead
// letters during a resource alarm: unit tests over the fake broker, then against rabbitmq-server.

// consumingChannel returns a channel of b, after the first skip, that has a consumer.
func (b *fakeBroker) consumingChannel(skip int) *fakeChannel {
	b.mu.Lock()
	chans := slices.Clone(b.chans)
	b.mu.Unlock()
	for i, c := range chans {
		if i >= skip && c.consuming() {
			return c
		}
	}
	return nil
}

// receiveCode calls Receive until it reports an error of code want, for up to 5 s.
func receiveCode(t *testing.T, d *driver, want source.Code) error {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	var last error
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		_, err := d.Receive(ctx, 10)
		cancel()
		if err != nil && !errors.Is(err, context.DeadlineExceeded) {
			last = err
			if source.Classify(d, err) == want {
				return err
			}
		}
	}
	t.Fatalf("Receive never reported %s in 5 s (last error: %v)", want, last)
	return nil
}

// The broker cancels the consumer (basic.cancel: its queue was deleted). The session ends: its tags
// are stale, Receive reports the missing queue as not_found while a new consumer is refused, and the
// driver consumes again once the queue is back.
func TestBrokerCancelEndsTheSession(t *testing.T) {
	b := &fakeBroker{}
	d := newFakeDriver(t, b)
	go func() {
		waitFor(t, "a consumer", func() bool { return b.channel(0).consuming() })
		b.channel(0).deliver(1)
	}()
	old := receiveN(t, d, 1)
	waitFor(t, "the window widened from the first size seen", func() bool {
		d.mu.Lock()
		defer d.mu.Unlock()
		return d.sess.target == 100
	})
	d.mu.Lock()
	d.dial = func(ctx context.Context) (amqpConn, error) { // the queue is gone: consuming is refused
		c, err := b.dial(ctx)
		if err == nil {
			c.(*fakeConn).ch.consumeErr = &amqp.Error{Code: amqp.NotFound, Reason: "NOT_FOUND - no queue 'q'"}
		}
		return c, err
	}
	d.mu.Unlock()
	b.channel(0).cancelByBroker()
	receiveCode(t, d, source.NotFound)
	if s := d.stats(); s.Lost != 1 {
		t.Errorf("stats = %+v, want the cancelled session counted as lost", s)
	}
	if err := d.Ack(t.Context(), handlesOf(old)); source.Classify(d, err) != source.InvalidArgument {
		t.Errorf("ack of the cancelled consumer's delivery = %v, want invalid_argument (stale)", err)
	}
	if got := b.channel(0).callList(); len(got) != 0 {
		t.Errorf("calls on the cancelled channel = %q", got)
	}

	d.mu.Lock()
	d.dial = b.dial // the queue is back
	d.mu.Unlock()
	var c *fakeChannel
	waitFor(t, "a new consumer", func() bool { c = b.consumingChannel(1); return c != nil })
	c.deliver(1)
	if msgs := receiveN(t, d, 1); msgs[0].Handle.(handle).gen == old[0].Handle.(handle).gen {
		t.Errorf("the new delivery came from the cancelled session")
	}
}

// Two deliveries of one message-id are the same message (a publisher that retried a publish): the
// adapter answers the newest handle only, and the driver answers the other delivery the same way, so
// no tag stays unanswered on the channel.
func TestTwinDeliveriesAnsweredTogether(t *testing.T) {
	b := &fakeBroker{}
	d := newFakeDriver(t, b)
	c := awaitConsumer(t, b, d)
	for i, id := range []string{"a", "a", "b", "c", "c"} {
		c.send(amqp.Delivery{DeliveryTag: uint64(i + 1), MessageId: id, Body: []byte(id)})
	}
	msgs := receiveN(t, d, 5)
	live := func() []uint64 {
		d.mu.Lock()
		defer d.mu.Unlock()
		return slices.Sorted(maps.Keys(d.sess.live))
	}
	// numa acks "a" (the adapter holds the second delivery's handle): both tags go, as one multiple ack.
	if err := d.Ack(t.Context(), handlesOf(msgs[1:2])); err != nil {
		t.Fatal(err)
	}
	// The adapter releases "c" (its newest handle): both deliveries are requeued.
	if err := d.Nack(t.Context(), handlesOf(msgs[4:5]), 0); err != nil {
		t.Fatal(err)
	}
	want := []string{"ack 2 true", "nack 4 requeue=true", "nack 5 requeue=true"}
	got := c.callList()
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Errorf("calls = %q, want %q", got, want)
	}
	if l := live(); !slices.Equal(l, []uint64{3}) {
		t.Errorf("live tags = %v, want only 3", l)
	}

	// A twin that is still in the driver's queue (Receive has not taken it) is acked with the first
	// delivery and never handed out.
	c.send(amqp.Delivery{DeliveryTag: 6, MessageId: "d"})
	first := receiveN(t, d, 1)
	c.send(amqp.Delivery{DeliveryTag: 7, MessageId: "d"})
	c.send(amqp.Delivery{DeliveryTag: 8, MessageId: "e"})
	waitFor(t, "both queued", func() bool { d.mu.Lock(); defer d.mu.Unlock(); return len(d.sess.queue) == 2 })
	if err := d.Ack(t.Context(), handlesOf(first)); err != nil {
		t.Fatal(err)
	}
	rest := receiveN(t, d, 1)
	if rest[0].ID != "e" {
		t.Errorf("received %s after acking d, want e (the second d was acked with the first)", rest[0].ID)
	}
	if got := c.callList(); !slices.Contains(got, "ack 6 false") || !slices.Contains(got, "ack 7 false") {
		t.Errorf("calls = %q, want both deliveries of d acked", got)
	}
	if l := live(); !slices.Equal(l, []uint64{3, 8}) {
		t.Errorf("live tags = %v, want 3 and 8", l)
	}
}

// A narrowed consumer's prefetch left room for deliveries still unanswered; once they are answered
// the window is raised to its target again (a new consumer), not left that low for good.
func TestWindowWidensOnceAnswered(t *testing.T) {
	b := &fakeBroker{}
	d := newFakeDriver(t, b) // prefetch 50, 1 MiB
	c := awaitConsumer(t, b, d)
	c.send(amqp.Delivery{DeliveryTag: 1, Body: make([]byte, 100)})
	window := func() (int, int) { d.mu.Lock(); defer d.mu.Unlock(); return d.sess.window, d.sess.target }
	waitFor(t, "a wider window", func() bool { _, tg := window(); return tg == 100 })
	c.send(amqp.Delivery{DeliveryTag: 2, Body: make([]byte, 256<<10)})
	waitFor(t, "a narrower window", func() bool { _, tg := window(); return tg == 8 })
	if w, _ := window(); w != 6 {
		t.Fatalf("narrowed prefetch = %d, want 8 - 2 unanswered", w)
	}
	msgs := receiveN(t, d, 2)
	if err := d.Ack(t.Context(), handlesOf(msgs)); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for w, _ := window(); w != 8; w, _ = window() {
		if time.Now().After(deadline) {
			t.Fatalf("prefetch still %d 5 s after the deliveries were answered, want the target 8", w)
		}
		time.Sleep(10 * time.Millisecond)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if last := c.qos[len(c.qos)-1]; last != 8 {
		t.Errorf("last basic.qos = %d, want 8", last)
	}
}

// Against the broker: the queue is deleted under the consumer (basic.cancel). Readiness goes false
// and Receive reports not_found while it is missing; once it is declared again, the source consumes.
func TestIntegrationConsumerCancelledByBroker(t *testing.T) {
	f := newFixture(t, rabbitmqtest.Classic, nil)
	if err := f.publish(t.Context(), pubs(5, "before", true)...); err != nil {
		t.Fatal(err)
	}
	d, src := openSource(t, f.config(), 10, 0)
	if got := readAll(t, src, 5, 15*time.Second, true); len(got) != 5 {
		t.Fatalf("read %d of 5 before the cancel", len(got))
	}
	// The window settled (2 x 20): no rewindow re-consumes by itself after the queue is gone.
	waitFor(t, "the window settled", func() bool { d.mu.Lock(); defer d.mu.Unlock(); return d.sess != nil && d.sess.target == 40 })
	ch, err := f.conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ch.QueueDelete(f.queue, false, false, false); err != nil {
		t.Fatal(err)
	}
	_ = ch.Close()
	waitFor(t, "the session lost", func() bool { return d.stats().Lost >= 1 })
	deadline := time.Now().Add(10 * time.Second)
	for src.Ready() && time.Now().Before(deadline) {
		readAll(t, src, 1, 300*time.Millisecond, true)
	}
	d.mu.Lock()
	lastErr := d.lastErr
	d.mu.Unlock()
	if src.Ready() || source.Classify(d, lastErr) != source.NotFound {
		t.Errorf("queue deleted: ready=%v, last error %v (%s); want not ready, not_found", src.Ready(), lastErr, source.Classify(d, lastErr))
	}
	f.node.DeclareQueue(t, f.queue, rabbitmqtest.Classic, nil)
	if err := f.node.Publish(t.Context(), f.queue, pubs(5, "after", true)...); err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, src, 5, 20*time.Second, true); len(got) != 5 {
		t.Fatalf("read %d of 5 after the queue was declared again (ready=%v, stats %+v)", len(got), src.Ready(), d.stats())
	}
	waitFor(t, "ready again", src.Ready)
}

// Against the broker: each message is published twice with one message-id (a retried publish). numa
// acks what it gets; every delivery is acked at the broker and the prefetch never fills up with
// orphaned tags.
func TestIntegrationDuplicateMessageIDs(t *testing.T) {
	f := newFixture(t, rabbitmqtest.Classic, nil)
	var msgs []amqp.Publishing
	for i := range 6 {
		id := fmt.Sprintf("dup-%d", i)
		msgs = append(msgs, amqp.Publishing{MessageId: id, Body: []byte(id)}, amqp.Publishing{MessageId: id, Body: []byte(id)})
	}
	msgs = append(msgs, pubs(10, "unique", true)...)
	if err := f.publish(t.Context(), msgs...); err != nil {
		t.Fatal(err)
	}
	_, src := openSource(t, f.config(), 1, 0) // batch 1: prefetch window 4
	seen := map[string]int{}
	for deadline := time.Now().Add(20 * time.Second); len(seen) < 16 && time.Now().Before(deadline); {
		for b, n := range bodies(readAll(t, src, 1, time.Second, true)) {
			seen[b] += n
		}
	}
	if len(seen) != 16 {
		t.Fatalf("%d of 16 distinct messages in 20 s: %v", len(seen), seen)
	}
	var ready, unacked int
	deadline := time.Now().Add(5 * time.Second)
	for ready, unacked = queueCounts(t, f.node, f.queue); (ready != 0 || unacked != 0) && time.Now().Before(deadline); {
		time.Sleep(100 * time.Millisecond)
		ready, unacked = queueCounts(t, f.node, f.queue)
	}
	if ready != 0 || unacked != 0 {
		t.Errorf("every message acked by numa, yet the broker has %d ready and %d unacked (seen %v)", ready, unacked, seen)
	}
}

// Against the broker: payloads grow while the channel is full, so the narrowed consumer starts with
// a prefetch of 1; once those deliveries are answered the prefetch is the window for the new size.
func TestIntegrationPrefetchWidensAfterNarrowing(t *testing.T) {
	f := newFixture(t, rabbitmqtest.Classic, nil)
	if err := f.publish(t.Context(), pubs(30, "small", true)...); err != nil {
		t.Fatal(err)
	}
	d, src := openSource(t, f.config(), 10, 64<<10) // receive budget 20 messages, 64 KiB
	target := func() int {
		d.mu.Lock()
		defer d.mu.Unlock()
		if d.sess == nil {
			return 0
		}
		return d.sess.target
	}
	waitFor(t, "the window grown to 40", func() bool { return target() == 40 })
	big := make([]amqp.Publishing, 10)
	for i := range big {
		big[i] = amqp.Publishing{MessageId: fmt.Sprintf("big-%d", i), Body: make([]byte, 8<<10)}
	}
	if err := f.publish(t.Context(), big...); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the window narrowed to 16 (2 x 64 KiB / 8 KiB)", func() bool { return target() == 16 })
	if got := readAll(t, src, 40, 20*time.Second, true); len(got) != 40 {
		t.Fatalf("read %d of 40", len(got))
	}
	prefetch := func() string {
		out, err := f.node.Ctl(t.Context(), "list_consumers", "queue_name", "prefetch_count")
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(out, "\n") {
			if fl := strings.Fields(line); len(fl) == 2 && fl[0] == f.queue {
				return fl[1]
			}
		}
		return ""
	}
	deadline := time.Now().Add(5 * time.Second)
	p := prefetch()
	for p != "16" && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
		p = prefetch()
	}
	if p != "16" {
		t.Errorf("prefetch %s with nothing held, want 16", p)
	}
}

// alarms returns the node's resource alarms.
func alarms(t *testing.T, n *rabbitmqtest.Node) string {
	out, err := n.Ctl(context.WithoutCancel(t.Context()), "eval", "rabbit_alarm:get_alarms().")
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	return out
}

// within runs call in a goroutine and waits up to limit; it returns how long call took, whether it
// returned in time (a call that hangs is left running) and its error.
func within(limit time.Duration, call func() error) (time.Duration, bool, error) {
	began := time.Now()
	done := make(chan error, 1)
	go func() { done <- call() }()
	select {
	case err := <-done:
		return time.Since(began), true, err
	case <-time.After(limit):
		return limit, false, nil
	}
}

// Against the broker: a disk alarm blocks publishing connections. A dead letter fails at once as
// throttled (retryable) instead of waiting for a confirm that comes only after the alarm; acks,
// Backlog and Close keep working; after the alarm the dead letter goes through.
func TestIntegrationDeadLetterDuringResourceAlarm(t *testing.T) {
	f := newFixture(t, rabbitmqtest.Classic, nil)
	if err := f.publish(t.Context(), pubs(3, "m", true)...); err != nil {
		t.Fatal(err)
	}
	d := openBudget(t.Context(), t, f.config(), suiteBudget)
	msgs := receiveN(t, d, 3)
	if n, err := d.Backlog(t.Context()); err != nil || n != 3 {
		t.Fatalf("Backlog before the alarm = %d, %v", n, err)
	}
	// Cleanups run last first: the alarm is cleared before the driver is closed.
	t.Cleanup(func() {
		_, _ = f.node.Ctl(context.WithoutCancel(t.Context()), "set_disk_free_limit", "1MB")
	})
	if out, err := f.node.Ctl(t.Context(), "set_disk_free_limit", "100000GB"); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	waitFor(t, "the disk alarm", func() bool { return strings.Contains(alarms(t, f.node), "disk") })

	dl := func() error {
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second) // the adapter's call timeout
		defer cancel()
		return d.DeadLetter(ctx, msgs[0], "poison")
	}
	for i := range 2 {
		took, ok, err := within(8*time.Second, dl)
		t.Logf("dead letter %d during the alarm: %v after %s", i+1, err, took.Round(time.Millisecond))
		if !ok || took > 2*time.Second || source.Classify(d, err) != source.Throttled {
			t.Errorf("dead letter %d during the alarm: %v after %s (returned: %v), want throttled within 2 s", i+1, err, took, ok)
		}
	}
	took, ok, err := within(8*time.Second, func() error { return d.Ack(t.Context(), handlesOf(msgs[1:])) })
	if !ok || err != nil || took > time.Second {
		t.Errorf("ack during the alarm: %v after %s (returned: %v)", err, took, ok)
	}
	var n int64
	took, ok, err = within(8*time.Second, func() error {
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		defer cancel()
		var err error
		n, err = d.Backlog(ctx)
		return err
	})
	if !ok || err != nil || n != 1 {
		t.Errorf("Backlog during the alarm = %d, %v after %s (returned: %v), want 1", n, err, took, ok)
	}
	_, unacked := queueCounts(t, f.node, f.queue)
	if unacked != 1 {
		t.Errorf("%d unacked at the broker after acking 2 of 3, want 1", unacked)
	}
	// A second driver takes the message over once the blocked one is closed (the broker requeues it).
	took, ok, err = within(8*time.Second, func() error {
		ctx, cancel := context.WithTimeout(t.Context(), 3*time.Second)
		defer cancel()
		return d.Close(ctx)
	})
	if !ok || took > 3500*time.Millisecond {
		t.Errorf("Close with a 3 s context during the alarm: %v after %s (returned: %v)", err, took, ok)
	}

	if out, err := f.node.Ctl(t.Context(), "set_disk_free_limit", "1MB"); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	waitFor(t, "the alarm cleared", func() bool { return !strings.Contains(alarms(t, f.node), "disk") })
	d2 := openBudget(t.Context(), t, f.config(), suiteBudget)
	again := receiveN(t, d2, 1)
	if err := d2.DeadLetter(t.Context(), again[0], "poison"); err != nil {
		t.Fatalf("dead letter after the alarm: %v", err)
	}
	dead, err := f.deadLetters()
	if err != nil || len(dead) == 0 || dead[0].Headers[HeaderDeadLetterReason] != "poison" {
		t.Errorf("dead letters after the alarm: %d, %v", len(dead), err)
	}
	waitFor(t, "the queue drained", func() bool { r, u := queueCounts(t, f.node, f.queue); return r == 0 && u == 0 })
}
