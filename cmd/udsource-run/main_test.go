package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/numaflow-connectors/sources/common/numatest"
	"github.com/numaflow-connectors/sources/common/proctest"
)

// Binaries built once by TestMain.
var (
	numsourceBin string
	runnerBin    string
)

func TestMain(m *testing.M) {
	os.Exit(testMain(m))
}

func testMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "udsource-run-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	numsourceBin, runnerBin = filepath.Join(dir, "numsource"), filepath.Join(dir, "udsource-run")
	for _, b := range []struct{ out, pkg string }{
		{numsourceBin, "./internal/numsource"},
		{runnerBin, "."},
	} {
		cmd := exec.Command("go", "build", "-race", "-o", b.out, b.pkg)
		if out, err := cmd.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "building %s: %v\n%s", b.pkg, err, out)
			return 1
		}
	}
	return m.Run()
}

type result struct {
	code           int
	stdout, stderr string
}

// runner runs the command in this process (so -race covers it) against a real child process.
func runner(t *testing.T, args ...string) result {
	t.Helper()
	var stdout, stderr proctest.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	code := run(ctx, args, os.Environ(), &stdout, &stderr)
	r := result{code, stdout.String(), stderr.String()}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
		}
	})
	return r
}

// summaryOf parses the summary block into name -> first number.
func summaryOf(t *testing.T, out string) map[string]int64 {
	t.Helper()
	i := strings.LastIndex(out, "summary\n")
	if i < 0 {
		t.Fatalf("no summary in output")
	}
	got := map[string]int64{}
	re := regexp.MustCompile(`^  ([a-z ]+?)\s+(\d+)`)
	for _, line := range strings.Split(out[i:], "\n") {
		if m := re.FindStringSubmatch(line); m != nil {
			n, _ := strconv.ParseInt(m[2], 10, 64)
			got[m[1]] = n
		}
	}
	return got
}

func expect(t *testing.T, s map[string]int64, want map[string]int64) {
	t.Helper()
	for k, v := range want {
		if s[k] != v {
			t.Errorf("summary %s = %d, want %d", k, s[k], v)
		}
	}
}

// sourceStats parses numsource's last "stopped" line.
func sourceStats(t *testing.T, out string) (served, acked, nacked int64) {
	t.Helper()
	m := regexp.MustCompile(`numsource: stopped served=(\d+) acked=(\d+) nacked=(\d+)`).FindAllStringSubmatch(out, -1)
	if m == nil {
		t.Fatalf("numsource did not report stopping (was it stopped by SIGTERM?)")
	}
	last := m[len(m)-1]
	s, _ := strconv.ParseInt(last[1], 10, 64)
	a, _ := strconv.ParseInt(last[2], 10, 64)
	n, _ := strconv.ParseInt(last[3], 10, 64)
	return s, a, n
}

var logsIn = regexp.MustCompile(`logs in (\S+)`)

func TestDrainsEverything(t *testing.T) {
	r := runner(t, "--batch", "100", "--timeout", "100ms", "--idle", "2", "--progress-every", "20ms",
		"--", numsourceBin, "-n", "3000")
	if r.code != 0 {
		t.Fatalf("exit %d", r.code)
	}
	s := summaryOf(t, r.stdout)
	expect(t, s, map[string]int64{"read": 3000, "acked": 3000, "nacked": 0, "held": 0, "duplicates": 0, "pending": 0})
	if s["batches"] != 30 {
		t.Errorf("batches = %d, want 30 reads of 100", s["batches"])
	}
	if !regexp.MustCompile(`read [\d,]+  [\d,]+/s  acked [\d,]+  nacked 0  dup 0  pending `).MatchString(r.stderr) {
		t.Errorf("no progress line on stderr")
	}
	m := logsIn.FindStringSubmatch(r.stderr)
	if m == nil {
		t.Fatal("the log file path was not printed")
	}
	if _, err := os.Stat(m[1]); !os.IsNotExist(err) {
		t.Errorf("log file %s left behind after a successful run (%v)", m[1], err)
	}
}

