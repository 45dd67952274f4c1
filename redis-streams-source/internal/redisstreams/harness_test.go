package redisstreams

import (
	"context"
	"fmt"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/numaflow-connectors/sources/common/config"
	"github.com/numaflow-connectors/sources/common/proctest"
	"github.com/numaflow-connectors/sources/common/server"
	"github.com/numaflow-connectors/sources/common/source"
	"github.com/numaflow-connectors/sources/common/source/drivertest"
	"github.com/numaflow-connectors/sources/redis-streams-source/redistest"
)

func TestMain(m *testing.M) { redistest.Main(m) }

// testClaimIdle is the short claim idle time of the integration tests, so crash recovery is quick.
const testClaimIdle = 2 * time.Second

// Field names the harness publishes with.
const (
	testPayloadField = "data"
	testKeyField     = "key"
)

func testLogger(t testing.TB) *slog.Logger { return proctest.Logger(t) }

// testConfig is a valid configuration for url and stream with the test's short claim idle time.
func testConfig(url, stream string) Config {
	return Config{
		URL: config.Secret(url), Mode: ModeStandalone, Stream: stream, Group: "g", StartFrom: StartOldest,
		CreateGroup: true, ClaimMinIdle: testClaimIdle, MaxExtension: time.Hour, Block: 200 * time.Millisecond,
		ReadCount: 500, PayloadField: testPayloadField, KeyField: testKeyField,
	}
}

// openTest opens a driver through the real constructor (Open) with a fresh consumer name.
func openTest(ctx context.Context, t testing.TB, cfg Config) *driver {
	t.Helper()
	if err := cfg.Validate(); err != nil {
		t.Fatalf("invalid test config: %v", err)
	}
	env := &server.Env{Log: testLogger(t), Platform: config.Platform{Pipeline: "p", Vertex: "in", Replica: int(consumerSeq.Add(1))}}
	d, err := Open(ctx, &cfg, env)
	if err != nil {
		t.Fatalf("opening driver: %v", err)
	}
	t.Cleanup(func() { _ = d.Close(context.WithoutCancel(ctx)) })
	return d.(*driver)
}

// consumerSeq gives every driver of a test binary its own replica number, so each acts as another
// replica (a restarted replica reuses its name: set Config.Consumer).
var consumerSeq atomic.Int64

// harness is the conformance harness: a fresh stream, group and dead-letter stream per test.
type harness struct {
	t      *testing.T
	srv    *redistest.Server
	client *redis.Client
	stream string
	dlq    string
}

func newHarness(ctx context.Context, t *testing.T) (drivertest.Harness, error) {
	srv := redistest.Shared(t)
	name := redistest.Name(t)
	return &harness{t: t, srv: srv, client: srv.Client(t), stream: name, dlq: name + ":dlq"}, nil
}

func (h *harness) config() Config {
	cfg := testConfig(h.srv.URL(), h.stream)
	cfg.DeadLetterStream = h.dlq
	return cfg
}

func (h *harness) MakeDriver(ctx context.Context) (source.Driver, error) {
	return openTest(ctx, h.t, h.config()), nil
}

func (h *harness) MakeMissingDriver(ctx context.Context) (source.Driver, error) {
	cfg := h.config()
	cfg.Stream = h.stream + "-missing"
	cfg.DeadLetterStream = ""
	cfg.CreateGroup = false
	return openTest(ctx, h.t, cfg), nil
}

func (h *harness) Publish(ctx context.Context, msgs []drivertest.Publication) error {
	pipe := h.client.Pipeline()
	for _, m := range msgs {
		values := []any{testPayloadField, m.Payload}
		if m.Key != "" {
			values = append(values, testKeyField, m.Key)
		}
		for k, v := range m.Headers {
			values = append(values, k, v)
		}
		pipe.XAdd(ctx, &redis.XAddArgs{Stream: h.stream, Values: values})
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("adding to %s: %w", h.stream, err)
	}
	return nil
}

func (h *harness) DeadLettered(ctx context.Context) ([]drivertest.DeadLetter, error) {
	es, err := h.client.XRange(ctx, h.dlq, "-", "+").Result()
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", h.dlq, err)
	}
	out := make([]drivertest.DeadLetter, len(es))
	for i, e := range es {
		p, _ := e.Values[testPayloadField].(string)
		r, _ := e.Values[FieldDeadLetterReason].(string)
		out[i] = drivertest.DeadLetter{Payload: []byte(p), Reason: r}
	}
	return out, nil
}

func (h *harness) Capabilities() drivertest.Capabilities {
	return drivertest.Capabilities{
		Keys: true, Headers: true, DeadLetter: true,
		Redelivery: testClaimIdle + 3*time.Second,
		MaxPayload: 1 << 20,
		Binary:     true,
		Backlog:    true,
	}
}

func (h *harness) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = h.client.Del(ctx, h.stream, h.dlq).Err()
}

func TestConformance(t *testing.T) {
	if testing.Short() {
		t.Skip("conformance suite against redis-server skipped in -short mode")
	}
	drivertest.Run(t, newHarness)
}
