package pubsubsource

import (
	"context"
	"errors"
	"fmt"
	"time"

	monitoring "cloud.google.com/go/monitoring/apiv3/v2"
	"cloud.google.com/go/monitoring/apiv3/v2/monitoringpb"
	"github.com/googleapis/gax-go/v2"
	"google.golang.org/api/iterator"
	"google.golang.org/protobuf/types/known/timestamppb"
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

// monitoringReader reads num_undelivered_messages from Cloud Monitoring (PUBSUB_PENDING=monitoring).
type monitoringReader struct {
	api            metricAPI
	project        string // the subscription's project, where its metrics live
	subscriptionID string
	now            func() time.Time
}

func newMonitoringReader(api metricAPI, project, subscriptionID string) *monitoringReader {
	return &monitoringReader{api: api, project: project, subscriptionID: subscriptionID, now: time.Now}
}

// Backlog returns the newest num_undelivered_messages point of the last ten minutes, or -1 when
// Monitoring has none (a subscription with no recent data).
func (r *monitoringReader) Backlog(ctx context.Context) (int64, error) {
	now := r.now()
	req := &monitoringpb.ListTimeSeriesRequest{
		Name: "projects/" + r.project,
		Filter: fmt.Sprintf(`metric.type = %q AND resource.type = "pubsub_subscription" AND resource.labels.subscription_id = %q`,
			undeliveredMetric, r.subscriptionID),
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
			return -1, fmt.Errorf("reading %s of subscription %s from Cloud Monitoring: %w", undeliveredMetric, r.subscriptionID, err)
		}
		for _, p := range ts.GetPoints() {
			end := p.GetInterval().GetEndTime().AsTime()
			if value < 0 || end.After(newest) {
				newest, value = end, p.GetValue().GetInt64Value()
			}
		}
	}
	return value, nil
}
