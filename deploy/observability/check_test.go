package observability_test

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/relabel"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"
	k8sjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

const (
	dashboardFile  = "dashboard.json"
	rulesFile      = "prometheusrule.yaml"
	ruleTestsFile  = "prometheusrule_test.yaml"
	podMonitorFile = "../components/podmonitor/podmonitor.yaml"
	operationsDoc  = "../../docs/operations.md"
)

var promParser = parser.NewParser(parser.Options{})

// operatorLabels are the target labels the Prometheus Operator gives every series a PodMonitor scrapes.
var operatorLabels = []string{"namespace", "pod", "container", "job", "instance", "endpoint"}

// grafanaIntervals replaces Grafana's interval variables with durations, so an expression parses.
var grafanaIntervals = strings.NewReplacer("$__rate_interval", "5m", "$__interval", "1m", "$__range", "1h")

// strictYAML decodes YAML into v, failing on unknown, duplicate and mis-cased fields.
func strictYAML(raw []byte, v any) error {
	js, err := yaml.YAMLToJSON(raw)
	if err != nil {
		return err
	}
	strictErrs, err := k8sjson.UnmarshalStrict(js, v, k8sjson.DisallowDuplicateFields, k8sjson.DisallowUnknownFields)
	if err != nil {
		return err
	}
	if len(strictErrs) > 0 {
		return fmt.Errorf("%v", strictErrs)
	}
	return nil
}

// loadPodMonitor strictly decodes the PodMonitor component against the operator's types.
func loadPodMonitor(t *testing.T) *monitoringv1.PodMonitor {
	t.Helper()
	raw, err := os.ReadFile(podMonitorFile)
	if err != nil {
		t.Fatal(err)
	}
	pm := &monitoringv1.PodMonitor{}
	if err := strictYAML(raw, pm); err != nil {
		t.Fatalf("%s does not match the Prometheus Operator's PodMonitor (v0.95.2): %v", podMonitorFile, err)
	}
	return pm
}

// targetLabels are the labels a scraped series carries besides the binary's own: the operator's and
// those the PodMonitor's relabelings set.
func targetLabels(t *testing.T) map[string]bool {
	t.Helper()
	out := map[string]bool{}
	for _, l := range operatorLabels {
		out[l] = true
	}
	for _, ep := range loadPodMonitor(t).Spec.PodMetricsEndpoints {
		for _, rc := range ep.RelabelConfigs {
			if rc.TargetLabel != "" && !strings.HasPrefix(rc.TargetLabel, "__") {
				out[rc.TargetLabel] = true
			}
		}
	}
	return out
}

// checkExpr parses a PromQL expression and reports every metric it selects that the connectors do not
// export, every label it matches that the selected metric does not carry, and every label it groups or
// matches on that none of its metrics carries.
func checkExpr(where, expr string, exp exportedSeries, target map[string]bool) []string {
	e, err := promParser.ParseExpr(expr)
	if err != nil {
		return []string{fmt.Sprintf("%s: %q does not parse: %v", where, expr, err)}
	}
	var problems []string
	used := map[string]bool{} // labels of every metric the expression selects
	var grouping []string
	parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
		switch n := n.(type) {
		case *parser.VectorSelector:
			name := n.Name
			for _, m := range n.LabelMatchers {
				if m.Name == model.MetricNameLabel && m.Type == labels.MatchEqual {
					name = m.Value
				}
			}
			ls, ok := exp[name]
			if !ok {
				problems = append(problems, fmt.Sprintf("%s: %s is not a series the connectors export", where, name))
				return nil
			}
			for l := range ls {
				used[l] = true
			}
			for _, m := range n.LabelMatchers {
				if m.Name != model.MetricNameLabel && !ls[m.Name] && !target[m.Name] {
					problems = append(problems, fmt.Sprintf("%s: %s has no label %s", where, name, m.Name))
				}
			}
		case *parser.AggregateExpr:
			grouping = append(grouping, n.Grouping...)
		case *parser.BinaryExpr:
			if n.VectorMatching != nil {
				grouping = append(grouping, n.VectorMatching.MatchingLabels...)
				grouping = append(grouping, n.VectorMatching.Include...)
			}
		}
		return nil
	})
	for _, l := range grouping {
		if !used[l] && !target[l] {
			problems = append(problems, fmt.Sprintf("%s: no series of %q has the label %s it groups or matches on", where, expr, l))
		}
	}
	return problems
}

// dashboard is the part of a Grafana dashboard the checks read.
type dashboard struct {
	Title      string  `json:"title"`
	Panels     []panel `json:"panels"`
	Templating struct {
		List []struct {
			Name  string          `json:"name"`
			Type  string          `json:"type"`
			Query json.RawMessage `json:"query"`
		} `json:"list"`
	} `json:"templating"`
}

