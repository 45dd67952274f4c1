package server

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/numaflow-connectors/sources/common/source"
)

// preflightDriver reports fixed pre-flight checks.
type preflightDriver struct {
	*fakeDriver
	checks []source.Check
}

func (d *preflightDriver) Preflight(context.Context) []source.Check { return d.checks }

func TestRunCheck(t *testing.T) {
	good, _, _ := baseEnv(t)
	denied := errors.New("access denied")
	for _, tc := range []struct {
		name    string
		driver  source.Driver
		environ []string
		code    int
		out     []string
		opened  int32
	}{
		{"all pass", &preflightDriver{&fakeDriver{}, []source.Check{{Name: "queue q1 reachable"}, {Name: "receive permission"}}},
			good, 0, []string{"queue q1 reachable  pass", "receive permission  pass", "all 2 checks passed"}, 1},
		{"one fails, one skipped", &preflightDriver{&fakeDriver{}, []source.Check{
			{Name: "queue q1 reachable"},
			{Name: "receive permission", Err: denied, Fix: "grant receive on q1"},
			{Name: "dead-letter permission", Skipped: "needs the receive check"},
		}}, good, 1, []string{"receive permission", "FAIL", "unknown: access denied. Fix: grant receive on q1", "skipped", "needs the receive check", "some checks did not pass"}, 1},
		{"start-up check only", &checkingDriver{&fakeDriver{}, errUnreachable}, good, 1, []string{"broker reachable", "FAIL", "unavailable"}, 1},
		{"no checks at all", &fakeDriver{}, good, 1, []string{"this connector has none"}, 1},
		{"bad configuration", &fakeDriver{}, append(good, "LOG_LEVEL=loud"), 2, []string{"config: LOG_LEVEL"}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(tc.driver, nil)
			var out, errOut bytes.Buffer
			code := Run(t.Context(), h.app, []string{"--check"}, tc.environ, &out, &errOut)
			if code != tc.code {
				t.Errorf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", code, tc.code, out.String(), errOut.String())
			}
			for _, s := range tc.out {
				if !strings.Contains(out.String()+errOut.String(), s) {
					t.Errorf("output lacks %q:\n%s%s", s, out.String(), errOut.String())
				}
			}
			if h.opened.Load() != tc.opened {
				t.Errorf("Open called %d times, want %d", h.opened.Load(), tc.opened)
			}
			if strings.Contains(errOut.String(), "serving metrics") {
				t.Error("--check started the metrics server")
			}
		})
	}
}

// A connector whose Open joins the broker as a replica would runs its own pre-flight instead: Open is
// never called.
func TestRunCheckWithAppPreflight(t *testing.T) {
	good, _, _ := baseEnv(t)
	h := newHarness(&fakeDriver{}, nil)
	var gotQueue string
	h.app.Preflight = func(_ context.Context, cfg *demoConfig, env *Env) []source.Check {
		gotQueue = cfg.Queue
		return []source.Check{{Name: "throwaway connection"}, {Name: "subscribe", Err: errors.New("not authorized"), Fix: "allow it"}}
	}
	var out, errOut bytes.Buffer
	if code := Run(t.Context(), h.app, []string{"--check"}, good, &out, &errOut); code != 1 {
		t.Errorf("exit %d, want 1\n%s", code, out.String())
	}
	if h.opened.Load() != 0 {
		t.Error("--check opened the driver although the app has its own pre-flight")
	}
	if gotQueue != "q1" || !strings.Contains(out.String(), "FAIL    not authorized. Fix: allow it") {
		t.Errorf("queue %q, output:\n%s", gotQueue, out.String())
	}
}
