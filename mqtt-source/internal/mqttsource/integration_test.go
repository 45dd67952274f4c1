package mqttsource

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"testing"
	"time"

	"github.com/numaproj/numaflow-go/pkg/sourcer"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/numaflow-connectors/sources/common/numatest"
	"github.com/numaflow-connectors/sources/common/server"
	"github.com/numaflow-connectors/sources/common/source"
	"github.com/numaflow-connectors/sources/mqtt-source/mqtttest"
)

// Integration tests against a real mosquitto (mqtttest).

// ackSettle is how long a test waits for paho to send the acknowledgements it released (it sends them
// every ackFlushInterval): 100 ms was once not enough on a loaded CI machine under -race.
const ackSettle = 50 * ackFlushInterval

// openReady opens a driver and waits until it is subscribed.
func openReady(ctx context.Context, t *testing.T, cfg Config, budget server.Budget) *driver {
	t.Helper()
	d := openTest(ctx, t, cfg, budget)
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := d.Check(cctx); err != nil {
		t.Fatalf("driver not ready: %v", err)
	}
	return d
}

// receiveUntil calls Receive until n messages arrived or within passed; errors are tolerated (an
// outage) and the last one is returned.
func receiveUntil(t *testing.T, d *driver, n int, within time.Duration) ([]*source.Message, error) {
	t.Helper()
	var out []*source.Message
	var last error
	deadline := time.Now().Add(within)
	for len(out) < n && time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), min(time.Until(deadline), 2*time.Second))
		msgs, err := d.Receive(ctx, n-len(out))
		cancel()
		if err != nil {
			last = err
			time.Sleep(100 * time.Millisecond) // the adapter's backoff
			continue
		}
		out = append(out, msgs...)
	}
	return out, last
}

func payloadsOf(msgs []*source.Message) []string {
	out := make([]string, len(msgs))
	for i, m := range msgs {
		out[i] = string(m.Payload)
	}
	sort.Strings(out)
	return out
}

func numbered(prefix string, n int) [][]byte {
	out := make([][]byte, n)
	for i := range out {
		out[i] = fmt.Appendf(nil, "%s-%03d", prefix, i)
	}
	return out
}

// expectNothing fails t when d receives anything within d.
func expectNothing(t *testing.T, d *driver, within time.Duration, why string) {
	t.Helper()
	if got, _ := receiveUntil(t, d, 1, within); len(got) > 0 {
		t.Fatalf("%s: received %q", why, payloadsOf(got))
	}
}

// MQTT requires acknowledgements in arrival order: numa acks the later messages but not the first,
// so nothing may be acknowledged at the broker, and a restarted replica gets all of them again. Once
// the first is acked too, everything is acknowledged.
func TestIntegrationAcksWaitForEarlierMessages(t *testing.T) {
	srv := mqtttest.Shared(t)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	name := mqtttest.Name(t)
	cfg := testConfig(srv, name, name+"-0", name)
	d := openReady(ctx, t, cfg, harnessBudget)
	if err := srv.Connect(t, "").Publish(ctx, name, 1, nil, numbered("m", 5)...); err != nil {
		t.Fatal(err)
	}
	got, err := receiveUntil(t, d, 5, 10*time.Second)
	if len(got) != 5 {
		t.Fatalf("received %d of 5 (%v)", len(got), err)
	}
	if err := d.Ack(ctx, handles(got[4], got[2], got[3], got[1])); err != nil {
		t.Fatal(err)
	}
	time.Sleep(ackSettle) // paho would have sent them by now
	_ = d.Close(ctx)

	d2 := openReady(ctx, t, cfg, harnessBudget)
	again, err := receiveUntil(t, d2, 5, 10*time.Second)
	if !slices.Equal(payloadsOf(again), payloadsOf(got)) {
		t.Fatalf("after a restart the session redelivered %q (%v), want all 5: later acks must wait for the first", payloadsOf(again), err)
	}
	for _, m := range again {
		if m.Headers[HeaderDup] != "true" {
			t.Errorf("redelivery of %s has dup %q", m.Payload, m.Headers[HeaderDup])
		}
	}
	// Out of order again, the first last: every acknowledgement goes out.
	if err := d2.Ack(ctx, handles(again[3], again[1], again[4], again[2], again[0])); err != nil {
		t.Fatal(err)
	}
	time.Sleep(ackSettle)
	_ = d2.Close(ctx)
	d3 := openReady(ctx, t, cfg, harnessBudget)
	expectNothing(t, d3, 1500*time.Millisecond, "acknowledged messages came back")
}

