package pubsubsource

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	pb "cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	"github.com/googleapis/gax-go/v2"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/numaflow-connectors/sources/common/source"
)

const testSub = "projects/test-project/subscriptions/orders"

// fakeSub is a subscriberAPI whose calls are scripted by the test; it records the requests.
type fakeSub struct {
	//lint:ignore U1000 embedded so the fake satisfies subscriberAPI; a call that is not scripted panics
	subscriberAPI

	mu      sync.Mutex
	pull    func(ctx context.Context, req *pb.PullRequest) (*pb.PullResponse, error)
	ack     func(ids []string) error
	modack  func(ids []string, secs int32) error
	get     func() (*pb.Subscription, error)
	acks    [][]string
	modacks []modackCall
}

type modackCall struct {
	ids  []string
	secs int32
}

func (f *fakeSub) Pull(ctx context.Context, req *pb.PullRequest, _ ...gax.CallOption) (*pb.PullResponse, error) {
	return f.pull(ctx, req)
}

func (f *fakeSub) Acknowledge(_ context.Context, req *pb.AcknowledgeRequest, _ ...gax.CallOption) error {
	f.mu.Lock()
	f.acks = append(f.acks, req.GetAckIds())
	f.mu.Unlock()
	if req.GetSubscription() != testSub {
		return status.Error(codes.NotFound, "wrong subscription "+req.GetSubscription())
	}
	if f.ack == nil {
		return nil
	}
	return f.ack(req.GetAckIds())
}

func (f *fakeSub) ModifyAckDeadline(_ context.Context, req *pb.ModifyAckDeadlineRequest, _ ...gax.CallOption) error {
	f.mu.Lock()
	f.modacks = append(f.modacks, modackCall{req.GetAckIds(), req.GetAckDeadlineSeconds()})
	f.mu.Unlock()
	if f.modack == nil {
		return nil
	}
	return f.modack(req.GetAckIds(), req.GetAckDeadlineSeconds())
}

func (f *fakeSub) GetSubscription(context.Context, *pb.GetSubscriptionRequest, ...gax.CallOption) (*pb.Subscription, error) {
	return f.get()
}

func (f *fakeSub) calls() ([][]string, []modackCall) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([][]string(nil), f.acks...), append([]modackCall(nil), f.modacks...)
}

type fakePub struct {
	//lint:ignore U1000 embedded so the fake satisfies publisherAPI
	publisherAPI
	mu   sync.Mutex
	err  error
	msgs []*pb.PublishRequest
}

func (f *fakePub) Publish(_ context.Context, req *pb.PublishRequest, _ ...gax.CallOption) (*pb.PublishResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return nil, f.err
	}
	f.msgs = append(f.msgs, req)
	return &pb.PublishResponse{MessageIds: []string{"dl-1"}}, nil
}

func testDriver(t *testing.T, sub subscriberAPI, change func(*Config)) *driver {
	t.Helper()
	c := validConfig()
	c.Project, c.Subscription = "test-project", "orders"
	if change != nil {
		change(&c)
	}
	if err := c.Validate(); err != nil {
		t.Fatalf("config: %v", err)
	}
	return newDriver(&c, apis{sub: sub}, slog.New(slog.DiscardHandler))
}

func handles(ids ...string) []source.Handle {
	out := make([]source.Handle, len(ids))
	for i, id := range ids {
		out[i] = id
	}
	return out
}

func received(n int, size int) []*pb.ReceivedMessage {
	out := make([]*pb.ReceivedMessage, n)
	for i := range out {
		out[i] = &pb.ReceivedMessage{AckId: fmt.Sprintf("ack-%d", i), Message: &pb.PubsubMessage{
			MessageId: fmt.Sprintf("m-%d", i), Data: make([]byte, size)}}
	}
	return out
}

