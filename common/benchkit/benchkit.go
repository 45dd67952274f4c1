// Package benchkit measures a connector binary the way every benchmark of this repository reports it:
// numa played over the real socket by numatest (batches of 500, acks after each), the steady rate,
// the connector process's own CPU time per message (from /proc: the benchmark process and the broker
// are not counted), the whole machine's CPU per message and busy cores (Usage) and peak RSS, and a CPU profile written where a developer can open it with
// `go tool pprof`. Ceiling runs the memsource demo connector the same way: the protocol ceiling,
// what any connector pays for the adapter and the gRPC path with a broker that costs nothing.
package benchkit

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/numaflow-connectors/sources/common/numatest"
	"github.com/numaflow-connectors/sources/common/proctest"
)

// Batch is numa's default readBatchSize.
const Batch = 500

// Result is one measured drain.
type Result struct {
	Messages  int
	Rate      float64       // messages per second, first message to last ack
	CPUPerMsg time.Duration // the connector process's CPU time (user + system) per message
	// NumaCPUPerMsg is numatest's, the test process playing numa (all its threads): on 2 shared
	// cores, what the connector and the broker cost is CPU numatest does not get.
	NumaCPUPerMsg time.Duration
	PeakRSS       int64  // the connector process's VmHWM, bytes
	Profile       string // its CPU profile of the whole run
	Output        string // what it wrote (logs), for figures it logs at exit
	Machine       Usage  // every process's CPU from the first message to the last ack (see MachineCPU)
}

// Report adds r to b's metrics (names prefixed with prefix, e.g. "source_" or "ceiling_").
func (r Result) Report(b *testing.B, prefix string) {
	b.ReportMetric(r.Rate, prefix+"msg/s")
	b.ReportMetric(float64(r.CPUPerMsg.Nanoseconds())/1e3, prefix+"cpu_us/msg")
	b.ReportMetric(float64(r.NumaCPUPerMsg.Nanoseconds())/1e3, prefix+"numa_cpu_us/msg")
	b.ReportMetric(float64(r.PeakRSS)/(1<<20), prefix+"peak_rss_MiB")
	r.Machine.Report(b, prefix)
}

func (r Result) String() string {
	return fmt.Sprintf("%d messages, %.0f msg/s, %.1f µs CPU per message, peak RSS %.1f MiB, numatest %.1f µs CPU per message, %s, CPU profile %s",
		r.Messages, r.Rate, float64(r.CPUPerMsg.Nanoseconds())/1e3, float64(r.PeakRSS)/(1<<20),
		float64(r.NumaCPUPerMsg.Nanoseconds())/1e3, r.Machine, r.Profile)
}

// ProfilePath is where the connector named name writes its CPU profile: BENCH_PROFILE_DIR (created if
// needed; `make bench` sets it to dist/profiles), else the system's temp directory.
func ProfilePath(name string) string {
	dir := os.Getenv("BENCH_PROFILE_DIR")
	if dir == "" {
		dir = os.TempDir()
	}
	_ = os.MkdirAll(dir, 0o755)
	return filepath.Join(dir, name+".cpu.pprof")
}

// startConnector starts bin with args and env (after the socket, server-info file, no metrics server,
// LOG_LEVEL=warn and numa's batch settings, which env may override) and dials it with numatest. stop
// closes the client, sends SIGTERM and waits for the exit (killing it after 20 s).
func startConnector(ctx context.Context, tb testing.TB, bin string, args, env []string) (*proctest.Process, *numatest.Client, func()) {
	tb.Helper()
	dir, err := os.MkdirTemp("", "bk") // short: unix socket paths are limited to about 100 bytes
	if err != nil {
		tb.Fatal(err)
	}
	sock, info := filepath.Join(dir, "s.sock"), filepath.Join(dir, "info")
	p := proctest.Start(tb, bin, args, proctest.Options{Env: append([]string{
		"SOURCE_SOCKET=" + sock, "SOURCE_SERVER_INFO_FILE=" + info, "METRICS_ADDR=", "LOG_LEVEL=warn",
		fmt.Sprintf("NUMAFLOW_READ_BATCH_SIZE=%d", Batch), "NUMAFLOW_READ_TIMEOUT_MS=1000",
	}, env...)})
	c, err := numatest.Dial(ctx, numatest.Options{Socket: sock, ServerInfoFile: info})
	if err != nil {
		p.Kill()
		os.RemoveAll(dir)
		tb.Fatalf("dialing %s: %v\n%s", bin, err, p.Output())
	}
	return p, c, func() {
		_ = c.Close()
		_ = p.Signal(syscall.SIGTERM)
		if code, exited := p.Wait(20 * time.Second); !exited || code != 0 {
			tb.Errorf("%s after SIGTERM: exit %d (exited %v)\n%s", bin, code, exited, p.Output())
		}
		p.Kill()
		os.RemoveAll(dir)
	}
}

// Drain starts bin with env (see startConnector), drains n messages over its socket, stops it with
// SIGTERM and returns what it measured. name names the profile.
func Drain(ctx context.Context, tb testing.TB, bin, name string, env []string, n int) Result {
	tb.Helper()
	return DrainWatching(ctx, tb, bin, name, env, n, nil)
}

// DrainWatching is Drain that also measures the broker's CPU over the phase (Result.Machine.Broker)
// with broker (see Meter.Broker).
func DrainWatching(ctx context.Context, tb testing.TB, bin, name string, env []string, n int, broker func() time.Duration) Result {
	tb.Helper()
	res := Result{Profile: ProfilePath(name)}
	p, c, stop := startConnector(ctx, tb, bin, []string{"--cpu-profile=" + res.Profile}, env)
	pid := p.Cmd.Process.Pid
	var cpu0, numa0 time.Duration
	machine := Meter{Broker: broker}
	d, err := c.Drain(ctx, n, Batch, func() { cpu0, numa0 = proctest.CPUTime(pid), proctest.CPUTime(0); machine.Start() })
	if err != nil {
		stop()
		tb.Fatalf("draining %s: %v\n%s", name, err, p.Output())
	}
	cpu, numa := proctest.CPUTime(pid)-cpu0, proctest.CPUTime(0)-numa0
	res.Machine = machine.Stop(d.Messages)
	res.Messages, res.Rate, res.PeakRSS = d.Messages, d.Rate(), proctest.PeakRSS(pid)
	res.CPUPerMsg = cpu / time.Duration(max(d.Messages, 1))
	res.NumaCPUPerMsg = numa / time.Duration(max(d.Messages, 1))
	stop()
	res.Output = p.Output()
	return res
}

// Ceiling builds the memsource demo connector (common/cmd/memsource) and drains n messages of payload
// bytes from it: the protocol ceiling for a connector measured with the same n and payload.
func Ceiling(ctx context.Context, tb testing.TB, n, payload int) Result {
	tb.Helper()
	_, file, _, _ := runtime.Caller(0)
	bin := proctest.Build(tb, filepath.Join(filepath.Dir(file), "..", "cmd", "memsource"), "memsource")
	return Drain(ctx, tb, bin, "memsource", []string{
		fmt.Sprintf("MEM_MESSAGES=%d", n), fmt.Sprintf("MEM_PAYLOAD_BYTES=%d", payload),
	}, n)
}