// A nack with a delay through the adapter: the message comes back after the delay with the same
// offset, is acked, and never comes back, even to a restarted replica.
func TestIntegrationNackDelayThenAck(t *testing.T) {
	srv := mqtttest.Shared(t)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	name := mqtttest.Name(t)
	cfg := testConfig(srv, name, name+"-0", name)
	newSource := func() *source.Source {
		src, err := source.New(openReady(ctx, t, cfg, harnessBudget), source.Options{ReadBatchSize: 100}, testLogger(t), prometheus.NewRegistry())
		if err != nil {
			t.Fatal(err)
		}
		return src
	}
	src := newSource()
	if err := srv.Connect(t, "").Publish(ctx, name, 1, nil, []byte("first"), []byte("second")); err != nil {
		t.Fatal(err)
	}
	var first []sourcer.Message
	for len(first) < 2 && ctx.Err() == nil {
		first = append(first, numatest.ReadFrom(ctx, src, 10, time.Second)...)
	}
	delay := uint64(700)
	nacked := time.Now()
	src.Nack(ctx, numatest.NackRequest(sourcer.NackOffset{Offset: first[0].Offset(), NackOptions: &sourcer.NackOptions{Delay: &delay}}))
	src.Ack(ctx, numatest.AckRequest(first[1].Offset()))
	var again []sourcer.Message
	for len(again) == 0 && ctx.Err() == nil {
		again = numatest.ReadFrom(ctx, src, 10, time.Second)
	}
	if took := time.Since(nacked); took < 650*time.Millisecond {
		t.Fatalf("nacked message came back after %s, want the 700ms delay", took)
	}
	if len(again) != 1 || string(again[0].Value()) != "first" || string(again[0].Offset().Value()) != string(first[0].Offset().Value()) {
		t.Fatalf("came back %d messages; want %q with the same offset", len(again), "first")
	}
	src.Ack(ctx, numatest.AckRequest(again[0].Offset()))
	src.Shutdown(ctx)
	if err := src.Close(ctx); err != nil {
		t.Fatal(err)
	}
	d := openReady(ctx, t, cfg, harnessBudget)
	expectNothing(t, d, 1500*time.Millisecond, "acked messages came back to the restarted replica")
}