type panel struct {
	ID      int    `json:"id"`
	Title   string `json:"title"`
	Type    string `json:"type"`
	GridPos struct {
		X int `json:"x"`
		Y int `json:"y"`
		W int `json:"w"`
		H int `json:"h"`
	} `json:"gridPos"`
	Panels  []panel `json:"panels"`
	Targets []struct {
		Expr string `json:"expr"`
	} `json:"targets"`
}

// dashboardVars are the template variables every dashboard query must filter by.
var dashboardVars = []string{"connector", "pipeline", "vertex"}

var labelValues = regexp.MustCompile(`^\s*label_values\((.+),\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\)\s*$`)

// variableQuery is the query of a template variable: a string, or an object with a query.
func variableQuery(raw json.RawMessage) (string, error) {
	var q string
	if err := json.Unmarshal(raw, &q); err == nil {
		return q, nil
	}
	var obj struct {
		Query string `json:"query"`
	}
	if err := json.Unmarshal(raw, &obj); err != nil {
		return "", fmt.Errorf("query is neither a string nor an object with a query: %s", raw)
	}
	return obj.Query, nil
}

// checkDashboard checks every query of the dashboard: panels and template variables.
func checkDashboard(d *dashboard, exp exportedSeries, target map[string]bool) []string {
	var problems []string
	vars := map[string]bool{}
	for _, v := range d.Templating.List {
		vars[v.Name] = true
		if v.Type != "query" {
			continue
		}
		q, err := variableQuery(v.Query)
		if err != nil {
			problems = append(problems, fmt.Sprintf("variable %s: %v", v.Name, err))
			continue
		}
		m := labelValues.FindStringSubmatch(q)
		if m == nil {
			problems = append(problems, fmt.Sprintf("variable %s: %q is not label_values(<selector>, <label>)", v.Name, q))
			continue
		}
		// The label it lists must be one the series has: check it as a grouping label.
		problems = append(problems, checkExpr("variable "+v.Name, "count by ("+m[2]+") ("+m[1]+")", exp, target)...)
	}
	for _, name := range dashboardVars {
		if !vars[name] {
			problems = append(problems, fmt.Sprintf("dashboard has no %s variable", name))
		}
	}
	ids := map[int]bool{}
	var walk func(ps []panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			if ids[p.ID] {
				problems = append(problems, fmt.Sprintf("panel %q: id %d is not unique", p.Title, p.ID))
			}
			ids[p.ID] = true
			if g := p.GridPos; g.W <= 0 || g.H <= 0 || g.X < 0 || g.X+g.W > 24 {
				problems = append(problems, fmt.Sprintf("panel %q: gridPos %+v is outside Grafana's 24 columns", p.Title, g))
			}
			if p.Type == "row" {
				walk(p.Panels)
				continue
			}
			if len(p.Targets) == 0 {
				problems = append(problems, fmt.Sprintf("panel %q has no query", p.Title))
			}
			for _, tg := range p.Targets {
				for _, name := range dashboardVars {
					if !strings.Contains(tg.Expr, "$"+name) {
						problems = append(problems, fmt.Sprintf("panel %q: %q does not filter by $%s", p.Title, tg.Expr, name))
					}
				}
				problems = append(problems, checkExpr(fmt.Sprintf("panel %q", p.Title), grafanaIntervals.Replace(tg.Expr), exp, target)...)
			}
		}
	}
	walk(d.Panels)
	return problems
}

func loadDashboard(t *testing.T) *dashboard {
	t.Helper()
	raw, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	d := &dashboard{}
	if err := json.Unmarshal(raw, d); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	return d
}

// dashboardMetrics lists every metric the dashboard selects.
func dashboardMetrics(d *dashboard) map[string]bool {
	out := map[string]bool{}
	var walk func(ps []panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			walk(p.Panels)
			for _, tg := range p.Targets {
				e, err := promParser.ParseExpr(grafanaIntervals.Replace(tg.Expr))
				if err != nil {
					continue
				}
				parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
					if vs, ok := n.(*parser.VectorSelector); ok {
						out[vs.Name] = true
					}
					return nil
				})
			}
		}
	}
	walk(d.Panels)
	return out
}

