package observability_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/promql/promqltest"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/util/teststorage"
)

// grafanaAll replaces the dashboard's variables with what "All" selects.
var grafanaAll = strings.NewReplacer("$connector", ".*", "$pipeline", ".*", "$vertex", ".*")

// scrapedStorage holds the scraped samples twice, a minute apart (the same values), so range functions
// over them have two points; queries run at the returned time.
func scrapedStorage(t *testing.T) (storage.Storage, time.Time) {
	t.Helper()
	st := teststorage.New(t)
	at := time.Unix(3600, 0)
	app := st.Appender(context.Background())
	for _, s := range scraped(t) {
		ls := labels.NewBuilder(labels.FromMap(s.labels)).Set("__name__", s.name).Labels()
		for _, ts := range []time.Time{at.Add(-time.Minute), at} {
			if _, err := app.Append(0, ls, ts.UnixMilli(), s.value); err != nil {
				t.Fatalf("appending %v: %v", ls, err)
			}
		}
	}
	if err := app.Commit(); err != nil {
		t.Fatal(err)
	}
	return st, at
}

// emptyQueries runs every query of the dashboard (variables set to All) over st at ts and reports each
// that fails or returns nothing: a query can name only exported series and labels and still select
// nothing, e.g. through a join whose sides never match.
func emptyQueries(t *testing.T, d *dashboard, st storage.Queryable, ts time.Time) []string {
	t.Helper()
	engine := promqltest.NewTestEngine(t, false, 0, 10_000_000)
	var problems []string
	run := func(where, expr string) promql.Vector {
		q, err := engine.NewInstantQuery(context.Background(), st, nil, expr, ts)
		if err != nil {
			problems = append(problems, fmt.Sprintf("%s: %q: %v", where, expr, err))
			return nil
		}
		defer q.Close()
		res := q.Exec(context.Background())
		v, ok := res.Value.(promql.Vector)
		switch {
		case res.Err != nil || !ok:
			problems = append(problems, fmt.Sprintf("%s: %q: %v (%T)", where, expr, res.Err, res.Value))
		case len(v) == 0:
			problems = append(problems, fmt.Sprintf("%s: %q returns nothing over a real connector's series", where, expr))
		}
		return v
	}
	var walk func(ps []panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			walk(p.Panels)
			for _, tg := range p.Targets {
				run(fmt.Sprintf("panel %q", p.Title), grafanaAll.Replace(grafanaIntervals.Replace(tg.Expr)))
			}
		}
	}
	walk(d.Panels)
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		// label_values(<selector>, <label>): the selector must find series that carry the label.
		q, _ := variableQuery(v.Query) // checkDashboard reports a malformed one
		if m := labelValues.FindStringSubmatch(q); m != nil {
			for _, smp := range run("variable "+v.Name, "count by ("+m[2]+") ("+grafanaAll.Replace(m[1])+")") {
				if smp.Metric.Get(m[2]) == "" {
					problems = append(problems, fmt.Sprintf("variable %s: %s finds series without the label %s", v.Name, m[1], m[2]))
				}
			}
		}
	}
	return problems
}

// TestDashboardQueriesReturnData evaluates every dashboard query over the series the connectors
// really exposed (labelled as the PodMonitor labels them): each returns something.
func TestDashboardQueriesReturnData(t *testing.T) {
	st, at := scrapedStorage(t)
	for _, p := range emptyQueries(t, loadDashboard(t), st, at) {
		t.Error(p)
	}
}

// TestQueryChecksCatchMistakes: a join whose sides never match returns nothing and is reported.
func TestQueryChecksCatchMistakes(t *testing.T) {
	st, at := scrapedStorage(t)
	d := &dashboard{Panels: []panel{{Title: "bad join", Type: "timeseries", Targets: []struct {
		Expr string `json:"expr"`
	}{{`sum by (pipeline) (rate(numaflow_source_read_total{vertex=~"$vertex"}[5m])) / sum by (vertex) (rate(numaflow_source_acked_total{pipeline=~"$pipeline"}[5m]))`}}}}}
	problems := emptyQueries(t, d, st, at)
	if len(problems) != 1 || !strings.Contains(problems[0], "returns nothing") {
		t.Errorf("a join whose sides never match: reported %v", problems)
	}
}
