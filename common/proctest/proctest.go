// Package proctest starts and stops real processes for tests: brokers on loopback and connector
// binaries. Every process is stopped by its PID (never by name) in t.Cleanup.
package proctest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	port, err := FreePortE()
	if err != nil {
		t.Fatal(err)
	}
	return port
}

// FreePortE is FreePort without a testing.TB (for brokers started outside any test).
func FreePortE() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("finding a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// Process is a started child process.
type Process struct {
	Cmd  *exec.Cmd
	out  *Buffer
	done chan struct{}
	err  error
}

// ErrAborted is what StartE's error wraps when the process printed Options.Abort.
var ErrAborted = errors.New("aborted")

// Options for Start.
type Options struct {
	Dir string
	Env []string // added to the test's environment
	// Ready is polled every 50 ms until it returns nil or Timeout passes.
	Ready   func(ctx context.Context) error
	Timeout time.Duration // default 30 s
	// KeepRunning leaves the process running after the test (never use outside a test binary's TestMain).
	KeepRunning bool
	// Abort is output that means the process will never be ready although it keeps running (the Java
	// Pub/Sub emulator's "Address already in use" leaves its JVM up): StartE kills it at once and
	// returns an error wrapping ErrAborted, instead of waiting out Timeout.
	Abort string
	// Launcher says the command is a launcher that runs the server as a child of its own (the
	// rabbitmq-server script backgrounds the Erlang VM and waits for it). The kernel's kill on the test
	// binary's death reaches only the direct child, so a watcher in the process group kills the whole
	// group when the test binary dies (it reads a pipe the test binary holds open) or the launcher ends.
	Launcher bool
}

// Start runs name with args, waits until opts.Ready succeeds and registers a cleanup that kills the
// process (SIGKILL to its process group) and waits for it. Output goes to a buffer shown on failure.
func Start(t testing.TB, name string, args []string, opts Options) *Process {
	t.Helper()
	p, err := StartE(name, args, opts)
	if err != nil {
		t.Fatalf("%v", err)
	}
	t.Cleanup(func() {
		p.Kill()
		if t.Failed() {
			t.Logf("output of %s:\n%s", name, p.Output())
		}
	})
	return p
}

// StartE is Start without a test: the caller must Kill the process.
func StartE(name string, args []string, opts Options) (*Process, error) {
	cmd := exec.Command(name, args...)
	var guard *os.File // with Launcher: the watcher's pipe, closed when the process has ended
	if opts.Launcher {
		r, w, err := os.Pipe()
		if err != nil {
			return nil, fmt.Errorf("starting %s: %w", name, err)
		}
		defer r.Close()
		// The watcher (fd 3) waits for end of file, which comes when the test binary dies or closes w,
		// and kills the process group; it holds none of the output pipes (Wait would wait for it), and
		// the launcher itself execs without fd 3.
		cmd = exec.Command("/bin/sh", append([]string{"-c", `(read _ <&3; kill -KILL 0) </dev/null >/dev/null 2>&1 & exec 3<&-; exec "$0" "$@"`, name}, args...)...)
		cmd.ExtraFiles = []*os.File{r}
		guard = w
	}
	cmd.Dir = opts.Dir
	cmd.Env = append(os.Environ(), opts.Env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	dieWithParent(cmd.SysProcAttr)
	out := &Buffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		if guard != nil {
			guard.Close()
		}
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	p := &Process{Cmd: cmd, out: out, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		if guard != nil {
			guard.Close() // the launcher ended: the watcher kills what it left behind
		}
		close(p.done)
	}()
	if opts.Ready == nil {
		return p, nil
	}
	timeout := opts.Timeout
	if timeout == 0 {
		timeout = 30 * time.Second
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var last error
	for {
		select {
		case <-p.done:
			return nil, fmt.Errorf("%s exited before it was ready (%v):\n%s", name, p.err, out.String())
		default:
		}
		if opts.Abort != "" && strings.Contains(out.String(), opts.Abort) {
			p.Kill()
			return nil, fmt.Errorf("%s will not be ready (%w: %q):\n%s", name, ErrAborted, opts.Abort, out.String())
		}
		cctx, ccancel := context.WithTimeout(ctx, time.Second)
		last = opts.Ready(cctx)
		ccancel()
		if last == nil {
			return p, nil
		}
		select {
		case <-ctx.Done():
			p.Kill()
			return nil, fmt.Errorf("%s not ready after %s: %v\n%s", name, timeout, last, out.String())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Signal sends sig to the process.
func (p *Process) Signal(sig syscall.Signal) error { return p.Cmd.Process.Signal(sig) }

// Kill sends SIGKILL to the process group and waits for the process to end. Idempotent.
func (p *Process) Kill() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = syscall.Kill(-p.Cmd.Process.Pid, syscall.SIGKILL)
	<-p.done
}

// Wait waits up to d for the process to exit and returns its exit code (-1 on timeout or signal).
func (p *Process) Wait(d time.Duration) (int, bool) {
	select {
	case <-p.done:
		return p.Cmd.ProcessState.ExitCode(), true
	case <-time.After(d):
		return -1, false
	}
}

// Done is closed when the process has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// Output returns everything the process printed so far.
func (p *Process) Output() string { return p.out.String() }

// Buffer collects a process's output (or any writer's) and may be read while it is written to.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *Buffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *Buffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// HTTPReady is an Options.Ready that passes once a GET of url answers 200 with a body containing want
// ("" for any body).
func HTTPReady(url, want string) func(ctx context.Context) error {
	return func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), want) {
			return fmt.Errorf("GET %s answered %s %.200s", url, resp.Status, body)
		}
		return nil
	}
}

// Build builds the main package in dir (relative to the test's package directory, e.g. "../.." for a
// connector module's root) as a static, trimmed binary named name in a temporary directory of t, and
// returns its path.
func Build(t testing.TB, dir, name string) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), name)
	cmd := exec.Command("go", "build", "-trimpath", "-o", bin, ".")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building %s: %v\n%s", name, err, out)
	}
	return bin
}