func TestNackDelay(t *testing.T) {
	tests := []struct {
		delay time.Duration
		want  int32
	}{
		{0, 0},
		{time.Millisecond, 1}, // rounded up: never earlier than asked
		{2 * time.Second, 2},
		{2001 * time.Millisecond, 3},
		{10 * time.Minute, 600},
		{time.Hour, 600}, // Pub/Sub's maximum
	}
	for _, tt := range tests {
		f := &fakeSub{}
		d := testDriver(t, f, nil)
		if err := d.Nack(context.Background(), handles("a", "b"), tt.delay); err != nil {
			t.Fatalf("nack: %v", err)
		}
		_, mods := f.calls()
		if len(mods) != 1 || mods[0].secs != tt.want || strings.Join(mods[0].ids, ",") != "a,b" {
			t.Errorf("nack delay %s: modacks %+v, want one of a,b to %d s", tt.delay, mods, tt.want)
		}
	}
}

func TestExtendSetsLease(t *testing.T) {
	f := &fakeSub{}
	d := testDriver(t, f, nil)
	if err := d.Extend(context.Background(), handles("a"), 30*time.Second); err != nil {
		t.Fatalf("extend: %v", err)
	}
	if _, mods := f.calls(); len(mods) != 1 || mods[0].secs != 30 {
		t.Fatalf("modacks %+v, want one to 30 s", mods)
	}
}

// exactlyOnceError is what the service returns when some ack IDs of an exactly-once subscription fail.
func exactlyOnceError(t *testing.T, code codes.Code, failures map[string]string) error {
	t.Helper()
	st, err := status.New(code, "Some acknowledgement ids in the request were invalid.").WithDetails(&errdetails.ErrorInfo{
		Reason: "EXACTLY_ONCE_ACKID_FAILURE", Domain: "pubsub.googleapis.com", Metadata: failures,
	})
	if err != nil {
		t.Fatalf("building status: %v", err)
	}
	return st.Err()
}

func TestAckResults(t *testing.T) {
	tests := []struct {
		name     string
		err      error
		wantErr  bool
		failed   map[int]source.Code // index -> code; nil: no BatchError
		wholeErr source.Code
	}{
		{name: "success"},
		{
			name: "exactly-once: permanent and transient failures, the rest acked",
			err: exactlyOnceError(t, codes.InvalidArgument, map[string]string{
				"b": "PERMANENT_FAILURE_INVALID_ACK_ID", "c": "TRANSIENT_FAILURE_UNORDERED_ACK_ID", "d": "PERMANENT_FAILURE_OTHER"}),
			wantErr: true,
			failed:  map[int]source.Code{1: source.InvalidArgument, 2: source.Unavailable, 3: source.FailedPrecondition},
		},
		{
			name:    "exactly-once with a transient status: unnamed ack IDs retried too",
			err:     exactlyOnceError(t, codes.Unavailable, map[string]string{"a": "TRANSIENT_FAILURE_OTHER"}),
			wantErr: true,
			failed:  map[int]source.Code{0: source.Unavailable, 1: source.Unavailable, 2: source.Unavailable, 3: source.Unavailable},
		},
		{
			name:     "whole call unavailable",
			err:      status.Error(codes.Unavailable, "connection refused"),
			wantErr:  true,
			wholeErr: source.Unavailable,
		},
		{
			name: "error info that is not about ack IDs",
			err: func() error {
				st, _ := status.New(codes.PermissionDenied, "API disabled").WithDetails(&errdetails.ErrorInfo{
					Reason: "SERVICE_DISABLED", Metadata: map[string]string{"service": "pubsub.googleapis.com"}})
				return st.Err()
			}(),
			wantErr:  true,
			wholeErr: source.PermissionDenied,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := &fakeSub{ack: func([]string) error { return tt.err }}
			d := testDriver(t, f, nil)
			err := d.Ack(context.Background(), handles("a", "b", "c", "d"))
			if (err != nil) != tt.wantErr {
				t.Fatalf("ack error %v, want error %v", err, tt.wantErr)
			}
			if err == nil {
				return
			}
			var be *source.BatchError
			if tt.failed == nil {
				if errors.As(err, &be) {
					t.Fatalf("got a BatchError %v, want the call's error", err)
				}
				if got := d.ErrorCode(err); got != tt.wholeErr {
					t.Fatalf("code %s, want %s", got, tt.wholeErr)
				}
				if !strings.Contains(err.Error(), testSub) {
					t.Errorf("error %q does not name the subscription", err)
				}
				return
			}
			if !errors.As(err, &be) {
				t.Fatalf("got %v, want a *source.BatchError", err)
			}
			if len(be.Failed) != len(tt.failed) {
				t.Fatalf("failed %v, want indexes %v", be.Failed, tt.failed)
			}
			for i, want := range tt.failed {
				if got := source.Classify(d, be.Failed[i]); got != want {
					t.Errorf("index %d: code %s, want %s (%v)", i, got, want, be.Failed[i])
				}
			}
		})
	}
}

