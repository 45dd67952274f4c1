// Package pubsubtest runs a real Pub/Sub emulator for tests: Google's Java emulator when it is
// installed (package google-cloud-cli-pubsub-emulator), else a pstest server process of ours
// (./pstestserver), always on a free 127.0.0.1 port and stopped by PID. It also creates topics and
// subscriptions (with dead-letter policy, ordering, exactly-once) and publishes.
//
// A test binary shares one emulator:
//
//	func TestMain(m *testing.M) { os.Exit(pubsubtest.Main(m)) }
//	func TestX(t *testing.T) { emu := pubsubtest.Shared(t); ... }
//
// Shared starts it on first use and sets PUBSUB_EMULATOR_HOST for the whole process, so clients built
// the ordinary way (pubsub.NewClient, the connector's Open) reach it. Tests that need a broker are
// skipped only when SKIP_BROKER_TESTS=1.
package pubsubtest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	vkit "cloud.google.com/go/pubsub/v2/apiv1"
	pb "cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	"google.golang.org/api/option"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/numaflow-connectors/sources/common/proctest"
)

// Project is the project every helper uses.
const Project = "test-project"

// Kinds of emulator.
const (
	KindJava   = "java"
	KindPstest = "pstest"
)

// Emulator is a running emulator process.
type Emulator struct {
	// Host is host:port for PUBSUB_EMULATOR_HOST.
	Host string
	// Kind is KindJava or KindPstest.
	Kind string
	proc *proctest.Process

	cpu proctest.TreeCPU // proc and its descendants, for CPUTime

	once sync.Once
	tc   *vkit.TopicAdminClient
	sc   *vkit.SubscriptionAdminClient
	cerr error
}

// skip reports whether broker tests are switched off (SKIP_BROKER_TESTS=1).
func skip() bool { return os.Getenv("SKIP_BROKER_TESTS") == "1" }

// javaEmulator returns the path of Google's emulator launcher, or "" when it is not installed.
func javaEmulator() string {
	if _, err := exec.LookPath("java"); err != nil {
		return ""
	}
	var roots []string
	if out, err := exec.Command("gcloud", "info", "--format=value(installation.sdk_root)").Output(); err == nil {
		roots = append(roots, strings.TrimSpace(string(out)))
	}
	if out, err := exec.Command("dpkg", "-L", "google-cloud-cli-pubsub-emulator").Output(); err == nil {
		for _, l := range strings.Split(string(out), "\n") {
			if strings.HasSuffix(l, "/bin/cloud-pubsub-emulator") {
				return l
			}
		}
	}
	roots = append(roots, "/usr/lib/google-cloud-sdk")
	for _, r := range roots {
		p := filepath.Join(r, "platform", "pubsub-emulator", "bin", "cloud-pubsub-emulator")
		if st, err := os.Stat(p); err == nil && !st.IsDir() {
			return p
		}
	}
	return ""
}

// Start starts an emulator for t and stops it when t ends; t is skipped when SKIP_BROKER_TESTS=1.
// PUBSUB_EMULATOR_HOST is not set: use Host, or Shared.
func Start(t testing.TB) *Emulator {
	t.Helper()
	if skip() {
		t.Skip("SKIP_BROKER_TESTS=1")
	}
	e, err := startE()
	if err != nil {
		t.Fatalf("starting the Pub/Sub emulator: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("output of the %s emulator:\n%s", e.Kind, e.proc.Output())
		}
		e.stop()
	})
	return e
}

// startE starts an emulator without a test; the caller must Stop it. The Java emulator is used when
// installed, unless PUBSUBTEST_EMULATOR=pstest.
func startE() (*Emulator, error) {
	if java := javaEmulator(); java != "" && os.Getenv("PUBSUBTEST_EMULATOR") != KindPstest {
		return startJava(java)
	}
	return startPstest()
}

// startJava starts the Java emulator on a free port. The port is free when picked, but the JVM takes
// seconds to bind it, and another process (any outgoing connection's ephemeral port) may take it
// first: the emulator then prints a BindException and keeps running without serving, so that is
// caught at once and a new port tried (seen in CI: one test lost a minute and failed).
func startJava(launcher string) (*Emulator, error) {
	var err error
	for range 3 {
		var port int
		if port, err = proctest.FreePortE(); err != nil {
			return nil, err
		}
		host := fmt.Sprintf("127.0.0.1:%d", port)
		var p *proctest.Process
		p, err = proctest.StartE(launcher, []string{"--host=127.0.0.1", fmt.Sprintf("--port=%d", port)}, proctest.Options{
			Env:     []string{"JAVA_TOOL_OPTIONS=-Xmx256m -XX:+UseSerialGC"},
			Timeout: 60 * time.Second,
			Ready:   proctest.HTTPReady("http://"+host+"/", ""),
			Abort:   "Address already in use",
		})
		if err == nil {
			return &Emulator{Host: host, Kind: KindJava, proc: p}, nil
		}
		if !errors.Is(err, proctest.ErrAborted) {
			return nil, err
		}
	}
	return nil, err
}

