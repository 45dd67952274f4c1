package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/numaflow-connectors/sources/common/numatest"
	"github.com/numaflow-connectors/sources/common/proctest"
)

// The local runner drains 100,000 messages from the memsource demo through the real socket, with a
// progress line, and every message is acked.
func TestRunnerDrainsMemsource(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bins["udsource-run"], "--limit", "100000", "--idle", "3",
		"--progress-every", "250ms", "--", bins["memsource"])
	cmd.Env = append(os.Environ(), "MEM_MESSAGES=100000", "LOG_LEVEL=warn")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("udsource-run: %v\nstdout:\n%s\nstderr:\n%s", err, stdout.String(), stderr.String())
	}
	out := stdout.String()
	for _, want := range []string{`read\s+100000\b`, `acked\s+100000\b`, `nacked\s+0\b`} {
		if !regexp.MustCompile(want).MatchString(out) {
			t.Errorf("summary lacks %q:\n%s", want, out)
		}
	}
	if n := strings.Count(stderr.String(), "read/s") + strings.Count(stderr.String(), "/s  acked"); n == 0 {
		t.Errorf("no progress line on stderr:\n%s", stderr.String())
	}
	t.Logf("summary:\n%s", out)
}

func TestHelpPrintsTheEnvTable(t *testing.T) {
	out, err := exec.Command(bins["memsource"], "--help").CombinedOutput()
	if err != nil {
		t.Fatalf("--help: %v\n%s", err, out)
	}
	for _, v := range []string{"MEM_MESSAGES", "MEM_PAYLOAD_BYTES", "LOG_LEVEL", "METRICS_ADDR", "NUMAFLOW_REPLICA", "DEAD_LETTER_FALLBACK"} {
		if !strings.Contains(string(out), v) {
			t.Errorf("--help does not list %s:\n%s", v, out)
		}
	}
}

func TestVersionFlag(t *testing.T) {
	out, err := exec.Command(bins["memsource"], "--version").CombinedOutput()
	if err != nil {
		t.Fatalf("--version: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "memsource") || !strings.Contains(string(out), "numaflow-go v0.12.0") {
		t.Errorf("--version = %q, want the name and numaflow-go v0.12.0", out)
	}
}

// Bad configuration exits 2 quickly, naming every bad variable, and never starts serving.
func TestBadConfigExitsTwoNamingTheVariables(t *testing.T) {
	dir := t.TempDir()
	cmd := exec.Command(bins["memsource"])
	cmd.Env = append(os.Environ(), "MEM_PAYLOAD_BYTES=3", "LOG_LEVEL=loud", "MEM_LEASE=soon",
		"SOURCE_SOCKET="+filepath.Join(dir, "s.sock"), "SOURCE_SERVER_INFO_FILE="+filepath.Join(dir, "info"))
	start := time.Now()
	out, err := cmd.CombinedOutput()
	took := time.Since(start)
	var ee *exec.ExitError
	if !errorsAs(err, &ee) || ee.ExitCode() != 2 {
		t.Fatalf("exit %v, want status 2\n%s", err, out)
	}
	for _, v := range []string{"MEM_PAYLOAD_BYTES", "LOG_LEVEL", "MEM_LEASE"} {
		if !strings.Contains(string(out), v) {
			t.Errorf("output does not name %s:\n%s", v, out)
		}
	}
	if took > time.Second {
		t.Errorf("bad config took %s to exit", took)
	}
	if _, err := os.Stat(filepath.Join(dir, "info")); err == nil {
		t.Errorf("the server started despite bad config")
	}
}

// A release binary tells numa its numaflow-go version, which numa needs (>= 0.11.0) to send nacks.
func TestServerInfoCarriesTheSDKVersion(t *testing.T) {
	dir, err := os.MkdirTemp("", "e2e")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock, info := filepath.Join(dir, "s.sock"), filepath.Join(dir, "info")
	proctest.Start(t, bins["memsource"], nil, proctest.Options{
		Env: []string{"SOURCE_SOCKET=" + sock, "SOURCE_SERVER_INFO_FILE=" + info, "METRICS_ADDR=", "MEM_MESSAGES=10"},
	})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := numatest.Dial(ctx, numatest.Options{Socket: sock, ServerInfoFile: info})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	si := c.ServerInfo()
	b, _ := json.Marshal(si)
	if si.Version != "v0.12.0" || !c.NackSupported() {
		t.Errorf("server info %s: numa would send no nacks", b)
	}
}

// make run: the runner starts an embedded Redis, seeds it and drives the real Redis Streams connector.
func TestRunnerWithEmbeddedRedis(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bins["udsource-run"], "--embedded", "redis", "--embedded-messages", "20000",
		"--limit", "20000", "--idle", "3", "--", bins["redis-streams-source"])
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "REDIS_") {
			env = append(env, kv)
		}
	}
	cmd.Env = append(env, "LOG_LEVEL=warn")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("udsource-run: %v\nstdout:\n%s\nstderr:\n%s", err, stdout.String(), stderr.String())
	}
	for _, want := range []string{`read\s+20000\b`, `acked\s+20000\b`, `duplicates\s+0\b`} {
		if !regexp.MustCompile(want).MatchString(stdout.String()) {
			t.Errorf("summary lacks %q:\n%s", want, stdout.String())
		}
	}
	if !strings.Contains(stderr.String(), "embedded redis on 127.0.0.1:") {
		t.Errorf("no embedded redis announced:\n%s", stderr.String())
	}
}
