package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/fstest"
	"time"

	"github.com/numaflow-connectors/sources/common/config"
	"github.com/numaflow-connectors/sources/common/numatest"
	"github.com/numaflow-connectors/sources/common/proctest"
	"github.com/numaflow-connectors/sources/common/source"
)

type demoConfig struct {
	Queue string        `env:"DEMO_QUEUE,required" desc:"Queue to read."`
	Wait  time.Duration `env:"DEMO_WAIT" envDefault:"1s" desc:"Long-poll wait."`
}

var errUnreachable = errors.New("dialing demo broker: connection refused")

// fakeDriver hands out its messages on the first Receive, then finds nothing (or fails while fail is
// set). It records releases (Nack) and Close.
type fakeDriver struct {
	msgs   []*source.Message
	fail   atomic.Bool
	closed atomic.Int32

	mu     sync.Mutex
	given  bool
	nacked []source.Handle
	acked  []source.Handle
}

func (d *fakeDriver) Capabilities() source.Capabilities { return source.Capabilities{MaxReceive: 10} }

func (d *fakeDriver) Receive(ctx context.Context, max int) ([]*source.Message, error) {
	if d.fail.Load() {
		return nil, errUnreachable
	}
	d.mu.Lock()
	if !d.given {
		d.given = true
		d.mu.Unlock()
		return d.msgs, nil
	}
	d.mu.Unlock()
	// A short long poll that finds nothing.
	t := time.NewTimer(20 * time.Millisecond)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-t.C:
		return nil, nil
	}
}

func (d *fakeDriver) Ack(_ context.Context, hs []source.Handle) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.acked = append(d.acked, hs...)
	return nil
}

func (d *fakeDriver) Nack(_ context.Context, hs []source.Handle, _ time.Duration) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.nacked = append(d.nacked, hs...)
	return nil
}

func (d *fakeDriver) Extend(context.Context, []source.Handle, time.Duration) error { return nil }
func (d *fakeDriver) Backlog(context.Context) (int64, error)                       { return -1, nil }

func (d *fakeDriver) ErrorCode(err error) source.Code {
	if errors.Is(err, errUnreachable) {
		return source.Unavailable
	}
	return source.Unknown
}

func (d *fakeDriver) Close(context.Context) error {
	d.closed.Add(1)
	return nil
}

func (d *fakeDriver) released() []source.Handle {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]source.Handle(nil), d.nacked...)
}

// checkingDriver adds a start-up check that fails.
type checkingDriver struct {
	*fakeDriver
	err error
}

func (d *checkingDriver) Check(context.Context) error { return d.err }

type harness struct {
	app    App[demoConfig]
	opened atomic.Int32
	cfg    atomic.Pointer[demoConfig]
	env    atomic.Pointer[Env]
}

func newHarness(d source.Driver, openErr error) *harness {
	h := &harness{}
	h.app = App[demoConfig]{
		Name:        "demo-source",
		Description: "Reads a demo queue.",
		Open: func(_ context.Context, cfg *demoConfig, env *Env) (source.Driver, error) {
			h.opened.Add(1)
			h.cfg.Store(cfg)
			h.env.Store(env)
			if env.Log == nil {
				return nil, errors.New("no logger")
			}
			return d, openErr
		},
	}
	return h
}

// baseEnv is a valid environment serving on a temp socket and a loopback metrics port.
func baseEnv(t *testing.T) (environ []string, socket, infoFile string) {
	t.Helper()
	dir, err := os.MkdirTemp("", "srv") // short: unix socket paths are limited to about 100 bytes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	socket = filepath.Join(dir, "run", "source.sock")
	infoFile = filepath.Join(dir, "run", "server-info")
	return []string{
		"DEMO_QUEUE=q1",
		"SOURCE_SOCKET=" + socket,
		"SOURCE_SERVER_INFO_FILE=" + infoFile,
		"METRICS_ADDR=127.0.0.1:0",
		"SHUTDOWN_TIMEOUT=5s",
		"RELEASE_WAIT=100ms",
		"NUMAFLOW_REPLICA=2",
	}, socket, infoFile
}

