package sqssource

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"github.com/aws/smithy-go"

	"github.com/numaflow-connectors/sources/common/source"
)

// fifoFake is a small FIFO queue with SQS's group rules that fauxqs does not have: one receive
// returns several messages of a group in order, and a group is locked while any of its messages is
// in flight. Visibility timeouts never expire (only a change to 0 releases a message).
type fifoFake struct {
	sqsAPI
	mu       sync.Mutex
	msgs     []*fakeMsg
	receipts int

	// SQS's receive attempts: a receive with a known ReceiveRequestAttemptId gets the same answer
	// again. drop > 0 loses the next answers after taking their messages, as a cut connection does.
	answers  map[string]*sqs.ReceiveMessageOutput
	drop     int
	attempts []string // the attempt id of every receive, in order
}

type fakeMsg struct {
	id, group, body string
	receipt         string // "" when visible
	receives        int
}

func (f *fifoFake) ReceiveMessage(ctx context.Context, in *sqs.ReceiveMessageInput, _ ...func(*sqs.Options)) (*sqs.ReceiveMessageOutput, error) {
	id := aws.ToString(in.ReceiveRequestAttemptId)
	f.mu.Lock()
	f.attempts = append(f.attempts, id)
	if out, ok := f.answers[id]; ok {
		f.mu.Unlock()
		return out, nil
	}
	f.mu.Unlock()
	for {
		if out := f.take(int(in.MaxNumberOfMessages)); len(out.Messages) > 0 {
			f.mu.Lock()
			defer f.mu.Unlock()
			if id != "" {
				if f.answers == nil {
					f.answers = map[string]*sqs.ReceiveMessageOutput{}
				}
				f.answers[id] = out
			}
			if f.drop > 0 {
				f.drop--
				return nil, errors.New("read tcp 127.0.0.1:40000->127.0.0.1:4566: read: connection reset by peer")
			}
			return out, nil
		}
		select { // stands in for the long poll
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}

func (f *fifoFake) take(max int) *sqs.ReceiveMessageOutput {
	f.mu.Lock()
	defer f.mu.Unlock()
	locked := map[string]bool{}
	for _, m := range f.msgs {
		if m.receipt != "" {
			locked[m.group] = true
		}
	}
	out := &sqs.ReceiveMessageOutput{}
	for _, m := range f.msgs {
		if len(out.Messages) == max {
			break
		}
		if locked[m.group] || m.receipt != "" {
			continue
		}
		f.receipts++
		m.receipt = "rh-" + strconv.Itoa(f.receipts)
		m.receives++
		out.Messages = append(out.Messages, types.Message{
			MessageId: aws.String(m.id), ReceiptHandle: aws.String(m.receipt), Body: aws.String(m.body),
			Attributes: map[string]string{"MessageGroupId": m.group, "ApproximateReceiveCount": strconv.Itoa(m.receives),
				"SentTimestamp": strconv.FormatInt(time.Now().UnixMilli(), 10)},
		})
	}
	return out
}

func (f *fifoFake) find(receipt string) *fakeMsg {
	for _, m := range f.msgs {
		if m.receipt == receipt {
			return m
		}
	}
	return nil
}

func (f *fifoFake) DeleteMessageBatch(_ context.Context, in *sqs.DeleteMessageBatchInput, _ ...func(*sqs.Options)) (*sqs.DeleteMessageBatchOutput, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := &sqs.DeleteMessageBatchOutput{}
	for _, e := range in.Entries {
		if m := f.find(*e.ReceiptHandle); m != nil {
			f.msgs = slices.DeleteFunc(f.msgs, func(x *fakeMsg) bool { return x == m })
		}
		out.Successful = append(out.Successful, types.DeleteMessageBatchResultEntry{Id: e.Id})
	}
	return out, nil
}

func (f *fifoFake) ChangeMessageVisibilityBatch(_ context.Context, in *sqs.ChangeMessageVisibilityBatchInput, _ ...func(*sqs.Options)) (*sqs.ChangeMessageVisibilityBatchOutput, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := &sqs.ChangeMessageVisibilityBatchOutput{}
	for _, e := range in.Entries {
		m := f.find(*e.ReceiptHandle)
		if m == nil {
			out.Failed = append(out.Failed, types.BatchResultErrorEntry{Id: e.Id, Code: aws.String("ReceiptHandleIsInvalid"), SenderFault: true})
			continue
		}
		if e.VisibilityTimeout == 0 {
			m.receipt = ""
		}
		out.Successful = append(out.Successful, types.ChangeMessageVisibilityBatchResultEntry{Id: e.Id})
	}
	return out, nil
}

func (f *fifoFake) GetQueueAttributes(context.Context, *sqs.GetQueueAttributesInput, ...func(*sqs.Options)) (*sqs.GetQueueAttributesOutput, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return &sqs.GetQueueAttributesOutput{Attributes: map[string]string{
		"ApproximateNumberOfMessages": strconv.Itoa(len(f.msgs)), "ApproximateNumberOfMessagesNotVisible": "0"}}, nil
}

// TestFIFOGroupOrderSurvivesNack runs the adapter over the driver on a FIFO queue that hands out a
// whole group at once: when a message is nacked, the later messages of its group that were received
// but not yet read must not overtake it.
func TestFIFOGroupOrderSurvivesNack(t *testing.T) {
	fake := &fifoFake{}
	const n = 6
	for i := 0; i < n; i++ {
		fake.msgs = append(fake.msgs, &fakeMsg{id: fmt.Sprintf("id-%d", i), group: "g", body: fmt.Sprintf("g-%d", i)})
	}
	cfg := validConfig()
	cfg.QueueURL = fifoURL
	d := newDriver(cfg, fake, nil)
	src, err := source.New(d, source.Options{ReadBatchSize: 10, ReleaseWait: 100 * time.Millisecond}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	defer func() {
		if err := src.Close(ctx); err != nil {
			t.Errorf("closing: %v", err)
		}
	}()
	p := inProc{src}

	var order []string
	nacked := false
	for len(order) < n {
		if ctx.Err() != nil {
			t.Fatalf("timed out with %v", order)
		}
		for _, m := range p.read(ctx, 1, 500*time.Millisecond) { // one at a time: the rest waits in the buffer
			body := string(m.Value())
			if body == "g-2" && !nacked {
				nacked = true
				p.nack(ctx, m)
				continue
			}
			order = append(order, body)
			p.ack(ctx, m)
		}
	}
	if want := []string{"g-0", "g-1", "g-2", "g-3", "g-4", "g-5"}; !slices.Equal(order, want) {
		t.Fatalf("group read in order %v after nacking g-2, want %v", order, want)
	}
	if !nacked {
		t.Fatal("g-2 was never read")
	}
}

// TestFIFOLostReceiveIsRetriedWithItsAttemptID loses the answer to a FIFO receive after SQS handed the
// group out. Without a retry of the same ReceiveRequestAttemptId the group stays invisible for a whole
// visibility timeout (forever in this fake); with it, the retry returns the same messages at once.
func TestFIFOLostReceiveIsRetriedWithItsAttemptID(t *testing.T) {
	fake := &fifoFake{drop: 1}
	const n = 4
	for i := 0; i < n; i++ {
		fake.msgs = append(fake.msgs, &fakeMsg{id: fmt.Sprintf("id-%d", i), group: "g", body: fmt.Sprintf("g-%d", i)})
	}
	cfg := validConfig()
	cfg.QueueURL = fifoURL
	d := newDriver(cfg, fake, nil)
	src, err := source.New(d, source.Options{ReadBatchSize: 10, ReleaseWait: 100 * time.Millisecond}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	defer func() {
		if err := src.Close(ctx); err != nil {
			t.Errorf("closing: %v", err)
		}
	}()
	p := inProc{src}
	var got []string
	for len(got) < n && ctx.Err() == nil {
		for _, m := range p.read(ctx, 10, 500*time.Millisecond) {
			got = append(got, string(m.Value()))
			p.ack(ctx, m)
		}
	}
	if want := []string{"g-0", "g-1", "g-2", "g-3"}; !slices.Equal(got, want) {
		t.Fatalf("read %v after a lost receive answer, want %v (the group stays hidden without a retry of its attempt)", got, want)
	}
	fake.mu.Lock()
	defer fake.mu.Unlock()
	if len(fake.attempts) < 2 || fake.attempts[0] == "" || fake.attempts[1] != fake.attempts[0] {
		t.Fatalf("attempt ids %v: want the first (lost) one sent again by the next receive", fake.attempts)
	}
	if d.attempts.pending() != 0 {
		t.Fatalf("%d lost attempts still waiting after the retry succeeded", d.attempts.pending())
	}
}

func TestAttemptsRetryOnlyWhatMayHaveDelivered(t *testing.T) {
	a := newAttempts()
	now := time.Now()
	first := a.next(10, now)
	if second := a.next(10, now); second.id == first.id {
		t.Fatal("two receives share an attempt id")
	}
	a.failed(first, &smithy.GenericAPIError{Code: "AccessDenied"}) // refused: nothing was delivered
	if a.pending() != 0 {
		t.Fatal("a refused receive was kept for a retry")
	}
	a.failed(first, errors.New("connection reset by peer"))
	if retry := a.next(5, now); retry.id == first.id {
		t.Fatal("a lost attempt for 10 messages was retried by a receive that may take only 5")
	}
	if retry := a.next(10, now.Add(time.Minute)); retry.id != first.id || retry.n != 10 {
		t.Fatalf("retry %+v, want the lost attempt %+v", retry, first)
	}
	a.failed(first, errors.New("timeout"))
	if retry := a.next(10, now.Add(attemptReuse)); retry.id == first.id {
		t.Fatal("an attempt older than SQS keeps it was retried")
	}
	if a.pending() != 0 {
		t.Fatal("an expired attempt was kept")
	}
}
