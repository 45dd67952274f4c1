package pubsubsource

import (
	"context"
	"errors"
	"testing"
	"time"

	pb "cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/numaflow-connectors/sources/common/source"
)

// A service account that may read the subscription but not consume from it: GetSubscription answers,
// every pull is refused for permission. The health check asks IAM once pulls are refused and fails
// when consume is not granted, so the source stays not ready; it used to pass, and readiness flipped
// back and forth with every probe. Without an IAM answer (an emulator) the check passes as before.
func TestCheckAfterRefusedPullsAsksForConsume(t *testing.T) {
	denied := &fakeSub{
		pull: func(context.Context, *pb.PullRequest) (*pb.PullResponse, error) {
			return nil, status.Error(codes.PermissionDenied, "User not authorized to perform this action.")
		},
		get: okGet(&pb.Subscription{Name: testSub, AckDeadlineSeconds: 30}),
	}
	for _, tc := range []struct {
		name  string
		iam   *fakeIAM
		ready bool
	}{
		{"consume not granted", &fakeIAM{granted: []string{permGet}}, false},
		{"consume granted", &fakeIAM{granted: []string{permGet, permConsume}}, true},
		{"no IAM answer", &fakeIAM{err: status.Error(codes.Unimplemented, "emulator")}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := testDriver(t, denied, nil)
			d.subIAM = tc.iam
			if err := d.Check(context.Background()); err != nil {
				t.Fatalf("check before any pull: %v", err)
			}
			if _, err := d.pull(context.Background(), 10); err == nil {
				t.Fatal("the pull was not refused")
			}
			err := d.Check(context.Background())
			if (err == nil) != tc.ready {
				t.Fatalf("check after a refused pull: %v, want passing %t", err, tc.ready)
			}
			if err != nil && (!errors.Is(err, errNoConsume) || d.ErrorCode(err) != source.PermissionDenied) {
				t.Errorf("check error %v classified %s, want errNoConsume, permission_denied", err, d.ErrorCode(err))
			}
		})
	}
	// Through the adapter: not ready, and still not ready after two health checks.
	d := testDriver(t, denied, nil)
	iam := &fakeIAM{granted: []string{permGet}}
	d.subIAM = iam
	s := startSource(t, d, source.Options{ReadBatchSize: 10}, nil, nil)
	waitFor(t, 10*time.Second, "the source not ready", func() bool { return !s.Ready() })
	asked := func() int { iam.mu.Lock(); defer iam.mu.Unlock(); return len(iam.asked) }
	from := asked()
	waitFor(t, 10*time.Second, "two health checks", func() bool { return asked() >= from+2 })
	if s.Ready() {
		t.Errorf("source ready again without permission to consume")
	}
}
