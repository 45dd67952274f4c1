package server

import (
	"log/slog"
	"os"
	"runtime"
	"runtime/debug"
	"strings"
	"testing"
	"time"
)

func TestGCHeadroomDefault(t *testing.T) {
	checkDerived(t, "gcHeadroom", gcHeadroom, []derivedCase{
		{"set", 8 * mi, 256 * mi, true, 8 * mi},
		{"set above the derived value", 100 * mi, 64 * mi, true, 100 * mi},
		{"an eighth of the limit", 0, 64 * mi, true, 8 * mi},
		{"at most 16 MiB", 0, 256 * mi, true, 16 * mi},
		{"no limit", 0, 0, false, 16 * mi},
	})
}

func TestGCPercent(t *testing.T) {
	tests := []struct {
		live, headroom uint64
		want           int
	}{
		{live: 8 * mi, headroom: 32 * mi, want: 400},
		{live: 32 * mi, headroom: 32 * mi, want: 100},
		{live: 200 * mi, headroom: 32 * mi, want: 100}, // never below Go's default
		{live: 1 << 10, headroom: 32 * mi, want: 2000}, // nor above the cap on an empty heap
		{live: 0, headroom: 32 * mi, want: 2000},
	}
	for _, tc := range tests {
		if got := gcPercent(tc.live, tc.headroom); got != tc.want {
			t.Errorf("gcPercent(%d, %d) = %d, want %d", tc.live, tc.headroom, got, tc.want)
		}
	}
}

// currentGCPercent reads GOGC without changing it.
func currentGCPercent() int {
	p := debug.SetGCPercent(100)
	debug.SetGCPercent(p)
	return p
}

// After each collection the tuner sets GOGC from the live heap it left; stopping it puts the old GOGC
// back and tunes no more. GOGC in the environment leaves the runtime alone.
func TestGCTuner(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	before := currentGCPercent()
	defer debug.SetGCPercent(before)

	if stop := applyGCHeadroom([]string{"GOGC=150"}, 0, 0, false, log); currentGCPercent() != before {
		t.Errorf("GOGC set: the runtime's GOGC changed to %d", currentGCPercent())
	} else {
		stop()
	}

	stop := applyGCHeadroom(nil, 64*mi, 0, false, log)
	if got := currentGCPercent(); got != 1600 { // 64 MiB over the runtime's 4 MiB smallest heap goal
		t.Errorf("GOGC before the first collection = %d, want 1600", got)
	}
	live := make([][]byte, 16) // 16 MiB kept alive
	for i := range live {
		live[i] = make([]byte, mi)
	}
	waitGCPercent(t, func(p int) bool { return p >= 250 && p <= 400 }, "about 64 MiB over 16 MiB live") // plus the test binary's own heap
	runtime.KeepAlive(live)
	live = nil
	waitGCPercent(t, func(p int) bool { return p >= 1000 }, "the cap or near it with little live")
	stop()
	if got := currentGCPercent(); got != before {
		t.Errorf("after stop GOGC = %d, want %d as before", got, before)
	}
	runtime.GC()
	time.Sleep(50 * time.Millisecond) // a cleanup that would still tune runs by now
	if got := currentGCPercent(); got != before {
		t.Errorf("a collection after stop set GOGC to %d", got)
	}
}

func waitGCPercent(t *testing.T, ok func(int) bool, want string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		runtime.GC()
		time.Sleep(10 * time.Millisecond) // cleanups run on their own goroutine after the collection
		p := currentGCPercent()
		if ok(p) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("GOGC = %d after collections, want %s", p, want)
		}
	}
}

// Run logs the collector's policy once: tuned with the headroom, or GOGC's.
func TestRunGCHeadroom(t *testing.T) {
	for _, tc := range []struct {
		env  []string
		want string
	}{
		{env: nil, want: `"gogc":"tuned","gc_headroom_bytes":16777216`},
		{env: []string{"GC_HEADROOM=8Mi"}, want: `"gogc":"tuned","gc_headroom_bytes":8388608`},
		{env: []string{"GOGC=200"}, want: `"gogc":"200","gc_headroom_bytes":0`},
	} {
		environ, _, _ := baseEnv(t)
		h := newHarness(&fakeDriver{}, nil)
		r := startIn(t, h.app, append(environ, tc.env...), os.DirFS("testdata/cgroup/v2-max"))
		r.waitLog(t, "serving")
		if n := strings.Count(r.stderr.String(), tc.want); n != 1 {
			t.Errorf("%v: %d lines with %s:\n%s", tc.env, n, tc.want, r.stderr.String())
		}
		if code := r.stop(t); code != 0 {
			t.Errorf("exit %d, want 0", code)
		}
	}
}
