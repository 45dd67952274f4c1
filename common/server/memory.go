package server

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"runtime/debug"
	"strconv"
	"strings"

	"github.com/numaflow-connectors/sources/common/config"
	"github.com/numaflow-connectors/sources/common/source"
)

// The container's memory limit, relative to the root of the file system (fs.FS paths).
const (
	cgroupV2MemoryMax = "sys/fs/cgroup/memory.max"
	cgroupV1Limit     = "sys/fs/cgroup/memory/memory.limit_in_bytes"
	// cgroupV1Unlimited: cgroup v1 has no word for "no limit" and reports a huge number instead
	// (9223372036854771712 on 4 KiB pages); anything from here up is no limit.
	cgroupV1Unlimited = 1 << 62
)

// Memory budgets derived from the container's memory limit.
const (
	// PREFETCH_BYTES=0 takes prefetchShare of the limit, within [minPrefetchBytes, maxPrefetchBytes].
	// Held payloads and locally delayed redeliveries have one such budget each: half the limit at most.
	prefetchShare    = 4
	minPrefetchBytes = 8 << 20
	maxPrefetchBytes = 256 << 20
	// goMemLimitPercent of the container's limit is the Go runtime's soft limit unless GOMEMLIMIT is set:
	// the garbage collector works harder near it instead of the kernel killing the pod at the limit.
	goMemLimitPercent = 90
)

// memoryLimit returns the container's memory limit in bytes, read under root from cgroup v2's
// memory.max or else cgroup v1's memory.limit_in_bytes. ok is false when neither file exists or the
// file says there is no limit ("max" in v2, a huge number in v1).
func memoryLimit(root fs.FS) (limit int64, ok bool, err error) {
	for _, name := range []string{cgroupV2MemoryMax, cgroupV1Limit} {
		b, err := fs.ReadFile(root, name)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return 0, false, fmt.Errorf("reading the memory limit: %w", err)
		}
		s := strings.TrimSpace(string(b))
		if s == "max" && name == cgroupV2MemoryMax {
			return 0, false, nil
		}
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n <= 0 {
			return 0, false, fmt.Errorf("reading the memory limit: /%s holds %q, want a number of bytes", name, s)
		}
		if n >= cgroupV1Unlimited {
			return 0, false, nil
		}
		return n, true, nil
	}
	return 0, false, nil
}

// prefetchBytes is PREFETCH_BYTES with its default resolved: when set is 0, a quarter of the
// container's memory limit within [8 MiB, 256 MiB], or source.DefaultPrefetchBytes without a limit.
func prefetchBytes(set config.Bytes, limit int64, hasLimit bool) int64 {
	switch {
	case set > 0:
		return int64(set)
	case !hasLimit:
		return source.DefaultPrefetchBytes
	}
	return min(max(limit/prefetchShare, minPrefetchBytes), maxPrefetchBytes)
}

// goMemLimit returns the Go runtime's soft memory limit for a container limited to limit bytes, and
// false when the GOMEMLIMIT variable is set in environ (the runtime already applied it).
func goMemLimit(environ []string, limit int64) (int64, bool) {
	if runtimeVar(environ, "GOMEMLIMIT") != "" {
		return 0, false
	}
	return limit / 100 * goMemLimitPercent, true
}

// runtimeVar is the value of the Go runtime's variable name (GOMEMLIMIT, GOGC) in environ, "" when it is
// not set. The runtime read it at start; the server only needs to know whether to leave it alone.
func runtimeVar(environ []string, name string) string {
	for _, kv := range environ {
		if v, ok := strings.CutPrefix(kv, name+"="); ok {
			return v
		}
	}
	return ""
}

// containerMemoryLimit is memoryLimit under root; an unreadable limit is logged and taken as none.
func containerMemoryLimit(root fs.FS, logger *slog.Logger) (int64, bool) {
	limit, hasLimit, err := memoryLimit(root)
	if err != nil {
		logger.Warn("the container's memory limit is unknown; no memory limit set", "error", err)
	}
	return limit, hasLimit
}

// applyMemoryLimit takes the container's memory limit (containerMemoryLimit), sets the Go runtime's
// soft memory limit from it unless GOMEMLIMIT is set, logs both once, and returns PREFETCH_BYTES
// resolved and the func that puts the runtime's previous limit back (for Run inside a test; a process
// just exits).
func applyMemoryLimit(limit int64, hasLimit bool, environ []string, set config.Bytes, logger *slog.Logger) (int64, func()) {
	pb := prefetchBytes(set, limit, hasLimit)
	if !hasLimit {
		return pb, func() {}
	}
	restore := func() {}
	goLimit, derived := goMemLimit(environ, limit)
	from := "container"
	if derived {
		prev := debug.SetMemoryLimit(goLimit)
		restore = func() { debug.SetMemoryLimit(prev) }
	} else {
		goLimit, from = debug.SetMemoryLimit(-1), "GOMEMLIMIT"
	}
	logger.Info("memory limit", "container_bytes", limit, "gomemlimit_bytes", goLimit, "gomemlimit_from", from,
		"prefetch_bytes", pb)
	if set > 0 && 2*pb > limit {
		logger.Warn("PREFETCH_BYTES and the redelivery budget of the same size exceed the container's memory limit",
			"prefetch_bytes", pb, "container_bytes", limit)
	}
	return pb, restore
}
