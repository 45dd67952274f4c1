package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/numaflow-connectors/sources/common/benchkit"
	"github.com/numaflow-connectors/sources/common/numatest"
	"github.com/numaflow-connectors/sources/common/proctest"
)

// The socket and server-info paths numaflow-go's own server used (the baseline cannot be told others).
const (
	baselineSocket = "/var/run/numaflow/source.sock"
	baselineInfo   = "/var/run/numaflow/sourcer-server-info"
)

// BenchmarkSocketAgainstBaseline measures issue 16's first target on the machine it runs on: the
// connector CPU per message of the memsource ceiling today against the code the issue was filed
// against (the commit before the source protocol was served by common/server, numaflow-go's server
// then), built by scripts/baseline.sh into BASELINE_MEMSOURCE: each iteration drains the baseline and
// then today's memsource, the same 1 KiB messages, numatest playing numa. Absolute microseconds do not
// carry between machines; this ratio does. The baseline seeds every message at start, as it did when
// the issue measured it.
func BenchmarkSocketAgainstBaseline(b *testing.B) {
	old := os.Getenv("BASELINE_MEMSOURCE")
	if old == "" {
		b.Skip("BASELINE_MEMSOURCE is not set: run scripts/baseline.sh")
	}
	if c, err := net.Dial("unix", baselineSocket); err == nil {
		_ = c.Close()
		b.Skipf("a source serves %s: the baseline needs that path", baselineSocket)
	}
	n, payload := *benchMessages, *benchPayload
	for i := 0; i < b.N; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		base, rate := drainBaseline(ctx, b, old, n, payload)
		r := benchkit.Ceiling(ctx, b, n, payload)
		cancel()
		now := float64(r.CPUPerMsg.Nanoseconds()) / 1e3
		b.ReportMetric(base, "baseline_cpu_us/msg")
		b.ReportMetric(now, "now_cpu_us/msg")
		b.ReportMetric(100*now/base, "of_baseline_%")
		b.Logf("baseline %.0f msg/s, %.1f µs CPU per message; today %.0f msg/s, %.1f µs: %.0f%% of the baseline (issue 16: at most 50%%)",
			rate, base, r.Rate, now, 100*now/base)
	}
}

// drainBaseline starts the baseline binary seeded with n messages and drains them over its socket; it
// returns the connector's CPU per message (µs) and the rate.
func drainBaseline(ctx context.Context, b *testing.B, bin string, n, payload int) (float64, float64) {
	b.Helper()
	_ = os.Remove(baselineSocket) // the server-info file outlives a run: numatest must read the new one
	_ = os.Remove(baselineInfo)
	p := proctest.Start(b, bin, nil, proctest.Options{Env: []string{
		fmt.Sprintf("MEM_MESSAGES=%d", n), fmt.Sprintf("MEM_PAYLOAD_BYTES=%d", payload), "METRICS_ADDR=", "LOG_LEVEL=warn",
	}})
	defer func() {
		_ = p.Signal(syscall.SIGTERM)
		p.Wait(20 * time.Second)
		p.Kill()
		_ = os.Remove(baselineSocket)
		_ = os.Remove(baselineInfo)
	}()
	c, err := numatest.Dial(ctx, numatest.Options{Socket: baselineSocket, ServerInfoFile: baselineInfo})
	if err != nil {
		b.Fatalf("dialing the baseline: %v\n%s", err, p.Output())
	}
	defer c.Close()
	pid := p.Cmd.Process.Pid
	var cpu0 time.Duration
	d, err := c.Drain(ctx, n, benchkit.Batch, func() { cpu0 = proctest.CPUTime(pid) })
	if err != nil {
		b.Fatalf("draining the baseline: %v\n%s", err, p.Output())
	}
	cpu := proctest.CPUTime(pid) - cpu0
	return float64(cpu.Nanoseconds()) / 1e3 / float64(max(d.Messages, 1)), d.Rate()
}
