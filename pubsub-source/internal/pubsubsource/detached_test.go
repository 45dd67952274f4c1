package pubsubsource

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	pb "cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	"github.com/googleapis/gax-go/v2/apierror"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/numaflow-connectors/sources/common/source"
	"github.com/numaflow-connectors/sources/common/source/drivertest"
)

// A pull on a detached subscription fails with FAILED_PRECONDITION (Pub/Sub's DetachSubscription:
// "Subsequent Pull and StreamingPull requests will return FAILED_PRECONDITION"); the text is not
// documented. It is not_found, so readiness goes false; any other FAILED_PRECONDITION stays
// failed_precondition, whatever the text wrapped around it says.
func TestDetachedPullErrorCode(t *testing.T) {
	detached := status.Error(codes.FailedPrecondition, "Subscription is detached.")
	api, ok := apierror.FromError(detached)
	if !ok {
		t.Fatal("apierror.FromError failed")
	}
	tests := []struct {
		err  error
		want source.Code
	}{
		{detached, source.NotFound},
		{status.Error(codes.FailedPrecondition, "The subscription has been DETACHED from its topic"), source.NotFound},
		{fmt.Errorf("pulling from subscription %s: %w", testSub, detached), source.NotFound},
		{fmt.Errorf("pulling from subscription %s: %w", testSub, api), source.NotFound},
		{fmt.Errorf("getting subscription %s: %w", testSub, errDetached), source.NotFound},
		{status.Error(codes.FailedPrecondition, "Cloud Pub/Sub did not have the necessary permissions"), source.FailedPrecondition},
		{fmt.Errorf("pulling from subscription projects/p/subscriptions/detached-orders: %w",
			status.Error(codes.FailedPrecondition, "x")), source.FailedPrecondition},
		{status.Error(codes.NotFound, "detached"), source.NotFound},
		{status.Error(codes.InvalidArgument, "detached"), source.InvalidArgument},
	}
	d := &driver{}
	for _, tt := range tests {
		if got := d.ErrorCode(tt.err); got != tt.want {
			t.Errorf("ErrorCode(%v) = %s, want %s", tt.err, got, tt.want)
		}
	}
}

// detachedSub is a subscription detached from its topic: GetSubscription still answers, with
// detached=true, and every pull fails. It counts the reads.
func detachedSub(gets *atomic.Int32) *fakeSub {
	return &fakeSub{
		pull: func(context.Context, *pb.PullRequest) (*pb.PullResponse, error) {
			return nil, status.Error(codes.FailedPrecondition, "Subscription is detached.")
		},
		get: func() (*pb.Subscription, error) {
			gets.Add(1)
			return &pb.Subscription{Name: testSub, Topic: "_deleted-topic_", AckDeadlineSeconds: 30, Detached: true}, nil
		},
	}
}

// The health check fails on a detached subscription, naming it and saying what to do, classified
// not_found; the settings log line says it is detached.
func TestCheckDetachedSubscription(t *testing.T) {
	var gets atomic.Int32
	var logs bytes.Buffer
	d := testDriver(t, detachedSub(&gets), nil)
	d.log = slog.New(slog.NewJSONHandler(&logs, nil))
	err := d.Check(context.Background())
	if err == nil || !strings.Contains(err.Error(), testSub) || !strings.Contains(err.Error(), "detached") ||
		!strings.Contains(err.Error(), "create a new subscription") {
		t.Fatalf("check: %v, want an error naming %s, saying it is detached and what to do", err, testSub)
	}
	if got := d.ErrorCode(err); got != source.NotFound {
		t.Errorf("check error classified %s, want not_found", got)
	}
	if !strings.Contains(logs.String(), `"msg":"subscription settings"`) || !strings.Contains(logs.String(), `"detached":true`) {
		t.Errorf("settings log line does not say detached: %s", logs.String())
	}
	// A subscription detached later: the settings change is logged, and the check fails from then on.
	logs.Reset()
	attached := testDriver(t, &fakeSub{get: okGet(&pb.Subscription{Name: testSub, AckDeadlineSeconds: 30})}, nil)
	attached.log = slog.New(slog.NewJSONHandler(&logs, nil))
	if err := attached.Check(context.Background()); err != nil {
		t.Fatalf("check on an attached subscription: %v", err)
	}
	attached.sub = detachedSub(&gets)
	if err := attached.readSettings(context.Background()); err != nil {
		t.Fatal(err)
	}
	if l := logs.String(); !strings.Contains(l, `"msg":"subscription settings changed"`) || !strings.Contains(l, "is detached from its topic") {
		t.Errorf("detachment not logged: %s", l)
	}
	if err := attached.Check(context.Background()); d.ErrorCode(err) != source.NotFound {
		t.Errorf("check after detachment: %v, want not_found", err)
	}
}

// Through the adapter: every pull on a detached subscription fails; the source goes not ready and the
// prober, whose check fails too, keeps it so.
func TestDetachedSubscriptionNotReady(t *testing.T) {
	var gets atomic.Int32
	d := testDriver(t, detachedSub(&gets), nil)
	s := startSource(t, d, source.Options{ReadBatchSize: 10}, nil, nil)
	waitFor(t, 10*time.Second, "the source not ready", func() bool { return !s.Ready() })
	// The prober checks every second or two while not ready; after two of its checks it is still not.
	from := gets.Load()
	waitFor(t, 10*time.Second, "two health checks", func() bool { return gets.Load() >= from+2 })
	if s.Ready() {
		t.Errorf("source ready again on a detached subscription")
	}
}

// The pre-flight checks fail the subscription's check on a detached subscription, saying so and what
// to do, and skip the others.
func TestPreflightDetachedSubscription(t *testing.T) {
	var gets atomic.Int32
	f := allowedFakes()
	f.sub = detachedSub(&gets)
	checks := f.driver(t, false).Preflight(context.Background())
	got := drivertest.Outcomes(checks)
	if !strings.HasPrefix(got[getCheck], "fail: a detached subscription cannot be attached again") ||
		got[consumeCheck] != "skipped" || got[publishCheck] != "skipped" || got[metricCheck] != "skipped" {
		t.Errorf("detached subscription: %v", got)
	}
	for _, c := range checks {
		if c.Name == getCheck && !errors.Is(c.Err, errDetached) {
			t.Errorf("subscription check error %v, want errDetached", c.Err)
		}
		if c.Skipped != "" && c.Skipped != "the subscription is detached from its topic" {
			t.Errorf("%s skipped because %q, want because it is detached", c.Name, c.Skipped)
		}
	}
	f.untouched(t, "detached subscription")
}