func TestRunFlags(t *testing.T) {
	tests := []struct {
		args     []string
		code     int
		stdout   []string
		stderr   []string
		noStdout bool
	}{
		{args: []string{"--help"}, code: 0, stdout: []string{"Usage: demo-source", "Reads a demo queue.", "DEMO_QUEUE", "DEMO_WAIT", "LOG_LEVEL", "METRICS_ADDR", "NUMAFLOW_REPLICA"}},
		{args: []string{"-h"}, code: 0, stdout: []string{"DEMO_QUEUE"}},
		{args: []string{"--version"}, code: 0, stdout: []string{"demo-source ", "(commit ", "numaflow-go "}},
		{args: []string{"--env-json"}, code: 0, stdout: []string{`"name": "DEMO_QUEUE"`, `"required": true`, `"name": "LOG_LEVEL"`, `"default": "info"`}},
		{args: []string{"--bogus"}, code: 2, stderr: []string{"bogus", "Usage: demo-source"}, noStdout: true},
		{args: []string{"extra"}, code: 2, stderr: []string{"unexpected argument"}, noStdout: true},
	}
	for _, tc := range tests {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			h := newHarness(&fakeDriver{}, nil)
			var out, errOut bytes.Buffer
			// No environment at all: flags are answered before configuration is read.
			code := Run(t.Context(), h.app, tc.args, nil, &out, &errOut)
			if code != tc.code {
				t.Errorf("exit %d, want %d; stderr: %s", code, tc.code, errOut.String())
			}
			for _, s := range tc.stdout {
				if !strings.Contains(out.String(), s) {
					t.Errorf("stdout lacks %q:\n%s", s, out.String())
				}
			}
			for _, s := range tc.stderr {
				if !strings.Contains(errOut.String(), s) {
					t.Errorf("stderr lacks %q:\n%s", s, errOut.String())
				}
			}
			if tc.noStdout && out.Len() > 0 {
				t.Errorf("stdout: %s", out.String())
			}
			if h.opened.Load() != 0 {
				t.Error("Open was called")
			}
		})
	}
}

func TestRunBadConfig(t *testing.T) {
	without := func(environ []string, name string) []string {
		var out []string
		for _, kv := range environ {
			if !strings.HasPrefix(kv, name+"=") {
				out = append(out, kv)
			}
		}
		return out
	}
	good, _, _ := baseEnv(t)
	tests := []struct {
		name    string
		environ []string
		lines   []string
	}{
		{"missing required var", without(good, "DEMO_QUEUE"), []string{"config: DEMO_QUEUE: is required but not set"}},
		{"bad log level", append(good, "LOG_LEVEL=verbose"), []string{"config: LOG_LEVEL: must be debug, info, warn or error"}},
		{"every problem at once", append(without(good, "DEMO_QUEUE"), "DEMO_WAIT=1x", "SHUTDOWN_TIMEOUT=40s"), []string{
			"config: DEMO_QUEUE: is required but not set",
			`config: DEMO_WAIT: invalid value "1x"`,
			"config: SHUTDOWN_TIMEOUT: must be more than 0s and less than 30s",
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(&fakeDriver{}, nil)
			var out, errOut bytes.Buffer
			if code := Run(t.Context(), h.app, nil, tc.environ, &out, &errOut); code != 2 {
				t.Errorf("exit %d, want 2", code)
			}
			got := strings.Split(strings.TrimSpace(errOut.String()), "\n")
			if len(got) != len(tc.lines) {
				t.Errorf("stderr has %d lines, want %d:\n%s", len(got), len(tc.lines), errOut.String())
			}
			for i, want := range tc.lines {
				if i < len(got) && !strings.HasPrefix(got[i], want) {
					t.Errorf("line %d = %q, want prefix %q", i, got[i], want)
				}
			}
			if h.opened.Load() != 0 {
				t.Error("Open was called with a bad configuration")
			}
		})
	}
}

// --validate answers from the configuration alone: exit 0 for a valid one, 2 with every problem for a
// bad one, and never opens the driver (no network call).
func TestRunValidate(t *testing.T) {
	good, _, _ := baseEnv(t)
	for _, tc := range []struct {
		name    string
		environ []string
		code    int
		out     string
	}{
		{"valid", good, 0, "demo-source: configuration valid"},
		{"invalid", append(good, "LOG_LEVEL=verbose", "SHUTDOWN_TIMEOUT=40s"), 2, "config: LOG_LEVEL: must be debug"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(&fakeDriver{}, nil)
			var out, errOut bytes.Buffer
			if code := Run(t.Context(), h.app, []string{"--validate"}, tc.environ, &out, &errOut); code != tc.code {
				t.Errorf("exit %d, want %d; stderr: %s", code, tc.code, errOut.String())
			}
			if !strings.Contains(out.String()+errOut.String(), tc.out) {
				t.Errorf("output lacks %q; stdout: %s stderr: %s", tc.out, out.String(), errOut.String())
			}
			if h.opened.Load() != 0 {
				t.Error("--validate opened the driver")
			}
		})
	}
}

