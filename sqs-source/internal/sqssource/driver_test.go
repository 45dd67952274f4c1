package sqssource

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"

	"github.com/numaflow-connectors/sources/common/source"
)

// fakeSQS implements sqsAPI; a call a test did not set up panics, which fails the test.
type fakeSQS struct {
	mu       sync.Mutex
	receive  func(*sqs.ReceiveMessageInput) (*sqs.ReceiveMessageOutput, error)
	del      func(*sqs.DeleteMessageBatchInput) (*sqs.DeleteMessageBatchOutput, error)
	vis      func(*sqs.ChangeMessageVisibilityBatchInput) (*sqs.ChangeMessageVisibilityBatchOutput, error)
	attrs    func(*sqs.GetQueueAttributesInput) (*sqs.GetQueueAttributesOutput, error)
	send     func(*sqs.SendMessageInput) (*sqs.SendMessageOutput, error)
	delOne   func(*sqs.DeleteMessageInput) (*sqs.DeleteMessageOutput, error)
	calls    []string
	lastSend *sqs.SendMessageInput
}

func (f *fakeSQS) record(op string) {
	f.mu.Lock()
	f.calls = append(f.calls, op)
	f.mu.Unlock()
}

func (f *fakeSQS) ReceiveMessage(_ context.Context, in *sqs.ReceiveMessageInput, _ ...func(*sqs.Options)) (*sqs.ReceiveMessageOutput, error) {
	f.record("ReceiveMessage")
	return f.receive(in)
}

func (f *fakeSQS) DeleteMessageBatch(_ context.Context, in *sqs.DeleteMessageBatchInput, _ ...func(*sqs.Options)) (*sqs.DeleteMessageBatchOutput, error) {
	f.record("DeleteMessageBatch")
	return f.del(in)
}

func (f *fakeSQS) ChangeMessageVisibilityBatch(_ context.Context, in *sqs.ChangeMessageVisibilityBatchInput, _ ...func(*sqs.Options)) (*sqs.ChangeMessageVisibilityBatchOutput, error) {
	f.record("ChangeMessageVisibilityBatch")
	return f.vis(in)
}

func (f *fakeSQS) GetQueueAttributes(_ context.Context, in *sqs.GetQueueAttributesInput, _ ...func(*sqs.Options)) (*sqs.GetQueueAttributesOutput, error) {
	f.record("GetQueueAttributes")
	return f.attrs(in)
}

func (f *fakeSQS) SendMessage(_ context.Context, in *sqs.SendMessageInput, _ ...func(*sqs.Options)) (*sqs.SendMessageOutput, error) {
	f.record("SendMessage")
	f.lastSend = in
	return f.send(in)
}

func (f *fakeSQS) DeleteMessage(_ context.Context, in *sqs.DeleteMessageInput, _ ...func(*sqs.Options)) (*sqs.DeleteMessageOutput, error) {
	f.record("DeleteMessage")
	return f.delOne(in)
}

func newTestDriver(t *testing.T, mutate func(c *Config), f *fakeSQS) *driver {
	t.Helper()
	c := validConfig()
	if mutate != nil {
		mutate(&c)
	}
	if err := c.Validate(); err != nil {
		t.Fatalf("test config invalid: %v", err)
	}
	return newDriver(c, f, nil)
}

func handles(n int) []source.Handle {
	hs := make([]source.Handle, n)
	for i := range hs {
		hs[i] = "rh-" + strconv.Itoa(i)
	}
	return hs
}

// okDelete answers every entry of a DeleteMessageBatch as successful except those whose receipt
// handle is in failing, which fail with their code.
func okDelete(failing map[string]string) func(*sqs.DeleteMessageBatchInput) (*sqs.DeleteMessageBatchOutput, error) {
	return func(in *sqs.DeleteMessageBatchInput) (*sqs.DeleteMessageBatchOutput, error) {
		out := &sqs.DeleteMessageBatchOutput{}
		for _, e := range in.Entries {
			if code, bad := failing[*e.ReceiptHandle]; bad {
				out.Failed = append(out.Failed, types.BatchResultErrorEntry{Id: e.Id, Code: aws.String(code), Message: aws.String("failed"), SenderFault: code != "InternalError"})
			} else {
				out.Successful = append(out.Successful, types.DeleteMessageBatchResultEntry{Id: e.Id})
			}
		}
		return out, nil
	}
}

