package pubsubsource

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	pb "cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// scriptedGet answers GetSubscription from a list of results, the last one repeated, and counts calls.
type scriptedGet struct {
	mu      sync.Mutex
	results []func() (*pb.Subscription, error)
	calls   int
}

func (g *scriptedGet) get() (*pb.Subscription, error) {
	g.mu.Lock()
	i := min(g.calls, len(g.results)-1)
	g.calls++
	r := g.results[i]
	g.mu.Unlock()
	return r()
}

func (g *scriptedGet) set(results ...func() (*pb.Subscription, error)) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.results, g.calls = results, 0
}

func (g *scriptedGet) count() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.calls
}

func failGet(code codes.Code) func() (*pb.Subscription, error) {
	return func() (*pb.Subscription, error) { return nil, status.Error(code, "scripted "+code.String()) }
}

func okGet(s *pb.Subscription) func() (*pb.Subscription, error) {
	return func() (*pb.Subscription, error) { return s, nil }
}

func waitFor(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %s: %s", within, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// concurrentPulls runs n Receive calls at once against pulls that each take hold, and returns the
// most pulls that ran at the same time.
func concurrentPulls(t *testing.T, d *driver, running, peak *atomic.Int32, n int) int32 {
	t.Helper()
	peak.Store(0)
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := d.Receive(context.Background(), 10); err != nil {
				t.Errorf("receive: %v", err)
			}
		}()
	}
	wg.Wait()
	return peak.Load()
}

// The settings are read in the background until they are known (a failed read at start no longer
// leaves the pod degraded for its life), then again periodically, and each new value takes effect:
// one pull at a time until ordering is known to be off, the post-pull ModifyAckDeadline follows the
// subscription's ack deadline, and a dead-letter policy change is logged.
func TestSettingsReadAgain(t *testing.T) {
	g := &scriptedGet{}
	g.set(failGet(codes.Unavailable), failGet(codes.PermissionDenied),
		okGet(&pb.Subscription{AckDeadlineSeconds: 10}))
	var running, peak atomic.Int32
	f := &fakeSub{get: g.get, pull: func(ctx context.Context, _ *pb.PullRequest) (*pb.PullResponse, error) {
		n := running.Add(1)
		defer running.Add(-1)
		for {
			p := peak.Load()
			if n <= p || peak.CompareAndSwap(p, n) {
				break
			}
		}
		time.Sleep(50 * time.Millisecond)
		return &pb.PullResponse{ReceivedMessages: received(2, 1)}, nil
	}}
	var logs logBuffer
	d := testDriver(t, f, nil)
	d.log = logs.logger()
	d.settingsRetry, d.settingsEvery = 20*time.Millisecond, 200*time.Millisecond
	t.Cleanup(func() { _ = d.Close(context.Background()) })

	// Open's read failed: the adapter is told key order and parallel receivers, and the driver keeps
	// pulls one at a time while ordering is unknown.
	if err := d.readSettings(context.Background()); err == nil {
		t.Fatal("scripted first read succeeded")
	}
	c := d.Capabilities()
	if !c.OrderedKeys || c.ReceiveConcurrency != receiveConcurrency {
		t.Fatalf("capabilities with unknown settings %+v", c)
	}
	if p := concurrentPulls(t, d, &running, &peak, 4); p != 1 {
		t.Errorf("settings unknown: %d pulls at once, want 1", p)
	}
	if _, mods := f.calls(); len(mods) != 4 || mods[0].secs != 30 {
		t.Errorf("settings unknown: modacks %+v, want each pull's messages set to 30 s", mods)
	}

	d.startSettings()
	waitFor(t, 5*time.Second, "settings known after a failure", func() bool { return d.settings.Load() != nil })
	if g.count() < 2 {
		t.Errorf("GetSubscription called %d times, want the failed reads retried", g.count())
	}
	if p := concurrentPulls(t, d, &running, &peak, 4); p < 2 {
		t.Errorf("unordered subscription known: %d pulls at once, want several", p)
	}
	_, before := f.calls()
	if _, err := d.Receive(context.Background(), 10); err != nil {
		t.Fatal(err)
	}
	if _, mods := f.calls(); len(mods) != len(before)+1 || mods[len(mods)-1].secs != 30 {
		t.Errorf("subscription deadline 10 s: want the pull followed by a modack to 30 s, got %+v", mods[len(before):])
	}

	// The subscription changes: ack deadline now ours (30 s), a dead-letter policy added. Noticed by
	// the periodic read.
	g.set(okGet(&pb.Subscription{AckDeadlineSeconds: 30,
		DeadLetterPolicy: &pb.DeadLetterPolicy{DeadLetterTopic: "projects/test-project/topics/dlq", MaxDeliveryAttempts: 7}}))
	waitFor(t, 5*time.Second, "changed settings applied", func() bool {
		s := d.settings.Load()
		return s.ackDeadline == 30*time.Second && s.maxAttempts == 7
	})
	_, before = f.calls()
	if _, err := d.Receive(context.Background(), 10); err != nil {
		t.Fatal(err)
	}
	if _, mods := f.calls(); len(mods) != len(before) {
		t.Errorf("subscription deadline now 30 s: want no modack after the pull, got %+v", mods[len(before):])
	}
	out := logs.String()
	if !strings.Contains(out, "subscription settings changed") || !strings.Contains(out, "max_delivery_attempts=7") ||
		!strings.Contains(out, "previous_ack_deadline=10s") {
		t.Errorf("change not logged:\n%s", out)
	}

	// A failed periodic read keeps the last known settings.
	g.set(failGet(codes.Unavailable))
	waitFor(t, 5*time.Second, "a failed periodic read", func() bool { return g.count() >= 1 })
	if s := d.settings.Load(); s == nil || s.ackDeadline != 30*time.Second {
		t.Errorf("settings after a failed read: %+v, want the last known ones", s)
	}

	// Close stops the reader.
	if err := d.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	n := g.count()
	time.Sleep(100 * time.Millisecond)
	if g.count() != n {
		t.Errorf("GetSubscription called after Close")
	}
}

// A successful health check (Check) takes the settings too.
func TestCheckTakesSettings(t *testing.T) {
	d := testDriver(t, &fakeSub{get: okGet(&pb.Subscription{AckDeadlineSeconds: 30, EnableExactlyOnceDelivery: true})}, nil)
	if err := d.Check(context.Background()); err != nil {
		t.Fatal(err)
	}
	if s := d.settings.Load(); s == nil || !s.exactlyOnce || d.modackAfterPull() {
		t.Fatalf("settings after a check: %+v", s)
	}
}
