package source

import (
	"context"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/numaflow-connectors/sources/common/metrics"
)

// readiness is whether the broker can be used now. A call that finds it unreachable (Code.unreachable)
// makes it false; a receive with messages, or the prober, makes it true again. While it is false the
// prober calls the driver's Checker every second, so readiness comes back within about a second of the
// broker whatever else is running, and a silent network (calls neither fail nor answer) stays
// not-ready until a check really answers. Readiness is for operators (/readyz) and to spare an
// unreachable broker calls; leases and receives do not wait for it.
type readiness struct {
	log     *slog.Logger
	m       *metrics.Source
	chk     Checker // nil: no health check
	bg      *tracker
	ctx     context.Context
	ready   atomic.Bool
	probing atomic.Bool
}

func newReadiness(log *slog.Logger, m *metrics.Source, chk Checker, bg *tracker, ctx context.Context) *readiness {
	r := &readiness{log: log, m: m, chk: chk, bg: bg, ctx: ctx}
	r.ready.Store(true)
	m.Ready.Set(1)
	return r
}

func (r *readiness) get() bool { return r.ready.Load() }

// hasCheck reports whether the driver has a health check.
func (r *readiness) hasCheck() bool { return r.chk != nil }

func (r *readiness) set(v bool) {
	if r.ready.Swap(v) == v {
		return
	}
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

func (r *readiness) probe() {
	defer r.probing.Store(false)
	for !r.get() && sleepCtx(r.ctx, time.Second) {
		c, cancel := context.WithTimeout(r.ctx, 5*time.Second)
		err := r.chk.Check(c)
		cancel()
		if err == nil {
			r.set(true)
			return
		}
	}
}
