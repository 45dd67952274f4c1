package pubsubsource

import (
	"context"
	"log/slog"
	"maps"
	"net"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"cloud.google.com/go/iam/apiv1/iampb"
	pb "cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	"github.com/googleapis/gax-go/v2"
	"google.golang.org/api/option"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/numaflow-connectors/sources/common/proctest"
	"github.com/numaflow-connectors/sources/common/source/drivertest"
	"github.com/numaflow-connectors/sources/pubsub-source/pubsubtest"
)

// fakeIAM answers TestIamPermissions with the permissions it grants (or err), and GetTopic with
// getTopic; it records the resources asked about.
type fakeIAM struct {
	mu       sync.Mutex
	granted  []string
	err      error
	getTopic error
	asked    []string
}

func (f *fakeIAM) TestIamPermissions(_ context.Context, req *iampb.TestIamPermissionsRequest, _ ...gax.CallOption) (*iampb.TestIamPermissionsResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.asked = append(f.asked, req.GetResource())
	if f.err != nil {
		return nil, f.err
	}
	var out []string
	for _, p := range req.GetPermissions() {
		if slices.Contains(f.granted, p) {
			out = append(out, p)
		}
	}
	return &iampb.TestIamPermissionsResponse{Permissions: out}, nil
}

func (f *fakeIAM) GetTopic(_ context.Context, req *pb.GetTopicRequest, _ ...gax.CallOption) (*pb.Topic, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.asked = append(f.asked, "GetTopic "+req.GetTopic())
	return &pb.Topic{Name: req.GetTopic()}, f.getTopic
}

func (f *fakeIAM) calls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.asked)
}

// preflightFakes are a driver's clients for the pre-flight tests, each allowing everything.
type preflightFakes struct {
	sub     *fakeSub
	subIAM  *fakeIAM
	topic   *fakeIAM
	pub     *fakePub
	metrics *fakeMetrics
}

func allowedFakes() *preflightFakes {
	return &preflightFakes{
		sub:     &fakeSub{get: func() (*pb.Subscription, error) { return &pb.Subscription{Name: testSub, AckDeadlineSeconds: 10}, nil }},
		subIAM:  &fakeIAM{granted: []string{permConsume, permGet}},
		topic:   &fakeIAM{granted: []string{permPublish}},
		pub:     &fakePub{},
		metrics: &fakeMetrics{},
	}
}

const testDLTopic = "projects/test-project/topics/orders-dead"

// driver wires a driver with a dead-letter topic and Pending from Cloud Monitoring (the fake
// MetricService over real gRPC on loopback).
func (f *preflightFakes) driver(t *testing.T, emulator bool) *driver {
	t.Helper()
	d := testDriver(t, f.sub, func(c *Config) {
		c.Project = "test-project"
		c.DeadLetterTopic = "orders-dead"
		c.Pending = PendingMonitoring
	})
	d.subIAM, d.topicIAM, d.pub = f.subIAM, f.topic, f.pub
	d.backlog = newMonitoringReader(serveMetrics(t, f.metrics), "test-project", "orders", nil)
	d.pre = preflightEnv{emulator: emulator, pending: PendingMonitoring}
	return d
}

// The check names, by what they check.
var (
	getCheck     = "subscription " + testSub + " exists and its settings are readable (GetSubscription, pubsub.subscriptions.get)"
	consumeCheck = "pubsub.subscriptions.consume on " + testSub + " (Pull, Acknowledge, ModifyAckDeadline)"
	publishCheck = "pubsub.topics.publish on " + testDLTopic + " (PUBSUB_DEAD_LETTER_TOPIC)"
	metricCheck  = "Cloud Monitoring read of pubsub.googleapis.com/subscription/num_undelivered_messages for " + testSub +
		" (PUBSUB_PENDING=monitoring, monitoring.timeSeries.list)"
)

