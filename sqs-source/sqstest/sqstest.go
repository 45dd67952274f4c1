// Package sqstest runs the fauxqs SQS emulator (tools/fauxqs, installed by `make deps`) on a free
// loopback port for tests, and creates queues on it. Tests that use it are skipped only when
// SKIP_BROKER_TESTS=1; a missing install fails them with the command that fixes it.
//
// One server per test:
//
//	srv := sqstest.Start(t)
//	url := srv.CreateQueue(t, sqstest.QueueName(t), nil)
//
// One server per test binary (faster when many tests need one):
//
//	func TestMain(m *testing.M) { sqstest.Main(m) }
//	... srv := sqstest.Shared(t)
package sqstest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"github.com/numaflow-connectors/sources/common/proctest"
)

// Region and credentials fauxqs accepts (it checks no signature).
const (
	Region    = "us-east-1"
	AccessKey = "test"
	SecretKey = "test"
)

// Server is a running fauxqs.
type Server struct {
	// Endpoint is the base URL, http://127.0.0.1:PORT.
	Endpoint string
	Port     int
	proc     *proctest.Process
	cpu      proctest.TreeCPU // the node process and any it starts, for CPUTime
	client   *sqs.Client
}

// Start runs fauxqs for the test t; it is stopped when t ends.
func Start(t testing.TB) *Server {
	t.Helper()
	skipIfDisabled(t)
	launcher, err := fauxqsLauncher()
	if err != nil {
		t.Fatal(err)
	}
	port := proctest.FreePort(t)
	p := proctest.Start(t, "node", []string{launcher}, opts(port))
	return newServer(port, p)
}

var shared = &proctest.Shared[*Server]{
	Name: "sqstest",
	Start: func() (*Server, error) {
		launcher, err := fauxqsLauncher()
		if err != nil {
			return nil, err
		}
		port, err := proctest.FreePortE()
		if err != nil {
			return nil, err
		}
		p, err := proctest.StartE("node", []string{launcher}, opts(port))
		if err != nil {
			return nil, err
		}
		return newServer(port, p), nil
	},
	Stop: func(s *Server, _ bool) { s.proc.Kill() },
}

// Main runs the test binary's tests with one shared fauxqs (started on first use by Shared) and stops
// it afterwards. Call it from TestMain (func TestMain(m *testing.M) { sqstest.Main(m) }); the testing
// package exits with the tests' status when TestMain returns.
func Main(m *testing.M) { shared.Main(m) }

// Shared returns the test binary's fauxqs, starting it on first use. The test binary must call Main
// from TestMain. Use a fresh queue per test (QueueName).
func Shared(t testing.TB) *Server {
	t.Helper()
	skipIfDisabled(t)
	return shared.Get(t)
}

func skipIfDisabled(t testing.TB) {
	if os.Getenv("SKIP_BROKER_TESTS") == "1" {
		t.Skip("SKIP_BROKER_TESTS=1: not starting fauxqs")
	}
}

func opts(port int) proctest.Options {
	endpoint := "http://127.0.0.1:" + strconv.Itoa(port)
	return proctest.Options{
		Env:     []string{"FAUXQS_PORT=" + strconv.Itoa(port), "FAUXQS_LOGGER=false"},
		Timeout: 30 * time.Second,
		Ready:   proctest.HTTPReady(endpoint+"/health", "ok"),
	}
}

func newServer(port int, p *proctest.Process) *Server {
	s := &Server{Endpoint: "http://127.0.0.1:" + strconv.Itoa(port), Port: port, proc: p}
	s.client = sqs.NewFromConfig(s.AWSConfig())
	return s
}

// fauxqsLauncher returns the path of tools/fauxqs/launch.mjs, or an error saying to run `make deps` when
// fauxqs is not installed.
func fauxqsLauncher() (string, error) {
	root, err := repoRoot()
	if err != nil {
		return "", err
	}
	dir := filepath.Join(root, "tools", "fauxqs")
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "fauxqs", "package.json")); err != nil {
		return "", fmt.Errorf("fauxqs is not installed in %s: run `make deps` (or `npm ci --prefix tools/fauxqs`)", dir)
	}
	return filepath.Join(dir, "launch.mjs"), nil
}

// repoRoot walks up from the working directory to the folder holding tools/fauxqs/package.json.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("finding the repository root: %w", err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "tools", "fauxqs", "package.json")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("finding the repository root: no tools/fauxqs/package.json above the working directory")
		}
		dir = parent
	}
}

// Kill stops the server at once (kill -9), e.g. to test an outage. Idempotent.
func (s *Server) Kill() { s.proc.Kill() }

// CPUTime is the CPU time fauxqs's processes have used so far, for benchkit.Meter.Broker.
func (s *Server) CPUTime() time.Duration { return s.cpu.Of(s.proc.Cmd.Process.Pid) }

