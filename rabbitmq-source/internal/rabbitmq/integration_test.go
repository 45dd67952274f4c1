package rabbitmq

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/numaproj/numaflow-go/pkg/sourcer"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/numaflow-connectors/sources/common/config"
	"github.com/numaflow-connectors/sources/common/numatest"
	"github.com/numaflow-connectors/sources/common/server"
	"github.com/numaflow-connectors/sources/common/source"
	"github.com/numaflow-connectors/sources/common/source/drivertest"
	"github.com/numaflow-connectors/sources/rabbitmq-source/rabbitmqtest"
)

// Integration tests against a real rabbitmq-server node (rabbitmqtest), through the adapter as numa
// drives it.

// openSource opens a driver on cfg and runs the adapter over it with numa's batch size batch (the
// prefetch is twice that) and prefetchBytes (0: the default), the driver sized for that budget.
func openSource(t *testing.T, cfg Config, batch int, prefetchBytes int64) (*driver, *source.Source) {
	t.Helper()
	if prefetchBytes == 0 {
		prefetchBytes = source.DefaultPrefetchBytes
	}
	d := openBudget(t.Context(), t, cfg, server.Budget{Messages: 2 * batch, Bytes: prefetchBytes})
	src, err := source.New(d, source.Options{ReadBatchSize: batch, PrefetchBytes: prefetchBytes, AckRetry: 5 * time.Second,
		ReleaseWait: 200 * time.Millisecond, PendingRefresh: 100 * time.Millisecond}, testLogger(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		_ = src.Close(ctx)
	})
	return d, src
}

// readAll reads until want messages arrived or within passed, acking each batch when ack is set.
func readAll(t *testing.T, src *source.Source, want int, within time.Duration, ack bool) []sourcer.Message {
	t.Helper()
	var out []sourcer.Message
	deadline := time.Now().Add(within)
	for len(out) < want && time.Now().Before(deadline) {
		msgs := numatest.ReadFrom(t.Context(), src, want-len(out), 300*time.Millisecond)
		if ack && len(msgs) > 0 {
			src.Ack(t.Context(), numatest.AckRequest(numatest.OffsetsOf(msgs)...))
		}
		out = append(out, msgs...)
	}
	return out
}

func pubs(n int, prefix string, withID bool) []amqp.Publishing {
	out := make([]amqp.Publishing, n)
	for i := range out {
		out[i] = amqp.Publishing{Body: fmt.Appendf(nil, "%s-%d", prefix, i)}
		if withID {
			out[i].MessageId = fmt.Sprintf("%s-id-%d", prefix, i)
		}
	}
	return out
}

func bodies(msgs []sourcer.Message) map[string]int {
	out := map[string]int{}
	for _, m := range msgs {
		out[string(m.Value())]++
	}
	return out
}

// queueCounts returns the queue's ready and unacked messages as the broker reports them.
func queueCounts(t *testing.T, n *rabbitmqtest.Node, queue string) (ready, unacked int) {
	t.Helper()
	out, err := n.Ctl(t.Context(), "list_queues", "name", "messages_ready", "messages_unacknowledged")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) == 3 && f[0] == queue {
			_, _ = fmt.Sscan(f[1], &ready)
			_, _ = fmt.Sscan(f[2], &unacked)
			return ready, unacked
		}
	}
	t.Fatalf("queue %s not listed:\n%s", queue, out)
	return 0, 0
}

