package logging

import (
	"bytes"
	"encoding/json"
	"log"
	"strings"
	"testing"
)

func TestNew(t *testing.T) {
	tests := []struct {
		level, format string
		wantErr       bool
		wantDebug     bool
		wantJSON      bool
	}{
		{level: "info", format: "json", wantJSON: true},
		{level: "", format: "", wantJSON: true},
		{level: "DEBUG", format: "text", wantDebug: true},
		{level: "warn", format: "JSON", wantJSON: true},
		{level: "error", format: "text"},
		{level: "verbose", format: "json", wantErr: true},
		{level: "info", format: "xml", wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.level+"/"+tc.format, func(t *testing.T) {
			var b bytes.Buffer
			l, err := New(&b, tc.level, tc.format)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, want error %v", err, tc.wantErr)
			}
			if err != nil {
				return
			}
			l.Debug("debug line")
			l.Error("error line", "queue", "q1")
			out := b.String()
			if strings.Contains(out, "debug line") != tc.wantDebug {
				t.Errorf("debug shown = %v, want %v:\n%s", !tc.wantDebug, tc.wantDebug, out)
			}
			var m map[string]any
			isJSON := json.Unmarshal([]byte(strings.Split(strings.TrimSpace(out), "\n")[0]), &m) == nil
			if isJSON != tc.wantJSON {
				t.Errorf("json = %v, want %v:\n%s", isJSON, tc.wantJSON, out)
			}
			if !strings.Contains(out, "q1") {
				t.Errorf("attribute missing:\n%s", out)
			}
		})
	}
}

func TestRouteStdLog(t *testing.T) {
	flags, prefix, out := log.Flags(), log.Prefix(), log.Writer()
	t.Cleanup(func() { log.SetFlags(flags); log.SetPrefix(prefix); log.SetOutput(out) })
	log.SetPrefix("x: ")
	log.SetFlags(log.LstdFlags | log.Lmicroseconds)

	var b bytes.Buffer
	l, err := New(&b, "warn", "json")
	if err != nil {
		t.Fatal(err)
	}
	l = l.With("connector", "demo")
	RouteStdLog(l)
	log.Printf("gracefully stopping grpc server")
	if b.Len() != 0 {
		t.Errorf("an info line passed a warn logger: %s", b.String())
	}

	b.Reset()
	l, _ = New(&b, "info", "json")
	RouteStdLog(l.With("connector", "demo"))
	log.Printf("error receiving from read stream: %v", "EOF")
	var m map[string]any
	if err := json.Unmarshal(b.Bytes(), &m); err != nil {
		t.Fatalf("not one JSON line: %q", b.String())
	}
	if m["msg"] != "error receiving from read stream: EOF" || m["component"] != "numaflow-go" ||
		m["level"] != "INFO" || m["connector"] != "demo" {
		t.Errorf("routed line = %v", m)
	}
}