// PeakRSS returns the peak resident set size (VmHWM) of process pid in bytes, 0 when unknown; pid 0
// means this process.
func PeakRSS(pid int) int64 {
	path := "/proc/self/status"
	if pid != 0 {
		path = fmt.Sprintf("/proc/%d/status", pid)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// CPUTime returns the CPU time (user + system) process pid has used so far, 0 when unknown; pid 0
// means this process. It reads /proc/<pid>/stat, so it counts the process alone, not its children.
func CPUTime(pid int) time.Duration {
	f := statFields(pid)
	if len(f) < 13 { // utime and stime are fields 14 and 15: 12 and 13 after the name
		return 0
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0
	}
	const hz = 100 // USER_HZ, 100 on every Linux ABI Go supports
	return time.Duration(utime+stime) * time.Second / hz
}

// Tree returns pid and every process descended from it (a launcher script and the server it
// started, for example), from /proc; just pid when /proc cannot be read.
func Tree(pid int) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return []int{pid}
	}
	children := make(map[int][]int)
	for _, e := range entries {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if pp := parentPID(p); pp > 0 {
			children[pp] = append(children[pp], p)
		}
	}
	var out []int
	for todo := []int{pid}; len(todo) > 0; {
		p := todo[len(todo)-1]
		todo = append(todo[:len(todo)-1], children[p]...)
		out = append(out, p)
	}
	return out
}

// TreeCPU is the CPU time of a process tree whose processes are found once per root (Tree), for a
// server that is a launcher plus what it starts (benchkit.Meter.Broker). The zero value is ready.
type TreeCPU struct {
	mu   sync.Mutex
	root int
	pids []int
}

// Of is the CPU time pid and its descendants have used so far; the tree is found again when pid is
// not the last root (a restarted server).
func (t *TreeCPU) Of(pid int) time.Duration {
	t.mu.Lock()
	defer t.mu.Unlock()
	if pid != t.root {
		t.root, t.pids = pid, Tree(pid)
	}
	return TreeCPUTime(t.pids)
}

// TreeCPUTime is the CPUTime of the processes of pids together (see Tree).
func TreeCPUTime(pids []int) time.Duration {
	var total time.Duration
	for _, p := range pids {
		total += CPUTime(p)
	}
	return total
}

// parentPID is field 4 of /proc/<pid>/stat, 0 when unknown.
func parentPID(pid int) int {
	f := statFields(pid)
	if len(f) < 2 {
		return 0
	}
	pp, _ := strconv.Atoi(f[1])
	return pp
}

// statFields returns the fields of /proc/<pid>/stat after the command name (field 3 first), nil
// when unknown; pid 0 means this process.
func statFields(pid int) []string {
	path := "/proc/self/stat"
	if pid != 0 {
		path = fmt.Sprintf("/proc/%d/stat", pid)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	// The command name (field 2) may hold spaces: the fields that follow start after its ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return nil
	}
	return strings.Fields(string(b[i+1:]))
}
