package pubsubsource

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	pb "cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"

	"github.com/numaflow-connectors/sources/common/server"
	"github.com/numaflow-connectors/sources/common/source"
	"github.com/numaflow-connectors/sources/common/source/drivertest"
	"github.com/numaflow-connectors/sources/pubsub-source/pubsubtest"
)

// TestConformance runs the common driver suite against the emulator, in process and over the socket.
func TestConformance(t *testing.T) {
	pubsubtest.Shared(t)
	drivertest.Run(t, newHarness)
}

// harness is a fresh topic and subscription (ack deadline 10 s, Pub/Sub's minimum) plus a
// dead-letter topic with a subscription to read it back.
type harness struct {
	t     *testing.T
	emu   *pubsubtest.Emulator
	topic string
	sub   string
	dl    string
	dlSub string

	mu   sync.Mutex
	dead []drivertest.DeadLetter
}

func newHarness(ctx context.Context, t *testing.T) (drivertest.Harness, error) {
	emu := pubsubtest.Shared(t)
	h := &harness{t: t, emu: emu}
	h.topic = emu.CreateTopic(t, "conf")
	h.dl = emu.CreateTopic(t, "conf-dl")
	h.dlSub = emu.CreateSubscription(t, "conf-dl", pubsubtest.Subscription{Topic: h.dl})
	h.sub = emu.CreateSubscription(t, "conf", pubsubtest.Subscription{Topic: h.topic, AckDeadline: 10 * time.Second})
	return h, nil
}

func (h *harness) config(sub string) *Config {
	return &Config{
		Subscription: sub, AckDeadline: 10 * time.Second, MaxExtension: time.Hour,
		DeadLetterTopic: h.dl, Pending: PendingOff,
	}
}

func (h *harness) open(ctx context.Context, sub string) (source.Driver, error) {
	cfg := h.config(sub)
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log := slog.New(slog.NewTextHandler(newTestLogWriter(h.t), &slog.HandlerOptions{Level: slog.LevelWarn}))
	return Open(ctx, cfg, &server.Env{Log: log})
}

func (h *harness) MakeDriver(ctx context.Context) (source.Driver, error) { return h.open(ctx, h.sub) }

func (h *harness) MakeMissingDriver(ctx context.Context) (source.Driver, error) {
	return h.open(ctx, pubsubtest.SubscriptionName(pubsubtest.UniqueID("missing")))
}

func (h *harness) Publish(ctx context.Context, msgs []drivertest.Publication) error {
	pms := make([]*pb.PubsubMessage, len(msgs))
	for i, m := range msgs {
		pms[i] = &pb.PubsubMessage{Data: m.Payload, Attributes: m.Headers, OrderingKey: m.Key}
	}
	_, err := h.emu.Publish(ctx, h.topic, pms...)
	return err
}

func (h *harness) DeadLettered(ctx context.Context) ([]drivertest.DeadLetter, error) {
	msgs, err := h.emu.Drain(ctx, h.dlSub)
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, m := range msgs {
		h.dead = append(h.dead, drivertest.DeadLetter{Payload: m.GetData(), Reason: m.GetAttributes()[AttrDeadLetterReason]})
	}
	return append([]drivertest.DeadLetter(nil), h.dead...), err
}

func (h *harness) Capabilities() drivertest.Capabilities {
	return drivertest.Capabilities{
		Keys: true, Headers: true, DeadLetter: true, Binary: true,
		// Ack deadline 10 s; the emulator redelivers expired unary-Pull leases on time.
		Redelivery: 15 * time.Second,
		MaxPayload: 1 << 20,
	}
}

// Close: the topics and subscriptions are deleted by the test's cleanups.
func (h *harness) Close() {}

// testLogWriter sends driver logs to t.Log until the test ends (late lines are dropped: t.Log after
// the end of a test panics).
type testLogWriter struct {
	t    *testing.T
	done *atomic.Bool
}

func newTestLogWriter(t *testing.T) testLogWriter {
	w := testLogWriter{t: t, done: new(atomic.Bool)}
	t.Cleanup(func() { w.done.Store(true) })
	return w
}

func (w testLogWriter) Write(p []byte) (int, error) {
	if !w.done.Load() {
		w.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}