var (
	buildOnce sync.Once
	buildPath string
	buildErr  error
)

// pstestServer builds ./pstestserver once per process and returns the binary.
func pstestServer() (string, error) {
	buildOnce.Do(func() {
		_, file, _, ok := runtime.Caller(0)
		if !ok {
			buildErr = errors.New("locating the pubsubtest sources")
			return
		}
		dir, err := os.MkdirTemp("", "pstestserver")
		if err != nil {
			buildErr = fmt.Errorf("creating a build dir: %w", err)
			return
		}
		buildPath = filepath.Join(dir, "pstestserver")
		cmd := exec.Command("go", "build", "-o", buildPath, "./pstestserver")
		cmd.Dir = filepath.Dir(file)
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("building pstestserver: %w\n%s", err, out)
		}
	})
	return buildPath, buildErr
}

func startPstest() (*Emulator, error) {
	bin, err := pstestServer()
	if err != nil {
		return nil, err
	}
	port, err := proctest.FreePortE()
	if err != nil {
		return nil, err
	}
	host := fmt.Sprintf("127.0.0.1:%d", port)
	p, err := proctest.StartE(bin, []string{"-addr", host}, proctest.Options{
		Ready: func(ctx context.Context) error {
			var d net.Dialer
			c, err := d.DialContext(ctx, "tcp", host)
			if err != nil {
				return err
			}
			return c.Close()
		},
	})
	if err != nil {
		return nil, err
	}
	return &Emulator{Host: host, Kind: KindPstest, proc: p}, nil
}

// stop kills the emulator (by PID) and closes the helper clients. Idempotent.
func (e *Emulator) stop() {
	if e.tc != nil {
		_ = e.tc.Close()
		_ = e.sc.Close()
	}
	e.proc.Kill()
}

// Output is what the emulator printed so far.
func (e *Emulator) Output() string { return e.proc.Output() }

// CPUTime is the CPU time the emulator's processes (its launcher and the server it runs, found once
// per start) have used so far, for benchkit.Meter.Broker.
func (e *Emulator) CPUTime() time.Duration {
	return e.cpu.Of(e.proc.Cmd.Process.Pid)
}

var shared = &proctest.Shared[*Emulator]{
	Name: "pubsubtest",
	Start: func() (*Emulator, error) {
		e, err := startE()
		if err != nil {
			return nil, fmt.Errorf("starting the Pub/Sub emulator: %w", err)
		}
		if err := os.Setenv("PUBSUB_EMULATOR_HOST", e.Host); err != nil {
			e.stop()
			return nil, err
		}
		return e, nil
	},
	Stop: func(e *Emulator, failed bool) {
		if failed {
			fmt.Fprintf(os.Stderr, "output of the %s emulator:\n%s\n", e.Kind, lastLines(e.Output(), 80))
		}
		e.stop()
	},
}

// Shared returns the emulator shared by this test binary, starting it on first use and setting
// PUBSUB_EMULATOR_HOST to it; t is skipped when SKIP_BROKER_TESTS=1. The test binary must run its
// tests through Main, which stops it.
func Shared(t testing.TB) *Emulator {
	t.Helper()
	if skip() {
		t.Skip("SKIP_BROKER_TESTS=1")
	}
	return shared.Get(t)
}

// Main runs the tests through m (a *testing.M, or anything else that runs them) and stops the shared
// emulator, if one was started; it returns the tests' exit code. Use it from TestMain.
func Main(m interface{ Run() int }) int { return shared.Main(m) }

