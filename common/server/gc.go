package server

import (
	"log/slog"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync/atomic"

	"github.com/numaflow-connectors/sources/common/config"
)

// GC headroom: Go's default (GOGC=100) collects each time the heap has grown by as much as is live. A
// connector keeps little alive (the messages it holds) and allocates a lot (every payload is copied a
// few times on its way to numa), so with a small live heap it collects many times a second. After each
// collection the tuner sets GOGC so the heap may grow by at least the headroom first, and never
// collects more often than Go's default would. The extra memory is at most the headroom, and
// GOMEMLIMIT (set from the container's limit) still bounds the whole heap.
const (
	// GC_HEADROOM=0 takes gcHeadroomShare of the container's limit, at most maxGCHeadroom (also the
	// value without a limit).
	gcHeadroomShare = 8
	maxGCHeadroom   = 16 << 20 // 32 MiB saved no more CPU on the Redis benchmark, for 16 MiB more RSS
	// GOGC stays within [minGCPercent, maxGCPercent]: never below Go's default, and a heap that is
	// almost empty (at start) does not make the first collection wait for the whole headroom times
	// the tiny live heap.
	minGCPercent = 100
	maxGCPercent = 2000
)

// gcHeadroom is GC_HEADROOM with its default resolved: when set is 0, an eighth of the container's
// memory limit, at most 16 MiB (16 MiB without a limit).
func gcHeadroom(set config.Bytes, limit int64, hasLimit bool) int64 {
	switch {
	case set > 0:
		return int64(set)
	case !hasLimit:
		return maxGCHeadroom
	}
	return min(limit/gcHeadroomShare, maxGCHeadroom)
}

// gcPercent is the GOGC that lets a heap with live bytes grow by at least headroom before the next
// collection.
func gcPercent(live, headroom uint64) int {
	if live == 0 {
		return maxGCPercent
	}
	return int(min(max(headroom*100/live, minGCPercent), maxGCPercent))
}

// gcTuner re-sets GOGC after every collection (gcPercent of the live heap it left).
type gcTuner struct {
	headroom uint64
	stopped  atomic.Bool
	live     []metrics.Sample
}

// gcSentinel is allocated to be collected: its cleanup runs once per collection. It holds a pointer so
// it is not batched with other small objects (runtime.AddCleanup's tiny-allocation caveat).
type gcSentinel struct{ _ *byte }

// arm schedules tune after the next collection.
func (t *gcTuner) arm() {
	runtime.AddCleanup(&gcSentinel{}, func(t *gcTuner) { t.tune() }, t)
}

func (t *gcTuner) tune() {
	if t.stopped.Load() {
		return
	}
	metrics.Read(t.live)
	if t.live[0].Value.Kind() == metrics.KindUint64 {
		debug.SetGCPercent(gcPercent(t.live[0].Value.Uint64(), t.headroom))
	}
	t.arm()
}

// applyGCHeadroom starts the tuner with GC_HEADROOM resolved, unless GOGC is set in environ (the
// runtime already applied the operator's choice), logs the choice once, and returns the func that
// stops the tuner and puts the previous GOGC back (for Run inside a test; a process just exits).
func applyGCHeadroom(environ []string, set config.Bytes, limit int64, hasLimit bool, logger *slog.Logger) func() {
	if v := runtimeVar(environ, "GOGC"); v != "" {
		logger.Info("garbage collection", "gogc", v, "gc_headroom_bytes", 0)
		return func() {}
	}
	t := &gcTuner{headroom: uint64(gcHeadroom(set, limit, hasLimit)), live: []metrics.Sample{{Name: "/gc/heap/live:bytes"}}}
	// Until the first collection measures the live heap: the runtime's smallest heap goal is 4 MiB
	// times GOGC/100, so this one comes at about the headroom.
	prev := debug.SetGCPercent(gcPercent(4<<20, t.headroom))
	t.arm()
	logger.Info("garbage collection", "gogc", "tuned", "gc_headroom_bytes", t.headroom)
	return func() {
		t.stopped.Store(true)
		debug.SetGCPercent(prev)
	}
}
