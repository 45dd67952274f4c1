package pubsubsource

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	pb "cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/numaflow-connectors/sources/common/proctest"
	"github.com/numaflow-connectors/sources/common/server"
	"github.com/numaflow-connectors/sources/common/source"
	"github.com/numaflow-connectors/sources/pubsub-source/pubsubtest"
)

// Integration tests against the emulator (Google's Java emulator, or the pstest process where it is
// absent), through Open as a deployment would build the driver.

func openOn(t *testing.T, sub string, change func(*Config)) *driver {
	t.Helper()
	c := &Config{Subscription: sub, AckDeadline: 10 * time.Second, MaxExtension: time.Hour,
		Pending: PendingOff}
	if change != nil {
		change(c)
	}
	if err := c.Validate(); err != nil {
		t.Fatalf("config: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	d, err := Open(ctx, c, &server.Env{Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatalf("opening driver: %v", err)
	}
	t.Cleanup(func() { _ = d.Close(context.Background()) })
	return d.(*driver)
}

// startSource runs the adapter over d until the test ends (then closes it, waiting up to 20 s).
func startSource(t *testing.T, d source.Driver, o source.Options, log *slog.Logger, reg prometheus.Registerer) *source.Source {
	t.Helper()
	s, err := source.New(d, o, log, reg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		_ = s.Close(ctx)
	})
	return s
}

func publish(t *testing.T, emu *pubsubtest.Emulator, topic string, msgs ...*pb.PubsubMessage) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ids, err := emu.Publish(ctx, topic, msgs...)
	if err != nil {
		t.Fatal(err)
	}
	return ids
}

func texts(prefix string, n int) []*pb.PubsubMessage {
	out := make([]*pb.PubsubMessage, n)
	for i := range out {
		out[i] = &pb.PubsubMessage{Data: []byte(fmt.Sprintf("%s-%03d", prefix, i))}
	}
	return out
}

// receiveFor calls Receive until n messages arrived or within passed; each call waits up to wait.
func receiveFor(t *testing.T, d *driver, n int, within, wait time.Duration) []*source.Message {
	t.Helper()
	var out []*source.Message
	deadline := time.Now().Add(within)
	for len(out) < n && time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), min(wait, time.Until(deadline)+10*time.Millisecond))
		msgs, err := d.Receive(ctx, 500)
		cancel()
		if err != nil && ctx.Err() == nil {
			t.Fatalf("receive: %v", err)
		}
		out = append(out, msgs...)
	}
	return out
}

func ackAll(t *testing.T, d *driver, msgs []*source.Message) {
	t.Helper()
	hs := make([]source.Handle, len(msgs))
	for i, m := range msgs {
		hs[i] = m.Handle
	}
	if err := d.Ack(context.Background(), hs); err != nil {
		t.Fatalf("ack: %v", err)
	}
}

func TestEmulatorReceiveAck(t *testing.T) {
	t.Parallel()
	emu := pubsubtest.Shared(t)
	topic := emu.CreateTopic(t, "ra")
	sub := emu.CreateSubscription(t, "ra", pubsubtest.Subscription{Topic: topic})
	before := time.Now()
	ids := publish(t, emu, topic, &pb.PubsubMessage{Data: []byte{0, 0xff, 'x'}, Attributes: map[string]string{"tenant": "t1"}})
	d := openOn(t, sub, nil)
	got := receiveFor(t, d, 1, 20*time.Second, 5*time.Second)
	if len(got) != 1 {
		t.Fatalf("received %d of 1", len(got))
	}
	m := got[0]
	if m.ID != ids[0] || string(m.Payload) != "\x00\xffx" || m.Headers["tenant"] != "t1" || m.Headers[HeaderMessageID] != ids[0] {
		t.Errorf("message %+v", m)
	}
	if m.EventTime.Before(before.Add(-2*time.Second)) || m.EventTime.After(time.Now().Add(2*time.Second)) {
		t.Errorf("event time %s is not the publish time (published at %s)", m.EventTime, before)
	}
	if m.Deliveries != 0 {
		t.Errorf("deliveries %d without a dead-letter policy, want 0 (unknown)", m.Deliveries)
	}
	ackAll(t, d, got)
	// Acked: nothing comes back, even past the ack deadline (10 s).
	if again := receiveFor(t, d, 1, 13*time.Second, 13*time.Second); len(again) != 0 {
		t.Fatalf("acked message came back: %q", again[0].Payload)
	}
}

