package sqssource

import (
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"github.com/aws/smithy-go"

	"github.com/numaflow-connectors/sources/common/proctest"
	"github.com/numaflow-connectors/sources/common/source/drivertest"
	"github.com/numaflow-connectors/sources/sqs-source/sqstest"
)

func denied() error {
	return &smithy.GenericAPIError{Code: "AccessDenied", Message: "not authorized", Fault: smithy.FaultClient}
}

func invalid(code string) error {
	return &smithy.GenericAPIError{Code: code, Message: "refused", Fault: smithy.FaultClient}
}

// allowedSQS answers every probe as SQS answers an allowed caller.
func allowedSQS() *fakeSQS {
	return &fakeSQS{
		attrs: func(*sqs.GetQueueAttributesInput) (*sqs.GetQueueAttributesOutput, error) {
			return &sqs.GetQueueAttributesOutput{}, nil
		},
		receive: func(in *sqs.ReceiveMessageInput) (*sqs.ReceiveMessageOutput, error) {
			if in.WaitTimeSeconds <= 20 || in.VisibilityTimeout != 0 {
				panic("the receive probe could receive a message")
			}
			return nil, invalid("AWS.SimpleQueueService.InvalidParameterValue")
		},
		del: func(in *sqs.DeleteMessageBatchInput) (*sqs.DeleteMessageBatchOutput, error) {
			return &sqs.DeleteMessageBatchOutput{Failed: []types.BatchResultErrorEntry{{Id: in.Entries[0].Id,
				Code: aws.String("ReceiptHandleIsInvalid"), SenderFault: true}}}, nil
		},
		vis: func(in *sqs.ChangeMessageVisibilityBatchInput) (*sqs.ChangeMessageVisibilityBatchOutput, error) {
			return nil, invalid("ReceiptHandleIsInvalid")
		},
		send: func(in *sqs.SendMessageInput) (*sqs.SendMessageOutput, error) {
			if aws.ToString(in.MessageBody) != "" {
				panic("the send probe could send a message")
			}
			return nil, invalid("MissingParameter")
		},
	}
}

func TestPreflightProbes(t *testing.T) {
	const dlq = "https://sqs.us-east-1.amazonaws.com/123456789012/orders-dlq"
	withDLQ := func(c *Config) { c.DeadLetterQueueURL = dlq }
	queueCheck := "queue reachable (sqs:GetQueueAttributes) " + stdURL
	dlqCheck := "dead-letter queue reachable (sqs:GetQueueAttributes) " + dlq

	got := drivertest.Outcomes(newTestDriver(t, withDLQ, allowedSQS()).Preflight(context.Background()))
	if len(got) != 6 {
		t.Fatalf("%d checks %v, want 6", len(got), got)
	}
	for name, o := range got {
		if o != "pass" {
			t.Errorf("allowed caller: %s: %s", name, o)
		}
	}

	// Each permission missing alone fails its own check, naming what to grant.
	for _, tc := range []struct {
		check string
		deny  func(f *fakeSQS)
	}{
		{"sqs:ReceiveMessage", func(f *fakeSQS) {
			f.receive = func(*sqs.ReceiveMessageInput) (*sqs.ReceiveMessageOutput, error) { return nil, denied() }
		}},
		{"sqs:DeleteMessage (acks)", func(f *fakeSQS) {
			f.del = func(*sqs.DeleteMessageBatchInput) (*sqs.DeleteMessageBatchOutput, error) { return nil, denied() }
		}},
		{"sqs:ChangeMessageVisibility (nacks, leases)", func(f *fakeSQS) {
			f.vis = func(*sqs.ChangeMessageVisibilityBatchInput) (*sqs.ChangeMessageVisibilityBatchOutput, error) {
				return nil, denied()
			}
		}},
		{"sqs:SendMessage on the dead-letter queue", func(f *fakeSQS) {
			f.send = func(*sqs.SendMessageInput) (*sqs.SendMessageOutput, error) { return nil, denied() }
		}},
	} {
		f := allowedSQS()
		tc.deny(f)
		got := drivertest.Outcomes(newTestDriver(t, withDLQ, f).Preflight(context.Background()))
		for name, o := range got {
			want := "pass"
			if name == tc.check {
				want = "fail"
			}
			if !strings.HasPrefix(o, want) {
				t.Errorf("%s denied: %s: %s, want %s", tc.check, name, o, want)
			}
		}
		if !strings.Contains(got[tc.check], "grant "+strings.Fields(tc.check)[0]) || !strings.Contains(got[tc.check], "iam-policy.json") {
			t.Errorf("%s denied: fix %q does not say what to grant", tc.check, got[tc.check])
		}
	}

	// A missing queue fails the first check and skips the rest.
	f := allowedSQS()
	f.attrs = func(*sqs.GetQueueAttributesInput) (*sqs.GetQueueAttributesOutput, error) {
		return nil, invalid("AWS.SimpleQueueService.NonExistentQueue")
	}
	got = drivertest.Outcomes(newTestDriver(t, withDLQ, f).Preflight(context.Background()))
	if !strings.HasPrefix(got[queueCheck], "fail: create the queue") || got["sqs:ReceiveMessage"] != "skipped" || got[dlqCheck] != "skipped" {
		t.Errorf("missing queue: %v", got)
	}
	if calls := f.calls; len(calls) != 1 {
		t.Errorf("missing queue: calls %v, want only the GetQueueAttributes", calls)
	}
}