func TestChildGetsNumaflowEnvironment(t *testing.T) {
	r := runner(t, "--batch", "7", "--timeout", "150ms", "--idle", "1", "--child-logs", "--", numsourceBin, "-n", "3")
	if r.code != 0 {
		t.Fatalf("exit %d", r.code)
	}
	for _, want := range []string{
		`env NUMAFLOW_REPLICA="0"`, `env NUMAFLOW_PIPELINE_NAME="local"`, `env NUMAFLOW_VERTEX_NAME="in"`,
		`env NUMAFLOW_READ_BATCH_SIZE="7"`, `env NUMAFLOW_READ_TIMEOUT_MS="150"`, `env METRICS_ADDR="" set=true`,
	} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("child log lacks %s", want)
		}
	}
	if served, acked, _ := sourceStats(t, r.stderr); served != 3 || acked != 3 {
		t.Errorf("source served %d and saw %d acked, want 3 and 3", served, acked)
	}
}

func TestNackRatioRedelivers(t *testing.T) {
	args := []string{"--batch", "50", "--timeout", "100ms", "--idle", "3", "--nack-ratio", "0.3",
		"--nack-delay", "20ms", "--max-deliveries", "5", "--child-logs", "--", numsourceBin, "-n", "500"}
	r := runner(t, args...)
	if r.code != 0 {
		t.Fatalf("exit %d", r.code)
	}
	s := summaryOf(t, r.stdout)
	expect(t, s, map[string]int64{"acked": 500, "duplicates": 0})
	if s["nacked"] < 100 || s["nacked"] > 330 {
		t.Errorf("nacked %d with ratio 0.3 over about 700 reads", s["nacked"])
	}
	if s["read"] != s["acked"]+s["nacked"] {
		t.Errorf("read %d != acked %d + nacked %d: nacked messages were not all read again", s["read"], s["acked"], s["nacked"])
	}
	served, acked, nacked := sourceStats(t, r.stderr)
	if served != s["read"] || acked != 500 || nacked != s["nacked"] {
		t.Errorf("source saw served=%d acked=%d nacked=%d, runner %v", served, acked, nacked, s)
	}

	// The same seed nacks the same messages.
	again := summaryOf(t, runner(t, args...).stdout)
	if again["nacked"] != s["nacked"] {
		t.Errorf("second run nacked %d, first %d: the choice is not deterministic", again["nacked"], s["nacked"])
	}
}

func TestPrintFull(t *testing.T) {
	r := runner(t, "--print", "full", "--timeout", "100ms", "--idle", "1", "--", numsourceBin, "-n", "4")
	if r.code != 0 {
		t.Fatalf("exit %d", r.code)
	}
	want := `offset=2 partition=0 event_time=2023-11-14T22:13:20.002Z keys=["key-2"] headers={"n":"2"} payload="message-2"`
	if !strings.Contains(r.stdout, want+"\n") {
		t.Errorf("stdout lacks %s", want)
	}
	if n := strings.Count(r.stdout, "offset="); n != 4 {
		t.Errorf("%d messages printed, want 4", n)
	}

	// Binary payloads are shown in base64, cut at 200 bytes.
	r = runner(t, "--print", "full", "--timeout", "100ms", "--idle", "1", "--", numsourceBin, "-n", "1", "-payload", "300")
	if r.code != 0 {
		t.Fatalf("exit %d", r.code)
	}
	if !regexp.MustCompile(`payload=b64:[A-Za-z0-9+/=]{268}\.\.\.\(300 bytes\)\n`).MatchString(r.stdout) {
		t.Errorf("binary payload not shown as 200 bytes of base64")
	}
}

func TestLimitAndNoAck(t *testing.T) {
	r := runner(t, "--batch", "100", "--limit", "250", "--child-logs", "--", numsourceBin, "-n", "1000")
	if r.code != 0 {
		t.Fatalf("exit %d", r.code)
	}
	expect(t, summaryOf(t, r.stdout), map[string]int64{"read": 250, "acked": 250})

	r = runner(t, "--batch", "20", "--limit", "50", "--no-ack", "--child-logs", "--", numsourceBin, "-n", "1000")
	if r.code != 0 {
		t.Fatalf("exit %d", r.code)
	}
	expect(t, summaryOf(t, r.stdout), map[string]int64{"read": 50, "acked": 0, "held": 50})
	if served, acked, _ := sourceStats(t, r.stderr); served != 50 || acked != 0 {
		t.Errorf("source served %d, saw %d acked; want 50 and 0", served, acked)
	}
}

