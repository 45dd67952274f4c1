package pubsubsource

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"cloud.google.com/go/monitoring/apiv3/v2/monitoringpb"
	vkit "cloud.google.com/go/pubsub/v2/apiv1"
	pb "cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	"cloud.google.com/go/pubsub/v2/pstest"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/api/option"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/numaflow-connectors/sources/common/source"
)

// gauge reads a gauge of the adapter's metrics from reg (0 when absent).
func gauge(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) > 0 {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	return 0
}

// monitoringListener serves f as Cloud Monitoring on a loopback port, stopped when t ends, and returns
// the options that reach it.
func monitoringListener(t *testing.T, f *fakeMetrics) []option.ClientOption {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	monitoringpb.RegisterMetricServiceServer(srv, f)
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(srv.Stop)
	return []option.ClientOption{option.WithEndpoint(l.Addr().String()), option.WithoutAuthentication(),
		option.WithGRPCDialOption(grpc.WithTransportCredentials(insecure.NewCredentials()))}
}

// pstestSubscription starts an in-process pstest server with a topic and a subscription (ack
// deadline 10 s), and returns the server, the options that reach it and the subscription's name.
func pstestSubscription(t *testing.T) (*pstest.Server, []option.ClientOption, string, string) {
	t.Helper()
	srv := pstest.NewServerWithAddress("127.0.0.1:0")
	t.Cleanup(func() { _ = srv.Close() })
	opts := []option.ClientOption{option.WithEndpoint(srv.Addr), option.WithoutAuthentication(),
		option.WithGRPCDialOption(grpc.WithTransportCredentials(insecure.NewCredentials()))}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	tc, err := vkit.NewTopicAdminClient(ctx, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tc.Close() })
	sc, err := vkit.NewSubscriptionAdminClient(ctx, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sc.Close() })
	topic, sub := "projects/test-project/topics/pending", "projects/test-project/subscriptions/pending"
	if _, err := tc.CreateTopic(ctx, &pb.Topic{Name: topic}); err != nil {
		t.Fatal(err)
	}
	if _, err := sc.CreateSubscription(ctx, &pb.Subscription{Name: sub, Topic: topic, AckDeadlineSeconds: 10}); err != nil {
		t.Fatal(err)
	}
	return srv, opts, topic, sub
}

// PUBSUB_PENDING's default reads Cloud Monitoring (here a fake MetricService over real gRPC), through
// Open's own wiring and the adapter: the answer is never below what this replica holds, even when the
// lagging metric says less; permission denied gives -1 and one warning naming the role; with
// PUBSUB_EMULATOR_HOST set, the default is off.
func TestPendingDefaultsToMonitoring(t *testing.T) {
	srv, psOpts, topic, sub := pstestSubscription(t)
	const held = 40
	for i := range held {
		srv.Publish(topic, []byte(fmt.Sprintf("m-%d", i)), nil)
	}
	now := time.Now()
	metrics := &fakeMetrics{series: []*monitoringpb.TimeSeries{
		{Points: []*monitoringpb.Point{point(now.Add(-90*time.Second), 5)}}, // lagging: taken before the publishes
	}}
	monOpts := monitoringListener(t, metrics)

	openSource := func(t *testing.T, logs *logBuffer, emulatorHost string) (*source.Source, *prometheus.Registry) {
		t.Helper()
		cfg := &Config{Subscription: sub, MaxExtension: time.Hour, Pending: PendingAuto}
		if err := cfg.Validate(); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		d, err := open(ctx, cfg, logs.logger(), clientOptions{emulatorHost: emulatorHost, pubsub: psOpts, monitoring: monOpts})
		if err != nil {
			t.Fatal(err)
		}
		reg := prometheus.NewRegistry()
		return startSource(t, d, source.Options{Prefetch: 100, PendingRefresh: 50 * time.Millisecond}, logs.logger(), reg), reg
	}

	t.Run("held messages floor a lagging reading", func(t *testing.T) {
		var logs logBuffer
		s, reg := openSource(t, &logs, "")
		waitFor(t, 10*time.Second, "all messages buffered", func() bool {
			return gauge(t, reg, "numaflow_source_buffered") == held
		})
		if p := s.Pending(context.Background()); p != held {
			t.Errorf("pending %d with Monitoring saying 5 and %d held here, want %d", p, held, held)
		}
		if metrics.calls() == 0 {
			t.Errorf("Cloud Monitoring was not asked")
		}
	})

	t.Run("permission denied", func(t *testing.T) {
		metrics.set(nil, status.Error(codes.PermissionDenied, "Permission monitoring.timeSeries.list denied (or the resource may not exist)."))
		var logs logBuffer
		s, _ := openSource(t, &logs, "")
		for range 5 {
			if p := s.Pending(context.Background()); p != -1 {
				t.Errorf("pending %d with Monitoring denied, want -1", p)
			}
			time.Sleep(60 * time.Millisecond) // past PendingRefresh: the adapter asks the driver again
		}
		out := logs.String()
		if strings.Count(out, "level=WARN") != 1 || !strings.Contains(out, "missing_role=roles/monitoring.viewer") {
			t.Errorf("want exactly one warning, naming roles/monitoring.viewer; logs:\n%s", out)
		}
	})

	t.Run("off with the emulator", func(t *testing.T) {
		calls := metrics.calls()
		var logs logBuffer
		s, _ := openSource(t, &logs, "127.0.0.1:8085")
		if p := s.Pending(context.Background()); p != -1 {
			t.Errorf("pending %d with PUBSUB_EMULATOR_HOST set, want -1", p)
		}
		if metrics.calls() != calls {
			t.Errorf("Cloud Monitoring asked with PUBSUB_EMULATOR_HOST set and PUBSUB_PENDING=auto")
		}
	})
}

func TestPendingMode(t *testing.T) {
	for _, tt := range []struct {
		pending, emulator, want string
	}{
		{PendingAuto, "", PendingMonitoring},
		{PendingAuto, "127.0.0.1:8085", PendingOff},
		{PendingMonitoring, "127.0.0.1:8085", PendingMonitoring},
		{PendingOff, "", PendingOff},
	} {
		c := Config{Pending: tt.pending}
		if got := c.pendingMode(tt.emulator); got != tt.want {
			t.Errorf("PUBSUB_PENDING=%s, emulator %q: %s, want %s", tt.pending, tt.emulator, got, tt.want)
		}
	}
}