// Against fauxqs: every check passes, and the queue and its dead-letter queue are exactly as before
// (nothing received, hidden, deleted or sent). A stopped broker fails the first check in bounded time.
func TestPreflightAgainstFauxqs(t *testing.T) {
	srv := sqstest.Shared(t)
	q := srv.CreateQueueWithDLQ(t, sqstest.QueueName(t), false, 5, nil)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for i := range 3 {
		if _, err := srv.Client().SendMessage(ctx, &sqs.SendMessageInput{QueueUrl: &q.URL, MessageBody: aws.String("m" + string(rune('0'+i)))}); err != nil {
			t.Fatal(err)
		}
	}
	counts := func(url string) [3]int {
		v, f, d, err := srv.Counts(ctx, url)
		if err != nil {
			t.Fatal(err)
		}
		return [3]int{v, f, d}
	}
	before, beforeDLQ := counts(q.URL), counts(q.DLQURL)
	d := openAt(ctx, t, srv, testConfig(q.URL, q.DLQURL), nil)
	for name, o := range drivertest.Outcomes(d.Preflight(ctx)) {
		if o != "pass" {
			t.Errorf("%s: %s", name, o)
		}
	}
	if after, afterDLQ := counts(q.URL), counts(q.DLQURL); after != before || afterDLQ != beforeDLQ {
		t.Fatalf("the checks changed the queues: visible/in flight/delayed %v -> %v, dead-letter queue %v -> %v", before, after, beforeDLQ, afterDLQ)
	}

	down := sqstest.Start(t)
	url := down.CreateQueue(t, sqstest.QueueName(t), nil)
	down.Kill()
	d = openAt(ctx, t, down, testConfig(url, ""), nil)
	start := time.Now()
	got := drivertest.Outcomes(d.Preflight(ctx))
	if took := time.Since(start); took > 30*time.Second {
		t.Errorf("checks against a stopped broker took %s", took)
	}
	if o := got["queue reachable (sqs:GetQueueAttributes) "+url]; !strings.HasPrefix(o, "fail: check the network") || got["sqs:ReceiveMessage"] != "skipped" {
		t.Errorf("stopped broker: %v", got)
	}
}

// `sqs-source --check` prints the table and exits 0 when everything passes, 1 when the broker is
// down, without starting to serve.
func TestCheckFlag(t *testing.T) {
	srv := sqstest.Shared(t)
	url := srv.CreateQueue(t, sqstest.QueueName(t), nil)
	bin := proctest.Build(t, filepath.Join("..", ".."), "sqs-source")
	run := func(env []string) (int, string) {
		cmd := exec.Command(bin, "--check")
		cmd.Env = env
		out, err := cmd.CombinedOutput()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return code, string(out)
	}
	code, out := run(append(srv.Env(), "SQS_QUEUE_URL="+url))
	if code != 0 || !strings.Contains(out, "all 4 checks passed") || strings.Contains(out, "serving") {
		t.Errorf("--check against fauxqs: exit %d\n%s", code, out)
	}
	code, out = run(append(srv.Env(), "SQS_QUEUE_URL="+url+"-missing"))
	if code != 1 || !strings.Contains(out, "FAIL") || !strings.Contains(out, "create the queue") {
		t.Errorf("--check of a missing queue: exit %d\n%s", code, out)
	}
}
