// Package logging builds the connector's slog logger from LOG_LEVEL and LOG_FORMAT and routes
// numaflow-go's own output (the standard library log package) through it.
package logging

import (
	"fmt"
	"io"
	"log"
	"log/slog"
	"strings"
)

// parseLevel reads a LOG_LEVEL value: debug, info, warn or error (any case).
func parseLevel(level string) (slog.Level, error) {
	switch strings.ToLower(strings.TrimSpace(level)) {
	case "debug":
		return slog.LevelDebug, nil
	case "info", "":
		return slog.LevelInfo, nil
	case "warn", "warning":
		return slog.LevelWarn, nil
	case "error":
		return slog.LevelError, nil
	}
	return 0, fmt.Errorf("unknown log level %q (want debug, info, warn or error)", level)
}

// New returns a logger writing to w at level, in format json (the default when empty) or text.
func New(w io.Writer, level, format string) (*slog.Logger, error) {
	lvl, err := parseLevel(level)
	if err != nil {
		return nil, err
	}
	opts := &slog.HandlerOptions{Level: lvl}
	switch strings.ToLower(strings.TrimSpace(format)) {
	case "json", "":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("unknown log format %q (want json or text)", format)
}

// RouteStdLog makes the standard library's log package (numaflow-go logs with log.Printf) write each
// line through l at info level with component=numaflow-go. The log package's own timestamp and prefix
// are turned off, so a line carries the logger's time only.
func RouteStdLog(l *slog.Logger) {
	log.SetFlags(0)
	log.SetPrefix("")
	log.SetOutput(&stdLogWriter{log: l.With("component", "numaflow-go")})
}

type stdLogWriter struct {
	log *slog.Logger
}

// Write gets one log call's output (the log package writes each entry with one Write).
func (w *stdLogWriter) Write(p []byte) (int, error) {
	msg := strings.TrimRight(string(p), "\r\n")
	if msg != "" {
		w.log.Info(msg)
	}
	return len(p), nil
}