func TestCapabilities(t *testing.T) {
	d := newTestDriver(t, func(c *Config) {
		c.QueueURL = fifoURL
		c.VisibilityTimeout = 45 * time.Second
		c.MaxExtension = 2 * time.Hour
	}, &fakeSQS{})
	got := d.Capabilities()
	want := source.Capabilities{MaxReceive: 10, ReceiveConcurrency: 50, MaxAck: 10, AckConcurrency: 8,
		Lease: 45 * time.Second, MaxExtension: 2 * time.Hour, MaxNackDelay: 12 * time.Hour, OrderedKeys: true}
	if got != want {
		t.Fatalf("capabilities %+v, want %+v", got, want)
	}
	if newTestDriver(t, nil, &fakeSQS{}).Capabilities().OrderedKeys {
		t.Fatal("standard queue reports ordered keys")
	}
}

func TestReceiveRequestAndMapping(t *testing.T) {
	sent := time.UnixMilli(1_700_000_000_123)
	var got *sqs.ReceiveMessageInput
	f := &fakeSQS{receive: func(in *sqs.ReceiveMessageInput) (*sqs.ReceiveMessageOutput, error) {
		got = in
		return &sqs.ReceiveMessageOutput{Messages: []types.Message{
			{
				MessageId: aws.String("m-1"), ReceiptHandle: aws.String("rh-1"), Body: aws.String("payload"),
				Attributes: map[string]string{
					"SentTimestamp": strconv.FormatInt(sent.UnixMilli(), 10), "ApproximateReceiveCount": "3",
					"MessageGroupId": "g-1", "MessageDeduplicationId": "d-1",
				},
				MessageAttributes: map[string]types.MessageAttributeValue{
					"s":                {DataType: aws.String("String"), StringValue: aws.String("text")},
					"n":                {DataType: aws.String("Number.float"), StringValue: aws.String("1.5")},
					"b":                {DataType: aws.String("Binary"), BinaryValue: []byte{0, 1, 0xff}},
					"x-sqs-message-id": {DataType: aws.String("String"), StringValue: aws.String("spoofed")},
				},
			},
			{MessageId: aws.String("m-2"), ReceiptHandle: aws.String("rh-2"), Body: aws.String("")},
			{MessageId: aws.String(""), ReceiptHandle: aws.String("rh-3"), Body: aws.String("no id")},
		}}, nil
	}}
	d := newTestDriver(t, func(c *Config) {
		c.QueueURL = fifoURL
		c.WaitTime = 7 * time.Second
		c.VisibilityTimeout = 9 * time.Second
	}, f)
	before := time.Now()
	msgs, err := d.Receive(context.Background(), 500)
	if err != nil {
		t.Fatal(err)
	}
	if got.MaxNumberOfMessages != 10 || got.WaitTimeSeconds != 7 || got.VisibilityTimeout != 9 || *got.QueueUrl != fifoURL {
		t.Errorf("request max=%d wait=%d vis=%d url=%s, want 10 7 9 %s", got.MaxNumberOfMessages, got.WaitTimeSeconds, got.VisibilityTimeout, *got.QueueUrl, fifoURL)
	}
	if !reflect.DeepEqual(got.MessageSystemAttributeNames, []types.MessageSystemAttributeName{"All"}) || !reflect.DeepEqual(got.MessageAttributeNames, []string{"All"}) {
		t.Errorf("attribute names %v %v, want All and All", got.MessageSystemAttributeNames, got.MessageAttributeNames)
	}
	if len(msgs) != 2 {
		t.Fatalf("got %d messages, want 2 (the one without an id is skipped)", len(msgs))
	}
	m := msgs[0]
	if m.ID != "m-1" || m.Handle != "rh-1" || string(m.Payload) != "payload" || !m.EventTime.Equal(sent) || m.Deliveries != 3 {
		t.Errorf("message %+v", m)
	}
	if !reflect.DeepEqual(m.Keys, []string{"g-1"}) {
		t.Errorf("keys %v, want [g-1]", m.Keys)
	}
	wantHeaders := map[string]string{
		"s": "text", "n": "1.5", "b": base64.StdEncoding.EncodeToString([]byte{0, 1, 0xff}),
		"x-sqs-message-id": "m-1", "x-sqs-receive-count": "3", "x-sqs-sent-timestamp": "1700000000123",
		"x-sqs-group-id": "g-1", "x-sqs-deduplication-id": "d-1",
	}
	if !reflect.DeepEqual(m.Headers, wantHeaders) {
		t.Errorf("headers %v, want %v", m.Headers, wantHeaders)
	}
	if m2 := msgs[1]; m2.EventTime.Before(before) || m2.EventTime.After(time.Now()) || m2.Deliveries != 0 || m2.Keys != nil {
		t.Errorf("message without attributes: event time %v (want the receive time), deliveries %d, keys %v", m2.EventTime, m2.Deliveries, m2.Keys)
	}
}

