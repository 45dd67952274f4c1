package badinput

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/numaflow-connectors/sources/common/numatest"
	"github.com/numaflow-connectors/sources/common/proctest"
)

// sentinel is the secret given to every secret a connector reads; it must never be printed.
const sentinel = "s3ntinel-XYZ-do-not-print"

// assertNoSentinel fails t when out contains the sentinel secret.
func assertNoSentinel(t *testing.T, what, out string) {
	t.Helper()
	if i := strings.Index(out, sentinel); i >= 0 {
		lo, hi := max(0, i-200), min(len(out), i+len(sentinel)+200)
		t.Errorf("the secret appears in %s:\n...%s...", what, out[lo:hi])
	}
}

// countingListener is a TCP listener on 127.0.0.1 standing in for a broker: it accepts connections,
// counts them and closes them at once. A process pointed at it that makes any broker call shows up in
// Count.
type countingListener struct {
	ln    net.Listener
	n     atomic.Int64
	addr  string
	port  int
	wg    sync.WaitGroup
	close sync.Once
}

func newCountingListener(t *testing.T) *countingListener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listening on loopback: %v", err)
	}
	l := &countingListener{ln: ln, addr: ln.Addr().String(), port: ln.Addr().(*net.TCPAddr).Port}
	l.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			l.n.Add(1)
			_ = c.Close()
		}
	})
	t.Cleanup(l.Close)
	return l
}

// Count is the number of connections accepted so far.
func (l *countingListener) Count() int64 { return l.n.Load() }

// Close stops the listener. Idempotent.
func (l *countingListener) Close() {
	l.close.Do(func() {
		_ = l.ln.Close()
		l.wg.Wait()
	})
}

// shortDir is a temporary directory with a short path (unix socket paths are limited to 108 bytes),
// removed when t ends.
func shortDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "bi")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	return dir
}

// writeFile writes content to a new file in dir and returns its path.
func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// conn is a connector process driven over its socket as numa drives it.
type conn struct {
	name    string
	proc    *proctest.Process
	client  *numatest.Client
	metrics string // host:port of /metrics, /healthz, /readyz
}

// startConnector starts the connector binary with env (added to the test's environment, after the
// socket paths and a loopback metrics address) and dials it with numatest. The process is killed when
// t ends; if it is still supposed to be running by then, call assertAlive first.
func startConnector(t *testing.T, name string, env []string) *conn {
	t.Helper()
	dir := shortDir(t)
	sock, info := filepath.Join(dir, "s.sock"), filepath.Join(dir, "info")
	metrics := fmt.Sprintf("127.0.0.1:%d", proctest.FreePort(t))
	base := []string{"SOURCE_SOCKET=" + sock, "SOURCE_SERVER_INFO_FILE=" + info, "METRICS_ADDR=" + metrics,
		"NUMAFLOW_READ_BATCH_SIZE=500", "NUMAFLOW_READ_TIMEOUT_MS=1000"}
	p := proctest.Start(t, binaries[name], nil, proctest.Options{Env: append(base, env...)})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	go func() { // a process that exits is not waited for
		select {
		case <-p.Done():
			cancel()
		case <-ctx.Done():
		}
	}()
	c, err := numatest.Dial(ctx, numatest.Options{Socket: sock, ServerInfoFile: info})
	if err != nil {
		t.Fatalf("dialing %s: %v\n%s", name, err, p.Output())
	}
	t.Cleanup(func() { _ = c.Close() })
	return &conn{name: name, proc: p, client: c, metrics: metrics}
}

// assertAlive fails t when the process has exited.
func (c *conn) assertAlive(t *testing.T) {
	t.Helper()
	select {
	case <-c.proc.Done():
		t.Errorf("%s exited (status %d) during the test:\n%s", c.name, c.proc.Cmd.ProcessState.ExitCode(), c.proc.Output())
	default:
	}
}

