package server

import (
	"os"
	"runtime/debug"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/numaflow-connectors/sources/common/config"
	"github.com/numaflow-connectors/sources/common/source"
)

const mi = 1 << 20

func TestMemoryLimit(t *testing.T) {
	tests := []struct {
		tree    string
		limit   int64
		ok      bool
		wantErr string
	}{
		{tree: "v2", limit: 256 * mi, ok: true},
		{tree: "large", limit: 4096 * mi, ok: true},
		{tree: "v2-max"},
		{tree: "v1", limit: 512 * mi, ok: true},
		{tree: "v1-unlimited"},
		{tree: "none"},
		{tree: "unreadable", wantErr: "reading the memory limit"},
		{tree: "garbage", wantErr: `/sys/fs/cgroup/memory.max holds "lots", want a number of bytes`},
	}
	for _, tc := range tests {
		t.Run(tc.tree, func(t *testing.T) {
			limit, ok, err := memoryLimit(os.DirFS("testdata/cgroup/" + tc.tree))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, tc.wantErr)
				}
				if ok {
					t.Error("a limit was reported with the error")
				}
				return
			}
			if err != nil || limit != tc.limit || ok != tc.ok {
				t.Errorf("memoryLimit = %d, %v, %v; want %d, %v, nil", limit, ok, err, tc.limit, tc.ok)
			}
		})
	}
	// An empty root (no /sys at all, as outside Linux) has no limit either.
	if limit, ok, err := memoryLimit(fstest.MapFS{}); ok || err != nil {
		t.Errorf("empty root: %d, %v, %v", limit, ok, err)
	}
}

// derivedCase is one case of a value set by a variable or derived from the container's memory limit.
type derivedCase struct {
	name     string
	set      config.Bytes
	limit    int64
	hasLimit bool
	want     int64
}

// checkDerived runs the cases through f (prefetchBytes, gcHeadroom).
func checkDerived(t *testing.T, fname string, f func(config.Bytes, int64, bool) int64, cases []derivedCase) {
	t.Helper()
	for _, tc := range cases {
		if got := f(tc.set, tc.limit, tc.hasLimit); got != tc.want {
			t.Errorf("%s: %s(%d, %d, %v) = %d, want %d", tc.name, fname, tc.set, tc.limit, tc.hasLimit, got, tc.want)
		}
	}
}

func TestPrefetchBytes(t *testing.T) {
	checkDerived(t, "prefetchBytes", prefetchBytes, []derivedCase{
		{"set wins over the limit", 1 * mi, 256 * mi, true, 1 * mi},
		{"set without a limit", 300 * mi, 0, false, 300 * mi},
		{"no limit: the adapter's default", 0, 0, false, source.DefaultPrefetchBytes},
		{"a quarter of 256Mi", 0, 256 * mi, true, 64 * mi},
		{"a quarter of 512Mi", 0, 512 * mi, true, 128 * mi},
		{"20Mi: at least 8Mi", 0, 20 * mi, true, 8 * mi},
		{"4Gi: at most 256Mi", 0, 4096 * mi, true, 256 * mi},
		{"1Gi: exactly 256Mi", 0, 1024 * mi, true, 256 * mi},
	})
}

func TestGoMemLimit(t *testing.T) {
	if got, ok := goMemLimit([]string{"PATH=/bin"}, 1000*mi); !ok || got != 900*mi {
		t.Errorf("without GOMEMLIMIT: %d, %v; want %d, true", got, ok, 900*mi)
	}
	if got, ok := goMemLimit([]string{"GOMEMLIMIT="}, 1000*mi); !ok || got != 900*mi {
		t.Errorf("GOMEMLIMIT empty (the runtime ignores it): %d, %v; want %d, true", got, ok, 900*mi)
	}
	if _, ok := goMemLimit([]string{"GOMEMLIMIT=100MiB"}, 1000*mi); ok {
		t.Error("GOMEMLIMIT set: the limit is derived anyway")
	}
}