// A broker restart (graceful, so it persists its sessions) while messages are held: the driver
// reconnects with backoff, resumes its session, and every message not acknowledged before comes back.
func TestIntegrationBrokerRestart(t *testing.T) {
	srv := mqtttest.Start(t, mqtttest.Options{})
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	name := mqtttest.Name(t)
	cfg := testConfig(srv, name, name+"-0", name)
	d := openReady(ctx, t, cfg, harnessBudget)
	pub := srv.Connect(t, "")
	if err := pub.Publish(ctx, name, 1, nil, numbered("r", 10)...); err != nil {
		t.Fatal(err)
	}
	got, _ := receiveUntil(t, d, 10, 10*time.Second)
	if len(got) != 10 {
		t.Fatalf("received %d of 10", len(got))
	}
	if err := d.Ack(ctx, handles(got[:4]...)); err != nil {
		t.Fatal(err)
	}
	time.Sleep(ackSettle)
	srv.Stop(t)
	if _, err := receiveUntil(t, d, 1, 2*time.Second); err == nil || d.ErrorCode(err) != source.Unavailable && source.Classify(d, err) != source.Unavailable {
		t.Errorf("receive during the outage: %v, want an unavailable error", err)
	}
	// Held deliveries of the lost connection can no longer be acknowledged: the broker sends them again.
	if err := d.Ack(ctx, handles(got[4])); source.Classify(d, err) != source.InvalidArgument {
		t.Errorf("ack of a lost connection's delivery: %v, want invalid_argument", err)
	}
	srv.Restart(t)
	again, err := receiveUntil(t, d, 6, 20*time.Second)
	if want := payloadsOf(got[4:]); !slices.Equal(payloadsOf(again), want) {
		t.Fatalf("after the broker restart received %q (%v), want the 6 unacknowledged %q", payloadsOf(again), err, want)
	}
	// New messages flow on the resumed session too, once the connector has subscribed again: the
	// redeliveries above come from the session before that, and Mosquitto 2.0 does not restore a
	// shared subscription from its persistence file, so until then it drops what is published (this
	// test failed in CI when it published first).
	if err := pub.Publish(ctx, name, 1, nil, []byte("after")); err == nil {
		t.Fatal("the publisher's connection survived the restart?")
	}
	cctx, ccancel := context.WithTimeout(ctx, 10*time.Second)
	defer ccancel()
	if err := d.Check(cctx); err != nil {
		t.Fatalf("not subscribed again after the restart: %v", err)
	}
	pub = srv.Connect(t, "")
	if err := pub.Publish(ctx, name, 1, nil, []byte("after")); err != nil {
		t.Fatal(err)
	}
	if more, _ := receiveUntil(t, d, 1, 10*time.Second); len(more) != 1 || string(more[0].Payload) != "after" {
		t.Fatalf("after the restart: %q, want the new message", payloadsOf(more))
	}
}

// Two replicas in one share group split the messages: each gets some, together all, none twice.
func TestIntegrationSharedSubscription(t *testing.T) {
	srv := mqtttest.Shared(t)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	name := mqtttest.Name(t)
	a := openReady(ctx, t, testConfig(srv, name, name+"-0", name), harnessBudget)
	b := openReady(ctx, t, testConfig(srv, name, name+"-1", name), harnessBudget)
	const n = 100
	if err := srv.Connect(t, "").Publish(ctx, name, 1, nil, numbered("s", n)...); err != nil {
		t.Fatal(err)
	}
	var fromA, fromB []*source.Message
	deadline := time.Now().Add(15 * time.Second)
	for len(fromA)+len(fromB) < n && time.Now().Before(deadline) {
		ga, _ := receiveUntil(t, a, n, 200*time.Millisecond)
		gb, _ := receiveUntil(t, b, n, 200*time.Millisecond)
		fromA, fromB = append(fromA, ga...), append(fromB, gb...)
		_ = a.Ack(ctx, handles(ga...))
		_ = b.Ack(ctx, handles(gb...))
	}
	all := payloadsOf(append(slices.Clone(fromA), fromB...))
	if want := payloadsOf(wrap(numbered("s", n))); !slices.Equal(all, want) {
		t.Fatalf("replicas received %d messages together (%d + %d), want each of the %d once", len(all), len(fromA), len(fromB), n)
	}
	if len(fromA) == 0 || len(fromB) == 0 {
		t.Fatalf("one replica got everything (%d + %d): the subscription is not shared", len(fromA), len(fromB))
	}
	t.Logf("split %d / %d", len(fromA), len(fromB))
}

func wrap(ps [][]byte) []*source.Message {
	out := make([]*source.Message, len(ps))
	for i, p := range ps {
		out[i] = &source.Message{Payload: p}
	}
	return out
}