func TestReceiveStandardQueueHasNoKeys(t *testing.T) {
	f := &fakeSQS{receive: func(in *sqs.ReceiveMessageInput) (*sqs.ReceiveMessageOutput, error) {
		if in.MaxNumberOfMessages != 3 {
			t.Errorf("max %d, want 3", in.MaxNumberOfMessages)
		}
		return &sqs.ReceiveMessageOutput{Messages: []types.Message{{MessageId: aws.String("m"), ReceiptHandle: aws.String("r"), Body: aws.String("b"),
			Attributes: map[string]string{"MessageGroupId": "g"}}}}, nil
	}}
	msgs, err := newTestDriver(t, nil, f).Receive(context.Background(), 3)
	if err != nil || len(msgs) != 1 {
		t.Fatalf("got %v, %v", msgs, err)
	}
	if msgs[0].Keys != nil || msgs[0].Headers["x-sqs-group-id"] != "g" {
		t.Fatalf("standard queue message keys %v headers %v: want no keys and the group header", msgs[0].Keys, msgs[0].Headers)
	}
}

func TestReceiveEmptyAndErrors(t *testing.T) {
	f := &fakeSQS{receive: func(*sqs.ReceiveMessageInput) (*sqs.ReceiveMessageOutput, error) {
		return &sqs.ReceiveMessageOutput{}, nil
	}}
	d := newTestDriver(t, nil, f)
	if msgs, err := d.Receive(context.Background(), 10); msgs != nil || err != nil {
		t.Fatalf("empty receive: %v, %v; want nil, nil", msgs, err)
	}
	f.receive = func(*sqs.ReceiveMessageInput) (*sqs.ReceiveMessageOutput, error) {
		return nil, &types.QueueDoesNotExist{Message: aws.String("gone")}
	}
	_, err := d.Receive(context.Background(), 10)
	if err == nil || !strings.Contains(err.Error(), "receiving from queue "+stdURL) {
		t.Fatalf("error %v: want it to name the queue", err)
	}
	if c := d.ErrorCode(err); c != source.NotFound {
		t.Fatalf("code %v, want not_found", c)
	}
}

func TestAckPartialFailure(t *testing.T) {
	f := &fakeSQS{del: okDelete(map[string]string{"rh-2": "ReceiptHandleIsInvalid", "rh-12": "InternalError"})}
	d := newTestDriver(t, nil, f)
	hs := handles(15)
	hs[5] = 42 // not a receipt handle: failed without being sent
	err := d.Ack(context.Background(), hs)
	var be *source.BatchError
	if !errors.As(err, &be) {
		t.Fatalf("error %v (%T), want *source.BatchError", err, err)
	}
	if len(be.Failed) != 3 || be.Failed[2] == nil || be.Failed[5] == nil || be.Failed[12] == nil {
		t.Fatalf("failed %v, want indexes 2, 5 and 12", be.Failed)
	}
	if c := source.Classify(d, be.Failed[2]); c != source.InvalidArgument {
		t.Errorf("invalid receipt handle classified %v, want invalid_argument", c)
	}
	if c := source.Classify(d, be.Failed[5]); c != source.InvalidArgument {
		t.Errorf("bad handle type classified %v, want invalid_argument", c)
	}
	if c := source.Classify(d, be.Failed[12]); c != source.Unavailable || !c.Transient() {
		t.Errorf("internal error classified %v, want unavailable", c)
	}
	if got := strings.Count(strings.Join(f.calls, ","), "DeleteMessageBatch"); got != 2 {
		t.Errorf("%d DeleteMessageBatch calls for 15 handles, want 2", got)
	}
}

