package source

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/numaflow-connectors/sources/common/metrics"
)

// maxProbeInterval bounds the wait between health checks while the broker is unreachable: readiness
// comes back within about that long of the broker, and a long outage costs one check per interval.
const maxProbeInterval = 2 * time.Second

// readiness is whether the broker can be used now. A call that finds it unreachable (Code.unreachable),
// or a receive it refuses for good (FailedPrecondition), makes it false; a receive with messages, or
// the prober, makes it true again. While it is false the prober calls the driver's Checker every
// second or two, so readiness comes back within about that long of the broker whatever else is
// running, and a silent network (calls neither fail nor answer) stays not-ready until a check really
// answers. A driver with a check starts not ready (see newReadiness). Readiness is for operators
// (/readyz) and to spare an unreachable broker calls; leases and receives do not wait for it.
type readiness struct {
	log     *slog.Logger
	m       *metrics.Source
	chk     Checker          // nil: no health check
	kind    func(error) Code // classifies a failed check for the start-up log line; nil: Unknown
	bg      *tracker
	ctx     context.Context
	ready   atomic.Bool
	probing atomic.Bool

	mu      sync.Mutex
	readyCh chan struct{} // closed while ready; replaced when readiness goes false
}

func newReadiness(log *slog.Logger, m *metrics.Source, chk Checker, kind func(error) Code, bg *tracker, ctx context.Context) *readiness {
	r := &readiness{log: log, m: m, chk: chk, kind: kind, bg: bg, ctx: ctx, readyCh: make(chan struct{})}
	if chk == nil {
		close(r.readyCh)
		r.ready.Store(true)
		m.Ready.Set(1)
		return r
	}
	// With a health check, ready once the broker has answered it (or a receive brought messages), not
	// before: a source that cannot reach its broker at start must not report ready until its first
	// receive times out (30 s against a silent SQS endpoint). The prober's first check is the
	// start-up check, whose outcome is logged (one broker call for both).
	m.Ready.Set(0)
	r.probing.Store(true)
	if !bg.run(func() { r.probeAfter(0) }) {
		r.probing.Store(false)
	}
	return r
}

func (r *readiness) get() bool { return r.ready.Load() }

// hasCheck reports whether the driver has a health check.
func (r *readiness) hasCheck() bool { return r.chk != nil }

// whenReady returns a channel that is closed while the broker is ready.
func (r *readiness) whenReady() <-chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.readyCh
}

// wait returns when the broker is ready, ctx ends or timeout passes; true when ready.
func (r *readiness) wait(ctx context.Context, timeout time.Duration) bool {
	ch := r.whenReady()
	select {
	case <-ch:
		return true
	default:
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-ch:
		return true
	case <-t.C:
	case <-ctx.Done():
	}
	return false
}

func (r *readiness) set(v bool) {
	r.mu.Lock()
	if r.ready.Swap(v) == v {
		r.mu.Unlock()
		return
	}
	if v {
		close(r.readyCh)
	} else {
		r.readyCh = make(chan struct{})
	}
	r.mu.Unlock()
	if v {
		r.log.Info("broker reachable")
		r.m.Ready.Set(1)
		return
	}
	r.m.Ready.Set(0)
	if r.chk != nil && r.probing.CompareAndSwap(false, true) && !r.bg.run(r.probe) {
		r.probing.Store(false)
	}
}

// probe runs the health check until it passes. It stops probing before it sets readiness true: a
// failure reported between the two (set(false) while probing) would otherwise find a prober still
// marked as running, start none, and leave readiness false for good on an idle source.
func (r *readiness) probe() { r.probeAfter(-1) }

// probeAfter is probe with a first wait of first (< 0: the backoff's). first 0 is the start-up check:
// it runs even if a receive made readiness true meanwhile, and its outcome is logged.
func (r *readiness) probeAfter(first time.Duration) {
	bo := backoff{min: time.Second, max: maxProbeInterval}
	wait := first
	if wait < 0 {
		wait = bo.next()
	}
	startUp := first == 0
	for (startUp || !r.get()) && sleepCtx(r.ctx, wait) {
		wait = bo.next()
		c, cancel := context.WithTimeout(r.ctx, 5*time.Second)
		began := time.Now()
		err := r.chk.Check(c)
		cancel()
		if startUp {
			startUp = false
			r.logStartUp(err, time.Since(began))
		}
		if err == nil {
			r.probing.Store(false)
			r.set(true)
			return
		}
	}
	r.probing.Store(false)
	if !r.get() && r.ctx.Err() == nil && r.probing.CompareAndSwap(false, true) && !r.bg.run(r.probe) {
		r.probing.Store(false) // a failure came between the loop's last look and now: probe again
	}
}

// logStartUp logs the start-up check's outcome; nothing when the source closed during it.
func (r *readiness) logStartUp(err error, took time.Duration) {
	switch {
	case err == nil:
		r.log.Info("broker check passed", "took", took.Round(time.Millisecond).String())
	case r.ctx.Err() != nil:
	default:
		kind := Unknown
		if r.kind != nil {
			kind = r.kind(err)
		}
		r.log.Error("broker check failed; the source keeps running and retrying, and reports not ready",
			"kind", kind.String(), "error", err)
	}
}