// TLS with the test CA works; a broker certificate the client does not trust, and a wrong password,
// are permission errors (readiness false, no crash loop), never messages.
func TestIntegrationTLSAndAuth(t *testing.T) {
	srv := mqtttest.Shared(t)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	name := mqtttest.Name(t)
	cfg := testConfig(srv, name, name+"-0", name)
	cfg.URL, cfg.TLSCAFile = srv.TLSURL(), srv.Certs.CAFile
	d := openReady(ctx, t, cfg, harnessBudget)
	if err := srv.Connect(t, "").Publish(ctx, name, 1, nil, []byte("over tls")); err != nil {
		t.Fatal(err)
	}
	if got, err := receiveUntil(t, d, 1, 10*time.Second); len(got) != 1 || string(got[0].Payload) != "over tls" {
		t.Fatalf("over TLS received %q (%v)", payloadsOf(got), err)
	}

	for _, tc := range []struct {
		name   string
		mutate func(c *Config)
	}{
		{"untrusted certificate", func(c *Config) { c.URL, c.TLSCAFile = srv.TLSURL(), "" }},
		{"wrong password", func(c *Config) { c.Password = "wrong" }},
		{"unknown user", func(c *Config) { c.Username = "nobody" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := testConfig(srv, name, name+"-"+tc.name, name)
			tc.mutate(&c)
			d := openTest(ctx, t, c, harnessBudget)
			got, err := receiveUntil(t, d, 1, 3*time.Second)
			if len(got) != 0 {
				t.Fatalf("received %d messages", len(got))
			}
			if code := source.Classify(d, err); code != source.PermissionDenied {
				t.Fatalf("error %v classified %s, want permission_denied", err, code)
			}
		})
	}
}

// 1 MiB messages with a 4 MiB budget: the driver never reads more than its share of the budget ahead
// of Receive (it stops reading the connection, although the broker's window holds 200 messages), and
// every message arrives. A stall of several keep-alive intervals does not drop the connection.
func TestIntegrationBigMessagesWithinBudget(t *testing.T) {
	srv := mqtttest.Shared(t)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	name := mqtttest.Name(t)
	budget := harnessBudget
	budget.Bytes = 4 << 20
	cfg := testConfig(srv, name, name+"-0", name)
	cfg.KeepAlive = time.Second
	d := openReady(ctx, t, cfg, budget)
	const n = 20
	big := make([][]byte, n)
	for i := range big {
		big[i] = make([]byte, 1<<20)
		copy(big[i], strconv.Itoa(i))
	}
	if err := srv.Connect(t, "").Publish(ctx, name, 1, nil, big...); err != nil {
		t.Fatal(err)
	}
	// Nobody receives for 3 keep-alive intervals: the driver stops reading the connection, and the
	// connection survives it (every ack below would fail on a new connection).
	time.Sleep(3 * time.Second)
	d.mu.Lock()
	queued, inPaho, limit := d.queueBytes, d.inPahoBytes, d.maxBytes
	d.mu.Unlock()
	// Read ahead of the adapter: at most the driver's share of the budget, plus the one message that
	// always passes (and its MQTT header).
	if queued == 0 || queued+inPaho > limit+(1<<20)+1024 || limit > budget.Bytes {
		t.Fatalf("%d bytes queued and %d read by paho, want some and at most %d of a %d budget", queued, inPaho, limit, budget.Bytes)
	}
	var got []*source.Message
	for len(got) < n && ctx.Err() == nil {
		msgs, _ := receiveUntil(t, d, 2, 5*time.Second)
		if len(msgs) == 0 {
			break
		}
		got = append(got, msgs...)
		if err := d.Ack(ctx, handles(msgs...)); err != nil {
			t.Fatal(err)
		}
	}
	if len(got) != n {
		t.Fatalf("received %d of %d big messages", len(got), n)
	}
}

