package benchkit

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"
)

// clockTick is USER_HZ, the unit of /proc/stat (100 on every Linux architecture Go supports).
const clockTick = 100

// MachineCPU is the CPU time every process on the machine has used since boot: the busy states of
// /proc/stat's cpu line (user, nice, system, irq, softirq, steal; not idle or iowait). The
// difference over a phase is what the connector, the broker and numa (or a raw loop and the broker)
// cost together: on a machine with few cores a phase that keeps them all busy is bound by CPU, and
// its rate follows that total, not one process's share. 0 when /proc/stat cannot be read.
func MachineCPU() time.Duration {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := bytes.Cut(b, []byte("\n"))
	f := bytes.Fields(line)
	if len(f) < 9 || string(f[0]) != "cpu" {
		return 0
	}
	var ticks int64
	for _, i := range []int{1, 2, 3, 6, 7, 8} { // user nice system [idle iowait] irq softirq steal
		n, err := strconv.ParseInt(string(f[i]), 10, 64)
		if err != nil {
			return 0
		}
		ticks += n
	}
	return time.Duration(ticks) * time.Second / clockTick
}

// Usage is the machine's CPU use over one phase of a benchmark.
type Usage struct {
	CPU  time.Duration // MachineCPU over the phase
	Wall time.Duration
	N    int // messages the phase moved
	// Broker is the broker's own CPU time over the phase (Meter.Broker), 0 when not measured.
	Broker time.Duration
}

// Meter measures the machine's CPU over a phase that runs from its first message to its last ack, as
// Drain measures a connector: a raw loop calls Start when a message first arrives (later calls, from
// any goroutine, do nothing), Mark after each ack, and Stop once its workers are done. Set-up before
// the first message (dialing, the broker's first delivery) and the workers' wind-down after the last
// ack (a long poll that runs out) are not counted in the rate, so they are not counted here either.
type Meter struct {
	// Broker, when set, returns the CPU time the broker's processes have used so far (for example
	// proctest.CPUTime of its pid, or a proctest.TreeCPU): Usage.Broker is its difference over
	// the phase.
	Broker func() time.Duration

	once             sync.Once
	mu               sync.Mutex
	cpu0, cpu1       time.Duration
	broker0, broker1 time.Duration
	t0, t1           time.Time
}

// Start begins the phase, once.
func (m *Meter) Start() {
	m.once.Do(func() { m.cpu0, m.broker0, m.t0 = MachineCPU(), m.brokerCPU(), time.Now() })
}

// Mark records where the phase has got to: Stop measures up to the last Mark.
func (m *Meter) Mark() {
	cpu, broker, now := MachineCPU(), m.brokerCPU(), time.Now()
	m.mu.Lock()
	m.cpu1, m.broker1, m.t1 = cpu, broker, now
	m.mu.Unlock()
}

func (m *Meter) brokerCPU() time.Duration {
	if m.Broker == nil {
		return 0
	}
	return m.Broker()
}

// Stop ends the phase, which moved n messages, at the last Mark (now when there was none); a phase
// that never started measures nothing.
func (m *Meter) Stop(n int) Usage {
	if m.t0.IsZero() {
		return Usage{N: n}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.t1.IsZero() {
		m.cpu1, m.broker1, m.t1 = MachineCPU(), m.brokerCPU(), time.Now()
	}
	return Usage{CPU: m.cpu1 - m.cpu0, Wall: m.t1.Sub(m.t0), N: n, Broker: m.broker1 - m.broker0}
}

// PerMsg is the machine's CPU time per message.
func (u Usage) PerMsg() time.Duration { return u.CPU / time.Duration(max(u.N, 1)) }

// Cores is how many cores were busy on average (at most the machine's core count).
func (u Usage) Cores() float64 {
	if u.Wall <= 0 {
		return 0
	}
	return u.CPU.Seconds() / u.Wall.Seconds()
}

// BrokerPerMsg is the broker's CPU time per message (0 when not measured).
func (u Usage) BrokerPerMsg() time.Duration { return u.Broker / time.Duration(max(u.N, 1)) }

// Report adds the phase's figures to b's metrics: prefix+"machine_cpu_us/msg", prefix+"busy_cores" and,
// when measured, prefix+"broker_cpu_us/msg".
func (u Usage) Report(b *testing.B, prefix string) {
	b.ReportMetric(float64(u.PerMsg().Nanoseconds())/1e3, prefix+"machine_cpu_us/msg")
	b.ReportMetric(u.Cores(), prefix+"busy_cores")
	if u.Broker > 0 {
		b.ReportMetric(float64(u.BrokerPerMsg().Nanoseconds())/1e3, prefix+"broker_cpu_us/msg")
	}
}

func (u Usage) String() string {
	s := fmt.Sprintf("machine %.1f µs CPU per message, %.2f cores busy", float64(u.PerMsg().Nanoseconds())/1e3, u.Cores())
	if u.Broker > 0 {
		s += fmt.Sprintf(", broker %.1f µs CPU per message", float64(u.BrokerPerMsg().Nanoseconds())/1e3)
	}
	return s
}
