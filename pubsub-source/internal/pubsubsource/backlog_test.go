package pubsubsource

import (
	"context"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	monitoring "cloud.google.com/go/monitoring/apiv3/v2"
	"cloud.google.com/go/monitoring/apiv3/v2/monitoringpb"
	"google.golang.org/api/option"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/numaflow-connectors/sources/common/source"
)

// fakeMetrics is Cloud Monitoring's MetricService, served over real gRPC on loopback, answering
// ListTimeSeries from a script.
type fakeMetrics struct {
	monitoringpb.UnimplementedMetricServiceServer
	mu     sync.Mutex
	req    *monitoringpb.ListTimeSeriesRequest
	series []*monitoringpb.TimeSeries
	err    error
}

func (f *fakeMetrics) ListTimeSeries(_ context.Context, req *monitoringpb.ListTimeSeriesRequest) (*monitoringpb.ListTimeSeriesResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.req = req
	if f.err != nil {
		return nil, f.err
	}
	return &monitoringpb.ListTimeSeriesResponse{TimeSeries: f.series}, nil
}

func serveMetrics(t *testing.T, f *fakeMetrics) *monitoring.MetricClient {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	monitoringpb.RegisterMetricServiceServer(srv, f)
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(srv.Stop)
	c, err := monitoring.NewMetricClient(context.Background(), option.WithEndpoint(l.Addr().String()),
		option.WithoutAuthentication(), option.WithGRPCDialOption(grpc.WithTransportCredentials(insecure.NewCredentials())))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func point(end time.Time, v int64) *monitoringpb.Point {
	return &monitoringpb.Point{
		Interval: &monitoringpb.TimeInterval{EndTime: timestamppb.New(end)},
		Value:    &monitoringpb.TypedValue{Value: &monitoringpb.TypedValue_Int64Value{Int64Value: v}},
	}
}

func TestMonitoringReader(t *testing.T) {
	now := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	f := &fakeMetrics{series: []*monitoringpb.TimeSeries{
		{Points: []*monitoringpb.Point{point(now.Add(-time.Minute), 120), point(now.Add(-3*time.Minute), 500)}},
		{Points: []*monitoringpb.Point{point(now.Add(-2*time.Minute), 90)}},
	}}
	r := newMonitoringReader(serveMetrics(t, f), "my-project", "orders")
	r.now = func() time.Time { return now }
	n, err := r.Backlog(context.Background())
	if err != nil || n != 120 {
		t.Fatalf("backlog %d, %v; want the newest point, 120", n, err)
	}
	req := f.req
	if req.GetName() != "projects/my-project" {
		t.Errorf("name %q", req.GetName())
	}
	for _, want := range []string{`metric.type = "pubsub.googleapis.com/subscription/num_undelivered_messages"`, `resource.labels.subscription_id = "orders"`} {
		if !strings.Contains(req.GetFilter(), want) {
			t.Errorf("filter %q lacks %s", req.GetFilter(), want)
		}
	}
	if got := req.GetInterval().GetEndTime().AsTime(); !got.Equal(now) {
		t.Errorf("interval ends %s, want now", got)
	}
	if got := req.GetInterval().GetStartTime().AsTime(); !got.Equal(now.Add(-backlogWindow)) {
		t.Errorf("interval starts %s", got)
	}

	f.series = nil
	if n, err := r.Backlog(context.Background()); n != -1 || err != nil {
		t.Errorf("no data: %d, %v; want -1 (unknown), no error", n, err)
	}

	f.err = status.Error(codes.PermissionDenied, "Permission monitoring.timeSeries.list denied")
	n, err = r.Backlog(context.Background())
	if n != -1 || errorCode(err) != source.PermissionDenied || !strings.Contains(err.Error(), "orders") {
		t.Errorf("denied: %d, %v (%s); want -1 and permission_denied naming the subscription", n, err, errorCode(err))
	}
}