// A burst of delayed nacks as large as the prefetch budget does not stall other deliveries: the
// delayed messages are held unacked at the broker, so the channel's prefetch must leave room beyond
// them. Then the delayed ones come back after their delay.
func TestIntegrationDelayedNackBurstDoesNotStall(t *testing.T) {
	for _, kind := range []string{rabbitmqtest.Classic, rabbitmqtest.Quorum} {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, kind, nil)
			const batch, prefetch = 10, 20 // the adapter's receive budget: 20 messages
			if err := f.publish(t.Context(), pubs(prefetch, "late", true)...); err != nil {
				t.Fatal(err)
			}
			if err := f.publish(t.Context(), pubs(prefetch, "now", true)...); err != nil {
				t.Fatal(err)
			}
			d, src := openSource(t, f.config(), batch, 0)
			late := readAll(t, src, prefetch, 20*time.Second, false)
			if len(late) != prefetch || bodies(late)["late-0"] != 1 {
				t.Fatalf("read %d of the %d first messages: %v", len(late), prefetch, bodies(late))
			}
			delay := uint64(4000)
			items := make([]sourcer.NackOffset, len(late))
			for i, m := range late {
				items[i] = sourcer.NackOffset{Offset: m.Offset(), NackOptions: &sourcer.NackOptions{Delay: &delay}}
			}
			nacked := time.Now()
			src.Nack(t.Context(), numatest.NackRequest(items...))
			now := readAll(t, src, prefetch, 3*time.Second, true)
			took := time.Since(nacked)
			if got := bodies(now); len(now) != prefetch || got["late-0"] != 0 {
				t.Fatalf("with %d delayed nacks held, %d of %d other messages arrived within %s (%v): the queue stalled",
					prefetch, len(now), prefetch, took.Round(time.Millisecond), got)
			}
			t.Logf("%d delayed nacks held (a full receive budget): the next %d messages arrived %s after the nack",
				prefetch, prefetch, took.Round(time.Millisecond))
			again := readAll(t, src, prefetch, 15*time.Second, true)
			cameBack := time.Since(nacked)
			if len(again) != prefetch || cameBack < 3800*time.Millisecond {
				t.Fatalf("%d of %d delayed messages came back, after %s (delay 4s)", len(again), prefetch, cameBack)
			}
			for _, m := range again {
				if !strings.HasPrefix(string(m.Value()), "late-") {
					t.Errorf("unexpected message %q", m.Value())
				}
			}
			if s := d.stats(); s.Lost != 0 || s.Stale != 0 {
				t.Errorf("stats %+v: no channel may be lost", s)
			}
		})
	}
}

// A connection closed from the broker side (rabbitmqctl close_connection): the source reconnects with
// backoff and resubscribes; acks for the old channel's tags are dropped and counted (never sent on
// the new channel, which would close it); every message is still delivered and acked.
func TestIntegrationConnectionLossReconnects(t *testing.T) {
	t.Parallel()
	f := newFixture(t, rabbitmqtest.Classic, nil)
	const total, held = 50, 20
	if err := f.publish(t.Context(), pubs(total, "m", false)...); err != nil {
		t.Fatal(err)
	}
	cfg := f.config()
	cfg.ConsumerTag = "loss-" + f.queue
	d, src := openSource(t, cfg, held/2, 0)
	first := readAll(t, src, held, 20*time.Second, false)
	if len(first) != held {
		t.Fatalf("read %d of %d", len(first), held)
	}
	if _, err := f.node.CloseConnections(t.Context(), cfg.ConsumerTag, "test: connection loss"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the reconnection", func() bool {
		d.mu.Lock()
		defer d.mu.Unlock()
		return d.sess != nil && d.sess.gen >= 2
	})
	// numa acks what it read before the loss: the tags belong to the lost channel.
	src.Ack(t.Context(), numatest.AckRequest(numatest.OffsetsOf(first)...))
	waitFor(t, "the stale acks dropped", func() bool { return d.stats().Stale == held })
	rest := readAll(t, src, total, 30*time.Second, true)
	seen := bodies(rest)
	for i := range total {
		if seen[fmt.Sprintf("m-%d", i)] == 0 {
			t.Errorf("m-%d never delivered after the reconnection", i)
		}
	}
	if ready, unacked := queueCounts(t, f.node, f.queue); ready != 0 || unacked != 0 {
		t.Errorf("queue after the drain: %d ready, %d unacked; want 0, 0", ready, unacked)
	}
	if s := d.stats(); s.Lost != 1 || s.Stale != held {
		t.Errorf("stats %+v: want 1 lost session (no PRECONDITION_FAILED from a stale tag) and %d dropped acks", s, held)
	}
}