func TestChildExitingEarlyFails(t *testing.T) {
	r := runner(t, "--batch", "100", "--", numsourceBin, "-n", "1000", "-exit-after", "150")
	if r.code != 1 {
		t.Fatalf("exit %d, want 1", r.code)
	}
	if !strings.Contains(r.stderr, "the source exited early (exit status 3)") {
		t.Errorf("stderr does not say the source exited early")
	}
	if !strings.Contains(r.stderr, "numsource: exiting early after 150 messages") {
		t.Errorf("stderr does not show the tail of the source's log")
	}
	m := logsIn.FindStringSubmatch(r.stderr)
	if m == nil {
		t.Fatal("no log path")
	}
	defer os.RemoveAll(filepath.Dir(m[1]))
	if _, err := os.Stat(m[1]); err != nil {
		t.Errorf("log of a failed run was not kept: %v", err)
	}
	if s := summaryOf(t, r.stdout); s["acked"] != 100 {
		t.Errorf("acked %d before the source died, want the first batch of 100", s["acked"])
	}
}

func TestChildNeverReady(t *testing.T) {
	// A program that is not a source: it exits at once without writing server info.
	r := runner(t, "--", "/bin/false")
	if r.code != 1 || !strings.Contains(r.stderr, "exited early (exit status 1)") {
		t.Errorf("exit %d, stderr %q", r.code, r.stderr)
	}
}

func TestUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{},
		{"--nack-ratio", "1.5", "--", numsourceBin},
		{"--print", "some", "--", numsourceBin},
		{"--socket", "/x.sock", "--", numsourceBin},
		{"--socket", "/x.sock"},
		{"--batch", "0", "--", numsourceBin},
		{"--bogus"},
	} {
		if r := runner(t, args...); r.code != 2 {
			t.Errorf("%q: exit %d, want 2", args, r.code)
		}
	}
	if r := runner(t, "--help"); r.code != 0 || !strings.Contains(r.stderr, "--nack-ratio") && !strings.Contains(r.stderr, "-nack-ratio") {
		t.Errorf("--help: exit %d, %q", r.code, r.stderr)
	}
}

func TestAttachToRunningSource(t *testing.T) {
	dir, err := os.MkdirTemp("", "udsr")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	sock, info := filepath.Join(dir, "s.sock"), filepath.Join(dir, "info")
	p := proctest.Start(t, numsourceBin, []string{"-n", "700"}, proctest.Options{
		Env: []string{"SOURCE_SOCKET=" + sock, "SOURCE_SERVER_INFO_FILE=" + info},
	})
	r := runner(t, "--socket", sock, "--server-info", info, "--timeout", "100ms", "--idle", "1")
	if r.code != 0 {
		t.Fatalf("exit %d", r.code)
	}
	expect(t, summaryOf(t, r.stdout), map[string]int64{"read": 700, "acked": 700})
	// Attaching does not stop the source.
	select {
	case <-p.Done():
		t.Error("the attached source was stopped")
	default:
	}
}