// untouched fails t when the checks pulled, acked, modified or published anything.
func (f *preflightFakes) untouched(t *testing.T, what string) {
	t.Helper()
	if acks, modacks := f.sub.calls(); len(acks)+len(modacks) > 0 {
		t.Errorf("%s: the checks acked %v or modified %v", what, acks, modacks)
	}
	if len(f.pub.msgs) > 0 {
		t.Errorf("%s: the checks published %v", what, f.pub.msgs)
	}
}

func TestPreflightPermissions(t *testing.T) {
	denied := status.Error(codes.PermissionDenied, "User not authorized to perform this action.")

	f := allowedFakes()
	got := drivertest.Outcomes(f.driver(t, false).Preflight(context.Background()))
	want := map[string]string{getCheck: "pass", consumeCheck: "pass", publishCheck: "pass", metricCheck: "pass"}
	if !maps.Equal(got, want) {
		t.Fatalf("everything allowed: %v, want %v", got, want)
	}
	f.untouched(t, "everything allowed")
	if f.metrics.calls() != 1 {
		t.Errorf("Cloud Monitoring asked %d times, want once", f.metrics.calls())
	}
	f.metrics.mu.Lock()
	r := f.metrics.req
	f.metrics.mu.Unlock()
	if r.GetName() != "projects/test-project" || !strings.Contains(r.GetFilter(), `subscription_id = "orders"`) ||
		r.GetInterval().GetEndTime().AsTime().Sub(r.GetInterval().GetStartTime().AsTime()) > 10*time.Minute {
		t.Errorf("Cloud Monitoring request %v", r)
	}

	// Each permission missing alone fails exactly its own check, saying what to grant.
	for _, tc := range []struct {
		check, fix string
		deny       func(f *preflightFakes)
	}{
		{consumeCheck, "grant roles/pubsub.subscriber on the subscription", func(f *preflightFakes) { f.subIAM.granted = []string{permGet} }},
		{getCheck, "grant roles/pubsub.viewer on the subscription", func(f *preflightFakes) {
			f.sub.get = func() (*pb.Subscription, error) { return nil, denied }
			f.subIAM.granted = []string{permConsume}
		}},
		{publishCheck, "grant roles/pubsub.publisher on topic " + testDLTopic, func(f *preflightFakes) { f.topic.granted = nil }},
		{metricCheck, "grant roles/monitoring.viewer on project test-project", func(f *preflightFakes) {
			f.metrics.set(nil, status.Error(codes.PermissionDenied, "Permission monitoring.timeSeries.list denied (or the resource may not exist)."))
		}},
	} {
		f := allowedFakes()
		tc.deny(f)
		got := drivertest.Outcomes(f.driver(t, false).Preflight(context.Background()))
		if len(got) != 4 {
			t.Errorf("%s denied: %d checks %v, want 4", tc.check, len(got), got)
		}
		for name, o := range got {
			want := "pass"
			if name == tc.check {
				want = "fail: " + tc.fix
			}
			if !strings.HasPrefix(o, want) {
				t.Errorf("%s denied: %s: %q, want %q...", tc.check, name, o, want)
			}
		}
		f.untouched(t, tc.check+" denied")
	}

	// Reading the subscription refused although IAM grants it: the fix points past IAM.
	f = allowedFakes()
	f.sub.get = func() (*pb.Subscription, error) { return nil, denied }
	got = drivertest.Outcomes(f.driver(t, false).Preflight(context.Background()))
	if !strings.Contains(got[getCheck], "deny policy") || got[consumeCheck] != "pass" {
		t.Errorf("get refused, granted by IAM: %v", got)
	}

	// No valid credentials: the fixes say to check them, not to grant a role.
	f = allowedFakes()
	unauthenticated := status.Error(codes.Unauthenticated, "Request had invalid authentication credentials.")
	f.sub.get = func() (*pb.Subscription, error) { return nil, unauthenticated }
	f.subIAM.err = unauthenticated
	got = drivertest.Outcomes(f.driver(t, false).Preflight(context.Background()))
	if !strings.HasPrefix(got[getCheck], "fail: check the credentials") || !strings.HasPrefix(got[consumeCheck], "fail: check the credentials") {
		t.Errorf("unauthenticated: %v", got)
	}

	// A missing subscription fails the first check; every other is skipped and none is asked.
	f = allowedFakes()
	f.sub.get = func() (*pb.Subscription, error) { return nil, status.Error(codes.NotFound, "Resource not found") }
	d := f.driver(t, false)
	checks := d.Preflight(context.Background())
	got = drivertest.Outcomes(checks)
	if !strings.HasPrefix(got[getCheck], "fail: create subscription "+testSub) || got[consumeCheck] != "skipped" ||
		got[publishCheck] != "skipped" || got[metricCheck] != "skipped" || len(got) != 4 {
		t.Errorf("missing subscription: %v", got)
	}
	if len(checks) == 0 || checks[0].Name != getCheck {
		t.Errorf("missing subscription: the first check is not the subscription's: %v", checks)
	}
	if n := len(f.subIAM.calls()) + len(f.topic.calls()) + f.metrics.calls(); n != 0 {
		t.Errorf("missing subscription: %d more calls were made", n)
	}

	// PUBSUB_PENDING=monitoring without a Cloud Monitoring client (no credentials) fails its check.
	f = allowedFakes()
	d = f.driver(t, false)
	d.backlog, d.pre.monitoringErr = nil, status.Error(codes.Unauthenticated, "could not find default credentials")
	got = drivertest.Outcomes(d.Preflight(context.Background()))
	if !strings.HasPrefix(got[metricCheck], "fail: check the credentials") || !strings.Contains(got[metricCheck], "PUBSUB_PENDING=off") {
		t.Errorf("no Cloud Monitoring client: %v", got)
	}

	// With PUBSUB_PENDING=off there is no Cloud Monitoring check, and without a dead-letter topic no
	// publish check.
	f = allowedFakes()
	d = testDriver(t, f.sub, func(c *Config) { c.Project = "test-project" })
	d.subIAM = f.subIAM
	got = drivertest.Outcomes(d.Preflight(context.Background()))
	if !maps.Equal(got, map[string]string{getCheck: "pass", consumeCheck: "pass"}) {
		t.Errorf("no dead-letter topic, PUBSUB_PENDING=off: %v", got)
	}
}