// Big messages: the prefetch window follows the byte budget, so the broker never has more unacked
// bytes out to this source than the adapter's two pools (2 x PREFETCH_BYTES), while numa is slow.
func TestIntegrationBigMessagesStayWithinByteBudget(t *testing.T) {
	t.Parallel()
	f := newFixture(t, rabbitmqtest.Quorum, nil)
	const size, n = 512 << 10, 40
	const budget = 4 << 20
	payload := strings.Repeat("x", size)
	msgs := make([]amqp.Publishing, n)
	for i := range msgs {
		msgs[i] = amqp.Publishing{Body: []byte(payload), MessageId: fmt.Sprint("big-", i)}
	}
	if err := f.publish(t.Context(), msgs...); err != nil {
		t.Fatal(err)
	}
	_, src := openSource(t, f.config(), 500, budget)
	got := 0
	maxUnacked := 0
	deadline := time.Now().Add(60 * time.Second)
	for got < n && time.Now().Before(deadline) {
		batch := numatest.ReadFrom(t.Context(), src, 2, 300*time.Millisecond) // a slow numa
		_, unacked := queueCounts(t, f.node, f.queue)
		maxUnacked = max(maxUnacked, unacked)
		src.Ack(t.Context(), numatest.AckRequest(numatest.OffsetsOf(batch)...))
		got += len(batch)
	}
	if got != n {
		t.Fatalf("read %d of %d", got, n)
	}
	limit := 2 * budget / size // 16
	t.Logf("most unacked at the broker while draining %d x %d KiB with PREFETCH_BYTES %d MiB: %d (%d MiB)", n, size>>10, budget>>20, maxUnacked, maxUnacked*size>>20)
	if maxUnacked > limit {
		t.Errorf("%d messages (%d MiB) unacked at once, want at most %d (2 x PREFETCH_BYTES)", maxUnacked, maxUnacked*size>>20, limit)
	}
}

// A restart with a backlog of big messages: before the first delivery shows their size, the prefetch
// holds no more messages of MAX_MESSAGE_BYTES than PREFETCH_BYTES does, so the broker does not push a
// whole initial window of them (10 x 4 MiB into an 8 MiB budget); once the size is known the window
// follows it, and the channel never holds more than 2 x PREFETCH_BYTES while nothing is answered.
func TestIntegrationFirstWindowFitsTheByteBudget(t *testing.T) {
	t.Parallel()
	f := newFixture(t, rabbitmqtest.Classic, nil)
	const size, n = 4 << 20, 12
	const budget, maxMessage = 8 << 20, 8 << 20
	payload := []byte(strings.Repeat("x", size))
	msgs := make([]amqp.Publishing, n)
	for i := range msgs {
		msgs[i] = amqp.Publishing{Body: payload, MessageId: fmt.Sprint("big-", i)}
	}
	if err := f.publish(t.Context(), msgs...); err != nil {
		t.Fatal(err)
	}
	d := openBudget(t.Context(), t, f.config(), server.Budget{Messages: 20, Bytes: budget, MaxMessageBytes: maxMessage})
	held := func() (count int, bytes int64) {
		d.mu.Lock()
		defer d.mu.Unlock()
		if d.sess == nil {
			return 0, 0
		}
		for _, e := range d.sess.live {
			count++
			bytes += e.size
		}
		return count, bytes
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	var first []*source.Message
	for len(first) == 0 && ctx.Err() == nil {
		var err error
		if first, err = d.Receive(ctx, 1); err != nil && ctx.Err() == nil {
			t.Fatalf("Receive: %v", err)
		}
	}
	if len(first) == 0 {
		t.Fatal("no message")
	}
	atFirst, _ := held()
	// Nothing is answered: what the broker pushes now is what the window lets through.
	peak, peakBytes := atFirst, int64(0)
	for end := time.Now().Add(1500 * time.Millisecond); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
		if c, b := held(); b > peakBytes {
			peak, peakBytes = c, b
		}
	}
	t.Logf("%d x %d MiB queued, PREFETCH_BYTES %d MiB, MAX_MESSAGE_BYTES %d MiB: %d held when the first Receive returned, at most %d (%d MiB) before any answer",
		n, size>>20, budget>>20, maxMessage>>20, atFirst, peak, peakBytes>>20)
	if peakBytes > 2*budget {
		t.Errorf("the channel held %d messages (%d MiB) before any answer, want at most 2 x PREFETCH_BYTES (%d MiB)",
			peak, peakBytes>>20, 2*budget>>20)
	}
}

