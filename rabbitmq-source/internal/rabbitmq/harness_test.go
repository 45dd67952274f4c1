package rabbitmq

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/numaflow-connectors/sources/common/config"
	"github.com/numaflow-connectors/sources/common/proctest"
	"github.com/numaflow-connectors/sources/common/server"
	"github.com/numaflow-connectors/sources/common/source"
	"github.com/numaflow-connectors/sources/common/source/drivertest"
	"github.com/numaflow-connectors/sources/rabbitmq-source/rabbitmqtest"
)

func TestMain(m *testing.M) { rabbitmqtest.Main(m) }

func testLogger(t testing.TB) *slog.Logger { return proctest.Logger(t) }

// testConfig is a valid configuration for url and queue.
func testConfig(url, queue string) Config {
	return Config{URL: config.Secret(url), Queue: queue, ConsumerTimeout: 30 * time.Minute,
		ReconnectMax: time.Second, Heartbeat: 10 * time.Second}
}

var consumerSeq atomic.Int64

// suiteBudget is the adapter's budget in drivertest's sources (numa's batch of 100: prefetch 200).
var suiteBudget = server.Budget{Messages: 200, Bytes: source.DefaultPrefetchBytes}

// openTest opens a driver through the real constructor (Open), for the conformance suite's budget.
func openTest(ctx context.Context, t testing.TB, cfg Config) *driver {
	t.Helper()
	return openBudget(ctx, t, cfg, suiteBudget)
}

// openBudget opens a driver through the real constructor (Open) for an adapter with budget b.
func openBudget(ctx context.Context, t testing.TB, cfg Config, b server.Budget) *driver {
	t.Helper()
	if err := cfg.Validate(); err != nil {
		t.Fatalf("invalid test config: %v", err)
	}
	if cfg.ConsumerTag == "" {
		cfg.ConsumerTag = fmt.Sprintf("%s-c%d", cfg.Queue, consumerSeq.Add(1))
	}
	env := &server.Env{Log: testLogger(t), Platform: config.Platform{Pipeline: "p", Vertex: "in"}, Budget: b}
	d, err := Open(ctx, &cfg, env)
	if err != nil {
		t.Fatalf("opening driver: %v", err)
	}
	t.Cleanup(func() { _ = d.Close(context.WithoutCancel(ctx)) })
	return d.(*driver)
}

// fixture is a queue (of a kind) behind a topic exchange bound with #, so a publication's key is its
// routing key, and a dead-letter exchange (fanout) with a queue of its own.
type fixture struct {
	t      testing.TB
	node   *rabbitmqtest.Node
	conn   *amqp.Connection
	queue  string
	kind   string
	exch   string
	dlx    string
	dlq    string
	withID bool // publish with a message-id

	mu   sync.Mutex
	dead []amqp.Delivery
}

func newFixture(t testing.TB, kind string, queueArgs amqp.Table) *fixture {
	t.Helper()
	n := rabbitmqtest.Shared(t)
	name := rabbitmqtest.Name(t)
	f := &fixture{t: t, node: n, conn: n.Dial(t), queue: name, kind: kind, exch: name + ".x", dlx: name + ".dlx", dlq: name + ".dlq"}
	n.DeclareQueue(t, f.queue, kind, queueArgs)
	n.DeclareQueue(t, f.dlq, rabbitmqtest.Classic, nil)
	ch, err := f.conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	defer ch.Close()
	for _, x := range []struct{ name, kind, queue, key string }{{f.exch, "topic", f.queue, "#"}, {f.dlx, "fanout", f.dlq, ""}} {
		if err := ch.ExchangeDeclare(x.name, x.kind, false, true, false, false, nil); err != nil {
			t.Fatal(err)
		}
		if err := ch.QueueBind(x.queue, x.key, x.name, false, nil); err != nil {
			t.Fatal(err)
		}
	}
	return f
}