// The dead-letter path: a copy with the reason and the delivery count reaches the dead-letter topic,
// and the original is acknowledged (a restarted replica does not get it again).
func TestIntegrationDeadLetter(t *testing.T) {
	srv := mqtttest.Shared(t)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	name := mqtttest.Name(t)
	cfg := testConfig(srv, name, name+"-0", name)
	cfg.DeadLetterTopic = "dead/" + name
	dead := srv.Connect(t, "")
	if err := dead.Subscribe(ctx, cfg.DeadLetterTopic); err != nil {
		t.Fatal(err)
	}
	d := openReady(ctx, t, cfg, harnessBudget)
	if err := srv.Connect(t, "").Publish(ctx, name, 1, []string{"site", "7"}, []byte("poison")); err != nil {
		t.Fatal(err)
	}
	got, _ := receiveUntil(t, d, 1, 10*time.Second)
	if len(got) != 1 {
		t.Fatal("nothing received")
	}
	got[0].Deliveries = 3
	if err := d.DeadLetter(ctx, got[0], "max deliveries (3) reached"); err != nil {
		t.Fatal(err)
	}
	dl := dead.WaitReceived(ctx, 1)
	if len(dl) != 1 {
		t.Fatal("nothing reached the dead-letter topic")
	}
	u := dl[0].Properties.User
	if string(dl[0].Payload) != "poison" || u.Get(PropDeadLetterReason) != "max deliveries (3) reached" ||
		u.Get(PropDeadLetterDeliveries) != "3" || u.Get(PropDeadLetterTopic) != name || u.Get("site") != "7" {
		t.Fatalf("dead letter %q with properties %v", dl[0].Payload, u)
	}
	time.Sleep(ackSettle)
	_ = d.Close(ctx)
	expectNothing(t, openReady(ctx, t, cfg, harnessBudget), 1500*time.Millisecond, "the dead-lettered original came back")
}

// A network cut while messages are held and more are published: reads report the outage, and once
// the network is back the driver reconnects, resumes its session and gets every message not
// acknowledged before the cut, and those published during it.
func TestIntegrationNetworkCut(t *testing.T) {
	srv := mqtttest.Shared(t)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	name := mqtttest.Name(t)
	proxy := srv.Proxy(t)
	cfg := testConfig(srv, name, name+"-0", name)
	cfg.URL = proxy.URL()
	d := openReady(ctx, t, cfg, harnessBudget)
	pub := srv.Connect(t, "")
	before := numbered("before", 5)
	if err := pub.Publish(ctx, name, 1, nil, before...); err != nil {
		t.Fatal(err)
	}
	got, _ := receiveUntil(t, d, 5, 10*time.Second)
	if len(got) != 5 {
		t.Fatalf("received %d of 5", len(got))
	}
	if err := d.Ack(ctx, handles(got[:2]...)); err != nil {
		t.Fatal(err)
	}
	time.Sleep(ackSettle)
	proxy.Cut()
	during := numbered("during", 5)
	if err := pub.Publish(ctx, name, 1, nil, during...); err != nil {
		t.Fatal(err)
	}
	if msgs, err := receiveUntil(t, d, 1, 2*time.Second); len(msgs) != 0 || source.Classify(d, err) != source.Unavailable {
		t.Errorf("during the cut: %d messages, %v (%s); want an unavailable error", len(msgs), err, source.Classify(d, err))
	}
	proxy.Restore()
	again, err := receiveUntil(t, d, 8, 20*time.Second)
	want := payloadsOf(append(slices.Clone(got[2:]), wrap(during)...))
	if !slices.Equal(payloadsOf(again), want) {
		t.Fatalf("after the cut received %q (%v), want %q", payloadsOf(again), err, want)
	}
}