// Acks on a subscription with exactly-once delivery succeed and stick (neither emulator makes an
// exactly-once ack fail; the per-ack-ID failure path is covered by TestAckResults).
func TestEmulatorExactlyOnce(t *testing.T) {
	t.Parallel()
	emu := pubsubtest.Shared(t)
	topic := emu.CreateTopic(t, "eo")
	sub := emu.CreateSubscription(t, "eo", pubsubtest.Subscription{Topic: topic, ExactlyOnce: true})
	publish(t, emu, topic, texts("eo", 3)...)
	d := openOn(t, sub, nil)
	got := receiveFor(t, d, 3, 20*time.Second, 5*time.Second)
	if len(got) != 3 {
		t.Fatalf("received %d of 3", len(got))
	}
	ackAll(t, d, got)
	if again := receiveFor(t, d, 1, 13*time.Second, 13*time.Second); len(again) != 0 {
		t.Fatalf("acked message came back on an exactly-once subscription: %q", again[0].Payload)
	}
}

func TestEmulatorNackDelay(t *testing.T) {
	t.Parallel()
	emu := pubsubtest.Shared(t)
	topic := emu.CreateTopic(t, "nd")
	sub := emu.CreateSubscription(t, "nd", pubsubtest.Subscription{Topic: topic})
	publish(t, emu, topic, texts("nd", 1)...)
	d := openOn(t, sub, nil)
	first := receiveFor(t, d, 1, 20*time.Second, 5*time.Second)
	if len(first) != 1 {
		t.Fatalf("received %d of 1", len(first))
	}
	for _, delay := range []time.Duration{0, 3 * time.Second} {
		nacked := time.Now()
		if err := d.Nack(context.Background(), []source.Handle{first[0].Handle}, delay); err != nil {
			t.Fatalf("nack: %v", err)
		}
		again := receiveFor(t, d, 1, delay+10*time.Second, 20*time.Second)
		came := time.Since(nacked)
		if len(again) != 1 || again[0].ID != first[0].ID {
			t.Fatalf("message nacked with delay %s did not come back within %s", delay, delay+10*time.Second)
		}
		t.Logf("nacked with delay %s: back after %s", delay, came.Round(time.Millisecond))
		if came < delay-100*time.Millisecond || came > delay+3*time.Second {
			t.Errorf("nacked with delay %s, came back after %s", delay, came)
		}
		first = again
	}
	ackAll(t, d, first)
}

// A held message whose lease is extended does not reach another consumer, past several deadlines.
func TestEmulatorExtension(t *testing.T) {
	t.Parallel()
	emu := pubsubtest.Shared(t)
	topic := emu.CreateTopic(t, "ex")
	sub := emu.CreateSubscription(t, "ex", pubsubtest.Subscription{Topic: topic})
	publish(t, emu, topic, texts("ex", 1)...)
	a := openOn(t, sub, nil)
	b := openOn(t, sub, nil)
	held := receiveFor(t, a, 1, 20*time.Second, 5*time.Second)
	if len(held) != 1 {
		t.Fatalf("received %d of 1", len(held))
	}
	until := time.Now().Add(25 * time.Second) // 2.5 ack deadlines
	for time.Now().Before(until) {
		if err := a.Extend(context.Background(), []source.Handle{held[0].Handle}, 10*time.Second); err != nil {
			t.Fatalf("extend: %v", err)
		}
		if got := receiveFor(t, b, 1, 4*time.Second, 4*time.Second); len(got) > 0 {
			t.Fatalf("an extended message reached another consumer")
		}
	}
	ackAll(t, a, held)
	// Without extensions it comes back: the same check fails when the lease is not kept.
	publish(t, emu, topic, texts("ex2", 1)...)
	if got := receiveFor(t, a, 1, 20*time.Second, 5*time.Second); len(got) != 1 {
		t.Fatalf("received %d of 1", len(got))
	}
	if got := receiveFor(t, b, 1, 20*time.Second, 20*time.Second); len(got) != 1 {
		t.Fatalf("a message that was not extended did not reach the other consumer after its deadline")
	}
}