// The emulator refuses a whole request for one unknown ack ID: the driver splits the batch so the
// others are still acked, and reports only the bad one (InvalidArgument, not retried).
func TestAckIsolatesRefusedIDs(t *testing.T) {
	f := &fakeSub{ack: func(ids []string) error {
		for _, id := range ids {
			if strings.HasPrefix(id, "bad") {
				return status.Errorf(codes.InvalidArgument, "Invalid ack id (ack_id=%s)", id)
			}
		}
		return nil
	}}
	d := testDriver(t, f, nil)
	ids := []string{"a", "b", "bad-1", "c", "d", "e", "bad-2", "f"}
	err := d.Ack(context.Background(), handles(ids...))
	var be *source.BatchError
	if !errors.As(err, &be) {
		t.Fatalf("got %v, want a BatchError", err)
	}
	if len(be.Failed) != 2 || be.Failed[2] == nil || be.Failed[6] == nil {
		t.Fatalf("failed %v, want indexes 2 and 6", be.Failed)
	}
	if source.Classify(d, be.Failed[2]) != source.InvalidArgument {
		t.Errorf("refused ack ID classified %s, want invalid_argument", source.Classify(d, be.Failed[2]))
	}
	acked := map[string]bool{}
	calls, _ := f.calls()
	for _, c := range calls {
		if len(c) == 1 || !strings.Contains(strings.Join(c, ","), "bad") {
			for _, id := range c {
				if !strings.HasPrefix(id, "bad") {
					acked[id] = true
				}
			}
		}
	}
	for _, id := range ids {
		if !strings.HasPrefix(id, "bad") && !acked[id] {
			t.Errorf("good ack ID %s was never acked in a successful call", id)
		}
	}
	// A request refused as a whole (not for an ack ID) is not split.
	f.ack = func([]string) error {
		return status.Error(codes.InvalidArgument, "Request payload size exceeds the limit")
	}
	before, _ := f.calls()
	err = d.Ack(context.Background(), handles("a", "b", "c", "d"))
	if errors.As(err, &be) || d.ErrorCode(err) != source.InvalidArgument {
		t.Errorf("refused request: %v, want the call's invalid_argument error", err)
	}
	if after, _ := f.calls(); len(after)-len(before) != 1 {
		t.Errorf("a request refused as a whole was retried in %d calls", len(after)-len(before))
	}
	f.ack = func(ids []string) error {
		return status.Errorf(codes.InvalidArgument, "Invalid ack id (ack_id=%s)", ids[0])
	}
	// A single refused ID is an InvalidArgument error, not a BatchError.
	err = d.Ack(context.Background(), handles("bad-3"))
	if errors.As(err, &be) || d.ErrorCode(err) != source.InvalidArgument {
		t.Errorf("single refused ack: %v (%s), want a plain invalid_argument error", err, d.ErrorCode(err))
	}
}

// Requests stay within Pub/Sub's request size: long ack IDs are split into several calls.
func TestAckChunksBySize(t *testing.T) {
	f := &fakeSub{}
	d := testDriver(t, f, nil)
	long := strings.Repeat("x", 1000)
	ids := make([]string, 1000)
	for i := range ids {
		ids[i] = fmt.Sprintf("%s-%04d", long, i)
	}
	if err := d.Ack(context.Background(), handles(ids...)); err != nil {
		t.Fatalf("ack: %v", err)
	}
	calls, _ := f.calls()
	n := 0
	for _, c := range calls {
		size := 0
		for _, id := range c {
			size += len(id)
		}
		if size > maxAckBytes {
			t.Errorf("a call carried %d bytes of ack IDs, more than %d", size, maxAckBytes)
		}
		n += len(c)
	}
	if len(calls) < 2 || n != len(ids) {
		t.Errorf("%d calls with %d IDs in all, want several calls with %d", len(calls), n, len(ids))
	}
}