func TestAckMissingResultIsFailure(t *testing.T) {
	f := &fakeSQS{del: func(in *sqs.DeleteMessageBatchInput) (*sqs.DeleteMessageBatchOutput, error) {
		return &sqs.DeleteMessageBatchOutput{Successful: []types.DeleteMessageBatchResultEntry{{Id: in.Entries[0].Id}}}, nil
	}}
	err := newTestDriver(t, nil, f).Ack(context.Background(), handles(2))
	var be *source.BatchError
	if !errors.As(err, &be) || len(be.Failed) != 1 || be.Failed[1] == nil {
		t.Fatalf("error %v, want entry 1 failed", err)
	}
}

func TestAckWholeCallFailure(t *testing.T) {
	throttled := &smithy.GenericAPIError{Code: "RequestThrottled", Message: "slow down"}
	f := &fakeSQS{del: func(*sqs.DeleteMessageBatchInput) (*sqs.DeleteMessageBatchOutput, error) { return nil, throttled }}
	d := newTestDriver(t, nil, f)
	err := d.Ack(context.Background(), handles(4))
	if !errors.Is(err, throttled) {
		t.Fatalf("error %v, want the call's error", err)
	}
	var be *source.BatchError
	if errors.As(err, &be) {
		t.Fatal("a call that failed as a whole must not be a BatchError")
	}
	if c := d.ErrorCode(err); c != source.Throttled {
		t.Fatalf("code %v, want throttled", c)
	}
	// Over two chunks, one failing whole: a BatchError naming only that chunk's handles.
	calls := 0
	f.del = func(in *sqs.DeleteMessageBatchInput) (*sqs.DeleteMessageBatchOutput, error) {
		calls++
		if calls == 2 {
			return nil, throttled
		}
		return okDelete(nil)(in)
	}
	err = d.Ack(context.Background(), handles(13))
	if !errors.As(err, &be) || len(be.Failed) != 3 || be.Failed[10] == nil || be.Failed[12] == nil {
		t.Fatalf("error %v, want a BatchError for handles 10-12", err)
	}
}

func TestAckEmpty(t *testing.T) {
	if err := newTestDriver(t, nil, &fakeSQS{}).Ack(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
}

func visOK(got *[]int32, failing map[string]string) func(*sqs.ChangeMessageVisibilityBatchInput) (*sqs.ChangeMessageVisibilityBatchOutput, error) {
	return func(in *sqs.ChangeMessageVisibilityBatchInput) (*sqs.ChangeMessageVisibilityBatchOutput, error) {
		out := &sqs.ChangeMessageVisibilityBatchOutput{}
		for _, e := range in.Entries {
			*got = append(*got, e.VisibilityTimeout)
			if code, bad := failing[*e.ReceiptHandle]; bad {
				out.Failed = append(out.Failed, types.BatchResultErrorEntry{Id: e.Id, Code: aws.String(code), SenderFault: true})
			} else {
				out.Successful = append(out.Successful, types.ChangeMessageVisibilityBatchResultEntry{Id: e.Id})
			}
		}
		return out, nil
	}
}

func TestNackVisibility(t *testing.T) {
	tests := []struct {
		delay time.Duration
		want  int32
	}{
		{0, 0}, {time.Millisecond, 1}, {1500 * time.Millisecond, 2}, {time.Minute, 60}, {24 * time.Hour, 43200},
	}
	for _, tt := range tests {
		var got []int32
		d := newTestDriver(t, nil, &fakeSQS{vis: visOK(&got, nil)})
		if err := d.Nack(context.Background(), handles(2), tt.delay); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, []int32{tt.want, tt.want}) {
			t.Errorf("nack delay %s set visibility %v, want %d", tt.delay, got, tt.want)
		}
	}
}

func TestNackNotInflightIsSuccessExtendIsNot(t *testing.T) {
	var got []int32
	failing := map[string]string{"rh-0": "AWS.SimpleQueueService.MessageNotInflight", "rh-1": "ReceiptHandleIsInvalid"}
	d := newTestDriver(t, nil, &fakeSQS{vis: visOK(&got, failing)})
	err := d.Nack(context.Background(), handles(3), time.Second)
	var be *source.BatchError
	if !errors.As(err, &be) || len(be.Failed) != 1 || be.Failed[1] == nil {
		t.Fatalf("nack error %v: want only the invalid handle (1) failed", err)
	}
	err = d.Extend(context.Background(), handles(3), 30*time.Second)
	if !errors.As(err, &be) || len(be.Failed) != 2 {
		t.Fatalf("extend error %v: want handles 0 and 1 failed", err)
	}
	if c := source.Classify(d, be.Failed[0]); c != source.FailedPrecondition {
		t.Errorf("extend of a message no longer in flight classified %v, want failed_precondition", c)
	}
	if got[len(got)-1] != 30 {
		t.Errorf("extend visibility %d, want 30", got[len(got)-1])
	}
}