func TestEmulatorDeadLetterTopic(t *testing.T) {
	t.Parallel()
	emu := pubsubtest.Shared(t)
	topic := emu.CreateTopic(t, "dl")
	dl := emu.CreateTopic(t, "dl-target")
	dlSub := emu.CreateSubscription(t, "dl-target", pubsubtest.Subscription{Topic: dl})
	sub := emu.CreateSubscription(t, "dl", pubsubtest.Subscription{Topic: topic})
	ids := publish(t, emu, topic, &pb.PubsubMessage{Data: []byte("poison"), Attributes: map[string]string{"tenant": "t1"}})
	d := openOn(t, sub, func(c *Config) { c.DeadLetterTopic = dl })
	got := receiveFor(t, d, 1, 20*time.Second, 5*time.Second)
	if len(got) != 1 {
		t.Fatalf("received %d of 1", len(got))
	}
	if err := d.DeadLetter(context.Background(), got[0], "max deliveries (3) reached"); err != nil {
		t.Fatalf("dead letter: %v", err)
	}
	var dead []*pb.PubsubMessage
	deadline := time.Now().Add(20 * time.Second)
	for len(dead) == 0 && time.Now().Before(deadline) {
		msgs, err := emu.Drain(context.Background(), dlSub)
		if err != nil {
			t.Fatal(err)
		}
		dead = append(dead, msgs...)
	}
	if len(dead) != 1 {
		t.Fatalf("dead-letter topic got %d messages, want 1", len(dead))
	}
	a := dead[0].GetAttributes()
	if string(dead[0].GetData()) != "poison" || a["tenant"] != "t1" || a[AttrDeadLetterReason] != "max deliveries (3) reached" ||
		a[AttrDeadLetterSubscription] != sub || a[AttrDeadLetterMessageID] != ids[0] {
		t.Errorf("dead letter %v", dead[0])
	}
	// The original was acked.
	if again := receiveFor(t, d, 1, 13*time.Second, 13*time.Second); len(again) != 0 {
		t.Fatalf("dead-lettered message came back to the subscription")
	}
}

// With the subscription's own dead-letter policy, DeliveryAttempt counts deliveries and Pub/Sub moves
// the message after max_delivery_attempts nacks.
func TestEmulatorSubscriptionDeadLetterPolicy(t *testing.T) {
	t.Parallel()
	emu := pubsubtest.Shared(t)
	topic := emu.CreateTopic(t, "dp")
	dl := emu.CreateTopic(t, "dp-target")
	dlSub := emu.CreateSubscription(t, "dp-target", pubsubtest.Subscription{Topic: dl})
	sub := emu.CreateSubscription(t, "dp", pubsubtest.Subscription{Topic: topic, DeadLetterTopic: dl, MaxDeliveryAttempts: 5})
	publish(t, emu, topic, texts("dp", 1)...)
	d := openOn(t, sub, nil)
	for attempt := 1; attempt <= 5; attempt++ {
		got := receiveFor(t, d, 1, 20*time.Second, 5*time.Second)
		if len(got) != 1 {
			t.Fatalf("delivery %d: received %d of 1", attempt, len(got))
		}
		if got[0].Deliveries != attempt || got[0].Headers[HeaderDeliveryAttempt] != fmt.Sprint(attempt) {
			t.Errorf("delivery %d: Deliveries %d, header %q", attempt, got[0].Deliveries, got[0].Headers[HeaderDeliveryAttempt])
		}
		if err := d.Nack(context.Background(), []source.Handle{got[0].Handle}, 0); err != nil {
			t.Fatal(err)
		}
	}
	// Over max_delivery_attempts, it must not be delivered again; the emulator forwards it to the
	// dead-letter topic when the subscription is next pulled.
	if got := receiveFor(t, d, 1, 3*time.Second, 3*time.Second); len(got) != 0 {
		t.Fatalf("delivered a 6th time (attempt %d) with max_delivery_attempts 5", got[0].Deliveries)
	}
	var dead []*pb.PubsubMessage
	deadline := time.Now().Add(20 * time.Second)
	for len(dead) == 0 && time.Now().Before(deadline) {
		msgs, err := emu.Drain(context.Background(), dlSub)
		if err != nil {
			t.Fatal(err)
		}
		dead = append(dead, msgs...)
	}
	if len(dead) == 0 {
		t.Fatalf("nothing reached the subscription's dead-letter topic")
	}
	for _, m := range dead {
		if string(m.GetData()) != "dp-000" {
			t.Fatalf("the subscription's dead-letter topic got %q, want dp-000", m.GetData())
		}
	}
	if len(dead) > 1 {
		if emu.Kind == pubsubtest.KindJava {
			t.Fatalf("the subscription's dead-letter topic got the message %d times", len(dead))
		}
		t.Logf("pstest forwarded the message %d times (a known pstest quirk)", len(dead))
	}
}