// The emulators have no IAM: TestIamPermissions answers Unimplemented. With PUBSUB_EMULATOR_HOST set
// that passes under a name saying so (and a missing dead-letter topic still fails, through GetTopic);
// without it, it fails.
func TestPreflightEmulatorIAM(t *testing.T) {
	unimplemented := status.Error(codes.Unimplemented, "unknown service google.iam.v1.IAMPolicy")
	const suffix = ": emulator, no IAM, grants everything"

	f := allowedFakes()
	f.subIAM.err, f.topic.err = unimplemented, unimplemented
	got := drivertest.Outcomes(f.driver(t, true).Preflight(context.Background()))
	want := map[string]string{getCheck: "pass", consumeCheck + suffix: "pass", publishCheck + suffix: "pass", metricCheck: "pass"}
	if !maps.Equal(got, want) {
		t.Errorf("emulator: %v, want %v", got, want)
	}
	if calls := f.topic.calls(); !slices.Contains(calls, "GetTopic "+testDLTopic) {
		t.Errorf("emulator: the dead-letter topic was not read: %v", calls)
	}

	f.topic.getTopic = status.Error(codes.NotFound, "Topic not found")
	got = drivertest.Outcomes(f.driver(t, true).Preflight(context.Background()))
	if o := got[publishCheck+suffix]; !strings.HasPrefix(o, "fail: create topic "+testDLTopic+", or fix PUBSUB_DEAD_LETTER_TOPIC") {
		t.Errorf("emulator, missing dead-letter topic: %v", got)
	}

	f = allowedFakes()
	f.subIAM.err, f.topic.err = unimplemented, unimplemented
	got = drivertest.Outcomes(f.driver(t, false).Preflight(context.Background()))
	if !strings.HasPrefix(got[consumeCheck], "fail") || !strings.HasPrefix(got[publishCheck], "fail") {
		t.Errorf("Unimplemented without PUBSUB_EMULATOR_HOST: %v", got)
	}

	// A real answer from an emulator that has IAM counts as it is.
	f = allowedFakes()
	f.subIAM.granted = []string{permGet}
	got = drivertest.Outcomes(f.driver(t, true).Preflight(context.Background()))
	if !strings.HasPrefix(got[consumeCheck], "fail: grant roles/pubsub.subscriber") {
		t.Errorf("emulator with IAM, consume missing: %v", got)
	}
}