func TestBacklog(t *testing.T) {
	f := &fakeSQS{attrs: func(in *sqs.GetQueueAttributesInput) (*sqs.GetQueueAttributesOutput, error) {
		return &sqs.GetQueueAttributesOutput{Attributes: map[string]string{
			"ApproximateNumberOfMessages": "7", "ApproximateNumberOfMessagesNotVisible": "5", "ApproximateNumberOfMessagesDelayed": "100",
		}}, nil
	}}
	d := newTestDriver(t, nil, f)
	n, err := d.Backlog(context.Background())
	if err != nil || n != 12 {
		t.Fatalf("backlog %d, %v; want 12 (delayed not counted)", n, err)
	}
	f.attrs = func(*sqs.GetQueueAttributesInput) (*sqs.GetQueueAttributesOutput, error) {
		return &sqs.GetQueueAttributesOutput{Attributes: map[string]string{"ApproximateNumberOfMessages": "7"}}, nil
	}
	if n, err := d.Backlog(context.Background()); err == nil || n != -1 {
		t.Fatalf("backlog with a missing attribute: %d, %v; want -1 and an error", n, err)
	}
	f.attrs = func(*sqs.GetQueueAttributesInput) (*sqs.GetQueueAttributesOutput, error) {
		return nil, &smithy.GenericAPIError{Code: "AccessDenied"}
	}
	n, err = d.Backlog(context.Background())
	if n != -1 || d.ErrorCode(err) != source.PermissionDenied {
		t.Fatalf("backlog %d, %v (%v); want -1, permission_denied", n, err, d.ErrorCode(err))
	}
}

func TestDeadLetter(t *testing.T) {
	msg := &source.Message{ID: "m-1", Handle: "rh-1", Payload: []byte("body"), Deliveries: 4,
		Headers: map[string]string{"color": "red", "x-sqs-group-id": "g-1", "x-sqs-receive-count": "5", "x-sqs-message-id": "m-1"}}

	t.Run("no target", func(t *testing.T) {
		f := &fakeSQS{}
		if err := newTestDriver(t, nil, f).DeadLetter(context.Background(), msg, "r"); !errors.Is(err, source.ErrNoDeadLetter) {
			t.Fatalf("error %v, want ErrNoDeadLetter", err)
		}
		if len(f.calls) != 0 {
			t.Fatalf("calls %v, want none", f.calls)
		}
	})

	t.Run("fifo", func(t *testing.T) {
		dlq := "https://sqs.us-east-1.amazonaws.com/123456789012/dlq.fifo"
		var deleted string
		f := &fakeSQS{
			send: func(*sqs.SendMessageInput) (*sqs.SendMessageOutput, error) { return &sqs.SendMessageOutput{}, nil },
			delOne: func(in *sqs.DeleteMessageInput) (*sqs.DeleteMessageOutput, error) {
				deleted = *in.ReceiptHandle
				return &sqs.DeleteMessageOutput{}, nil
			},
		}
		d := newTestDriver(t, func(c *Config) { c.QueueURL = fifoURL; c.DeadLetterQueueURL = dlq }, f)
		if err := d.DeadLetter(context.Background(), msg, "max deliveries 3 exceeded"); err != nil {
			t.Fatal(err)
		}
		in := f.lastSend
		if *in.QueueUrl != dlq || *in.MessageBody != "body" || aws.ToString(in.MessageGroupId) != "g-1" || aws.ToString(in.MessageDeduplicationId) != "m-1" {
			t.Errorf("send %s body %q group %q dedup %q", *in.QueueUrl, *in.MessageBody, aws.ToString(in.MessageGroupId), aws.ToString(in.MessageDeduplicationId))
		}
		attr := func(name string) string { return aws.ToString(in.MessageAttributes[name].StringValue) }
		if attr("dead-letter-reason") != "max deliveries 3 exceeded" || attr("dead-letter-source-queue") != fifoURL ||
			attr("dead-letter-message-id") != "m-1" || attr("dead-letter-receive-count") != "5" || attr("color") != "red" {
			t.Errorf("attributes %v", in.MessageAttributes)
		}
		if _, ok := in.MessageAttributes["x-sqs-group-id"]; ok {
			t.Error("system headers copied as attributes")
		}
		if deleted != "rh-1" || !reflect.DeepEqual(f.calls, []string{"SendMessage", "DeleteMessage"}) {
			t.Errorf("calls %v deleted %q, want send then delete of rh-1", f.calls, deleted)
		}
	})

	t.Run("send fails, nothing deleted", func(t *testing.T) {
		f := &fakeSQS{send: func(*sqs.SendMessageInput) (*sqs.SendMessageOutput, error) {
			return nil, &types.QueueDoesNotExist{}
		}}
		d := newTestDriver(t, func(c *Config) { c.DeadLetterQueueURL = stdURL + "-dlq" }, f)
		err := d.DeadLetter(context.Background(), msg, "r")
		if err == nil || d.ErrorCode(err) != source.NotFound || !strings.Contains(err.Error(), "dead-letter queue "+stdURL+"-dlq") {
			t.Fatalf("error %v, want not found naming the dead-letter queue", err)
		}
		if !reflect.DeepEqual(f.calls, []string{"SendMessage"}) {
			t.Fatalf("calls %v, want only SendMessage", f.calls)
		}
		if f.lastSend.MessageGroupId != nil {
			t.Error("group id sent to a standard queue")
		}
	})
}

