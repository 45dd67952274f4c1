package proctest

import (
	"io"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
)

// LogWriter sends what is written to t.Log, a line per write, until the test ends: late lines from
// goroutines that are still stopping are dropped instead of panicking.
func LogWriter(t testing.TB) io.Writer {
	w := &testWriter{t: t}
	t.Cleanup(func() { w.done.Store(true) })
	return w
}

type testWriter struct {
	t    testing.TB
	done atomic.Bool
}

func (w *testWriter) Write(p []byte) (int, error) {
	if !w.done.Load() {
		w.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

// Logger is a debug-level text logger writing to t.Log (see LogWriter).
func Logger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(LogWriter(t), &slog.HandlerOptions{Level: slog.LevelDebug}))
}