func TestEmulatorOrdering(t *testing.T) {
	t.Parallel()
	emu := pubsubtest.Shared(t)
	topic := emu.CreateTopic(t, "ord")
	sub := emu.CreateSubscription(t, "ord", pubsubtest.Subscription{Topic: topic, Ordering: true})
	const perKey = 60
	var msgs []*pb.PubsubMessage
	for i := 0; i < perKey; i++ {
		for _, k := range []string{"k1", "k2", "k3"} {
			msgs = append(msgs, &pb.PubsubMessage{Data: []byte(fmt.Sprintf("%s-%03d", k, i)), OrderingKey: k})
		}
	}
	publish(t, emu, topic, msgs...)
	d := openOn(t, sub, nil)
	if c := d.Capabilities(); !c.OrderedKeys || c.ReceiveConcurrency != 1 {
		t.Errorf("capabilities on an ordered subscription %+v", c)
	}
	next := map[string]int{}
	total := 0
	deadline := time.Now().Add(60 * time.Second)
	for total < len(msgs) && time.Now().Before(deadline) {
		got := receiveFor(t, d, 1, 10*time.Second, 5*time.Second)
		for _, m := range got {
			k := m.Keys[0]
			if want := fmt.Sprintf("%s-%03d", k, next[k]); string(m.Payload) != want {
				t.Fatalf("key %s: got %s, want %s (out of order)", k, m.Payload, want)
			}
			if m.Headers[HeaderOrderingKey] != k {
				t.Errorf("ordering key header %q, want %q", m.Headers[HeaderOrderingKey], k)
			}
			next[k]++
			total++
		}
		ackAll(t, d, got)
	}
	if total != len(msgs) {
		t.Fatalf("received %d of %d ordered messages", total, len(msgs))
	}
}

func TestEmulatorMissingSubscription(t *testing.T) {
	t.Parallel()
	emu := pubsubtest.Shared(t)
	_ = emu
	sub := pubsubtest.SubscriptionName(pubsubtest.UniqueID("missing"))
	d := openOn(t, sub, nil) // Open must not fail
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := d.Receive(ctx, 10)
	if d.ErrorCode(err) != source.NotFound || !strings.Contains(err.Error(), sub) {
		t.Fatalf("receive: %v (%s), want not_found naming %s", err, d.ErrorCode(err), sub)
	}
	err = d.Check(ctx)
	if d.ErrorCode(err) != source.NotFound || !strings.Contains(err.Error(), sub) {
		t.Fatalf("check: %v, want not_found naming %s", err, sub)
	}
}

// ---- crash recovery: kill -9 a process holding messages ----

var holderFlag = flag.Bool("pubsub-holder", false, "run as the crash-test holder process (internal)")

// TestHolderProcess is not a test: the crash test runs the test binary with -pubsub-holder, so this
// opens a driver on the subscription given after --, receives messages, reports them and holds them
// until it is killed.
func TestHolderProcess(t *testing.T) {
	if !*holderFlag {
		t.Skip("helper process for TestEmulatorCrashRecovery")
	}
	args := flag.Args()
	if len(args) != 4 {
		t.Fatalf("want SUBSCRIPTION ACK_DEADLINE COUNT HELD_FILE, got %q", args)
	}
	deadline, err := time.ParseDuration(args[1])
	if err != nil {
		t.Fatal(err)
	}
	var n int
	fmt.Sscan(args[2], &n)
	d := openOn(t, args[0], func(c *Config) { c.AckDeadline = deadline })
	got := receiveFor(t, d, n, 30*time.Second, 10*time.Second)
	if err := os.WriteFile(args[3], []byte(fmt.Sprint(len(got))), 0o600); err != nil {
		t.Fatal(err)
	}
	select {} // until killed
}