// TestDashboard checks every query of dashboard.json against what the binaries export, and that it
// charts what operators asked for.
func TestDashboard(t *testing.T) {
	d := loadDashboard(t)
	for _, p := range checkDashboard(d, exported(t), targetLabels(t)) {
		t.Error(p)
	}
	used := dashboardMetrics(d)
	for _, m := range []string{
		"numaflow_source_read_total", "numaflow_source_acked_total", // read and ack rates
		"numaflow_source_read_duration_seconds_bucket", "numaflow_source_ack_duration_seconds_bucket", // latencies
		"numaflow_source_in_flight", "numaflow_source_buffered", "numaflow_source_pending",
		"numaflow_source_redelivered_total", "numaflow_source_duplicate_receives_total",
		"numaflow_source_dead_lettered_total", "numaflow_source_lease_extensions_total",
		"numaflow_source_broker_errors_total", "numaflow_source_ready",
	} {
		if !used[m] {
			t.Errorf("the dashboard does not chart %s", m)
		}
	}
}

// loadRules strictly decodes the PrometheusRule against the operator's types and parses its groups as
// Prometheus would load them (every expression and template checked).
func loadRules(t *testing.T, raw []byte) []rulefmt.RuleGroup {
	t.Helper()
	pr := &monitoringv1.PrometheusRule{}
	if err := strictYAML(raw, pr); err != nil {
		t.Fatalf("%s does not match the Prometheus Operator's PrometheusRule (v0.95.2): %v", rulesFile, err)
	}
	groups, err := yaml.Marshal(map[string]any{"groups": pr.Spec.Groups})
	if err != nil {
		t.Fatal(err)
	}
	rgs, errs := rulefmt.Parse(groups, false, model.UTF8Validation, promParser, slog.New(slog.NewTextHandler(io.Discard, nil)))
	for _, err := range errs {
		t.Errorf("%s: %v", rulesFile, err)
	}
	if rgs == nil {
		t.FailNow()
	}
	return rgs.Groups
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// TestPrometheusRule checks every rule's expression against what the binaries export, and that every
// alert has a severity and a runbook section in docs/operations.md.
func TestPrometheusRule(t *testing.T) {
	exp, target := exported(t), targetLabels(t)
	doc := string(readFile(t, operationsDoc))
	for _, g := range loadRules(t, readFile(t, rulesFile)) {
		for _, r := range g.Rules {
			name := r.Alert + r.Record
			for _, p := range checkExpr("rule "+name, r.Expr, exp, target) {
				t.Error(p)
			}
			if r.Alert == "" {
				continue
			}
			if sev := r.Labels["severity"]; sev != "warning" && sev != "critical" {
				t.Errorf("alert %s: severity %q, want warning or critical", name, sev)
			}
			anchor := strings.ToLower(name)
			if !strings.HasSuffix(r.Annotations["runbook_url"], "/docs/operations.md#"+anchor) {
				t.Errorf("alert %s: runbook_url %q does not point at docs/operations.md#%s", name, r.Annotations["runbook_url"], anchor)
			}
			if !regexp.MustCompile(`(?m)^#+ ` + regexp.QuoteMeta(name) + `\s*$`).MatchString(doc) {
				t.Errorf("alert %s has no section (a heading %q) in docs/operations.md", name, name)
			}
		}
	}
}

// TestPodMonitor runs the PodMonitor's relabelings (Prometheus's own relabel package) over the targets
// Kubernetes discovery makes of a source vertex pod and a MonoVertex pod: only the udsource container
// is kept, scraped on port 9090, with the connector, pipeline and vertex labels.
func TestPodMonitor(t *testing.T) {
	pm := loadPodMonitor(t)
	if len(pm.Spec.PodMetricsEndpoints) != 1 {
		t.Fatalf("%d podMetricsEndpoints, want 1", len(pm.Spec.PodMetricsEndpoints))
	}
	var cfgs []*relabel.Config
	for i, rc := range pm.Spec.PodMetricsEndpoints[0].RelabelConfigs {
		m := map[string]any{"target_label": rc.TargetLabel, "action": strings.ToLower(rc.Action)}
		if rc.Action == "" {
			m["action"] = "replace"
		}
		if len(rc.SourceLabels) > 0 {
			m["source_labels"] = rc.SourceLabels
		}
		if rc.Separator != nil {
			m["separator"] = *rc.Separator
		}
		if rc.Regex != "" {
			m["regex"] = rc.Regex
		}
		if rc.Replacement != nil {
			m["replacement"] = *rc.Replacement
		}
		raw, _ := yaml.Marshal(m)
		c := &relabel.Config{}
		if err := yamlv2Unmarshal(raw, c); err != nil {
			t.Fatalf("relabeling %d: %v", i, err)
		}
		if err := c.Validate(model.UTF8Validation); err != nil {
			t.Fatalf("relabeling %d: %v", i, err)
		}
		cfgs = append(cfgs, c)
	}
	pod := func(container string, podLabels map[string]string) labels.Labels {
		m := map[string]string{
			"__address__":                          "10.0.0.7",
			"__meta_kubernetes_pod_ip":             "10.0.0.7",
			"__meta_kubernetes_pod_container_name": container,
			"__meta_kubernetes_namespace":          "default",
		}
		for k, v := range podLabels {
			m["__meta_kubernetes_pod_label_"+regexp.MustCompile(`[^a-zA-Z0-9_]`).ReplaceAllString(k, "_")] = v
		}
		return labels.FromMap(m)
	}
	vertexPod := map[string]string{"numaflow-connectors/connector": "sqs-source",
		"numaflow.numaproj.io/pipeline-name": "sqs", "numaflow.numaproj.io/vertex-name": "in"}
	monoPod := map[string]string{"numaflow-connectors/connector": "sqs-source", "numaflow.numaproj.io/mono-vertex-name": "sqs-mv"}
	for _, c := range []struct {
		what   string
		target labels.Labels
		want   map[string]string // nil: dropped
	}{
		{"vertex pod, udsource", pod("udsource", vertexPod), map[string]string{"__address__": "10.0.0.7:9090", "connector": "sqs-source", "pipeline": "sqs", "vertex": "in"}},
		{"vertex pod, numa", pod("numa", vertexPod), nil},
		{"monovertex pod, udsource", pod("udsource", monoPod), map[string]string{"__address__": "10.0.0.7:9090", "connector": "sqs-source", "pipeline": "sqs-mv", "vertex": "sqs-mv"}},
		{"monovertex pod, numa", pod("numa", monoPod), nil},
	} {
		lb := labels.NewBuilder(c.target)
		keep := relabel.ProcessBuilder(lb, cfgs...)
		got := lb.Labels()
		switch {
		case c.want == nil && keep:
			t.Errorf("%s: scraped (%v), want dropped", c.what, got)
		case c.want != nil && !keep:
			t.Errorf("%s: dropped, want scraped", c.what)
		case c.want != nil:
			for k, v := range c.want {
				if got.Get(k) != v {
					t.Errorf("%s: %s = %q, want %q (all: %v)", c.what, k, got.Get(k), v, got)
				}
			}
		}
	}
}

// sortedProblems is for messages in failures.
func sortedProblems(p []string) string {
	p = slices.Clone(p)
	sort.Strings(p)
	return strings.Join(p, "\n")
}

// TestExprChecksCatchMistakes feeds the dashboard and rule checks a mistake of each kind.
func TestExprChecksCatchMistakes(t *testing.T) {
	exp, target := exported(t), targetLabels(t)
	d := &dashboard{}
	sel := `{connector=~"$connector", pipeline=~"$pipeline", vertex=~"$vertex"}`
	for _, e := range []string{
		`sum(rate(numaflow_source_reads_total` + sel + `[$__rate_interval]))`,                                         // unknown metric
		`sum(rate(numaflow_source_read_total{connector=~"$connector", pipline=~"$pipeline", vertex=~"$vertex"}[5m]))`, // label typo
		`sum(rate(numaflow_source_read_total` + sel + `[5m])`,                                                         // syntax
		`sum by (stream) (rate(numaflow_source_read_total` + sel + `[5m]))`,                                           // grouping label nobody has
		`sum(rate(numaflow_source_read_total{connector=~"$connector", pipeline=~"$pipeline"}[5m]))`,                   // no $vertex
		`sum by (reason) (numaflow_source_broker_errors_total` + sel + `)`,                                            // label of another metric
	} {
		d.Panels = append(d.Panels, panel{Title: "p", Type: "timeseries", Targets: []struct {
			Expr string `json:"expr"`
		}{{e}}})
	}
	d.Panels = append(d.Panels, panel{Title: "empty", Type: "stat"})
	d.Templating.List = append(d.Templating.List, struct {
		Name  string          `json:"name"`
		Type  string          `json:"type"`
		Query json.RawMessage `json:"query"`
	}{"connector", "query", json.RawMessage(`"label_values(numaflow_source_ready, conector)"`)})
	all := sortedProblems(checkDashboard(d, exp, target))
	for _, want := range []string{
		"numaflow_source_reads_total is not a series the connectors export",
		"numaflow_source_read_total has no label pipline",
		"does not parse",
		"has the label stream it groups or matches on",
		"does not filter by $vertex",
		"has the label reason it groups or matches on",
		`panel "empty" has no query`,
		"is not unique",
		"is outside Grafana's 24 columns",
		"variable connector: no series",
		"dashboard has no pipeline variable",
	} {
		if !strings.Contains(all, want) {
			t.Errorf("not reported: %s", want)
		}
	}
	if t.Failed() {
		t.Logf("reported:\n%s", all)
	}
	if p := checkExpr("rule", `numaflow_source_ready{kind="x"} == 0`, exp, target); len(p) == 0 {
		t.Error("a rule matching a label its metric lacks was not reported")
	}
}