// consumer_timeout: a delivery held past the hold limit (nine tenths of RABBITMQ_CONSUMER_TIMEOUT)
// is handed back before the broker closes the channel; a source configured with a longer timeout than
// the broker's sees its channel closed (PRECONDITION_FAILED) and recovers like any other loss.
func TestIntegrationConsumerTimeout(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("starts a node of its own")
	}
	const brokerTimeout = 3 * time.Second
	node := rabbitmqtest.Start(t, rabbitmqtest.Options{ConsumerTimeout: brokerTimeout})
	run := func(t *testing.T, configured time.Duration, wantLost bool) {
		q := rabbitmqtest.Name(t)
		node.DeclareQueue(t, q, rabbitmqtest.Classic, nil)
		if err := node.Publish(t.Context(), q, pubs(1, "slow", true)...); err != nil {
			t.Fatal(err)
		}
		cfg := testConfig(node.URL(), q)
		cfg.ConsumerTimeout = configured
		d, src := openSource(t, cfg, 10, 0)
		held := readAll(t, src, 1, 20*time.Second, false)
		if len(held) != 1 {
			t.Fatalf("read %d of 1", len(held))
		}
		// A slow pipeline: no answer for twice the broker's timeout (its check runs every second).
		time.Sleep(2*brokerTimeout + 2*time.Second)
		// The broker redelivered it meanwhile (same message-id, so the same offset): the adapter kept
		// the newest delivery tag, and this ack reaches the live channel. Nothing comes back.
		src.Ack(t.Context(), numatest.AckRequest(numatest.OffsetsOf(held)...))
		if again := readAll(t, src, 1, 2*time.Second, true); len(again) != 0 {
			t.Errorf("an acked message came back: %q", again[0].Value())
		}
		if r, u := queueCounts(t, node, q); r != 0 || u != 0 {
			t.Errorf("queue after the ack: %d ready, %d unacked; want 0, 0", r, u)
		}
		s := d.stats()
		t.Logf("stats %+v", s)
		switch {
		case wantLost && s.Lost == 0:
			t.Errorf("the broker's consumer_timeout did not close the channel (stats %+v)", s)
		case !wantLost && (s.Lost != 0 || s.Expired == 0):
			t.Errorf("stats %+v: want the delivery handed back at the hold limit and no channel lost", s)
		}
	}
	t.Run("handed back below the timeout", func(t *testing.T) { t.Parallel(); run(t, brokerTimeout, false) })
	t.Run("channel closed by the broker, recovered", func(t *testing.T) { t.Parallel(); run(t, time.Hour, true) })
}

