package source

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/numaflow-connectors/sources/common/metrics"
)

type okChecker struct{ calls atomic.Int32 }

func (c *okChecker) Check(context.Context) error { c.calls.Add(1); return nil }

// hookHandler runs hook once when a record with message msg is logged. The hook is set while the
// prober may already be logging (it starts in newReadiness), hence the lock.
type hookHandler struct {
	msg  string
	mu   sync.Mutex
	hook func()
}

func (h *hookHandler) setHook(f func()) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.hook = f
}

func (h *hookHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *hookHandler) Handle(_ context.Context, r slog.Record) error {
	if r.Message != h.msg {
		return nil
	}
	h.mu.Lock()
	f := h.hook
	h.hook = nil
	h.mu.Unlock()
	if f != nil {
		f()
	}
	return nil
}
func (h *hookHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *hookHandler) WithGroup(string) slog.Handler      { return h }

// A call that finds the broker unreachable right after the prober saw it back (between the prober's
// set(true) and its exit) must start a new prober: it started none, and readiness stayed false for good
// while no receive brought messages, although every health check would pass.
func TestReadinessAfterAFlapRightAtRecovery(t *testing.T) {
	h := &hookHandler{msg: "broker reachable"}
	bg := newTracker()
	ctx, cancel := context.WithCancel(context.Background())
	defer func() { cancel(); bg.wait(context.Background()) }()
	chk := &okChecker{}
	r := newReadiness(slog.New(h), metrics.New(nil), chk, nil, bg, ctx)
	h.setHook(func() { r.set(false) }) // a concurrent failing call (e.g. a receive on the old connection)
	r.set(false)
	deadline := time.Now().Add(6 * time.Second)
	for time.Now().Before(deadline) {
		if r.get() {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("not ready 6 s after the flap although %d health checks passed and every check would pass (prober running: %v)",
		chk.calls.Load(), r.probing.Load())
}