func TestEmulatorCrashRecovery(t *testing.T) {
	if *holderFlag {
		t.Skip("inside the holder process")
	}
	t.Parallel()
	emu := pubsubtest.Shared(t)
	for _, tc := range []struct {
		name     string
		subAck   time.Duration // the subscription's own ack deadline
		deadline time.Duration // PUBSUB_ACK_DEADLINE
	}{
		{"ack_deadline_10s", 10 * time.Second, 10 * time.Second},
		{"ack_deadline_20s_on_a_10s_subscription", 10 * time.Second, 20 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			topic := emu.CreateTopic(t, "crash")
			sub := emu.CreateSubscription(t, "crash", pubsubtest.Subscription{Topic: topic, AckDeadline: tc.subAck})
			ids := publish(t, emu, topic, texts("crash", 200)...)
			exe, err := os.Executable()
			if err != nil {
				t.Fatal(err)
			}
			held := filepath.Join(t.TempDir(), "held")
			holder := proctest.Start(t, exe, []string{"-test.run=^TestHolderProcess$", "-pubsub-holder", "--", sub, tc.deadline.String(), "100", held},
				proctest.Options{Env: []string{"PUBSUB_EMULATOR_HOST=" + emu.Host}, Timeout: 60 * time.Second,
					Ready: func(context.Context) error { return fileExists(held) }})
			n, _ := os.ReadFile(held)
			holder.Kill() // SIGKILL: nothing released
			t.Logf("the holder held %s messages when it was killed", n)
			killed := time.Now()
			d := openOn(t, sub, nil)
			seen := map[string]time.Duration{}
			deadline := time.Now().Add(tc.deadline + 30*time.Second)
			for len(seen) < len(ids) && time.Now().Before(deadline) {
				got := receiveFor(t, d, 1, 5*time.Second, 5*time.Second)
				for _, m := range got {
					if _, ok := seen[m.ID]; !ok {
						seen[m.ID] = time.Since(killed)
					}
				}
				ackAll(t, d, got)
			}
			if len(seen) != len(ids) {
				t.Fatalf("after kill -9, %d of %d messages were received", len(seen), len(ids))
			}
			var last time.Duration
			for _, d := range seen {
				last = max(last, d)
			}
			t.Logf("PUBSUB_ACK_DEADLINE %s (subscription %s): all %d messages back %s after kill -9 (the held ones last)",
				tc.deadline, tc.subAck, len(ids), last.Round(100*time.Millisecond))
			if last > tc.deadline+5*time.Second {
				t.Errorf("held messages took %s to come back, more than PUBSUB_ACK_DEADLINE %s", last, tc.deadline)
			}
			if tc.deadline > tc.subAck && last < tc.subAck+time.Second {
				t.Errorf("held messages came back after %s: the subscription's deadline (%s) applied, not PUBSUB_ACK_DEADLINE (%s)", last, tc.subAck, tc.deadline)
			}
		})
	}
}

func fileExists(path string) error {
	_, err := os.Stat(path)
	return err
}

// pullCounter is the driver with its Receive calls counted: how many ran at once, at most.
type pullCounter struct {
	*driver
	mu        sync.Mutex
	now, most int
}

func (p *pullCounter) Receive(ctx context.Context, limit int) ([]*source.Message, error) {
	p.mu.Lock()
	p.now++
	p.most = max(p.most, p.now)
	p.mu.Unlock()
	defer func() { p.mu.Lock(); p.now--; p.mu.Unlock() }()
	return p.driver.Receive(ctx, limit)
}

// A backlog gets the driver's concurrent pulls. The Java emulator answers a Pull with at most 100 of
// the 500 asked (the service too answers with what it has at hand), so while only a whole batch
// counted as full the adapter ran one Pull at a time: 76% of a raw loop of 4 pullers, 106-122% with
// them. Every message arrives.
func TestEmulatorBacklogRunsConcurrentPulls(t *testing.T) {
	t.Parallel()
	emu := pubsubtest.Shared(t)
	topic := emu.CreateTopic(t, "conc")
	sub := emu.CreateSubscription(t, "conc", pubsubtest.Subscription{Topic: topic})
	const n, batch = 3000, 500
	publish(t, emu, topic, texts("conc", n)...)
	d := &pullCounter{driver: openOn(t, sub, nil)}
	s := startSource(t, d, source.Options{ReadBatchSize: batch}, nil, nil)
	stream, endStream := context.WithCancel(context.Background())
	defer endStream()
	numa := &numaLoop{t: t, s: s, stream: stream, acked: map[string]int{}}
	for start := time.Now(); len(numa.acked) < n && time.Since(start) < time.Minute; {
		numa.round(batch)
	}
	if len(numa.acked) != n {
		t.Fatalf("read %d of %d messages in a minute", len(numa.acked), n)
	}
	d.mu.Lock()
	most := d.most
	d.mu.Unlock()
	if want := d.Capabilities().ReceiveConcurrency; most != want {
		t.Errorf("at most %d pulls ran at once on a backlog of %d, want the driver's %d", most, n, want)
	}
}
