package mqttsource

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/numaflow-connectors/sources/common/config"
	"github.com/numaflow-connectors/sources/common/server"
	"github.com/numaflow-connectors/sources/common/source"
	"github.com/numaflow-connectors/sources/common/source/drivertest"
	"github.com/numaflow-connectors/sources/mqtt-source/mqtttest"
)

func TestMain(m *testing.M) { mqtttest.Main(m) }

// testConfig is a valid configuration for the broker and topic filter, with a fixed client id and group.
func testConfig(srv *mqtttest.Server, filter, clientID, group string) Config {
	c := validConfig()
	c.URL, c.Topics, c.ClientID, c.ShareGroup = srv.URL(), filter, clientID, group
	c.Username, c.Password = mqtttest.User, config.Secret(srv.Password)
	c.ReconnectMax, c.KeepAlive = 500*time.Millisecond, 5*time.Second
	return c
}

// openTest opens a driver through the real constructor (Open), closed when t ends.
func openTest(ctx context.Context, t testing.TB, cfg Config, budget server.Budget) *driver {
	t.Helper()
	if err := cfg.Validate(); err != nil {
		t.Fatalf("invalid test config: %v", err)
	}
	env := &server.Env{Log: testLogger(t), Platform: config.Platform{Pipeline: "p", Vertex: "in"}, Budget: budget}
	d, err := Open(ctx, &cfg, env)
	if err != nil {
		t.Fatalf("opening driver: %v", err)
	}
	t.Cleanup(func() { _ = d.Close(context.WithoutCancel(ctx)) })
	return d.(*driver)
}

// harnessBudget is the adapter's budget in the conformance suite (read batch 100, prefetch 200).
var harnessBudget = server.Budget{Messages: 200, Bytes: 64 << 20}

// harness is the conformance harness: a fresh topic, share group and dead-letter topic per test. A
// driver is a replica whose client id is the lowest one no open driver uses, so a driver made after
// one was closed or killed is that replica restarted (it resumes the session), and drivers open
// together are replicas sharing the group.
type harness struct {
	t     *testing.T
	srv   *mqtttest.Server
	name  string
	topic string
	dlq   string
	pub   *mqtttest.Client
	dead  *mqtttest.Client
	mu    sync.Mutex
	open  map[int]bool // replica slots in use
}

func newHarness(ctx context.Context, t *testing.T) (drivertest.Harness, error) {
	srv := mqtttest.Shared(t)
	name := mqtttest.Name(t)
	h := &harness{t: t, srv: srv, name: name, topic: "conformance/" + name, dlq: "dead/" + name, open: map[int]bool{}}
	// The first replica's session exists before anything is published: MQTT keeps messages only for
	// subscriptions that exist.
	srv.Session(t, h.clientID(0), time.Hour, 1, "$share/"+name+"/"+h.topic)
	h.pub = srv.Connect(t, "")
	h.dead = srv.Connect(t, "")
	if err := h.dead.Subscribe(ctx, h.dlq); err != nil {
		return nil, err
	}
	return h, nil
}

func (h *harness) clientID(slot int) string { return h.name + "-" + strconv.Itoa(slot) }

func (h *harness) MakeDriver(ctx context.Context) (source.Driver, error) {
	h.mu.Lock()
	slot := 0
	for h.open[slot] {
		slot++
	}
	h.open[slot] = true
	h.mu.Unlock()
	cfg := testConfig(h.srv, h.topic, h.clientID(slot), h.name)
	cfg.DeadLetterTopic = h.dlq
	d := openTest(ctx, h.t, cfg, harnessBudget)
	d.onClose = func() {
		h.mu.Lock()
		delete(h.open, slot)
		h.mu.Unlock()
	}
	return d, nil
}

func (h *harness) MakeMissingDriver(context.Context) (source.Driver, error) {
	return nil, fmt.Errorf("mqtt has no missing resource")
}

func (h *harness) Publish(ctx context.Context, msgs []drivertest.Publication) error {
	for _, m := range msgs {
		var props []string
		for k, v := range m.Headers {
			props = append(props, k, v)
		}
		if err := h.pub.Publish(ctx, h.topic, 1, props, m.Payload); err != nil {
			return err
		}
	}
	return nil
}

func (h *harness) DeadLettered(context.Context) ([]drivertest.DeadLetter, error) {
	var out []drivertest.DeadLetter
	for _, p := range h.dead.Received() {
		out = append(out, drivertest.DeadLetter{Payload: p.Payload, Reason: p.Properties.User.Get(PropDeadLetterReason)})
	}
	return out, nil
}

func (h *harness) Capabilities() drivertest.Capabilities {
	return drivertest.Capabilities{
		Headers: true, DeadLetter: true,
		// A killed replica's messages come back when it restarts with its client id (no lease).
		Redelivery:        3 * time.Second,
		MaxPayload:        1 << 20,
		Binary:            true,
		NoMissingResource: true,
	}
}

func (h *harness) Close() {}

func TestConformance(t *testing.T) {
	if testing.Short() {
		t.Skip("conformance suite against mosquitto skipped in -short mode")
	}
	drivertest.Run(t, newHarness)
}