func TestDeadLetterAttributesFold(t *testing.T) {
	headers := map[string]string{"x-sqs-message-id": "m"}
	for i := 0; i < 9; i++ {
		headers[fmt.Sprintf("a%d", i)] = strconv.Itoa(i)
	}
	attrs := deadLetterAttributes(&source.Message{ID: "m", Deliveries: 2, Headers: headers}, "", stdURL)
	if len(attrs) > 10 {
		t.Fatalf("%d attributes, SQS allows 10", len(attrs))
	}
	var folded map[string]string
	if err := json.Unmarshal([]byte(aws.ToString(attrs["dead-letter-headers"].StringValue)), &folded); err != nil || len(folded) != 9 {
		t.Fatalf("folded headers %v (%v), want the 9 attributes", folded, err)
	}
	if aws.ToString(attrs["dead-letter-reason"].StringValue) != "unspecified" || aws.ToString(attrs["dead-letter-receive-count"].DataType) != "Number" {
		t.Fatalf("attributes %v", attrs)
	}
}

func TestSNSUnwrap(t *testing.T) {
	envelope := `{"Type":"Notification","MessageId":"sns-1","TopicArn":"arn:aws:sns:us-east-1:123456789012:t",
		"Subject":"subj","Message":"{\"order\":1}","Timestamp":"2024-01-02T03:04:05.000Z","SignatureVersion":"1",
		"MessageAttributes":{"kind":{"Type":"String","Value":"new"},"bin":{"Type":"Binary","Value":"AAE="},"x-sqs-message-id":{"Type":"String","Value":"spoof"}}}`
	tests := []struct {
		name        string
		body        string
		wantPayload string
		wantHeaders map[string]string
		wantError   bool
	}{
		{"envelope", envelope, `{"order":1}`, map[string]string{"kind": "new", "bin": "AAE=", "x-sns-topic-arn": "arn:aws:sns:us-east-1:123456789012:t",
			"x-sns-message-id": "sns-1", "x-sns-subject": "subj", "x-sns-timestamp": "2024-01-02T03:04:05.000Z", "x-sqs-message-id": "m"}, false},
		{"raw delivery", `plain text`, "plain text", nil, true},
		{"json but not sns", `{"order":1}`, `{"order":1}`, nil, true},
		{"not a notification", `{"Type":"SubscriptionConfirmation","TopicArn":"t","Message":"m"}`, `{"Type":"SubscriptionConfirmation","TopicArn":"t","Message":"m"}`, nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := toMessage(types.Message{MessageId: aws.String("m"), ReceiptHandle: aws.String("r"), Body: aws.String(tt.body)}, false, true, time.Now())
			if string(m.Payload) != tt.wantPayload {
				t.Errorf("payload %q, want %q", m.Payload, tt.wantPayload)
			}
			_, hasErr := m.Headers[HeaderSNSUnwrapError]
			if hasErr != tt.wantError {
				t.Errorf("unwrap error header %q, want present=%v", m.Headers[HeaderSNSUnwrapError], tt.wantError)
			}
			if tt.wantHeaders != nil && !reflect.DeepEqual(m.Headers, tt.wantHeaders) {
				t.Errorf("headers %v, want %v", m.Headers, tt.wantHeaders)
			}
		})
	}
	// Without SQS_UNWRAP_SNS the envelope is the payload.
	m := toMessage(types.Message{MessageId: aws.String("m"), ReceiptHandle: aws.String("r"), Body: aws.String(envelope)}, false, false, time.Now())
	if string(m.Payload) != envelope {
		t.Error("envelope unwrapped although SQS_UNWRAP_SNS is off")
	}
}

