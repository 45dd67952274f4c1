package mqttsource

import (
	"context"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/numaflow-connectors/sources/common/config"
	"github.com/numaflow-connectors/sources/common/server"
	"github.com/numaflow-connectors/sources/mqtt-source/mqtttest"
)

// connectCounter is a slog handler that counts the driver's "connected" and "reconnected" records.
type connectCounter struct{ n *atomic.Int64 }

func (c connectCounter) Enabled(context.Context, slog.Level) bool { return true }
func (c connectCounter) Handle(_ context.Context, r slog.Record) error {
	if strings.HasPrefix(r.Message, "connected") || strings.HasPrefix(r.Message, "reconnected") {
		c.n.Add(1)
	}
	return nil
}
func (c connectCounter) WithAttrs([]slog.Attr) slog.Handler { return c }
func (c connectCounter) WithGroup(string) slog.Handler      { return c }

// Two replicas configured with the same client id take the session over from each other: the broker
// accepts each CONNECT and drops the other connection. Each reconnection waits and the waits grow (they
// were 0 after every connection that came up: a connection about every millisecond).
func TestIntegrationSessionTakeoverBacksOff(t *testing.T) {
	srv := mqtttest.Shared(t)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	name := mqtttest.Name(t)
	cfg := testConfig(srv, name, name+"-0", name) // one client id for both
	cfg.ReconnectMax = 2 * time.Second
	var connections atomic.Int64
	for range 2 {
		env := &server.Env{Log: slog.New(connectCounter{&connections}), Platform: config.Platform{Pipeline: "p", Vertex: "in"}, Budget: harnessBudget}
		d, err := Open(ctx, &cfg, env)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = d.Close(context.WithoutCancel(ctx)) })
	}
	const watch = 4 * time.Second
	time.Sleep(watch)
	// At least 100 ms before each reconnection, growing towards 2 s: a few dozen at most.
	n := connections.Load()
	t.Logf("%d connections in %s with the session taken over back and forth", n, watch)
	if n > 60 {
		t.Errorf("%d connections in %s: the reconnections do not back off", n, watch)
	}
	if n < 3 {
		t.Errorf("%d connections in %s: the test did not make the replicas take over each other's session", n, watch)
	}
}

// The backoff: no wait before the first connection; at least reconnectMin before every reconnection;
// growing while connections are lost soon after they came up; from the start again after a
// connection that stayed up.
func TestReconnectBackoff(t *testing.T) {
	d, _ := newFakeDriver(t, nil) // connected once already
	d.mu.Lock()
	d.everConnected = false
	d.mu.Unlock()
	now := time.Unix(1000, 0)
	d.now = func() time.Time { return now }
	b := d.reconnectBackoff(10 * time.Second)
	if w := b(0); w != 0 {
		t.Fatalf("first connection after %s, want at once", w)
	}
	longest := func(attempt int) (lo, hi time.Duration) {
		lo = time.Hour
		for range 300 {
			w := b(attempt)
			lo, hi = min(lo, w), max(hi, w)
		}
		return lo, hi
	}
	lost := func(after time.Duration) {
		d.connectionUp(true)
		now = now.Add(after)
		d.connectionDown()
	}

	lost(time.Minute) // a connection that stayed up
	if lo, hi := longest(0); lo < reconnectMin || hi > 2*reconnectMin {
		t.Fatalf("first reconnection after a stable connection: %s to %s, want %s to %s", lo, hi, reconnectMin, 2*reconnectMin)
	}
	for range 6 {
		lost(time.Millisecond) // taken over at once
	}
	if lo, hi := longest(0); lo < reconnectMin || hi < 5*time.Second {
		t.Fatalf("after 6 connections lost at once: %s to %s, want at least %s, up to 5s or more", lo, hi, reconnectMin)
	}
	if _, hi := longest(40); hi > 10*time.Second {
		t.Fatalf("a wait of %s beyond the 10s maximum", hi)
	}
	lost(stableConnection)
	if lo, hi := longest(0); lo < reconnectMin || hi > 2*reconnectMin {
		t.Fatalf("first reconnection after a stable connection again: %s to %s, want %s to %s", lo, hi, reconnectMin, 2*reconnectMin)
	}
}