// Dead letters through the queue's own dead-letter exchange (RABBITMQ_DEAD_LETTER_REJECT), and a
// dead-letter exchange that does not exist: the message stays in the queue, nothing is lost.
func TestIntegrationDeadLetterPaths(t *testing.T) {
	t.Parallel()
	maxDel := uint32(1)
	reason := "poison"
	nackOver := func(src *source.Source, m sourcer.Message) {
		src.Nack(context.Background(), numatest.NackRequest(sourcer.NackOffset{Offset: m.Offset(),
			NackOptions: &sourcer.NackOptions{MaxDeliveries: &maxDel, Reason: &reason}}))
	}
	t.Run("reject to the queue's dead-letter exchange", func(t *testing.T) {
		t.Parallel()
		f := newFixture(t, rabbitmqtest.Quorum, nil)
		// A second queue of the fixture's node with the fixture's fanout exchange as its own DLX.
		q := f.queue + ".own"
		f.node.DeclareQueue(t, q, rabbitmqtest.Quorum, amqp.Table{"x-dead-letter-exchange": f.dlx})
		if err := f.node.Publish(t.Context(), q, pubs(1, "bad", true)...); err != nil {
			t.Fatal(err)
		}
		cfg := testConfig(f.node.URL(), q)
		cfg.DeadLetterReject = true
		_, src := openSource(t, cfg, 10, 0)
		got := readAll(t, src, 1, 20*time.Second, false)
		if len(got) != 1 {
			t.Fatalf("read %d of 1", len(got))
		}
		nackOver(src, got[0])
		var dead []amqp.Delivery
		waitFor(t, "the dead letter", func() bool { dead, _ = f.deadLetters(); return len(dead) == 1 })
		deaths, _ := dead[0].Headers["x-death"].([]any)
		if len(deaths) == 0 || !strings.Contains(fmt.Sprint(deaths[0]), "rejected") {
			t.Errorf("x-death = %v, want reason rejected", dead[0].Headers["x-death"])
		}
		waitFor(t, "the queue drained", func() bool { r, u := queueCounts(t, f.node, q); return r == 0 && u == 0 })
	})
	t.Run("missing dead-letter exchange keeps the message", func(t *testing.T) {
		t.Parallel()
		f := newFixture(t, rabbitmqtest.Classic, nil)
		if err := f.publish(t.Context(), pubs(1, "bad", true)...); err != nil {
			t.Fatal(err)
		}
		cfg := f.config()
		cfg.DeadLetterExchange = f.dlx + ".missing"
		_, src := openSource(t, cfg, 10, 0)
		got := readAll(t, src, 1, 20*time.Second, false)
		if len(got) != 1 {
			t.Fatalf("read %d of 1", len(got))
		}
		nackOver(src, got[0])
		// The failed dead letter falls back to a nack: the message is still there, not acked.
		again := readAll(t, src, 1, 20*time.Second, false)
		if len(again) != 1 || string(again[0].Value()) != "bad-0" {
			t.Fatalf("after a failed dead letter the message did not come back (%d)", len(again))
		}
		if dead, _ := f.deadLetters(); len(dead) != 0 {
			t.Errorf("%d dead letters reached the real dead-letter queue", len(dead))
		}
	})
}

// TLS: amqps:// with the node's CA delivers; a server name the certificate does not carry, and no CA
// at all, are refused as permission_denied (a config change fixes them), before any message.
func TestIntegrationTLS(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("starts a node of its own")
	}
	node := rabbitmqtest.Start(t, rabbitmqtest.Options{TLS: true})
	q := rabbitmqtest.Name(t)
	node.DeclareQueue(t, q, rabbitmqtest.Quorum, nil)
	if err := node.Publish(t.Context(), q, pubs(1, "secure", true)...); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		set  func(*Config)
		want source.Code // Unknown: delivers
	}{
		{"CA file", func(c *Config) { c.TLSCAFile = node.Certs.CAFile }, source.Unknown},
		{"wrong server name", func(c *Config) { c.TLSCAFile, c.TLSServerName = node.Certs.CAFile, "broker.example" }, source.PermissionDenied},
		{"system pool only", func(c *Config) {}, source.PermissionDenied},
		{"insecure skip verify", func(c *Config) { c.TLSInsecure = true }, source.Unknown},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig(node.TLSURL("127.0.0.1"), q)
			tc.set(&cfg)
			d := openTest(t.Context(), t, cfg)
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			for ctx.Err() == nil {
				msgs, err := d.Receive(ctx, 10)
				if tc.want != source.Unknown {
					if err == nil {
						t.Fatalf("received %d messages without a trusted certificate", len(msgs))
					}
					if got := source.Classify(d, err); got != tc.want {
						t.Fatalf("error %v classified %s, want %s", err, got, tc.want)
					}
					return
				}
				if err != nil {
					t.Fatalf("Receive: %v", err)
				}
				if len(msgs) == 1 {
					// Hand it back for the next case.
					if err := d.Nack(ctx, []source.Handle{msgs[0].Handle}, 0); err != nil {
						t.Fatal(err)
					}
					return
				}
			}
			t.Fatal("no message over TLS")
		})
	}
}