func TestErrorCode(t *testing.T) {
	httpErr := func(status int) error {
		return &smithyhttp.ResponseError{Response: &smithyhttp.Response{Response: &http.Response{StatusCode: status}}, Err: errors.New("boom")}
	}
	tests := []struct {
		name string
		err  error
		want source.Code
	}{
		{"queue does not exist", &types.QueueDoesNotExist{}, source.NotFound},
		{"query code", &smithy.GenericAPIError{Code: "AWS.SimpleQueueService.NonExistentQueue"}, source.NotFound},
		{"access denied", &smithy.GenericAPIError{Code: "AccessDenied"}, source.PermissionDenied},
		{"bad token", &smithy.GenericAPIError{Code: "InvalidClientTokenId"}, source.PermissionDenied},
		{"kms denied", &types.KmsAccessDenied{}, source.PermissionDenied},
		{"invalid handle", &types.ReceiptHandleIsInvalid{}, source.InvalidArgument},
		{"throttled", &smithy.GenericAPIError{Code: "RequestThrottled"}, source.Throttled},
		{"throttling exception", &smithy.GenericAPIError{Code: "ThrottlingException"}, source.Throttled},
		{"over limit", &types.OverLimit{}, source.Throttled},
		{"kms throttled", &types.KmsThrottled{}, source.Throttled},
		{"too long", &smithy.GenericAPIError{Code: "MessageTooLong"}, source.FailedPrecondition},
		{"server fault", &smithy.GenericAPIError{Code: "Weird", Fault: smithy.FaultServer}, source.Unavailable},
		{"http 503", httpErr(503), source.Unavailable},
		{"http 429", httpErr(429), source.Throttled},
		{"http 403", httpErr(403), source.PermissionDenied},
		{"http 404", httpErr(404), source.NotFound},
		{"canceled", &smithy.CanceledError{Err: context.Canceled}, source.Canceled},
		{"unknown", errors.New("???"), source.Unknown},
		// Transport failures are the adapter's (source.NetworkCode): the driver leaves them Unknown.
		{"connection refused", &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}, source.Unknown},
		{"dns", &net.DNSError{Err: "no such host", Name: "sqs"}, source.Unknown},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := errorCode(fmt.Errorf("doing it: %w", tt.err)); got != tt.want {
				t.Fatalf("code %v, want %v", got, tt.want)
			}
		})
	}
}

func TestEntryErrorCode(t *testing.T) {
	d := newTestDriver(t, nil, &fakeSQS{})
	tests := []struct {
		name        string
		code        string
		senderFault bool
		want        source.Code
	}{
		{"in the table", "RequestThrottled", false, source.Throttled},
		{"query code", "AWS.SimpleQueueService.MessageNotInflight", true, source.FailedPrecondition},
		{"unknown sender fault", "Strange", true, source.InvalidArgument},
		{"unknown server fault", "Strange", false, source.Unavailable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := d.entryError("deleting messages from", tt.code, "failed", tt.senderFault)
			if e.Code != tt.want || !strings.Contains(e.Error(), stdURL) || !strings.Contains(e.Error(), tt.code) {
				t.Fatalf("entry error %q classified %v, want %v naming the queue and the code", e, e.Code, tt.want)
			}
		})
	}
}