func (f *fixture) config() Config {
	cfg := testConfig(f.node.URL(), f.queue)
	cfg.DeadLetterExchange = f.dlx
	return cfg
}

// publish sends payloads with key through the topic exchange.
func (f *fixture) publish(ctx context.Context, msgs ...amqp.Publishing) error {
	return rabbitmqtest.PublishOn(ctx, f.conn, f.exch, "k", msgs...)
}

// publishKeyed sends each message with its own routing key.
func (f *fixture) publishKeyed(ctx context.Context, key string, m amqp.Publishing) error {
	return rabbitmqtest.PublishOn(ctx, f.conn, f.exch, key, m)
}

// deadLetters drains the dead-letter queue into f.dead and returns everything seen so far.
func (f *fixture) deadLetters() ([]amqp.Delivery, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	ch, err := f.conn.Channel()
	if err != nil {
		return nil, err
	}
	defer ch.Close()
	for {
		m, ok, err := ch.Get(f.dlq, true)
		if err != nil {
			return nil, err
		}
		if !ok {
			break
		}
		f.dead = append(f.dead, m)
	}
	return append([]amqp.Delivery(nil), f.dead...), nil
}

func randomID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// harness is the conformance harness over a fixture.
type harness struct {
	*fixture
	t *testing.T
}

func newHarnessOf(kind string, withID bool) drivertest.NewHarness {
	return func(ctx context.Context, t *testing.T) (drivertest.Harness, error) {
		f := newFixture(t, kind, nil)
		f.withID = withID
		return &harness{fixture: f, t: t}, nil
	}
}

func (h *harness) MakeDriver(ctx context.Context) (source.Driver, error) {
	return openTest(ctx, h.t, h.config()), nil
}

func (h *harness) MakeMissingDriver(ctx context.Context) (source.Driver, error) {
	cfg := h.config()
	cfg.Queue = h.queue + "-missing"
	return openTest(ctx, h.t, cfg), nil
}

func (h *harness) Publish(ctx context.Context, msgs []drivertest.Publication) error {
	for _, m := range msgs {
		p := amqp.Publishing{Body: m.Payload, Timestamp: time.Now(), Headers: amqp.Table{}}
		if h.withID {
			p.MessageId = randomID()
		}
		for k, v := range m.Headers {
			p.Headers[k] = v
		}
		key := m.Key
		if key == "" {
			key = "k"
		}
		if err := h.publishKeyed(ctx, key, p); err != nil {
			return err
		}
	}
	return nil
}

func (h *harness) DeadLettered(context.Context) ([]drivertest.DeadLetter, error) {
	ds, err := h.deadLetters()
	if err != nil {
		return nil, err
	}
	out := make([]drivertest.DeadLetter, len(ds))
	for i, d := range ds {
		r, _ := d.Headers[HeaderDeadLetterReason].(string)
		out[i] = drivertest.DeadLetter{Payload: d.Body, Reason: r}
	}
	return out, nil
}

func (h *harness) Capabilities() drivertest.Capabilities {
	return drivertest.Capabilities{
		Keys: true, Headers: true, DeadLetter: true,
		// A crashed holder's connection closes: the broker requeues at once.
		Redelivery: 2 * time.Second,
		MaxPayload: 1 << 20,
		Binary:     true,
		Backlog:    true,
	}
}

func (h *harness) Close() {}

// The conformance suite, in process and over the socket, on a classic queue (publishers without a
// message-id: offsets per delivery) and a quorum queue (with message-ids: stable offsets, and the
// broker's delivery count).
func TestConformance(t *testing.T) {
	if testing.Short() {
		t.Skip("conformance suite against rabbitmq-server skipped in -short mode")
	}
	t.Run("classic", func(t *testing.T) {
		t.Parallel()
		drivertest.Run(t, newHarnessOf(rabbitmqtest.Classic, false))
	})
	t.Run("quorum", func(t *testing.T) {
		t.Parallel()
		drivertest.Run(t, newHarnessOf(rabbitmqtest.Quorum, true))
	})
}
