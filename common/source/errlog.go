package source

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/numaflow-connectors/sources/common/metrics"
)

// errorLog counts every broker error by operation and kind, and logs at most one line per operation
// and kind every errorLogEvery, with how many similar errors it left out: an outage must not flood
// the logs.
type errorLog struct {
	ctx context.Context // for the log calls
	log *slog.Logger
	m   *metrics.Source

	mu         sync.Mutex
	logged     map[string]time.Time
	suppressed map[string]int
}

const errorLogEvery = 5 * time.Second

func newErrorLog(ctx context.Context, log *slog.Logger, m *metrics.Source) *errorLog {
	return &errorLog{ctx: ctx, log: log, m: m, logged: make(map[string]time.Time), suppressed: make(map[string]int)}
}

func (e *errorLog) report(op string, code Code, err error) {
	if code == Canceled {
		return
	}
	e.m.BrokerErrors.WithLabelValues(op, code.String()).Inc()
	key := op + "/" + code.String()
	e.mu.Lock()
	if time.Since(e.logged[key]) < errorLogEvery {
		e.suppressed[key]++
		e.mu.Unlock()
		return
	}
	suppressed := e.suppressed[key]
	e.logged[key] = time.Now()
	e.suppressed[key] = 0
	e.mu.Unlock()
	level := slog.LevelWarn
	if !code.Transient() {
		level = slog.LevelError
	}
	e.log.Log(e.ctx, level, "broker call failed", "op", op, "kind", code.String(), "error", err,
		"similar_errors_suppressed", suppressed)
}
