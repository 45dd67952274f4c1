package proctest

import (
	"os"
	"os/exec"
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