// With MQTT_ID_PROPERTY the offset is the publisher's id: the same on the broker's redelivery after a
// restart (numa recognises it), while without it every delivery gets an offset of its own.
func TestIntegrationIDPropertyIsStableAcrossRedelivery(t *testing.T) {
	srv := mqtttest.Shared(t)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	name := mqtttest.Name(t)
	cfg := testConfig(srv, name, name+"-0", name)
	cfg.IDProperty = "msg-id"
	d := openReady(ctx, t, cfg, harnessBudget)
	pub := srv.Connect(t, "")
	if err := pub.Publish(ctx, name, 1, []string{"msg-id", "order-17"}, []byte("with id")); err != nil {
		t.Fatal(err)
	}
	if err := pub.Publish(ctx, name, 1, nil, []byte("without id")); err != nil {
		t.Fatal(err)
	}
	first, _ := receiveUntil(t, d, 2, 10*time.Second)
	if len(first) != 2 || first[0].ID != "order-17" {
		t.Fatalf("received %d, first id %q; want the id property", len(first), first[0].ID)
	}
	_ = d.Close(ctx) // nothing acked: the session keeps both
	again, _ := receiveUntil(t, openReady(ctx, t, cfg, harnessBudget), 2, 10*time.Second)
	if len(again) != 2 || again[0].ID != first[0].ID {
		t.Fatalf("redelivered %d, first id %q; want the same id %q", len(again), again[0].ID, first[0].ID)
	}
	if again[1].ID == first[1].ID {
		t.Fatalf("a message without the property kept its id %q across a redelivery: delivery ids must be unique", again[1].ID)
	}
}

// What the README says about scale-down, shown: a member of the share group that goes away keeps its
// unacknowledged messages, and Mosquitto keeps routing new messages of the group into its offline
// session; the remaining member never gets them. When the member comes back with its client id, it
// gets every one of them.
func TestIntegrationOfflineMemberKeepsItsMessages(t *testing.T) {
	srv := mqtttest.Shared(t)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	name := mqtttest.Name(t)
	cfgA, cfgB := testConfig(srv, name, name+"-0", name), testConfig(srv, name, name+"-1", name)
	a := openReady(ctx, t, cfgA, harnessBudget)
	b := openReady(ctx, t, cfgB, harnessBudget)
	_ = b.Close(ctx) // scaled down: its session (and its share of the group) stays at the broker
	const n = 20
	if err := srv.Connect(t, "").Publish(ctx, name, 1, nil, numbered("o", n)...); err != nil {
		t.Fatal(err)
	}
	fromA, _ := receiveUntil(t, a, n, 3*time.Second)
	if err := a.Ack(ctx, handles(fromA...)); err != nil {
		t.Fatal(err)
	}
	if len(fromA) == n {
		t.Skip("the broker gave the offline member's share to the live one: nothing stranded")
	}
	t.Logf("the live member got %d of %d; the offline member's session holds the rest", len(fromA), n)
	fromB, _ := receiveUntil(t, openReady(ctx, t, cfgB, harnessBudget), n-len(fromA), 10*time.Second)
	if got := payloadsOf(append(slices.Clone(fromA), fromB...)); !slices.Equal(got, payloadsOf(wrap(numbered("o", n)))) {
		t.Fatalf("with the member back, %d + %d messages; want all %d once", len(fromA), len(fromB), n)
	}
}

