package pubsubsource

import (
	"context"
	"strings"
	"testing"
	"time"

	"cloud.google.com/go/monitoring/apiv3/v2/monitoringpb"
	"google.golang.org/genproto/googleapis/api/monitoredres"
)

// A project that is a Cloud Monitoring metrics scope answers ListTimeSeries with the series of every
// project it monitors. Two projects (prod, staging) each have a subscription "orders"; prod's source
// must report prod's backlog, not staging's (it took the newest point of either: 90,000 for 5).
func TestMonitoringScopeReadsOwnProject(t *testing.T) {
	now := time.Now()
	series := func(project string, v int64, end time.Time) *monitoringpb.TimeSeries {
		return &monitoringpb.TimeSeries{
			Resource: &monitoredres.MonitoredResource{Type: "pubsub_subscription",
				Labels: map[string]string{"project_id": project, "subscription_id": "orders"}},
			Points: []*monitoringpb.Point{point(end, v)},
		}
	}
	f := &fakeMetrics{}
	all := []*monitoringpb.TimeSeries{series("prod-project", 5, now.Add(-70*time.Second)), series("staging-project", 90000, now.Add(-69*time.Second))}
	// A scope's answer: filtered by what the filter names; a filter without project_id gets both.
	f.series = all
	r := newMonitoringReader(serveMetrics(t, f), "prod-project", "orders", nil)
	got, err := r.Backlog(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	filter := f.req.GetFilter()
	f.mu.Unlock()
	if !strings.Contains(filter, "project_id") {
		t.Errorf("the filter does not name the project: a metrics scope returns both projects' series")
	}
	if got != 5 {
		t.Errorf("Backlog = %d, want prod's 5 (staging's series was taken)", got)
	}
}