// The session, probe and dead-letter connections dial concurrently (a Receive, a Backlog and a dead
// letter at once, or reconnections after an outage), all with the TLS settings of RABBITMQ_TLS_*.
// amqp091-go writes the URL's host into the tls.Config's ServerName on each dial when none is set, so
// one shared *tls.Config is a data race (-race fails this test); each dial gets its own copy.
func TestIntegrationTLSConcurrentDials(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("starts a node of its own")
	}
	node := rabbitmqtest.Start(t, rabbitmqtest.Options{TLS: true})
	q := rabbitmqtest.Name(t)
	node.DeclareQueue(t, q, rabbitmqtest.Classic, nil)
	if err := node.Publish(t.Context(), q, pubs(1, "secure", true)...); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(node.TLSURL("127.0.0.1"), q)
	cfg.TLSCAFile = node.Certs.CAFile // no RABBITMQ_TLS_SERVER_NAME: amqp091-go sets it from the URL
	d := openTest(t.Context(), t, cfg)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 4 { // connections as the session and the links make them
		wg.Go(func() {
			conn, err := d.dialer()(ctx)
			if err != nil {
				errs <- fmt.Errorf("dialing: %w", err)
				return
			}
			_ = conn.Close()
		})
	}
	wg.Go(func() { // the session
		for ctx.Err() == nil {
			msgs, err := d.Receive(ctx, 1)
			if err != nil {
				errs <- fmt.Errorf("Receive: %w", err)
				return
			}
			if len(msgs) == 1 {
				return
			}
		}
	})
	wg.Go(func() { // the probe
		if _, err := d.Backlog(ctx); err != nil {
			errs <- fmt.Errorf("Backlog: %w", err)
		}
	})
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// A connection lost while the broker stays unreachable: numa acks, during the outage, messages it
// got before the loss and messages the adapter still had buffered (their tags are dead). With
// message-ids the broker's redeliveries of those are acked by the source instead of handed to numa
// again (nearly always: see the race below); nothing is lost.
func TestIntegrationAcksDuringOutageAreNotRedelivered(t *testing.T) {
	t.Parallel()
	f := newFixture(t, rabbitmqtest.Quorum, nil)
	const total, held = 80, 20
	if err := f.publish(t.Context(), pubs(total, "m", true)...); err != nil {
		t.Fatal(err)
	}
	cfg := f.config()
	cfg.ConsumerTag = "outage-" + f.queue
	d, src := openSource(t, cfg, held, 0) // prefetch 2 x held: held more wait in the adapter's buffer
	first := readAll(t, src, held, 20*time.Second, false)
	if len(first) != held {
		t.Fatalf("read %d of %d", len(first), held)
	}
	waitFor(t, "the adapter's buffer filled", func() bool {
		d.mu.Lock()
		defer d.mu.Unlock()
		return d.sess != nil && len(d.sess.live) >= 2*held
	})
	// The broker becomes unreachable for this source: the connection is closed and every new attempt
	// is refused until it is back.
	down := make(chan struct{})
	dial := d.dial
	d.mu.Lock()
	d.dial = func(ctx context.Context) (amqpConn, error) {
		select {
		case <-down:
			return dial(ctx)
		default:
			return nil, fmt.Errorf("dial tcp: %w", errLost)
		}
	}
	d.mu.Unlock()
	if _, err := f.node.CloseConnections(t.Context(), cfg.ConsumerTag, "test: outage"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the loss", func() bool { return d.stats().Lost == 1 })
	src.Ack(t.Context(), numatest.AckRequest(numatest.OffsetsOf(first)...))
	// What the adapter had buffered is still handed out during the outage, and acked.
	during := readAll(t, src, held, 3*time.Second, true)
	t.Logf("%d messages read and acked during the outage", len(during))
	close(down)
	got := bodies(append(first, during...))
	deadline := time.Now().Add(30 * time.Second)
	for len(got) < total && time.Now().Before(deadline) {
		for b, n := range bodies(readAll(t, src, total, time.Second, true)) {
			got[b] += n
		}
	}
	dups := 0
	for i := range total {
		n := got[fmt.Sprintf("m-%d", i)]
		if n == 0 {
			t.Errorf("m-%d never delivered", i)
		}
		dups += max(n-1, 0)
	}
	t.Logf("%d of %d messages handed to numa twice", dups, held+len(during))
	if dups > held+len(during) {
		t.Errorf("%d duplicates, more than the %d messages acked on the lost channel", dups, held+len(during))
	}
	waitFor(t, "the queue drained", func() bool { r, u := queueCounts(t, f.node, f.queue); return r == 0 && u == 0 })
	// The adapter sends acks only once the broker is reachable again, so they race the redeliveries:
	// a redelivery that arrives after the dropped ack is acked on arrival, or taken out of the driver's
	// queue (Reacked); one the adapter already holds replaces the handle of its record, which the
	// adapter then acks with the new tag. Only a redelivery the adapter is admitting at the moment its
	// record is forgotten is handed out again (numa drops it by offset within 60 s).
	t.Logf("stats %+v", d.stats())
	if s := d.stats(); s.Stale != int64(held+len(during)) || s.Lost != 1 {
		t.Errorf("stats %+v: want %d dropped acks and 1 lost session", s, held+len(during))
	}
}

// Preflight (--check): every check passes on a good configuration; a missing queue, a missing
// dead-letter exchange and a wrong password are each named with a fix, and nothing is received.
func TestIntegrationPreflight(t *testing.T) {
	t.Parallel()
	f := newFixture(t, rabbitmqtest.Classic, nil)
	if err := f.publish(t.Context(), pubs(1, "untouched", true)...); err != nil {
		t.Fatal(err)
	}
	outcomes := func(cfg Config) map[string]string {
		d := openTest(t.Context(), t, cfg)
		return drivertest.Outcomes(d.Preflight(t.Context()))
	}
	connect := "amqp: connect (address, TLS, credentials, virtual host)"
	queue := "amqp: queue " + f.queue + " exists (passive queue.declare)"
	dlx := "amqp: dead-letter exchange " + f.dlx + " exists (passive exchange.declare)"

	if got := outcomes(f.config()); got[connect] != "pass" || got[queue] != "pass" || got[dlx] != "pass" || len(got) != 3 {
		t.Errorf("good configuration: %v", got)
	}
	missing := f.config()
	missing.Queue = f.queue + "-missing"
	got := outcomes(missing)
	if q := "amqp: queue " + missing.Queue + " exists (passive queue.declare)"; !strings.HasPrefix(got[q], "fail: declare the queue") || got[dlx] != "pass" {
		t.Errorf("missing queue: %v", got)
	}
	noDLX := f.config()
	noDLX.DeadLetterExchange = f.dlx + "-missing"
	got = outcomes(noDLX)
	if x := "amqp: dead-letter exchange " + noDLX.DeadLetterExchange + " exists (passive exchange.declare)"; !strings.HasPrefix(got[x], "fail: declare the exchange") || got[queue] != "pass" {
		t.Errorf("missing dead-letter exchange: %v", got)
	}
	wrong := f.config()
	wrong.URL = config.Secret(strings.Replace(f.node.URL(), ":"+rabbitmqtest.Password+"@", ":wrong@", 1))
	got = outcomes(wrong)
	if !strings.HasPrefix(got[connect], "fail: check RABBITMQ_URL") || got[queue] != "skipped" || got[dlx] != "skipped" {
		t.Errorf("wrong password: %v", got)
	}
	if ready, unacked := queueCounts(t, f.node, f.queue); ready != 1 || unacked != 0 {
		t.Errorf("after the checks the queue holds %d ready, %d unacked; want the message untouched", ready, unacked)
	}
}
