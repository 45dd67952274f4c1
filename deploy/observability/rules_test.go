package observability_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/promqltest"
	"github.com/prometheus/prometheus/rules"
	yamlv2 "go.yaml.in/yaml/v2"
	"sigs.k8s.io/yaml"
)

func yamlv2Unmarshal(raw []byte, v any) error { return yamlv2.UnmarshalStrict(raw, v) }

// ruleTests is promtool's rule unit test file format, the part these tests use.
type ruleTests struct {
	EvaluationInterval string     `json:"evaluation_interval"`
	Tests              []ruleTest `json:"tests"`
}

type ruleTest struct {
	Name        string `json:"name"`
	Interval    string `json:"interval"`
	InputSeries []struct {
		Series string `json:"series"`
		Values string `json:"values"`
	} `json:"input_series"`
	AlertRuleTest []struct {
		EvalTime  string `json:"eval_time"`
		Alertname string `json:"alertname"`
		ExpAlerts []struct {
			ExpLabels      map[string]string `json:"exp_labels"`
			ExpAnnotations map[string]string `json:"exp_annotations"`
		} `json:"exp_alerts"`
	} `json:"alert_rule_test"`
}

func duration(s string) (time.Duration, error) {
	d, err := model.ParseDuration(s)
	return time.Duration(d), err
}

// runRuleTests runs every test case of tests over the alerting rules of groups the way promtool test
// rules does: the input series loaded at the case's interval, every rule evaluated each
// evaluation_interval from 0 to the last eval_time (so `for` durations count as in a real Prometheus),
// and at each eval_time the firing alerts of alertname compared with exp_alerts (labels and
// annotations, exactly). It also reports every alert without a case that fires it or without a case
// that keeps it quiet.
func runRuleTests(t *testing.T, groups []rulefmt.RuleGroup, tests ruleTests) []string {
	t.Helper()
	var problems []string
	evalEvery, err := duration(tests.EvaluationInterval)
	if err != nil || evalEvery <= 0 {
		return []string{fmt.Sprintf("evaluation_interval %q: %v", tests.EvaluationInterval, err)}
	}
	var alerts []rulefmt.Rule
	for _, g := range groups {
		for _, r := range g.Rules {
			if r.Alert != "" {
				alerts = append(alerts, r)
			}
		}
	}
	fires, quiet := map[string]bool{}, map[string]bool{}
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	for _, tc := range tests.Tests {
		load := "load " + tc.Interval + "\n"
		for _, s := range tc.InputSeries {
			load += "  " + s.Series + " " + s.Values + "\n"
		}
		storage := promqltest.LoadedStorage(t, load)
		engine := promqltest.NewTestEngine(t, false, 0, 10_000_000)
		query := rules.EngineQueryFunc(engine, storage)
		var built []*rules.AlertingRule
		for _, r := range alerts {
			expr, err := promParser.ParseExpr(r.Expr)
			if err != nil {
				problems = append(problems, fmt.Sprintf("%s: alert %s: %v", tc.Name, r.Alert, err))
				continue
			}
			built = append(built, rules.NewAlertingRule(r.Alert, expr, time.Duration(r.For), time.Duration(r.KeepFiringFor),
				labels.FromMap(r.Labels), labels.FromMap(r.Annotations), labels.EmptyLabels(), "", false, logger))
		}
		checks := map[time.Duration][]int{}
		var last time.Duration
		for i, a := range tc.AlertRuleTest {
			at, err := duration(a.EvalTime)
			if err != nil || at%evalEvery != 0 {
				problems = append(problems, fmt.Sprintf("%s: eval_time %q is not a multiple of evaluation_interval %s", tc.Name, a.EvalTime, evalEvery))
				continue
			}
			if !slices.ContainsFunc(alerts, func(r rulefmt.Rule) bool { return r.Alert == a.Alertname }) {
				problems = append(problems, fmt.Sprintf("%s: no alert %s in the rules", tc.Name, a.Alertname))
			}
			if len(a.ExpAlerts) > 0 {
				fires[a.Alertname] = true
			} else {
				quiet[a.Alertname] = true
			}
			checks[at] = append(checks[at], i)
			last = max(last, at)
		}
		for ts := time.Duration(0); ts <= last; ts += evalEvery {
			now := time.Unix(0, 0).UTC().Add(ts)
			for _, r := range built {
				if _, err := r.Eval(context.Background(), 0, now, query, nil, 0); err != nil {
					problems = append(problems, fmt.Sprintf("%s: alert %s at %s: %v", tc.Name, r.Name(), model.Duration(ts), err))
				}
			}
			for _, i := range checks[ts] {
				a := tc.AlertRuleTest[i]
				// As promtool: labels and annotations of every firing alert, exactly.
				var got []string
				for _, r := range built {
					if r.Name() != a.Alertname {
						continue
					}
					for _, al := range r.ActiveAlerts() {
						if al.State == rules.StateFiring {
							got = append(got, al.Labels.String()+" "+al.Annotations.String())
						}
					}
				}
				var want []string
				for _, e := range a.ExpAlerts {
					lm := map[string]string{labels.AlertName: a.Alertname}
					for k, v := range e.ExpLabels {
						lm[k] = v
					}
					want = append(want, labels.FromMap(lm).String()+" "+labels.FromMap(e.ExpAnnotations).String())
				}
				slices.Sort(got)
				slices.Sort(want)
				if !slices.Equal(got, want) {
					problems = append(problems, fmt.Sprintf("%s: %s at %s: firing %v, want %v", tc.Name, a.Alertname, a.EvalTime, got, want))
				}
			}
		}
	}
	for _, r := range alerts {
		if !fires[r.Alert] {
			problems = append(problems, fmt.Sprintf("alert %s has no test case that fires it", r.Alert))
		}
		if !quiet[r.Alert] {
			problems = append(problems, fmt.Sprintf("alert %s has no test case that keeps it quiet", r.Alert))
		}
	}
	return problems
}

