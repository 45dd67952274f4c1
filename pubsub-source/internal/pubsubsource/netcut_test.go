package pubsubsource

import (
	"context"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/api/option"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/numaflow-connectors/sources/common/numatest"
	"github.com/numaflow-connectors/sources/common/source"
	"github.com/numaflow-connectors/sources/pubsub-source/pubsubtest"
)

// Ways to cut the network.
const (
	// cutSilent: no byte moves either way on any connection, old or new (as in a partition: calls fail
	// by their own deadlines, nothing is refused or reset); healing lets the held bytes through, as TCP
	// does when a partition ends.
	cutSilent = "silent"
	// cutRefuse: every connection is closed and new ones are refused (the host is down, a firewall
	// rejects); healing listens again on the same address.
	cutRefuse = "refuse"
)

// cutProxy is a TCP proxy on 127.0.0.1 in front of the emulator that can cut the network.
type cutProxy struct {
	addr     string
	upstream string
	done     chan struct{}
	wg       sync.WaitGroup

	mu    sync.Mutex
	l     net.Listener  // nil while refusing
	open  chan struct{} // closed while the network is up (silent cuts)
	conns map[net.Conn]struct{}
}

func startCutProxy(t *testing.T, upstream string) *cutProxy {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{addr: l.Addr().String(), l: l, upstream: upstream, done: make(chan struct{}),
		open: make(chan struct{}), conns: make(map[net.Conn]struct{})}
	close(p.open)
	p.wg.Add(1)
	go p.accept(l)
	t.Cleanup(p.stop)
	return p
}

func (p *cutProxy) Addr() string { return p.addr }

func (p *cutProxy) accept(l net.Listener) {
	defer p.wg.Done()
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		u, err := net.Dial("tcp", p.upstream)
		if err != nil {
			_ = c.Close()
			continue
		}
		if !p.track(c, u) {
			continue
		}
		p.wg.Add(2)
		go p.pipe(u, c)
		go p.pipe(c, u)
	}
}

// track registers a new connection pair; false (and both closed) when the proxy is stopped or
// refusing.
func (p *cutProxy) track(cs ...net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	stopped := p.l == nil
	select {
	case <-p.done:
		stopped = true
	default:
	}
	if stopped {
		for _, c := range cs {
			_ = c.Close()
		}
		return false
	}
	for _, c := range cs {
		p.conns[c] = struct{}{}
	}
	return true
}

// pipe copies src to dst, holding each chunk while the network is cut.
func (p *cutProxy) pipe(dst, src net.Conn) {
	defer p.wg.Done()
	defer func() { _ = dst.Close(); _ = src.Close() }()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.mu.Lock()
			open := p.open
			p.mu.Unlock()
			select {
			case <-open:
			case <-p.done:
				return
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func (p *cutProxy) cut(t *testing.T, mode string) {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	switch mode {
	case cutSilent:
		p.open = make(chan struct{})
	case cutRefuse:
		_ = p.l.Close()
		p.l = nil
		for c := range p.conns {
			_ = c.Close()
		}
		clear(p.conns)
	default:
		t.Fatalf("unknown cut %q", mode)
	}
}

func (p *cutProxy) heal(t *testing.T) {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.open:
	default:
		close(p.open)
	}
	if p.l == nil {
		l, err := net.Listen("tcp", p.addr)
		if err != nil {
			t.Fatalf("listening again on %s: %v", p.addr, err)
		}
		p.l = l
		p.wg.Add(1)
		go p.accept(l)
	}
}

func (p *cutProxy) stop() {
	p.mu.Lock()
	select {
	case <-p.done:
		p.mu.Unlock()
		return
	default:
	}
	close(p.done)
	if p.l != nil {
		_ = p.l.Close()
	}
	for c := range p.conns {
		_ = c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

// numaLoop plays numa against s on one read stream: Read (batch, 1 s), then Ack of the whole batch.
type numaLoop struct {
	t      *testing.T
	s      *source.Source
	stream context.Context
	acked  map[string]int // message ID -> times acked
}

// round reads one batch and acks it; it returns the IDs read.
func (n *numaLoop) round(batch int) []string {
	msgs := numatest.ReadFrom(n.stream, n.s, batch, time.Second)
	ids := make([]string, len(msgs))
	for i, m := range msgs {
		ids[i] = m.Headers()[HeaderMessageID]
		n.acked[ids[i]]++
	}
	if len(msgs) > 0 {
		n.s.Ack(n.stream, numatest.AckRequest(numatest.OffsetsOf(msgs)...))
	}
	return ids
}

// A network cut longer than the subscription's ack deadline while the prefetch is full: every held
// lease runs out, Pub/Sub makes those messages available again, and extensions and pulls fail until
// the network is back. Afterwards the source must pull at full rate again: every message delivered,
// none stuck at the broker, nothing left counted as held. (The driver's own flow control, since
// removed, freed a slot only on an ack or nack of the same ack ID, so each redelivered held message
// leaked one and pulling could stop.) Both a silent cut and refused connections.
func TestEmulatorNetworkCutLongerThanAckDeadline(t *testing.T) {
	t.Parallel()
	for _, mode := range []string{cutSilent, cutRefuse} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			networkCutLongerThanAckDeadline(t, mode)
		})
	}
}

