package sqssource

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"github.com/numaflow-connectors/sources/common/source"
	"github.com/numaflow-connectors/sources/sqs-source/sqstest"
)

// With SQS_WAIT_TIME=0s an empty answer comes back at once: the driver pauses before it returns
// (until its context ends), and returns messages without a pause.
func TestShortPollPausesWhenEmpty(t *testing.T) {
	var out *sqs.ReceiveMessageOutput
	f := &fakeSQS{receive: func(*sqs.ReceiveMessageInput) (*sqs.ReceiveMessageOutput, error) { return out, nil }}
	d := newTestDriver(t, func(c *Config) { c.WaitTime = 0 }, f)

	out = &sqs.ReceiveMessageOutput{}
	start := time.Now()
	if msgs, err := d.Receive(context.Background(), 10); msgs != nil || err != nil {
		t.Fatalf("empty receive: %v, %v", msgs, err)
	}
	if took := time.Since(start); took < shortPollPause-50*time.Millisecond {
		t.Errorf("empty short poll returned after %s, want a pause of %s", took, shortPollPause)
	}

	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(100*time.Millisecond, cancel)
	start = time.Now()
	if _, err := d.Receive(ctx, 10); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > 600*time.Millisecond {
		t.Errorf("paused short poll returned %s after its context ended", took-100*time.Millisecond)
	}

	out = &sqs.ReceiveMessageOutput{Messages: []types.Message{{MessageId: aws.String("m"), ReceiptHandle: aws.String("rh"), Body: aws.String("b")}}}
	start = time.Now()
	if msgs, err := d.Receive(context.Background(), 10); len(msgs) != 1 || err != nil {
		t.Fatalf("receive: %v, %v", msgs, err)
	}
	if took := time.Since(start); took > 500*time.Millisecond {
		t.Errorf("short poll with a message returned after %s", took)
	}
}

// An idle queue read with SQS_WAIT_TIME=0s through the adapter costs about one ReceiveMessage a
// second, not as many as the broker can answer.
func TestShortPollingIdleQueueAgainstFauxqs(t *testing.T) {
	t.Parallel()
	srv := sqstest.Shared(t)
	url := srv.CreateQueue(t, sqstest.QueueName(t), nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cfg := testConfig(url, "")
	cfg.WaitTime = 0
	counter := &requestCounter{}
	d := openAt(ctx, t, srv, cfg, counter)
	s, err := source.New(d, source.Options{ReadBatchSize: 100}, slog.New(slog.DiscardHandler), nil)
	if err != nil {
		t.Fatal(err)
	}
	const idle = 2500 * time.Millisecond
	time.Sleep(idle) // the quantity measured is the request rate over this time
	n := counter.snapshot()["ReceiveMessage"]
	if err := s.Close(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d ReceiveMessage calls in %s on an idle queue with SQS_WAIT_TIME=0s", n, idle)
	if n > 6 {
		t.Errorf("%d ReceiveMessage calls in %s on an idle queue, want at most 6 (about one a second)", n, idle)
	}
	if n == 0 {
		t.Error("no ReceiveMessage call at all")
	}

	// A message sent meanwhile is still read.
	send(ctx, t, srv, url, "hello", nil)
	if msgs := receiveAll(ctx, t, d, 1); string(msgs[0].Payload) != "hello" {
		t.Errorf("payload %q", msgs[0].Payload)
	}
}