func loadRuleTests(t *testing.T) ruleTests {
	t.Helper()
	var tests ruleTests
	if err := yaml.UnmarshalStrict(readFile(t, ruleTestsFile), &tests); err != nil {
		t.Fatalf("%s: %v", ruleTestsFile, err)
	}
	return tests
}

// TestAlerts runs prometheusrule_test.yaml against prometheusrule.yaml: every alert fires on input that
// should fire it and stays quiet on input that should not.
func TestAlerts(t *testing.T) {
	groups := loadRules(t, readFile(t, rulesFile))
	tests := loadRuleTests(t)
	for _, p := range runRuleTests(t, groups, tests) {
		t.Error(p)
	}
	t.Logf("%d test cases over %d rule groups", len(tests.Tests), len(groups))
}

// TestRuleTestsCatchMistakes breaks the rules in ways the tests must notice: an alert that lost its
// `for` (fires on a short blip), a stall alert that ignores the backlog, and an alert nobody tests.
func TestRuleTestsCatchMistakes(t *testing.T) {
	raw := string(readFile(t, rulesFile))
	for _, c := range []struct {
		what, old, new, want string
	}{
		{"no for", "expr: numaflow_source_ready == 0\n          for: 5m\n", "expr: numaflow_source_ready == 0\n",
			"not ready for 3 minutes, then ready again, stays quiet: NumaflowSourceNotReady at 3m: firing"},
		{"stall without backlog", "max by (namespace, connector, pipeline, vertex) (numaflow_source_pending) > 0", "max by (namespace, connector, pipeline, vertex) (numaflow_source_pending) >= 0",
			"no backlog and no reads stays quiet: NumaflowSourceStalled at 15m: firing"},
		{"untested alert", "      rules:\n", "      rules:\n        - alert: Untested\n          expr: numaflow_source_ready == 2\n",
			"alert Untested has no test case that fires it"},
	} {
		if !strings.Contains(raw, c.old) {
			t.Fatalf("%s: %s no longer contains %q", c.what, rulesFile, c.old)
		}
		groups := loadRules(t, []byte(strings.Replace(raw, c.old, c.new, 1)))
		all := strings.Join(runRuleTests(t, groups, loadRuleTests(t)), "\n")
		if !strings.Contains(all, c.want) {
			t.Errorf("%s: not reported: %s\nreported:\n%s", c.what, c.want, all)
		}
	}
}