// Against the emulator, through open as a deployment builds the driver (Pending from the fake Cloud
// Monitoring server): every check passes, and the subscription's messages are untouched (pulled
// afterwards, every one arrives on its first delivery attempt, and nothing reached the dead-letter
// topic). A missing dead-letter topic fails its check.
func TestPreflightAgainstEmulator(t *testing.T) {
	t.Parallel()
	emu := pubsubtest.Shared(t)
	topic := emu.CreateTopic(t, "pf")
	dead := emu.CreateTopic(t, "pf-dead")
	deadSub := emu.CreateSubscription(t, "pf-dead", pubsubtest.Subscription{Topic: dead})
	// The subscription's own dead-letter policy makes the emulator count delivery attempts.
	sub := emu.CreateSubscription(t, "pf", pubsubtest.Subscription{Topic: topic, DeadLetterTopic: dead, MaxDeliveryAttempts: 5})
	const n = 5
	ids := publish(t, emu, topic, texts("pf", n)...)
	metrics := &fakeMetrics{}
	monOpts := monitoringListener(t, metrics)

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	openWith := func(deadLetter string) *driver {
		t.Helper()
		cfg := &Config{Subscription: sub, MaxExtension: time.Hour, DeadLetterTopic: deadLetter, Pending: PendingMonitoring}
		if err := cfg.Validate(); err != nil {
			t.Fatal(err)
		}
		d, err := open(ctx, cfg, slog.New(slog.DiscardHandler), clientOptions{emulatorHost: emu.Host, monitoring: monOpts})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = d.Close(context.Background()) })
		return d
	}

	start := time.Now()
	checks := openWith(dead).Preflight(ctx)
	took := time.Since(start)
	got := drivertest.Outcomes(checks)
	if len(got) != 4 {
		t.Errorf("%d checks %v, want 4", len(got), got)
	}
	for name, o := range got {
		if o != "pass" {
			t.Errorf("%s: %s", name, o)
		}
	}
	t.Logf("%s emulator: %d checks in %s: %v", emu.Kind, len(checks), took.Round(time.Millisecond), got)
	if metrics.calls() != 1 {
		t.Errorf("Cloud Monitoring asked %d times, want once", metrics.calls())
	}

	// Nothing was delivered, leased or published by the checks: every message comes now, on its first
	// delivery attempt.
	_, sc, err := emu.Clients()
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]int32{}
	for deadline := time.Now().Add(20 * time.Second); len(seen) < n && time.Now().Before(deadline); {
		pctx, pcancel := context.WithTimeout(ctx, 2*time.Second)
		resp, err := sc.Pull(pctx, &pb.PullRequest{Subscription: sub, MaxMessages: 100})
		pcancel()
		if err != nil && status.Code(err) != codes.DeadlineExceeded {
			t.Fatal(err)
		}
		var acks []string
		for _, rm := range resp.GetReceivedMessages() {
			seen[rm.GetMessage().GetMessageId()] = rm.GetDeliveryAttempt()
			acks = append(acks, rm.GetAckId())
		}
		if len(acks) > 0 {
			if err := sc.Acknowledge(ctx, &pb.AcknowledgeRequest{Subscription: sub, AckIds: acks}); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, id := range ids {
		if a, ok := seen[id]; !ok || a != 1 {
			t.Errorf("message %s after the checks: received %t, delivery attempt %d, want its first", id, ok, a)
		}
	}
	if msgs, err := emu.Drain(ctx, deadSub); err != nil || len(msgs) != 0 {
		t.Errorf("the dead-letter topic got %d messages (%v)", len(msgs), err)
	}

	got = drivertest.Outcomes(openWith(pubsubtest.UniqueID("pf-missing")).Preflight(ctx))
	failed := 0
	for name, o := range got {
		if strings.HasPrefix(name, "pubsub.topics.publish") {
			if !strings.HasPrefix(o, "fail: create topic") {
				t.Errorf("missing dead-letter topic: %s: %s", name, o)
			}
			failed++
		} else if o != "pass" {
			t.Errorf("missing dead-letter topic: %s: %s", name, o)
		}
	}
	if failed != 1 {
		t.Errorf("missing dead-letter topic: %v", got)
	}
}

// An endpoint that refuses connections, or accepts them and never answers, fails the first check in
// bounded time (open included, as --check runs it) and skips the rest.
func TestPreflightUnreachable(t *testing.T) {
	t.Parallel()
	refused, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refusedAddr := refused.Addr().String()
	_ = refused.Close()
	silent := silentListener(t)

	for _, tc := range []struct{ name, addr string }{{"refused", refusedAddr}, {"silent", silent}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg := &Config{Project: "test-project", Subscription: "orders", MaxExtension: time.Hour, DeadLetterTopic: "dead", Pending: PendingOff}
			if err := cfg.Validate(); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			start := time.Now() // --check opens the driver too
			d, err := open(ctx, cfg, slog.New(slog.DiscardHandler), clientOptions{pubsub: []option.ClientOption{
				option.WithEndpoint(tc.addr), option.WithoutAuthentication(),
				option.WithGRPCDialOption(grpc.WithTransportCredentials(insecure.NewCredentials()))}})
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = d.Close(context.Background()) }()
			checks := d.Preflight(ctx)
			took := time.Since(start)
			t.Logf("%s endpoint: open and checks failed in %s", tc.name, took.Round(time.Millisecond))
			if took > 30*time.Second {
				t.Errorf("checks against a %s endpoint took %s", tc.name, took)
			}
			got := drivertest.Outcomes(checks)
			if len(checks) != 3 || checks[0].Err == nil || !strings.HasPrefix(got[checks[0].Name], "fail: "+fixNetwork) ||
				checks[1].Skipped == "" || checks[2].Skipped == "" {
				t.Errorf("%s endpoint: %v", tc.name, got)
			}
		})
	}
}

