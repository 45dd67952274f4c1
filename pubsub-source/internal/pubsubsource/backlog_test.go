package pubsubsource

import (
	"context"
	"log/slog"
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
	n      int // calls
}

func (f *fakeMetrics) ListTimeSeries(_ context.Context, req *monitoringpb.ListTimeSeriesRequest) (*monitoringpb.ListTimeSeriesResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.req = req
	f.n++
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

// logBuffer collects log lines for assertions.
type logBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func (l *logBuffer) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(l, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func (f *fakeMetrics) set(series []*monitoringpb.TimeSeries, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.series, f.err = series, err
}

func (f *fakeMetrics) calls() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.n
}

func TestMonitoringReader(t *testing.T) {
	now := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	f := &fakeMetrics{series: []*monitoringpb.TimeSeries{
		{Points: []*monitoringpb.Point{point(now.Add(-time.Minute), 120), point(now.Add(-3*time.Minute), 500)}},
		{Points: []*monitoringpb.Point{point(now.Add(-2*time.Minute), 90)}},
	}}
	var logs logBuffer
	r := newMonitoringReader(serveMetrics(t, f), "my-project", "orders", logs.logger())
	clock := now
	r.now = func() time.Time { return clock }
	backlog := func() (int64, error) { return r.Backlog(context.Background()) }

	n, err := backlog()
	if err != nil || n != 120 {
		t.Fatalf("backlog %d, %v; want the newest point, 120", n, err)
	}
	f.mu.Lock()
	req := f.req
	f.mu.Unlock()
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

	// Asked every 5 s by the adapter: Monitoring is asked again only after backlogEvery (30 s).
	f.set([]*monitoringpb.TimeSeries{{Points: []*monitoringpb.Point{point(now.Add(20*time.Second), 80)}}}, nil)
	for clock = now; clock.Sub(now) < backlogEvery; clock = clock.Add(5 * time.Second) {
		if n, err := backlog(); n != 120 || err != nil {
			t.Fatalf("at +%s: %d, %v; want the cached 120", clock.Sub(now), n, err)
		}
	}
	if c := f.calls(); c != 1 {
		t.Fatalf("Monitoring asked %d times within %s, want once", c, backlogEvery)
	}
	if n, err := backlog(); n != 80 || err != nil || f.calls() != 2 {
		t.Fatalf("at +%s: %d, %v after %d calls; want a new reading, 80", clock.Sub(now), n, err, f.calls())
	}

	// A lagging series (newest point 4 min old) is used; a stale one (6 min old) is unknown.
	clock = clock.Add(backlogEvery)
	f.set([]*monitoringpb.TimeSeries{{Points: []*monitoringpb.Point{point(clock.Add(-4*time.Minute), 70)}}}, nil)
	if n, err := backlog(); n != 70 || err != nil {
		t.Errorf("lagging 4 min: %d, %v; want 70", n, err)
	}
	clock = clock.Add(backlogEvery)
	f.set([]*monitoringpb.TimeSeries{{Points: []*monitoringpb.Point{point(clock.Add(-6*time.Minute), 70)}}}, nil)
	if n, err := backlog(); n != -1 || err != nil {
		t.Errorf("stale (6 min): %d, %v; want -1 (unknown)", n, err)
	}

	clock = clock.Add(backlogEvery)
	f.set(nil, nil)
	if n, err := backlog(); n != -1 || err != nil {
		t.Errorf("no data: %d, %v; want -1 (unknown), no error", n, err)
	}

	// Unavailable: the error once (the adapter logs it), then -1 until the next question.
	clock = clock.Add(backlogEvery)
	f.set(nil, status.Error(codes.Unavailable, "connection refused"))
	if n, err := backlog(); n != -1 || errorCode(err) != source.Unavailable || !strings.Contains(err.Error(), "orders") {
		t.Errorf("unavailable: %d, %v; want -1 and unavailable naming the subscription", n, err)
	}
	clock = clock.Add(5 * time.Second)
	if n, err := backlog(); n != -1 || err != nil || f.calls() != 6 {
		t.Errorf("unavailable, 5 s later: %d, %v after %d calls; want -1, no error, no new call", n, err, f.calls())
	}

	// Permission denied: -1 with no error, one warning naming the role, asked again only every 10 min.
	clock = clock.Add(backlogEvery)
	f.set(nil, status.Error(codes.PermissionDenied, "Permission monitoring.timeSeries.list denied"))
	calls := f.calls()
	for i := 0; i < 5; i++ {
		if n, err := backlog(); n != -1 || err != nil {
			t.Errorf("denied: %d, %v; want -1, no error", n, err)
		}
		clock = clock.Add(backlogDeniedEvery / 2)
	}
	if got := f.calls() - calls; got != 3 {
		t.Errorf("denied: Monitoring asked %d times over %s, want 3 (every %s)", got, 5*backlogDeniedEvery/2, backlogDeniedEvery)
	}
	if w := strings.Count(logs.String(), "level=WARN"); w != 1 || !strings.Contains(logs.String(), "roles/monitoring.viewer") {
		t.Errorf("%d warnings, want one naming roles/monitoring.viewer; logs:\n%s", w, logs.String())
	}
	// The role granted later: read again.
	clock = clock.Add(backlogDeniedEvery)
	f.set([]*monitoringpb.TimeSeries{{Points: []*monitoringpb.Point{point(clock.Add(-time.Minute), 33)}}}, nil)
	if n, err := backlog(); n != 33 || err != nil {
		t.Errorf("after the role was granted: %d, %v; want 33", n, err)
	}
}