func networkCutLongerThanAckDeadline(t *testing.T, mode string) {
	emu := pubsubtest.Shared(t)
	const (
		ackDeadline = 10 * time.Second
		cutFor      = 15 * time.Second // every lease runs out: the last extension left at most 10 s
		before      = 1000             // drained before the cut, to measure the rate
		total       = 3000
		prefetch    = 200
		batch       = 100
	)
	topic := emu.CreateTopic(t, "cut")
	sub := emu.CreateSubscription(t, "cut", pubsubtest.Subscription{Topic: topic, AckDeadline: ackDeadline})
	published := map[string]bool{}
	for _, id := range publish(t, emu, topic, texts("cut", total)...) {
		published[id] = true
	}

	proxy := startCutProxy(t, emu.Host)
	cfg := &Config{Subscription: sub, AckDeadline: ackDeadline, MaxExtension: time.Hour, Pending: PendingOff}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(newTestLogWriter(t), &slog.HandlerOptions{Level: slog.LevelWarn}))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	d, err := open(ctx, cfg, log, clientOptions{emulatorHost: emu.Host, pubsub: []option.ClientOption{
		option.WithEndpoint(proxy.Addr()), option.WithoutAuthentication(),
		option.WithGRPCDialOption(grpc.WithTransportCredentials(insecure.NewCredentials()))}})
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	s := startSource(t, d, source.Options{ReadBatchSize: batch, Prefetch: prefetch}, log, reg)
	stream, endStream := context.WithCancel(context.Background())
	defer endStream()
	numa := &numaLoop{t: t, s: s, stream: stream, acked: map[string]int{}}

	// Before: full rate, measured after the first 200 (connections, receivers ramping up).
	start := time.Now()
	var warm time.Time
	for len(numa.acked) < before && time.Since(start) < 60*time.Second {
		numa.round(batch)
		if warm.IsZero() && len(numa.acked) >= 200 {
			warm = time.Now()
		}
	}
	rateBefore := float64(len(numa.acked)-200) / time.Since(warm).Seconds()
	if len(numa.acked) < before {
		t.Fatalf("before the cut: %d of %d messages in 60 s", len(numa.acked), before)
	}

	// numa stalls with one batch in flight; the source fills its prefetch.
	inFlight := numatest.ReadFrom(stream, s, batch, time.Second)
	waitFor(t, 30*time.Second, "prefetch full", func() bool {
		return gauge(t, reg, "numaflow_source_buffered")+gauge(t, reg, "numaflow_source_in_flight") == prefetch
	})
	bufferedAtCut := int(gauge(t, reg, "numaflow_source_buffered"))

	proxy.cut(t, mode)
	cutAt := time.Now()
	time.Sleep(cutFor)
	receivedAtHeal := receivedTotal(t, reg)
	proxy.heal(t)
	healed := time.Now()
	t.Logf("%s cut for %s (ack deadline %s) with %d messages held (%d in flight at numa); ready during the cut: %v",
		mode, healed.Sub(cutAt).Round(100*time.Millisecond), ackDeadline, prefetch, len(inFlight), gauge(t, reg, "numaflow_source_ready"))

	// numa acks its batch (leases long gone), then reads on. The first first-time deliveries are the
	// messages buffered through the cut; the rate after counts the ones pulled after it.
	s.Ack(stream, numatest.AckRequest(numatest.OffsetsOf(inFlight)...))
	for _, m := range inFlight {
		numa.acked[m.Headers()[HeaderMessageID]]++
	}
	var pulledAgain, firstNew time.Time
	skip, newAfter := bufferedAtCut, 0
	deadline := time.Now().Add(90 * time.Second)
	for len(numa.acked) < total && time.Now().Before(deadline) {
		for _, id := range numa.round(batch) {
			if numa.acked[id] != 1 {
				continue
			}
			if skip > 0 {
				skip--
				continue
			}
			if firstNew.IsZero() {
				firstNew = time.Now()
			}
			newAfter++
		}
		if pulledAgain.IsZero() && receivedTotal(t, reg) > receivedAtHeal {
			pulledAgain = time.Now()
		}
	}
	if len(numa.acked) < total {
		t.Fatalf("after the cut: %d of %d messages delivered within 90 s; buffered %v, in flight %v", len(numa.acked), total,
			gauge(t, reg, "numaflow_source_buffered"), gauge(t, reg, "numaflow_source_in_flight"))
	}
	rateAfter := float64(newAfter) / time.Since(firstNew).Seconds()
	recovery := pulledAgain.Sub(healed)
	t.Logf("%s: recovery: the first pull after the heal brought messages %s after it; rate before %.0f msg/s, after %.0f msg/s (%d messages)",
		mode, recovery.Round(10*time.Millisecond), rateBefore, rateAfter, newAfter)

	// None stuck: read on past an ack deadline; a message whose ack carried an expired ack ID comes
	// back once and is acked again, then nothing.
	quietSince := time.Now()
	settle := time.Now().Add(60 * time.Second)
	for time.Since(quietSince) < ackDeadline+5*time.Second && time.Now().Before(settle) {
		if ids := numa.round(batch); len(ids) > 0 {
			quietSince = time.Now()
		}
	}
	if time.Since(quietSince) < ackDeadline+5*time.Second {
		t.Errorf("messages still coming back 60 s after every message was delivered")
	}
	dups := 0
	for id, n := range numa.acked {
		if !published[id] {
			t.Errorf("unknown message %s", id)
		}
		dups += n - 1
	}
	buffered, inflight := gauge(t, reg, "numaflow_source_buffered"), gauge(t, reg, "numaflow_source_in_flight")
	t.Logf("%s: delivered %d messages, %d of them again after the cut; ack failures %v; duplicate receives %v; buffered %v, in flight %v",
		mode, len(numa.acked), dups, counter(t, reg, "numaflow_source_ack_failed_total"),
		counter(t, reg, "numaflow_source_duplicate_receives_total"), buffered, inflight)
	if buffered != 0 || inflight != 0 {
		t.Errorf("after the drain: buffered %v, in flight %v; want 0", buffered, inflight)
	}
	if dups > prefetch {
		t.Errorf("%d messages delivered again, more than the %d held through the cut", dups, prefetch)
	}
	if rateAfter < rateBefore/3 {
		t.Errorf("rate after the cut %.0f msg/s, before %.0f msg/s: not back to full rate", rateAfter, rateBefore)
	}
	if recovery > 10*time.Second {
		t.Errorf("first messages pulled %s after the network came back, want within 10 s", recovery)
	}
	left, err := emu.Drain(context.Background(), sub)
	if err != nil {
		t.Fatal(err)
	}
	if len(left) > 0 {
		t.Errorf("%d messages left at the broker after the drain", len(left))
	}
}