// Run in a container with a memory limit sets the Go runtime's soft limit to 90% of it (unless
// GOMEMLIMIT is set), logs both once, and puts the previous limit back when it returns.
func TestRunMemoryLimit(t *testing.T) {
	const v2Limit = 256 * mi
	before := debug.SetMemoryLimit(-1)
	tests := []struct {
		name    string
		tree    string
		env     []string
		line    map[string]any // the "memory limit" line's attributes; nil: no such line
		goLimit int64          // the runtime's limit while running
		warn    string         // a warning logged
	}{
		{name: "cgroup v2 limit", tree: "v2", goLimit: v2Limit / 100 * 90,
			line: map[string]any{"container_bytes": float64(v2Limit), "gomemlimit_bytes": float64(v2Limit / 100 * 90),
				"gomemlimit_from": "container", "prefetch_bytes": float64(64 * mi)}},
		{name: "cgroup v1 limit", tree: "v1", goLimit: 512 * mi / 100 * 90,
			line: map[string]any{"container_bytes": float64(512 * mi), "gomemlimit_from": "container", "prefetch_bytes": float64(128 * mi)}},
		{name: "GOMEMLIMIT set by the user is left alone", tree: "v2", env: []string{"GOMEMLIMIT=100MiB"}, goLimit: before,
			line: map[string]any{"container_bytes": float64(v2Limit), "gomemlimit_bytes": float64(before), "gomemlimit_from": "GOMEMLIMIT"}},
		{name: "PREFETCH_BYTES set", tree: "v2", env: []string{"PREFETCH_BYTES=1Mi"}, goLimit: v2Limit / 100 * 90,
			line: map[string]any{"prefetch_bytes": float64(1 * mi)}},
		{name: "PREFETCH_BYTES past half the limit is warned about", tree: "small", env: []string{"PREFETCH_BYTES=16Mi"}, goLimit: 20 * mi / 100 * 90,
			line: map[string]any{"prefetch_bytes": float64(16 * mi)}, warn: "PREFETCH_BYTES and the redelivery budget"},
		{name: "no limit", tree: "v2-max", goLimit: before},
		{name: "v1 without a limit", tree: "v1-unlimited", goLimit: before},
		{name: "unreadable", tree: "unreadable", goLimit: before, warn: "the container's memory limit is unknown"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			environ, _, _ := baseEnv(t)
			h := newHarness(&fakeDriver{}, nil)
			r := startIn(t, h.app, append(environ, tc.env...), os.DirFS("testdata/cgroup/"+tc.tree))
			r.waitLog(t, "serving")
			if got := debug.SetMemoryLimit(-1); got != tc.goLimit {
				t.Errorf("the runtime's memory limit is %d while running, want %d", got, tc.goLimit)
			}
			if n := strings.Count(r.stderr.String(), `"msg":"memory limit"`); (tc.line == nil && n != 0) || (tc.line != nil && n != 1) {
				t.Errorf("%d memory limit lines:\n%s", n, r.stderr.String())
			}
			if tc.line != nil {
				line := r.waitLog(t, "memory limit")
				for k, v := range tc.line {
					if line[k] != v {
						t.Errorf("memory limit line: %s = %v, want %v (%v)", k, line[k], v, line)
					}
				}
			}
			if tc.warn != "" && !strings.Contains(r.stderr.String(), tc.warn) {
				t.Errorf("no warning %q:\n%s", tc.warn, r.stderr.String())
			}
			if code := r.stop(t); code != 0 {
				t.Errorf("exit %d, want 0", code)
			}
			if got := debug.SetMemoryLimit(-1); got != before {
				t.Errorf("after Run the runtime's memory limit is %d, want %d as before", got, before)
			}
		})
	}
}

func TestSourceOptions(t *testing.T) {
	var c config.Common
	if err := config.Load(&c, []string{"NUMAFLOW_REPLICA=3", "NUMAFLOW_READ_BATCH_SIZE=100", "PREFETCH=50", "DEAD_LETTER_FALLBACK=drop"}); err != nil {
		t.Fatal(err)
	}
	want := source.Options{Partition: 3, ReadBatchSize: 100, Prefetch: 50, PrefetchBytes: 32 * mi, MaxMessageBytes: source.DefaultMaxMessageBytes,
		Fallback: source.FallbackDrop, AckRetry: 30 * time.Second, PendingRefresh: 5 * time.Second, ReleaseWait: 2 * time.Second}
	if got := sourceOptions(&c, 32*mi); got != want {
		t.Errorf("sourceOptions =\n%+v\nwant\n%+v", got, want)
	}
	// The defaults map onto the adapter's own defaults (the fallback's follows the driver: unset here).
	var d config.Common
	if err := config.Load(&d, nil); err != nil {
		t.Fatal(err)
	}
	want = source.Options{ReadBatchSize: 500, PrefetchBytes: source.DefaultPrefetchBytes, MaxMessageBytes: source.DefaultMaxMessageBytes,
		AckRetry: 30 * time.Second, PendingRefresh: 5 * time.Second, ReleaseWait: 2 * time.Second}
	if got := sourceOptions(&d, source.DefaultPrefetchBytes); got != want {
		t.Errorf("sourceOptions of the defaults =\n%+v\nwant\n%+v", got, want)
	}
}