func TestRunOpenFails(t *testing.T) {
	environ, _, _ := baseEnv(t)
	h := newHarness(nil, errors.New("building client: bad region"))
	var errOut proctest.Buffer
	if code := Run(t.Context(), h.app, nil, environ, io.Discard, &errOut); code != 1 {
		t.Errorf("exit %d, want 1", code)
	}
	if !strings.Contains(errOut.String(), "bad region") {
		t.Errorf("the error is not logged:\n%s", errOut.String())
	}
}

// Open gets the adapter's budget with MAX_MESSAGE_BYTES: a driver that takes a window from its broker
// sizes the first one from it before it has seen a message (rabbitmq-source's prefetch).
func TestRunBudgetCarriesMaxMessageBytes(t *testing.T) {
	environ, _, _ := baseEnv(t)
	environ = append(environ, "PREFETCH=40", "PREFETCH_BYTES=8Mi", "MAX_MESSAGE_BYTES=2097152")
	h := newHarness(nil, errors.New("stop after Open"))
	if code := Run(t.Context(), h.app, nil, environ, io.Discard, io.Discard); code != 1 {
		t.Fatalf("exit %d, want 1", code)
	}
	env := h.env.Load()
	if env == nil {
		t.Fatal("Open was not called")
	}
	if want := (Budget{Messages: 40, Bytes: 8 << 20, MaxMessageBytes: 2 << 20}); env.Budget != want {
		t.Errorf("Open got budget %+v, want %+v", env.Budget, want)
	}
}

func TestRunSocketNotWritable(t *testing.T) {
	environ, _, _ := baseEnv(t)
	blocker := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(blocker, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	d := &fakeDriver{}
	h := newHarness(d, nil)
	var errOut proctest.Buffer
	environ = append(environ, "SOURCE_SOCKET="+filepath.Join(blocker, "source.sock"))
	if code := Run(t.Context(), h.app, nil, environ, io.Discard, &errOut); code != 1 {
		t.Errorf("exit %d, want 1", code)
	}
	if !strings.Contains(errOut.String(), "grpc server failed") {
		t.Errorf("the failure is not logged:\n%s", errOut.String())
	}
	if d.closed.Load() != 1 {
		t.Errorf("driver closed %d times, want 1", d.closed.Load())
	}
}

// running is a Run in the background.
type running struct {
	cancel context.CancelFunc
	exited chan struct{} // closed when Run returned code
	code   int
	stderr *proctest.Buffer
}

// start runs app in a container without a memory limit.
func start(t *testing.T, app App[demoConfig], environ []string) *running {
	t.Helper()
	return startIn(t, app, environ, fstest.MapFS{})
}

// startIn runs app in a container whose cgroup files are under root.
func startIn(t *testing.T, app App[demoConfig], environ []string, root fs.FS) *running {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	r := &running{cancel: cancel, exited: make(chan struct{}), stderr: &proctest.Buffer{}}
	go func() {
		defer close(r.exited)
		r.code = run(ctx, app, nil, environ, io.Discard, r.stderr, root)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-r.exited:
		case <-time.After(10 * time.Second):
			t.Error("Run did not return")
		}
	})
	return r
}

// waitLog waits for a log line with msg and returns it.
func (r *running) waitLog(t *testing.T, msg string) map[string]any {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		for _, line := range strings.Split(r.stderr.String(), "\n") {
			var m map[string]any
			if json.Unmarshal([]byte(line), &m) == nil && m["msg"] == msg {
				return m
			}
		}
		select {
		case <-r.exited:
			t.Fatalf("Run returned %d before logging %q:\n%s", r.code, msg, r.stderr.String())
		case <-time.After(10 * time.Millisecond):
		}
	}
	t.Fatalf("no log line %q:\n%s", msg, r.stderr.String())
	return nil
}