func TestCheck(t *testing.T) {
	var asked []string
	f := &fakeSQS{attrs: func(in *sqs.GetQueueAttributesInput) (*sqs.GetQueueAttributesOutput, error) {
		asked = append(asked, *in.QueueUrl)
		if strings.HasSuffix(*in.QueueUrl, "-dlq") && len(asked) < 3 {
			return nil, &types.QueueDoesNotExist{}
		}
		return &sqs.GetQueueAttributesOutput{Attributes: map[string]string{}}, nil
	}}
	d := newTestDriver(t, func(c *Config) { c.DeadLetterQueueURL = stdURL + "-dlq" }, f)
	err := d.Check(context.Background())
	if err == nil || d.ErrorCode(err) != source.NotFound || !strings.Contains(err.Error(), "checking dead-letter queue") {
		t.Fatalf("check: %v, want the missing dead-letter queue", err)
	}
	if err := d.Check(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := d.Check(context.Background()); err != nil {
		t.Fatal(err)
	}
	if len(asked) != 5 {
		t.Fatalf("asked %v: want the dead-letter queue checked only until it succeeded", asked)
	}
}

func TestRegionFromURL(t *testing.T) {
	for url, want := range map[string]string{
		stdURL: "us-east-1",
		"https://sqs.cn-north-1.amazonaws.com.cn/1/q":                                                   "cn-north-1",
		"https://sqs-fips.us-gov-west-1.amazonaws.com/123456789012/q":                                   "us-gov-west-1",
		"https://us-west-2.queue.amazonaws.com/123456789012/orders":                                     "us-west-2",
		"https://cn-northwest-1.queue.amazonaws.com.cn/123456789012/orders":                             "cn-northwest-1",
		"https://queue.amazonaws.com/123456789012/orders":                                               "us-east-1",
		"https://vpce-0a1b2c3d4e5f6a7b8-abcdefgh.sqs.eu-central-1.vpce.amazonaws.com/1/q":               "eu-central-1",
		"https://vpce-0a1b2c3d4e5f6a7b8-abcdefgh-eu-central-1a.sqs.eu-central-1.vpce.amazonaws.com/1/q": "eu-central-1",
		"HTTPS://SQS.AP-SOUTH-1.AMAZONAWS.COM/1/q":                                                      "ap-south-1",
		"http://127.0.0.1:4566/000000000000/q":                                                          "",
		"http://sqs.us-east-1.localhost:4566/000000000000/q":                                            "",
		"https://sqs.example.internal/123456789012/q":                                                   "",
		"https://sqs.us-east-1.amazonaws.com.evil.example/1/q":                                          "",
	} {
		if got := regionFromURL(url); got != want {
			t.Errorf("region of %s: %q, want %q", url, got, want)
		}
	}
}

func TestBacklogIdleCache(t *testing.T) {
	visible := "0"
	f := &fakeSQS{
		attrs: func(*sqs.GetQueueAttributesInput) (*sqs.GetQueueAttributesOutput, error) {
			return &sqs.GetQueueAttributesOutput{Attributes: map[string]string{
				"ApproximateNumberOfMessages": visible, "ApproximateNumberOfMessagesNotVisible": "0"}}, nil
		},
		receive: func(*sqs.ReceiveMessageInput) (*sqs.ReceiveMessageOutput, error) {
			return &sqs.ReceiveMessageOutput{Messages: []types.Message{{MessageId: aws.String("m"), ReceiptHandle: aws.String("r"), Body: aws.String("b")}}}, nil
		},
	}
	d := newTestDriver(t, nil, f)
	queries := func() int { return strings.Count(strings.Join(f.calls, ","), "GetQueueAttributes") }
	for i := 0; i < 5; i++ {
		if n, err := d.Backlog(context.Background()); n != 0 || err != nil {
			t.Fatalf("backlog %d, %v", n, err)
		}
	}
	if q := queries(); q != 1 {
		t.Fatalf("%d queries for 5 idle backlog readings, want 1", q)
	}
	// A receive that returns a message ends the idle reuse.
	visible = "3"
	if _, err := d.Receive(context.Background(), 10); err != nil {
		t.Fatal(err)
	}
	if n, _ := d.Backlog(context.Background()); n != 3 {
		t.Fatalf("backlog %d after a receive, want a fresh reading of 3", n)
	}
	// Non-zero readings are never reused.
	d.Backlog(context.Background())
	if q := queries(); q != 3 {
		t.Fatalf("%d queries, want 3", q)
	}
}