// AWSConfig is an SDK configuration for this server: region us-east-1, static credentials test/test,
// BaseEndpoint the server, no SDK retries. Use it with sqs.NewFromConfig.
func (s *Server) AWSConfig() aws.Config {
	return aws.Config{
		Region:           Region,
		Credentials:      credentials.NewStaticCredentialsProvider(AccessKey, SecretKey, ""),
		BaseEndpoint:     aws.String(s.Endpoint),
		RetryMaxAttempts: 1,
	}
}

// Env returns the environment variables that point the AWS SDK (in a connector process, or in
// config.LoadDefaultConfig) at this server.
func (s *Server) Env() []string {
	return []string{
		"AWS_REGION=" + Region,
		"AWS_ACCESS_KEY_ID=" + AccessKey,
		"AWS_SECRET_ACCESS_KEY=" + SecretKey,
		"AWS_ENDPOINT_URL_SQS=" + s.Endpoint,
		"AWS_EC2_METADATA_DISABLED=true",
	}
}

// Client is an SQS client for this server.
func (s *Server) Client() *sqs.Client { return s.client }

// QueueName returns a queue name unique to the test (at most 70 characters, no .fifo suffix).
func QueueName(t testing.TB) string {
	return proctest.Name(t, 60)
}

// CreateQueue creates a standard queue (or a FIFO one when name ends in .fifo) with the given
// attributes and returns its URL. It is deleted when the test ends.
func (s *Server) CreateQueue(t testing.TB, name string, attrs map[string]string) string {
	t.Helper()
	all := map[string]string{}
	for k, v := range attrs {
		all[k] = v
	}
	if strings.HasSuffix(name, ".fifo") {
		all[string(types.QueueAttributeNameFifoQueue)] = "true"
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := s.client.CreateQueue(ctx, &sqs.CreateQueueInput{QueueName: &name, Attributes: all})
	if err != nil {
		t.Fatalf("creating queue %s: %v", name, err)
	}
	url := *out.QueueUrl
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, _ = s.client.DeleteQueue(ctx, &sqs.DeleteQueueInput{QueueUrl: &url})
	})
	return url
}

// CreateFIFOQueue creates a FIFO queue named name + ".fifo" (content-based deduplication off: send
// with a deduplication id) and returns its URL.
func (s *Server) CreateFIFOQueue(t testing.TB, name string, attrs map[string]string) string {
	t.Helper()
	return s.CreateQueue(t, strings.TrimSuffix(name, ".fifo")+".fifo", attrs)
}

// QueueWithDLQ is a queue and its dead-letter queue.
type QueueWithDLQ struct {
	URL, DLQURL string
}

// CreateQueueWithDLQ creates a dead-letter queue and a queue whose redrive policy moves a message to
// it after maxReceiveCount receives (0: no redrive policy, the DLQ is only a target for the
// connector's own dead-lettering). Both are FIFO when fifo is set.
func (s *Server) CreateQueueWithDLQ(t testing.TB, name string, fifo bool, maxReceiveCount int, attrs map[string]string) QueueWithDLQ {
	t.Helper()
	create := s.CreateQueue
	if fifo {
		create = s.CreateFIFOQueue
	}
	dlq := create(t, name+"-dlq", nil)
	all := map[string]string{}
	for k, v := range attrs {
		all[k] = v
	}
	if maxReceiveCount > 0 {
		arn := s.queueARN(t, dlq)
		all[string(types.QueueAttributeNameRedrivePolicy)] = fmt.Sprintf(`{"deadLetterTargetArn":%q,"maxReceiveCount":"%d"}`, arn, maxReceiveCount)
	}
	return QueueWithDLQ{URL: create(t, name, all), DLQURL: dlq}
}

// queueARN returns the ARN of a queue.
func (s *Server) queueARN(t testing.TB, url string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := s.client.GetQueueAttributes(ctx, &sqs.GetQueueAttributesInput{
		QueueUrl: &url, AttributeNames: []types.QueueAttributeName{types.QueueAttributeNameQueueArn},
	})
	if err != nil {
		t.Fatalf("getting the ARN of %s: %v", url, err)
	}
	return out.Attributes[string(types.QueueAttributeNameQueueArn)]
}

// Counts returns a queue's visible, in-flight and delayed message counts (exact and instant on
// fauxqs, unlike AWS).
func (s *Server) Counts(ctx context.Context, url string) (visible, inFlight, delayed int, err error) {
	out, err := s.client.GetQueueAttributes(ctx, &sqs.GetQueueAttributesInput{
		QueueUrl: &url, AttributeNames: []types.QueueAttributeName{types.QueueAttributeNameAll},
	})
	if err != nil {
		return 0, 0, 0, fmt.Errorf("getting attributes of %s: %w", url, err)
	}
	get := func(n types.QueueAttributeName) int {
		v, _ := strconv.Atoi(out.Attributes[string(n)])
		return v
	}
	return get(types.QueueAttributeNameApproximateNumberOfMessages),
		get(types.QueueAttributeNameApproximateNumberOfMessagesNotVisible),
		get(types.QueueAttributeNameApproximateNumberOfMessagesDelayed), nil
}