func TestReceive(t *testing.T) {
	t.Run("sets our ack deadline when the subscription's differs", func(t *testing.T) {
		f := &fakeSub{pull: func(_ context.Context, req *pb.PullRequest) (*pb.PullResponse, error) {
			if req.GetMaxMessages() != 7 || req.GetSubscription() != testSub {
				t.Errorf("pull request %v", req)
			}
			return &pb.PullResponse{ReceivedMessages: received(3, 10)}, nil
		}}
		d := testDriver(t, f, nil)
		d.applySettings(&pb.Subscription{AckDeadlineSeconds: 10})
		msgs, err := d.Receive(context.Background(), 7)
		if err != nil || len(msgs) != 3 {
			t.Fatalf("receive: %d messages, %v", len(msgs), err)
		}
		if _, mods := f.calls(); len(mods) != 1 || mods[0].secs != 30 || len(mods[0].ids) != 3 {
			t.Fatalf("modacks %+v, want the 3 pulled ack IDs set to 30 s", mods)
		}
	})
	t.Run("no extra call when the subscription's deadline is ours", func(t *testing.T) {
		f := &fakeSub{pull: func(context.Context, *pb.PullRequest) (*pb.PullResponse, error) {
			return &pb.PullResponse{ReceivedMessages: received(2, 10)}, nil
		}}
		d := testDriver(t, f, nil)
		d.applySettings(&pb.Subscription{AckDeadlineSeconds: 30})
		if _, err := d.Receive(context.Background(), 10); err != nil {
			t.Fatal(err)
		}
		if _, mods := f.calls(); len(mods) != 0 {
			t.Fatalf("modacks %+v, want none", mods)
		}
	})
	t.Run("an empty pull is not a hot loop", func(t *testing.T) {
		f := &fakeSub{pull: func(context.Context, *pb.PullRequest) (*pb.PullResponse, error) {
			return &pb.PullResponse{}, nil
		}}
		d := testDriver(t, f, nil)
		start := time.Now()
		msgs, err := d.Receive(context.Background(), 10)
		if err != nil || msgs != nil {
			t.Fatalf("got %v, %v; want nil, nil", msgs, err)
		}
		if took := time.Since(start); took < minEmptyPull-10*time.Millisecond {
			t.Fatalf("an instantly empty pull returned after %s, want at least %s", took, minEmptyPull)
		}
	})
	t.Run("the server's wait running out is an empty result", func(t *testing.T) {
		f := &fakeSub{pull: func(ctx context.Context, _ *pb.PullRequest) (*pb.PullResponse, error) {
			dl, ok := ctx.Deadline()
			if !ok || time.Until(dl) > 200*time.Millisecond {
				t.Errorf("pull without its own short deadline (%v, %v)", dl, ok)
			}
			<-ctx.Done()
			return nil, status.Error(codes.DeadlineExceeded, "deadline")
		}}
		d := testDriver(t, f, nil)
		d.pullWait = 200 * time.Millisecond
		msgs, err := d.Receive(context.Background(), 10)
		if msgs != nil || err != nil {
			t.Fatalf("got %v, %v; want nil, nil", msgs, err)
		}
	})
	// The pull runs on the caller's ctx: cancelling it ends the pull, and Receive returns at once.
	t.Run("cancelled receive cancels the pull", func(t *testing.T) {
		f := &fakeSub{pull: func(ctx context.Context, _ *pb.PullRequest) (*pb.PullResponse, error) {
			<-ctx.Done()
			return nil, status.FromContextError(ctx.Err()).Err()
		}}
		d := testDriver(t, f, nil)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { _, err := d.Receive(ctx, 10); done <- err }()
		cancel()
		select {
		case err := <-done:
			if c := d.ErrorCode(err); c != source.Canceled {
				t.Fatalf("cancelled receive returned %v (%s), want canceled", err, c)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("receive did not return after its context was cancelled")
		}
		if err := d.Close(context.Background()); err != nil {
			t.Fatal(err)
		}
		if _, mods := f.calls(); len(mods) != 0 {
			t.Fatalf("modacks %+v after a cancelled pull, want none", mods)
		}
	})
	t.Run("missing subscription names it", func(t *testing.T) {
		f := &fakeSub{pull: func(context.Context, *pb.PullRequest) (*pb.PullResponse, error) {
			return nil, status.Error(codes.NotFound, "Subscription does not exist")
		}}
		d := testDriver(t, f, nil)
		_, err := d.Receive(context.Background(), 10)
		if d.ErrorCode(err) != source.NotFound || !strings.Contains(err.Error(), testSub) {
			t.Fatalf("got %v (%s), want not_found naming %s", err, d.ErrorCode(err), testSub)
		}
	})
}

func TestDeadLetter(t *testing.T) {
	msg := &source.Message{ID: "m-1", Handle: "ack-1", Payload: []byte("poison"), Headers: map[string]string{"a": "1"}}
	t.Run("without a topic", func(t *testing.T) {
		d := testDriver(t, &fakeSub{}, nil)
		if err := d.DeadLetter(context.Background(), msg, "r"); !errors.Is(err, source.ErrNoDeadLetter) {
			t.Fatalf("got %v, want ErrNoDeadLetter", err)
		}
	})
	t.Run("publishes then acks, and a retry after a failed ack does not publish twice", func(t *testing.T) {
		fails := 1
		f := &fakeSub{ack: func([]string) error {
			if fails > 0 {
				fails--
				return status.Error(codes.Unavailable, "down")
			}
			return nil
		}}
		pub := &fakePub{}
		d := testDriver(t, f, func(c *Config) { c.DeadLetterTopic = "dlq" })
		d.pub = pub
		err := d.DeadLetter(context.Background(), msg, "too many")
		if d.ErrorCode(err) != source.Unavailable {
			t.Fatalf("first attempt: %v, want the ack's unavailable error", err)
		}
		if err := d.DeadLetter(context.Background(), msg, "too many"); err != nil {
			t.Fatalf("retry: %v", err)
		}
		if len(pub.msgs) != 1 {
			t.Fatalf("published %d times, want once", len(pub.msgs))
		}
		req := pub.msgs[0]
		if req.GetTopic() != "projects/test-project/topics/dlq" || req.GetMessages()[0].GetAttributes()[AttrDeadLetterReason] != "too many" {
			t.Errorf("published %v", req)
		}
		if acks, _ := f.calls(); len(acks) != 2 || acks[1][0] != "ack-1" {
			t.Errorf("acks %v, want ack-1 twice", acks)
		}
	})
	t.Run("a failed publish does not ack", func(t *testing.T) {
		f := &fakeSub{}
		d := testDriver(t, f, func(c *Config) { c.DeadLetterTopic = "dlq" })
		d.pub = &fakePub{err: status.Error(codes.NotFound, "Topic not found")}
		err := d.DeadLetter(context.Background(), msg, "r")
		if d.ErrorCode(err) != source.NotFound || !strings.Contains(err.Error(), "projects/test-project/topics/dlq") {
			t.Fatalf("got %v, want not_found naming the topic", err)
		}
		if acks, _ := f.calls(); len(acks) != 0 {
			t.Fatalf("acked %v after a failed publish", acks)
		}
	})
}

type fakeBacklog struct {
	n   int64
	err error
}

func (f fakeBacklog) Backlog(context.Context) (int64, error) { return f.n, f.err }

func TestBacklog(t *testing.T) {
	d := testDriver(t, &fakeSub{}, nil)
	if n, err := d.Backlog(context.Background()); n != -1 || err != nil {
		t.Fatalf("PUBSUB_PENDING=off: %d, %v; want -1 (unknown)", n, err)
	}
	d.backlog = fakeBacklog{n: 42}
	if n, err := d.Backlog(context.Background()); n != 42 || err != nil {
		t.Fatalf("monitoring: %d, %v; want 42", n, err)
	}
	d.backlog = fakeBacklog{n: -1, err: status.Error(codes.PermissionDenied, "monitoring.timeSeries.list")}
	if _, err := d.Backlog(context.Background()); d.ErrorCode(err) != source.PermissionDenied {
		t.Fatalf("got %v, want permission_denied", err)
	}
}

func TestCapabilities(t *testing.T) {
	d := testDriver(t, &fakeSub{}, func(c *Config) { c.AckDeadline, c.MaxExtension = 45*time.Second, 2*time.Hour })
	c := d.Capabilities()
	if !c.OrderedKeys || c.ReceiveConcurrency != receiveConcurrency {
		t.Errorf("settings unknown: %+v, want ordered keys, and parallel receivers (the driver keeps pulls one at a time until the settings are known)", c)
	}
	if c.Lease != 45*time.Second || c.MaxExtension != 2*time.Hour || c.MaxNackDelay != 600*time.Second || c.MaxReceive != maxReceive || c.MaxAck != maxAckIDs {
		t.Errorf("capabilities %+v", c)
	}
	d.applySettings(&pb.Subscription{EnableMessageOrdering: false})
	if again := d.Capabilities(); again != c {
		t.Errorf("capabilities changed after the adapter asked: %+v, then %+v", c, again)
	}
	for _, tt := range []struct {
		ordered  bool
		conc     int
		keyOrder bool
	}{{false, receiveConcurrency, false}, {true, 1, true}} {
		d := testDriver(t, &fakeSub{}, nil)
		d.applySettings(&pb.Subscription{EnableMessageOrdering: tt.ordered})
		if c := d.Capabilities(); c.OrderedKeys != tt.keyOrder || c.ReceiveConcurrency != tt.conc {
			t.Errorf("ordering %v known at start: %+v", tt.ordered, c)
		}
	}
}

func TestCheck(t *testing.T) {
	for _, tt := range []struct {
		err  error
		want string
	}{
		{status.Error(codes.NotFound, "Subscription does not exist"), "create it"},
		{status.Error(codes.PermissionDenied, "denied"), "roles/pubsub.viewer"},
	} {
		d := testDriver(t, &fakeSub{get: func() (*pb.Subscription, error) { return nil, tt.err }}, nil)
		err := d.Check(context.Background())
		if err == nil || !strings.Contains(err.Error(), testSub) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("check: %v, want an error naming %s and saying %q", err, testSub, tt.want)
		}
	}
	d := testDriver(t, &fakeSub{get: func() (*pb.Subscription, error) { return &pb.Subscription{}, nil }}, nil)
	if err := d.Check(context.Background()); err != nil {
		t.Errorf("check: %v", err)
	}
	// Without pubsub.subscriptions.get (roles/pubsub.subscriber only), a working pull is enough.
	f := &fakeSub{
		get: func() (*pb.Subscription, error) { return nil, status.Error(codes.PermissionDenied, "denied") },
		pull: func(context.Context, *pb.PullRequest) (*pb.PullResponse, error) {
			return &pb.PullResponse{ReceivedMessages: received(1, 1)}, nil
		},
	}
	d = testDriver(t, f, nil)
	if err := d.Check(context.Background()); err == nil {
		t.Errorf("check before any pull passed with get denied")
	}
	if _, err := d.Receive(context.Background(), 1); err != nil {
		t.Fatal(err)
	}
	if err := d.Check(context.Background()); err != nil {
		t.Errorf("check after a successful pull, get denied: %v", err)
	}
	f.pull = func(context.Context, *pb.PullRequest) (*pb.PullResponse, error) {
		return nil, status.Error(codes.PermissionDenied, "pull denied")
	}
	if _, err := d.Receive(context.Background(), 1); err == nil {
		t.Fatal("receive passed with pull denied")
	}
	if err := d.Check(context.Background()); err == nil {
		t.Errorf("check passed after a denied pull")
	}
}