// TestCtrlC runs the real runner binary and interrupts it mid-stream: it must finish the batch's
// acks, stop the source with SIGTERM and print a summary that matches what the source saw.
func TestCtrlC(t *testing.T) {
	p, err := proctest.StartE(runnerBin, []string{"--batch", "200", "--ack-delay", "5ms", "--progress-every", "50ms",
		"--child-logs", "--", numsourceBin, "-n", "100000000"}, proctest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Kill()
	progress := regexp.MustCompile(`read [1-9][\d,]*  `)
	deadline := time.Now().Add(30 * time.Second)
	for !progress.MatchString(p.Output()) {
		if time.Now().After(deadline) {
			t.Fatalf("no progress within 30s:\n%s", p.Output())
		}
		select {
		case <-p.Done():
			t.Fatalf("runner exited:\n%s", p.Output())
		case <-time.After(20 * time.Millisecond):
		}
	}
	if err := p.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	code, ok := p.Wait(40 * time.Second)
	if !ok || code != 0 {
		t.Fatalf("runner exit %d (exited: %v):\n%s", code, ok, p.Output())
	}
	out := p.Output()
	s := summaryOf(t, out)
	if s["read"] == 0 || s["read"] != s["acked"] {
		t.Errorf("summary %v: every read message should be acked after Ctrl-C", s)
	}
	served, acked, _ := sourceStats(t, out)
	if served != s["read"] || acked != s["acked"] {
		t.Errorf("source served %d, saw %d acked; runner read %d, acked %d", served, acked, s["read"], s["acked"])
	}
}

func TestFormatMessage(t *testing.T) {
	m := numatest.Message{
		Payload:   []byte("héllo\n"),
		Offset:    numatest.Offset{Value: []byte{0xff, 0x00}, Partition: 3},
		EventTime: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC),
		Keys:      []string{"a b"},
		Headers:   map[string]string{"z": "1", "a": "2"},
	}
	want := `offset=b64:/wA= partition=3 event_time=2026-01-02T03:04:05Z keys=["a b"] headers={"a":"2","z":"1"} payload="héllo\n"`
	if got := formatMessage(m); got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
	// Text is cut at a rune boundary within 200 bytes.
	long := strings.Repeat("é", 150) // 300 bytes
	if got := showBytes([]byte(long), maxPayloadShown); got != strconv.Quote(strings.Repeat("é", 100))+"...(300 bytes)" {
		t.Errorf("long text shown as %s", got)
	}
	if got := group(1234567); got != "1,234,567" {
		t.Errorf("group = %s", got)
	}
}

// --check runs the connector's pre-flight check with the runner's environment and exits with its status.
func TestCheckRunsTheConnectorsCheck(t *testing.T) {
	script := filepath.Join(t.TempDir(), "connector")
	if err := os.WriteFile(script, []byte("#!/bin/sh\necho \"checked with: $*\"\nexit ${FAKE_CHECK_EXIT:-0}\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	r := runner(t, "--check", "--", script, "--flag")
	if r.code != 0 || !strings.Contains(r.stdout, "checked with: --flag --check") {
		t.Errorf("passing check: exit %d, stdout %q", r.code, r.stdout)
	}
	t.Setenv("FAKE_CHECK_EXIT", "1")
	if r := runner(t, "--check", "--", script); r.code != 1 {
		t.Errorf("failing check: exit %d, want 1", r.code)
	}
	if r := runner(t, "--check", "--socket", "s", "--server-info", "i"); r.code != 2 || !strings.Contains(r.stderr, "--check needs a connector command") {
		t.Errorf("--check without a connector: exit %d, stderr %q", r.code, r.stderr)
	}
}

// TestEmbeddedRedisEndsWithTruePending runs `make run`'s command: the real redis-streams-source drains
// the embedded broker, and the summary's pending is the truth (0), although miniredis reports the
// stream's length as the group's lag whatever the group has read.
func TestEmbeddedRedisEndsWithTruePending(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the redis-streams-source binary")
	}
	bin := proctest.Build(t, "../../redis-streams-source", "redis-streams-source")
	const n = 20000
	// The embedded broker only: no REDIS_* from the developer's environment.
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "REDIS_") && !strings.HasPrefix(kv, "PENDING_REFRESH=") {
			env = append(env, kv)
		}
	}
	var stdout, stderr proctest.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	start := time.Now()
	code := run(ctx, []string{"--embedded", "redis", "--embedded-messages", strconv.Itoa(n), "--limit", strconv.Itoa(n),
		"--idle", "3", "--", bin}, append(env, "LOG_LEVEL=warn"), &stdout, &stderr)
	if code != 0 {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout.String(), stderr.String())
	}
	s := summaryOf(t, stdout.String())
	expect(t, s, map[string]int64{"read": n, "acked": n, "duplicates": 0, "pending": 0})
	t.Logf("drained %d entries from the embedded broker in %s; summary %v", n, time.Since(start).Round(time.Millisecond), s)
}