// receivedTotal is how many messages the source's receives brought (the receive batch histogram's sum).
func receivedTotal(t *testing.T, reg *prometheus.Registry) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "numaflow_source_receive_batch_size" && len(mf.GetMetric()) > 0 {
			return mf.GetMetric()[0].GetHistogram().GetSampleSum()
		}
	}
	return 0
}

// counter reads a counter of the adapter's metrics from reg (0 when absent).
func counter(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) > 0 {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	return 0
}

// A blip at start: Open's GetSubscription fails (the network is down), the pod still starts, and the
// settings are read in the background once the network is back, through Open's own wiring.
func TestEmulatorSettingsAfterBlipAtStart(t *testing.T) {
	t.Parallel()
	emu := pubsubtest.Shared(t)
	topic := emu.CreateTopic(t, "blip")
	sub := emu.CreateSubscription(t, "blip", pubsubtest.Subscription{Topic: topic, AckDeadline: 20 * time.Second})
	proxy := startCutProxy(t, emu.Host)
	proxy.cut(t, cutRefuse)
	cfg := &Config{Subscription: sub, AckDeadline: 10 * time.Second, MaxExtension: time.Hour, Pending: PendingOff}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	var logs logBuffer
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	d, err := open(ctx, cfg, logs.logger(), clientOptions{emulatorHost: emu.Host, pubsub: []option.ClientOption{
		option.WithEndpoint(proxy.Addr()), option.WithoutAuthentication(),
		option.WithGRPCDialOption(grpc.WithTransportCredentials(insecure.NewCredentials()))}})
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Close(context.Background()) })
	if d.settings.Load() != nil {
		t.Fatal("settings known through a refused network")
	}
	if c := d.Capabilities(); c.ReceiveConcurrency != receiveConcurrency || !c.OrderedKeys {
		t.Errorf("capabilities with unknown settings %+v", c)
	}
	proxy.heal(t)
	healed := time.Now()
	waitFor(t, 15*time.Second, "settings read after the network came back", func() bool { return d.settings.Load() != nil })
	t.Logf("settings read %s after the network came back", time.Since(healed).Round(10*time.Millisecond))
	if s := d.settings.Load(); s.ordered || s.ackDeadline != 20*time.Second || !d.modackAfterPull() {
		t.Errorf("settings %+v", s)
	}
	if !strings.Contains(logs.String(), "subscription settings unknown for now") {
		t.Errorf("the failed read at start was not logged:\n%s", logs.String())
	}
}