func lastLines(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// clientOptions reach the emulator without credentials (independent of PUBSUB_EMULATOR_HOST).
func (e *Emulator) clientOptions() []option.ClientOption {
	return []option.ClientOption{
		option.WithEndpoint(e.Host),
		option.WithoutAuthentication(),
		option.WithGRPCDialOption(grpc.WithTransportCredentials(insecure.NewCredentials())),
		option.WithTelemetryDisabled(),
	}
}

// Clients returns the helper's admin clients (shared, closed by Stop).
func (e *Emulator) Clients() (*vkit.TopicAdminClient, *vkit.SubscriptionAdminClient, error) {
	e.once.Do(func() {
		ctx := context.Background()
		e.tc, e.cerr = vkit.NewTopicAdminClient(ctx, e.clientOptions()...)
		if e.cerr != nil {
			return
		}
		e.sc, e.cerr = vkit.NewSubscriptionAdminClient(ctx, e.clientOptions()...)
		if e.cerr != nil {
			_ = e.tc.Close()
			e.tc = nil
		}
	})
	return e.tc, e.sc, e.cerr
}

func (e *Emulator) clients(t testing.TB) (*vkit.TopicAdminClient, *vkit.SubscriptionAdminClient) {
	t.Helper()
	tc, sc, err := e.Clients()
	if err != nil {
		t.Fatalf("creating emulator clients: %v", err)
	}
	return tc, sc
}

var seq atomic.Int64

// UniqueID returns a fresh resource ID starting with prefix.
func UniqueID(prefix string) string {
	return fmt.Sprintf("%s-%d-%d", prefix, time.Now().UnixNano()%1_000_000_000, seq.Add(1))
}

// topicName is the full name of topic id in Project.
func topicName(id string) string { return "projects/" + Project + "/topics/" + id }

// SubscriptionName is the full name of subscription id in Project.
func SubscriptionName(id string) string { return "projects/" + Project + "/subscriptions/" + id }

// CreateTopic creates a topic with a fresh ID starting with prefix, deleted when t ends, and returns
// its full name.
func (e *Emulator) CreateTopic(t testing.TB, prefix string) string {
	t.Helper()
	tc, _ := e.clients(t)
	name := topicName(UniqueID(prefix))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := tc.CreateTopic(ctx, &pb.Topic{Name: name}); err != nil {
		t.Fatalf("creating topic %s: %v", name, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = tc.DeleteTopic(ctx, &pb.DeleteTopicRequest{Topic: name})
	})
	return name
}

// Subscription describes a subscription to create.
type Subscription struct {
	Topic       string        // full topic name (required)
	AckDeadline time.Duration // default 10 s (Pub/Sub's minimum)
	Ordering    bool          // enable message ordering
	ExactlyOnce bool          // enable exactly-once delivery
	// DeadLetterTopic (full name) and MaxDeliveryAttempts (5-100) set the subscription's own
	// dead-letter policy; DeliveryAttempt is then filled in on every delivery.
	DeadLetterTopic     string
	MaxDeliveryAttempts int
}

// CreateSubscription creates a subscription with a fresh ID starting with prefix, deleted when t ends,
// and returns its full name.
func (e *Emulator) CreateSubscription(t testing.TB, prefix string, s Subscription) string {
	t.Helper()
	_, sc := e.clients(t)
	name := SubscriptionName(UniqueID(prefix))
	deadline := s.AckDeadline
	if deadline == 0 {
		deadline = 10 * time.Second
	}
	req := &pb.Subscription{
		Name: name, Topic: s.Topic, AckDeadlineSeconds: int32(deadline / time.Second),
		EnableMessageOrdering: s.Ordering, EnableExactlyOnceDelivery: s.ExactlyOnce,
	}
	if s.DeadLetterTopic != "" {
		req.DeadLetterPolicy = &pb.DeadLetterPolicy{DeadLetterTopic: s.DeadLetterTopic, MaxDeliveryAttempts: int32(s.MaxDeliveryAttempts)}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := sc.CreateSubscription(ctx, req); err != nil {
		t.Fatalf("creating subscription %s: %v", name, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = sc.DeleteSubscription(ctx, &pb.DeleteSubscriptionRequest{Subscription: name})
	})
	return name
}

// Publish publishes msgs to topic in one request and returns their message IDs.
func (e *Emulator) Publish(ctx context.Context, topic string, msgs ...*pb.PubsubMessage) ([]string, error) {
	tc, _, err := e.Clients()
	if err != nil {
		return nil, err
	}
	var ids []string
	for lo := 0; lo < len(msgs); lo += 1000 {
		hi := min(lo+1000, len(msgs))
		resp, err := tc.Publish(ctx, &pb.PublishRequest{Topic: topic, Messages: msgs[lo:hi]})
		if err != nil {
			return ids, fmt.Errorf("publishing to %s: %w", topic, err)
		}
		ids = append(ids, resp.GetMessageIds()...)
	}
	return ids, nil
}

// Drain pulls and acks what is available on sub until a pull comes back empty (each waits up to 1 s)
// or for at most 5 s, and returns it.
func (e *Emulator) Drain(ctx context.Context, sub string) ([]*pb.PubsubMessage, error) {
	_, sc, err := e.Clients()
	if err != nil {
		return nil, err
	}
	var out []*pb.PubsubMessage
	// Bounded: pstest keeps forwarding copies of a dead-lettered message, so the target may never be
	// empty.
	until := time.Now().Add(5 * time.Second)
	for time.Now().Before(until) {
		// A deadline, not a cancellation: the emulator answers an empty pull just before it, whereas
		// a cancelled pull stays registered there and swallows the next messages until their deadline.
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		resp, err := sc.Pull(pctx, &pb.PullRequest{Subscription: sub, MaxMessages: 1000})
		expired := pctx.Err() != nil
		cancel()
		if err != nil && expired && status.Code(err) == codes.DeadlineExceeded {
			return out, nil
		}
		if err != nil {
			return out, fmt.Errorf("pulling from %s: %w", sub, err)
		}
		if len(resp.GetReceivedMessages()) == 0 {
			return out, nil
		}
		ids := make([]string, 0, len(resp.GetReceivedMessages()))
		for _, rm := range resp.GetReceivedMessages() {
			out = append(out, rm.GetMessage())
			ids = append(ids, rm.GetAckId())
		}
		if err := sc.Acknowledge(ctx, &pb.AcknowledgeRequest{Subscription: sub, AckIds: ids}); err != nil {
			return out, fmt.Errorf("acknowledging on %s: %w", sub, err)
		}
	}
	return out, nil
}