func (r *running) stop(t *testing.T) int {
	t.Helper()
	r.cancel()
	select {
	case <-r.exited:
		return r.code
	case <-time.After(10 * time.Second):
		t.Fatalf("Run did not return within 10s after cancel:\n%s", r.stderr.String())
		return -1
	}
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// awaitStatus polls url until it answers want.
func awaitStatus(t *testing.T, url string, want int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	var got int
	var body string
	for time.Now().Before(deadline) {
		if got, body = get(t, url); got == want {
			return
		}
		time.Sleep(20 * time.Millisecond) // polling an HTTP endpoint: there is nothing to wait on
	}
	t.Fatalf("GET %s = %d %q, want %d", url, got, body, want)
}

func TestRunServesAndShutsDown(t *testing.T) {
	environ, socket, infoFile := baseEnv(t)
	d := &fakeDriver{msgs: []*source.Message{
		{ID: "m1", Handle: "h1", Payload: []byte("one"), EventTime: time.Unix(1700000000, 0)},
		{ID: "m2", Handle: "h2", Payload: []byte("two"), EventTime: time.Unix(1700000001, 0)},
	}}
	h := newHarness(d, nil)
	r := start(t, h.app, environ)

	startLine := r.waitLog(t, "starting")
	for _, k := range []string{"connector", "version", "replica", "commit", "numaflow_go"} {
		if _, ok := startLine[k]; !ok {
			t.Errorf("start line lacks %q: %v", k, startLine)
		}
	}
	if startLine["replica"] != float64(2) || startLine["connector"] != "demo-source" {
		t.Errorf("start line: %v", startLine)
	}
	r.waitLog(t, "serving") // logged after Open returned
	if cfg := h.cfg.Load(); cfg == nil || cfg.Queue != "q1" || cfg.Wait != time.Second {
		t.Errorf("Open got config %+v", cfg)
	}

	addr := r.waitLog(t, "serving metrics and health")["addr"].(string)
	base := "http://" + addr
	if code, _ := get(t, base+"/healthz"); code != http.StatusOK {
		t.Errorf("/healthz = %d", code)
	}
	awaitStatus(t, base+"/readyz", http.StatusOK)
	code, body := get(t, base+"/metrics")
	for _, s := range []string{"numaflow_source_read_total", "numaflow_source_build_info{", "go_goroutines", "process_"} {
		if code != http.StatusOK || !strings.Contains(body, s) {
			t.Errorf("/metrics (%d) lacks %q", code, s)
		}
	}

	// Readiness follows the broker.
	d.fail.Store(true)
	awaitStatus(t, base+"/readyz", http.StatusServiceUnavailable)
	if code, _ := get(t, base+"/healthz"); code != http.StatusOK {
		t.Errorf("/healthz = %d while the broker is down, want 200", code)
	}
	d.fail.Store(false)
	awaitStatus(t, base+"/readyz", http.StatusOK)

	// Over the socket, as numa does: read one message and keep it in flight.
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	c, err := numatest.Dial(ctx, numatest.Options{Socket: socket, ServerInfoFile: infoFile})
	if err != nil {
		t.Fatalf("dialing the source: %v\n%s", err, r.stderr.String())
	}
	defer c.Close()
	msgs, err := c.Read(ctx, 1, time.Second)
	if err != nil || len(msgs) != 1 || string(msgs[0].Payload) != "one" || msgs[0].Offset.Partition != 2 {
		t.Fatalf("Read = %+v, %v", msgs, err)
	}

	// SIGTERM's equivalent: the held messages (one in flight, one buffered) go back to the broker at
	// once, the driver is closed, and Run returns 0 well within SHUTDOWN_TIMEOUT plus a second.
	began := time.Now()
	if code := r.stop(t); code != 0 {
		t.Errorf("exit %d, want 0:\n%s", code, r.stderr.String())
	}
	if took := time.Since(began); took > 6*time.Second {
		t.Errorf("shutdown took %s", took)
	}
	if n := d.closed.Load(); n != 1 {
		t.Errorf("driver closed %d times, want 1", n)
	}
	rel := d.released()
	if len(rel) != 2 {
		t.Errorf("released %v at shutdown, want h1 and h2", rel)
	}
	if _, err := http.Get(base + "/healthz"); err == nil {
		t.Error("the metrics server still answers after Run returned")
	}
	t.Logf("log:\n%s", r.stderr.String())
}

func TestRunCheckFailureIsLoggedNotFatal(t *testing.T) {
	environ, _, _ := baseEnv(t)
	d := &checkingDriver{fakeDriver: &fakeDriver{}, err: errors.New("getting queue q1: AWS.SimpleQueueService.NonExistentQueue")}
	h := newHarness(d, nil)
	r := start(t, h.app, environ)
	line := r.waitLog(t, "broker check failed; the source keeps running and retrying, and reports not ready")
	if !strings.Contains(line["error"].(string), "NonExistentQueue") || line["level"] != "ERROR" || line["kind"] == nil {
		t.Errorf("check line: %v", line)
	}
	if code := r.stop(t); code != 0 {
		t.Errorf("exit %d, want 0", code)
	}
}

// countingChecker is a driver whose start-up check passes and counts its calls.
type countingChecker struct {
	*fakeDriver
	calls atomic.Int32
}

func (d *countingChecker) Check(context.Context) error { d.calls.Add(1); return nil }

// At start the server logged its own health check while the readiness prober ran the same check at
// once: two broker calls per start where one answers both. One check now does both: the log line and
// readiness.
func TestStartUpChecksTheBrokerOnce(t *testing.T) {
	environ, _, _ := baseEnv(t)
	d := &countingChecker{fakeDriver: &fakeDriver{}}
	r := start(t, newHarness(d, nil).app, environ)
	r.waitLog(t, "broker check passed")
	r.waitLog(t, "broker reachable")
	time.Sleep(300 * time.Millisecond) // a second check would have run by now
	if n := d.calls.Load(); n != 1 {
		t.Errorf("the health check ran %d times at start, want 1", n)
	}
	if code := r.stop(t); code != 0 {
		t.Errorf("exit %d, want 0", code)
	}
}

func TestRunMetricsDisabled(t *testing.T) {
	environ, _, _ := baseEnv(t)
	h := newHarness(&fakeDriver{}, nil)
	r := start(t, h.app, append(environ, "METRICS_ADDR="))
	r.waitLog(t, "serving")
	if strings.Contains(r.stderr.String(), "serving metrics and health") {
		t.Error("metrics server started with METRICS_ADDR empty")
	}
	if code := r.stop(t); code != 0 {
		t.Errorf("exit %d, want 0", code)
	}
}

// podConfig needs a name that only the platform variables can give: inside Numaflow (NUMAFLOW_POD set)
// without NUMAFLOW_VERTEX_NAME it is refused.
type podConfig struct {
	Group string `env:"DEMO_GROUP" envDefault:"<vertex>" desc:"Group; <vertex> is the vertex name."`
}

func (c *podConfig) ValidatePlatform(p config.Platform) error {
	if p.Pod != "" && p.Vertex == "" && strings.Contains(c.Group, "<vertex>") {
		return errors.Join(config.Problem("DEMO_GROUP", "has <vertex>, but NUMAFLOW_VERTEX_NAME is not set"),
			config.Problem("NUMAFLOW_VERTEX_NAME", "is not set"))
	}
	return nil
}

// A configuration that implements PlatformValidator is checked against the platform variables before
// any network call: its problems exit 2, one line each, naming their variables.
func TestPlatformValidatorExitsTwo(t *testing.T) {
	app := App[podConfig]{Name: "demo", Open: func(context.Context, *podConfig, *Env) (source.Driver, error) {
		t.Error("Open called with a configuration the platform check refuses")
		return nil, errors.New("unreachable")
	}}
	for _, tc := range []struct {
		environ []string
		code    int
	}{
		{[]string{"NUMAFLOW_POD=p-0"}, ExitConfig},
		{[]string{"NUMAFLOW_POD=p-0", "NUMAFLOW_VERTEX_NAME=in"}, ExitOK},
		{nil, ExitOK},
	} {
		var out, errOut bytes.Buffer
		if code := Run(t.Context(), app, []string{"--validate"}, tc.environ, &out, &errOut); code != tc.code {
			t.Errorf("%v: exit %d, want %d\n%s", tc.environ, code, tc.code, errOut.String())
		}
		if tc.code == ExitConfig {
			for _, want := range []string{"config: DEMO_GROUP: has <vertex>", "config: NUMAFLOW_VERTEX_NAME: is not set"} {
				if !strings.Contains(errOut.String(), want+"") {
					t.Errorf("%v: no line %q in:\n%s", tc.environ, want, errOut.String())
				}
			}
		}
	}
}

// MAX_MESSAGE_BYTES's default is the adapter's: a connector started with no setting and a driver built
// on source.Options alone dead-letter the same messages.
func TestMaxMessageBytesDefaultIsTheAdapters(t *testing.T) {
	var c config.Common
	if err := config.Load(&c, nil); err != nil {
		t.Fatal(err)
	}
	if c.MaxMessageBytes != source.DefaultMaxMessageBytes {
		t.Errorf("MAX_MESSAGE_BYTES defaults to %d, source.DefaultMaxMessageBytes is %d", c.MaxMessageBytes, source.DefaultMaxMessageBytes)
	}
}