// silentListener accepts connections on loopback and never answers; it stops when t ends.
func silentListener(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu    sync.Mutex
		conns []net.Conn
		wg    sync.WaitGroup
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		_ = l.Close()
		wg.Wait()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			_ = c.Close()
		}
	})
	return l.Addr().String()
}

// `pubsub-source --check` prints the table and exits 0 when every check passes on the emulator, 1
// for a missing subscription, without starting to serve.
func TestCheckFlag(t *testing.T) {
	t.Parallel()
	emu := pubsubtest.Shared(t)
	topic := emu.CreateTopic(t, "cf")
	sub := emu.CreateSubscription(t, "cf", pubsubtest.Subscription{Topic: topic})
	bin := proctest.Build(t, filepath.Join("..", ".."), "pubsub-source")
	run := func(subscription string) (int, string) {
		cmd := exec.Command(bin, "--check")
		cmd.Env = []string{"PUBSUB_EMULATOR_HOST=" + emu.Host, "PUBSUB_SUBSCRIPTION=" + subscription,
			"PUBSUB_DEAD_LETTER_TOPIC=" + topic}
		out, err := cmd.CombinedOutput()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return code, string(out)
	}
	code, out := run(sub)
	if code != 0 || !strings.Contains(out, "all 3 checks passed") || !strings.Contains(out, "emulator, no IAM") || strings.Contains(out, "serving") {
		t.Errorf("--check on the emulator: exit %d\n%s", code, out)
	}
	code, out = run(sub + "-missing")
	if code != 1 || !strings.Contains(out, "FAIL") || !strings.Contains(out, "create subscription") || !strings.Contains(out, "skipped") {
		t.Errorf("--check of a missing subscription: exit %d\n%s", code, out)
	}
	t.Logf("--check output for a missing subscription:\n%s", out)
}
