package pubsubsource

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	monitoring "cloud.google.com/go/monitoring/apiv3/v2"
	"cloud.google.com/go/monitoring/apiv3/v2/monitoringpb"
	"github.com/googleapis/gax-go/v2"
	"google.golang.org/api/iterator"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/numaflow-connectors/sources/common/source"
)

// backlogReader reports the subscription's backlog: every message not yet acknowledged, across all
// replicas, including those received and not yet acked. -1 means unknown.
type backlogReader interface {
	Backlog(ctx context.Context) (int64, error)
}

// metricAPI is the part of the Cloud Monitoring client the monitoring reader uses.
type metricAPI interface {
	ListTimeSeries(ctx context.Context, req *monitoringpb.ListTimeSeriesRequest, opts ...gax.CallOption) *monitoring.TimeSeriesIterator
}

var _ metricAPI = (*monitoring.MetricClient)(nil)

// undeliveredMetric is Pub/Sub's backlog metric: unacknowledged messages (undelivered or leased) of a
// subscription, sampled every 60 s.
const undeliveredMetric = "pubsub.googleapis.com/subscription/num_undelivered_messages"

// backlogWindow is how far back the reader looks for the newest point (the metric is sampled every
// 60 s and shows up after a delay of a minute or two).
const backlogWindow = 10 * time.Minute

// backlogStale is the age past which the newest point no longer tells the backlog: Monitoring has
// stopped getting data, and an old figure would keep an autoscaler scaling on a backlog long gone.
const backlogStale = 5 * time.Minute

// backlogEvery is how long a reading (or a failure) is reused before Monitoring is asked again: the
// metric has one point a minute, so asking more often only costs quota.
const backlogEvery = 30 * time.Second

// backlogDeniedEvery is how often Monitoring is asked again once it denied access, to notice a role
// granted later.
const backlogDeniedEvery = 10 * time.Minute

// monitoringReader reads num_undelivered_messages from Cloud Monitoring (PUBSUB_PENDING=monitoring).
// It asks at most every backlogEvery and answers from the last reading in between. When access is
// denied it logs one warning naming the missing role, reports -1 (unknown) and asks again only every
// backlogDeniedEvery.
type monitoringReader struct {
	api            metricAPI
	project        string // the subscription's project, where its metrics live
	subscriptionID string
	log            *slog.Logger
	now            func() time.Time

	mu     sync.Mutex
	at     time.Time // when Monitoring was last asked; zero: never
	val    int64     // the answer then (-1: unknown)
	err    error     // the error then, returned once
	denied bool      // the last answer was a permission error (already warned about)
}

func newMonitoringReader(api metricAPI, project, subscriptionID string, log *slog.Logger) *monitoringReader {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &monitoringReader{api: api, project: project, subscriptionID: subscriptionID, log: log, now: time.Now, val: -1}
}

// Backlog returns the newest num_undelivered_messages point of the last ten minutes, or -1 when
// Monitoring has none, only a stale one, or denies access. Monitoring is asked at most every
// backlogEvery (backlogDeniedEvery after a denial); in between the last answer is reused. An error
// other than a denial is returned once, then -1 until the next question.
func (r *monitoringReader) Backlog(ctx context.Context) (int64, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.now()
	every := backlogEvery
	if r.denied {
		every = backlogDeniedEvery
	}
	if !r.at.IsZero() && now.Sub(r.at) < every {
		err := r.err
		r.err = nil
		return r.val, err
	}
	v, newest, err := r.query(ctx, now)
	r.at, r.val, r.err = now, v, nil
	switch {
	case err != nil && errorCode(err) == source.PermissionDenied:
		if !r.denied {
			r.log.Warn("reading the backlog from Cloud Monitoring is denied, so pending is -1 (no autoscaling on backlog): grant roles/monitoring.viewer on the project to the source's service account, or set PUBSUB_PENDING=off",
				"project", r.project, "subscription_id", r.subscriptionID, "missing_role", "roles/monitoring.viewer", "error", err)
		}
		r.denied, r.val = true, -1
		return -1, nil
	case err != nil:
		r.val = -1
		return -1, err
	}
	if r.denied {
		r.log.Info("reading the backlog from Cloud Monitoring is allowed again", "subscription_id", r.subscriptionID)
		r.denied = false
	}
	if v >= 0 && now.Sub(newest) > backlogStale {
		r.log.Debug("newest backlog point is stale; backlog unknown", "subscription_id", r.subscriptionID,
			"age", now.Sub(newest).Round(time.Second).String(), "value", v)
		r.val = -1
	}
	return r.val, nil
}

// query asks Monitoring for the points of the last backlogWindow and returns the newest one's value
// and end time (-1 when there is none).
func (r *monitoringReader) query(ctx context.Context, now time.Time) (int64, time.Time, error) {
	req := &monitoringpb.ListTimeSeriesRequest{
		Name:   "projects/" + r.project,
		Filter: r.filter(),
		Interval: &monitoringpb.TimeInterval{
			StartTime: timestamppb.New(now.Add(-backlogWindow)),
			EndTime:   timestamppb.New(now),
		},
		View: monitoringpb.ListTimeSeriesRequest_FULL,
	}
	it := r.api.ListTimeSeries(ctx, req, noRetry)
	var (
		newest time.Time
		value  int64 = -1
	)
	for {
		ts, err := it.Next()
		if errors.Is(err, iterator.Done) {
			break
		}
		if err != nil {
			return -1, time.Time{}, fmt.Errorf("reading %s of subscription %s from Cloud Monitoring: %w", undeliveredMetric, r.subscriptionID, err)
		}
		if id := ts.GetResource().GetLabels()["project_id"]; id != "" && !projectNumber(r.project) && id != r.project {
			continue // another project of a metrics scope (the filter should have left it out)
		}
		for _, p := range ts.GetPoints() {
			end := p.GetInterval().GetEndTime().AsTime()
			if value < 0 || end.After(newest) {
				newest, value = end, p.GetValue().GetInt64Value()
			}
		}
	}
	return value, newest, nil
}

// filter selects the subscription's num_undelivered_messages series. A query sent to a project that
// is a metrics scope returns the series of every project it monitors, and another project may have a
// subscription of the same name, whose backlog would be taken for this one's: the filter names the
// project too. The series carry the project's ID, so a subscription named with the project's number
// is filtered by name only (the README says so).
func (r *monitoringReader) filter() string {
	f := fmt.Sprintf(`metric.type = %q AND resource.type = "pubsub_subscription" AND resource.labels.subscription_id = %q`,
		undeliveredMetric, r.subscriptionID)
	if !projectNumber(r.project) {
		f += fmt.Sprintf(` AND resource.labels.project_id = %q`, r.project)
	}
	return f
}

// projectNumber reports whether project is a project's number rather than its ID (IDs start with a
// letter).
func projectNumber(project string) bool {
	return project != "" && strings.Trim(project, "0123456789") == ""
}
