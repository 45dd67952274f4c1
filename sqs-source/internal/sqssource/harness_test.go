package sqssource

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"github.com/numaflow-connectors/sources/common/config"
	"github.com/numaflow-connectors/sources/common/server"
	"github.com/numaflow-connectors/sources/common/source"
	"github.com/numaflow-connectors/sources/common/source/drivertest"
	"github.com/numaflow-connectors/sources/sqs-source/sqstest"
)

func TestMain(m *testing.M) { sqstest.Main(m) }

// testVisibility is the short visibility timeout of the integration tests, so expiry tests are quick.
const testVisibility = 2 * time.Second

// openAt opens the driver through the real constructor path (LoadDefaultConfig, counting HTTP
// client, no SDK retries) pointed at fauxqs.
func openAt(ctx context.Context, t testing.TB, srv *sqstest.Server, cfg Config, counter *requestCounter) *driver {
	t.Helper()
	if err := cfg.Validate(); err != nil {
		t.Fatalf("invalid test config: %v", err)
	}
	env := &server.Env{Log: slog.New(slog.NewTextHandler(testLogWriter{t}, nil)), Platform: config.Platform{ReadBatchSize: 100}}
	d, err := open(ctx, &cfg, env, counter, []func(*awsconfig.LoadOptions) error{
		awsconfig.WithRegion(sqstest.Region),
		awsconfig.WithCredentialsProvider(credentials.NewStaticCredentialsProvider(sqstest.AccessKey, sqstest.SecretKey, "")),
		awsconfig.WithBaseEndpoint(srv.Endpoint),
	})
	if err != nil {
		t.Fatalf("opening driver: %v", err)
	}
	return d
}

type testLogWriter struct{ t testing.TB }

func (w testLogWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func testConfig(queueURL, dlqURL string) Config {
	return Config{
		QueueURL: queueURL, DeadLetterQueueURL: dlqURL, VisibilityTimeout: testVisibility,
		WaitTime: time.Second, MaxExtension: time.Hour, AssumeRoleSession: "numaflow-sqs-source",
	}
}

// harness is the conformance harness: a fresh queue and dead-letter queue per test.
type harness struct {
	t    *testing.T
	srv  *sqstest.Server
	fifo bool
	q    sqstest.QueueWithDLQ
	seq  int
	dead []drivertest.DeadLetter
}

func newHarnessOf(fifo bool) drivertest.NewHarness {
	return func(ctx context.Context, t *testing.T) (drivertest.Harness, error) {
		srv := sqstest.Shared(t)
		h := &harness{t: t, srv: srv, fifo: fifo}
		h.q = srv.CreateQueueWithDLQ(t, sqstest.QueueName(t), fifo, 0, nil)
		return h, nil
	}
}

func (h *harness) MakeDriver(ctx context.Context) (source.Driver, error) {
	return openAt(ctx, h.t, h.srv, testConfig(h.q.URL, h.q.DLQURL), nil), nil
}

func (h *harness) MakeMissingDriver(ctx context.Context) (source.Driver, error) {
	name := "missing-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	if h.fifo {
		name += fifoSuffix
	}
	missing := h.q.URL[:strings.LastIndex(h.q.URL, "/")+1] + name
	return openAt(ctx, h.t, h.srv, testConfig(missing, ""), nil), nil
}

func (h *harness) Publish(ctx context.Context, msgs []drivertest.Publication) error {
	for _, m := range msgs {
		h.seq++
		in := &sqs.SendMessageInput{QueueUrl: &h.q.URL, MessageBody: aws.String(string(m.Payload))}
		if len(m.Headers) > 0 {
			in.MessageAttributes = map[string]types.MessageAttributeValue{}
			for k, v := range m.Headers {
				in.MessageAttributes[k] = types.MessageAttributeValue{DataType: aws.String("String"), StringValue: aws.String(v)}
			}
		}
		if h.fifo {
			group := m.Key
			if group == "" {
				group = fmt.Sprintf("g-%d", h.seq) // unkeyed: no ordering constraint between messages
			}
			in.MessageGroupId = &group
			in.MessageDeduplicationId = aws.String(fmt.Sprintf("d-%d", h.seq))
		}
		if _, err := h.srv.Client().SendMessage(ctx, in); err != nil {
			return fmt.Errorf("publishing to %s: %w", h.q.URL, err)
		}
	}
	return nil
}

// DeadLettered drains the dead-letter queue into the harness's list and returns the list.
func (h *harness) DeadLettered(ctx context.Context) ([]drivertest.DeadLetter, error) {
	c := h.srv.Client()
	for {
		out, err := c.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{QueueUrl: &h.q.DLQURL, MaxNumberOfMessages: 10,
			MessageAttributeNames: []string{"All"}})
		if err != nil {
			return nil, fmt.Errorf("receiving from %s: %w", h.q.DLQURL, err)
		}
		if len(out.Messages) == 0 {
			return h.dead, nil
		}
		for _, m := range out.Messages {
			h.dead = append(h.dead, drivertest.DeadLetter{
				Payload: []byte(aws.ToString(m.Body)),
				Reason:  aws.ToString(m.MessageAttributes[AttrDeadLetterReason].StringValue),
			})
			if _, err := c.DeleteMessage(ctx, &sqs.DeleteMessageInput{QueueUrl: &h.q.DLQURL, ReceiptHandle: m.ReceiptHandle}); err != nil {
				return nil, fmt.Errorf("deleting from %s: %w", h.q.DLQURL, err)
			}
		}
	}
}

func (h *harness) Capabilities() drivertest.Capabilities {
	return drivertest.Capabilities{
		Keys: h.fifo, Headers: true, DeadLetter: true,
		Redelivery: testVisibility + 3*time.Second,
		MaxPayload: 256 << 10,
		Binary:     false, // SQS bodies are Unicode text
		Backlog:    true,
	}
}

func (h *harness) Close() {} // the queues are deleted by sqstest at the end of the test

func TestConformance(t *testing.T) {
	if testing.Short() {
		t.Skip("conformance suite against fauxqs skipped in -short mode")
	}
	drivertest.Run(t, newHarnessOf(false))
}

func TestConformanceFIFO(t *testing.T) {
	if testing.Short() {
		t.Skip("conformance suite against fauxqs skipped in -short mode")
	}
	drivertest.Run(t, newHarnessOf(true))
}
