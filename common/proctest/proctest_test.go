package proctest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestTreeCountsChildren(t *testing.T) {
	// A child that burns CPU, then waits: its CPU time counts in this process's tree, not in CPUTime.
	cmd := exec.Command("sh", "-c", "i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done; sleep 30")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	deadline := time.Now().Add(time.Minute)
	for CPUTime(cmd.Process.Pid) < 100*time.Millisecond {
		if time.Now().After(deadline) {
			t.Fatalf("the child used %v of CPU in a minute", CPUTime(cmd.Process.Pid))
		}
		time.Sleep(20 * time.Millisecond)
	}
	child, self := CPUTime(cmd.Process.Pid), CPUTime(os.Getpid())
	if tree := TreeCPUTime(Tree(os.Getpid())); tree < self+child {
		t.Fatalf("tree %v, less than this process %v plus its child %v", tree, self, child)
	}
	if TreeCPUTime(Tree(cmd.Process.Pid)) < child {
		t.Fatalf("the child's tree counts less than the child")
	}
	var tc TreeCPU
	if got := tc.Of(os.Getpid()); got < self+child {
		t.Fatalf("TreeCPU %v, less than this process %v plus its child %v", got, self, child)
	}
	got := tc.Of(cmd.Process.Pid)
	if whole := TreeCPUTime(Tree(os.Getpid())); got < child || got >= whole {
		t.Fatalf("TreeCPU of the child %v: not the child's tree alone (child %v, with this process %v)", got, child, whole)
	}
}

// TestLauncherChild runs in a child test binary (TestLauncherDiesWithTheTestBinary): it starts a
// launcher that leaves a server of its own, prints the server's PID, and dies as a test binary killed
// by -timeout does, without its cleanups.
func TestLauncherChild(t *testing.T) {
	if os.Getenv("PROCTEST_LAUNCHER_CHILD") != "1" {
		t.Skip("run by TestLauncherDiesWithTheTestBinary")
	}
	p, err := StartE("/bin/sh", []string{"-c", "sleep 300 & echo SERVER=$!; wait"}, Options{Launcher: true,
		Ready: func(context.Context) error { return nil }})
	if err != nil {
		t.Fatal(err)
	}
	for !strings.Contains(p.Output(), "SERVER=") {
		time.Sleep(10 * time.Millisecond)
	}
	fmt.Println(strings.TrimSpace(p.Output()))
	os.Exit(2)
}

// The kernel's kill on the test binary's death reaches only its direct child; a launcher's server
// (rabbitmq-server's Erlang VM) was left running, serving on its port. With Options.Launcher it dies
// with the test binary. Without the watcher this fails: the server is still alive after 3 s.
func TestLauncherDiesWithTheTestBinary(t *testing.T) {
	cmd := exec.Command(os.Args[0], "-test.run=^TestLauncherChild$", "-test.v")
	cmd.Env = append(os.Environ(), "PROCTEST_LAUNCHER_CHILD=1")
	out, _ := cmd.CombinedOutput()
	var pid int
	for _, l := range strings.Split(string(out), "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(l), "SERVER="); ok {
			pid, _ = strconv.Atoi(v)
		}
	}
	if pid == 0 {
		t.Fatalf("no server PID in the child's output:\n%s", out)
	}
	waitGone(t, pid, "the launcher's server outlived the test binary")
}

// waitGone fails the test when process pid is still alive 3 s from now (and kills it).
func waitGone(t *testing.T, pid int, what string) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for syscall.Kill(pid, 0) == nil {
		if time.Now().After(deadline) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
			t.Fatalf("%s: process %d alive after 3 s", what, pid)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A launcher stopped normally takes what it left with it, and Kill still works.
func TestLauncherEndsWithItsServer(t *testing.T) {
	p := Start(t, "/bin/sh", []string{"-c", "sleep 300 & echo SERVER=$!; wait"}, Options{Launcher: true})
	for !strings.Contains(p.Output(), "SERVER=") {
		time.Sleep(10 * time.Millisecond)
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(p.Output()), "SERVER=")))
	p.Kill()
	waitGone(t, pid, "the launcher's server after Kill")
}

// A process that prints Options.Abort is killed at once and StartE says so, instead of waiting out the
// timeout for a process that keeps running without ever being ready.
func TestAbortStopsWaiting(t *testing.T) {
	start := time.Now()
	_, err := StartE("/bin/sh", []string{"-c", "echo 'java.net.BindException: Address already in use'; sleep 300"}, Options{
		Timeout: 30 * time.Second, Abort: "Address already in use",
		Ready: func(context.Context) error { return errors.New("not yet") }})
	if !errors.Is(err, ErrAborted) {
		t.Fatalf("StartE: %v, want ErrAborted", err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("took %s to give up", took)
	}
}