// MQTT over WebSockets (ws:// and wss://, through mqtttest's WebSocket proxy in front of mosquitto):
// messages arrive, acks reach the broker, a cut connection is dialed again and the session resumes
// with what was not acknowledged, and wss:// refuses a broker its CA does not sign.
func TestIntegrationWebSockets(t *testing.T) {
	srv := mqtttest.Shared(t)
	for _, secure := range []bool{false, true} {
		name := map[bool]string{false: "ws", true: "wss"}[secure]
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
			defer cancel()
			topic := mqtttest.Name(t)
			proxy := srv.WebSocketProxy(t, secure)
			cfg := testConfig(srv, topic, topic+"-0", topic)
			cfg.URL = proxy.URL()
			if secure {
				cfg.TLSCAFile = srv.Certs.CAFile
			}
			d := openReady(ctx, t, cfg, harnessBudget)
			pub := srv.Connect(t, "")
			first := numbered("first", 5)
			if err := pub.Publish(ctx, topic, 1, nil, first...); err != nil {
				t.Fatal(err)
			}
			got, err := receiveUntil(t, d, 5, 10*time.Second)
			if !slices.Equal(payloadsOf(got), payloadsOf(wrap(first))) {
				t.Fatalf("over %s received %q (%v)", proxy.URL(), payloadsOf(got), err)
			}
			if err := d.Ack(ctx, handles(got[:3]...)); err != nil {
				t.Fatal(err)
			}
			time.Sleep(ackSettle) // the acknowledgements go out
			proxy.Cut()
			if msgs, err := receiveUntil(t, d, 1, 3*time.Second); len(msgs) != 0 || source.Classify(d, err) != source.Unavailable {
				t.Errorf("during the cut: %d messages, %v (%s); want an unavailable error", len(msgs), err, source.Classify(d, err))
			}
			proxy.Restore()
			again, err := receiveUntil(t, d, 2, 20*time.Second)
			if want := payloadsOf(got[3:]); !slices.Equal(payloadsOf(again), want) {
				t.Fatalf("after the cut received %q (%v), want the unacknowledged %q", payloadsOf(again), err, want)
			}
			if err := d.Ack(ctx, handles(again...)); err != nil {
				t.Fatal(err)
			}
			expectNothing(t, d, time.Second, "everything was acknowledged")

			if !secure {
				return
			}
			c := testConfig(srv, topic, topic+"-untrusted", topic)
			c.URL = proxy.URL() // no MQTT_TLS_CA_FILE: the system pool does not know the test CA
			u := openTest(ctx, t, c, harnessBudget)
			msgs, err := receiveUntil(t, u, 1, 3*time.Second)
			if len(msgs) != 0 || source.Classify(u, err) != source.PermissionDenied {
				t.Fatalf("untrusted wss:// broker: %d messages, %v classified %s, want permission_denied", len(msgs), err, source.Classify(u, err))
			}
		})
	}
}

// A resumed session keeps every subscription it ever had: after MQTT_TOPICS changed (here a/ to b/,
// and the share group with it) the broker still sends the session what the old filter matches. The
// source must not hand numa messages of a topic no filter of MQTT_TOPICS matches; they are
// acknowledged (MQTT acknowledges in order) and dropped with a warning, and the configured topic flows.
func TestIntegrationChangedTopicsAreNotRead(t *testing.T) {
	srv := mqtttest.Shared(t)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	name := mqtttest.Name(t)
	old := testConfig(srv, name+"/a/#", name+"-0", name)
	if err := openReady(ctx, t, old, harnessBudget).Close(ctx); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(srv, name+"/b/#", name+"-0", name+"-new")
	d := openReady(ctx, t, cfg, harnessBudget)
	pub := srv.Connect(t, "")
	for _, topic := range []string{name + "/a/1", name + "/b/1", name + "/a/2", name + "/b/2"} {
		if err := pub.Publish(ctx, topic, 1, nil, []byte(topic)); err != nil {
			t.Fatal(err)
		}
	}
	got, _ := receiveUntil(t, d, 3, 3*time.Second)
	if want := []string{name + "/b/1", name + "/b/2"}; !slices.Equal(payloadsOf(got), want) {
		t.Fatalf("MQTT_TOPICS is %s only, got %q", cfg.Topics, payloadsOf(got))
	}
	if err := d.Ack(ctx, handles(got...)); err != nil {
		t.Fatal(err)
	}
	// Nothing held back: the dropped messages were acknowledged, so the acks of the others went out.
	time.Sleep(ackSettle)
	_ = d.Close(ctx)
	expectNothing(t, openReady(ctx, t, cfg, harnessBudget), 1500*time.Millisecond, "unacknowledged after a restart")
}