// drainUntil reads (500 messages, 1 s timeout) and acks everything, as numa does, until a message
// satisfying last arrives, and returns every message read. It fails t after timeout.
func (c *conn) drainUntil(t *testing.T, timeout time.Duration, last func(numatest.Message) bool) []numatest.Message {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout+5*time.Second)
	defer cancel()
	deadline := time.Now().Add(timeout)
	var all []numatest.Message
	for time.Now().Before(deadline) {
		msgs, err := c.client.Read(ctx, 500, time.Second)
		if err != nil {
			t.Fatalf("reading from %s after %d messages: %v\n%s", c.name, len(all), err, c.proc.Output())
		}
		offs := make([]numatest.Offset, len(msgs))
		done := false
		for i, m := range msgs {
			offs[i] = m.Offset
			done = done || last(m)
		}
		all = append(all, msgs...)
		if len(offs) > 0 {
			if err := c.client.Ack(ctx, offs); err != nil {
				t.Fatalf("acking on %s: %v\n%s", c.name, err, c.proc.Output())
			}
		}
		if done {
			return all
		}
	}
	t.Fatalf("%s: the last message did not arrive within %s (%d messages read: %s)\n%s", c.name, timeout, len(all), describe(all), c.proc.Output())
	return nil
}

// readFor reads and acks for d and returns what arrived.
func (c *conn) readFor(t *testing.T, d time.Duration) []numatest.Message {
	t.Helper()
	var all []numatest.Message
	ctx, cancel := context.WithTimeout(context.Background(), d+5*time.Second)
	defer cancel()
	for end := time.Now().Add(d); time.Now().Before(end); {
		msgs, err := c.client.Read(ctx, 500, time.Second)
		if err != nil {
			t.Fatalf("reading from %s: %v\n%s", c.name, err, c.proc.Output())
		}
		all = append(all, msgs...)
		offs := make([]numatest.Offset, len(msgs))
		for i, m := range msgs {
			offs[i] = m.Offset
		}
		if len(offs) > 0 {
			if err := c.client.Ack(ctx, offs); err != nil {
				t.Fatalf("acking on %s: %v", c.name, err)
			}
		}
	}
	return all
}

// waitOutput waits until the process output contains every one of subs.
func (c *conn) waitOutput(t *testing.T, timeout time.Duration, subs ...string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		out := c.proc.Output()
		missing := ""
		for _, s := range subs {
			if !strings.Contains(out, s) {
				missing = s
				break
			}
		}
		if missing == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never logged %q within %s:\n%s", c.name, missing, timeout, out)
		}
		time.Sleep(50 * time.Millisecond) // polling a log buffer: there is nothing to wait on
	}
}

// readyz returns the status code and body of GET /readyz.
func (c *conn) readyz(ctx context.Context) (int, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+c.metrics+"/readyz", nil)
	if err != nil {
		return 0, "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, strings.TrimSpace(string(body)), err
}

// eventually polls cond every 100 ms until it returns nil or timeout passes, then fails t with its
// last error.
func eventually(t *testing.T, timeout time.Duration, cond func(ctx context.Context) error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var last error
	for {
		cctx, ccancel := context.WithTimeout(ctx, 5*time.Second)
		last = cond(cctx)
		ccancel()
		if last == nil {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("not within %s: %v", timeout, last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// payloads indexes messages by payload (for small payloads) and reports large ones by size.
func describe(msgs []numatest.Message) string {
	var b strings.Builder
	for i, m := range msgs {
		if i > 0 {
			b.WriteString(", ")
		}
		if len(m.Payload) > 64 {
			fmt.Fprintf(&b, "<%d bytes>", len(m.Payload))
		} else {
			fmt.Fprintf(&b, "%q", m.Payload)
		}
	}
	return b.String()
}

// find returns the first message whose payload equals p.
func find(msgs []numatest.Message, p []byte) (numatest.Message, bool) {
	for _, m := range msgs {
		if bytes.Equal(m.Payload, p) {
			return m, true
		}
	}
	return numatest.Message{}, false
}

// payloadIs is a drainUntil predicate.
func payloadIs(p string) func(numatest.Message) bool {
	return func(m numatest.Message) bool { return string(m.Payload) == p }
}

var errNotYet = errors.New("not yet")
