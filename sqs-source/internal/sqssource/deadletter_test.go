package sqssource

import (
	"context"
	"errors"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"github.com/aws/smithy-go"

	"github.com/numaflow-connectors/sources/common/source"
	"github.com/numaflow-connectors/sources/sqs-source/sqstest"
)

// sqsSize is a message's size as SQS counts it against MaximumMessageSize.
func sqsSize(in *sqs.SendMessageInput) int {
	return len(aws.ToString(in.MessageBody)) + attributesSize(in.MessageAttributes)
}

// refuseOver is a SendMessage that refuses, as SQS does, a message over limit bytes.
func refuseOver(limit int) func(*sqs.SendMessageInput) (*sqs.SendMessageOutput, error) {
	return func(in *sqs.SendMessageInput) (*sqs.SendMessageOutput, error) {
		if sqsSize(in) > limit {
			return nil, &smithy.GenericAPIError{Code: "InvalidParameterValue",
				Message: "One or more parameters are invalid. Reason: Message must be shorter than " + strconv.Itoa(limit) + " bytes."}
		}
		return &sqs.SendMessageOutput{}, nil
	}
}

// A dead letter is cut to the dead-letter queue's limit: the reason first (down to 256 bytes), then
// the message's own attributes, largest first, then the driver's other attributes, then the rest of
// the reason; a body over the limit by itself is not sent (ErrNoDeadLetter: the fallback applies).
func TestDeadLetterFitsTheLimit(t *testing.T) {
	const limit = 4096
	longReason := "max deliveries (3) reached after 3 deliveries; last nack reason: " + strings.Repeat("é", 1000)
	headers := map[string]string{
		"big":              strings.Repeat("b", 300),
		"small":            "s",
		HeaderReceiveCount: "3",
		HeaderMessageID:    "m-1",
	}
	full := deadLetterAttributes(&source.Message{ID: "m-1", Headers: headers}, longReason, stdURL)
	ours := func(names ...string) int { // the size of some of the driver's attributes, reason excluded
		n := 0
		for _, name := range names {
			n += attributeSize(name, full[name])
		}
		return n
	}
	reasonAttr := func(n int) int { return len(AttrDeadLetterReason) + len("String") + n }
	others := ours(AttrDeadLetterSourceQueue, AttrDeadLetterMessageID, AttrDeadLetterReceiveCount)
	big, small := attributeSize("big", full["big"]), attributeSize("small", full["small"])

	tests := []struct {
		name       string
		room       int // limit less the body
		wantAttrs  []string
		wantReason int // bytes of the reason kept; -1: all of it
	}{
		{"fits", attributesSize(full), []string{"big", "small", AttrDeadLetterReason, AttrDeadLetterSourceQueue, AttrDeadLetterMessageID, AttrDeadLetterReceiveCount}, -1},
		{"reason cut", others + big + small + reasonAttr(500), []string{"big", "small", AttrDeadLetterReason, AttrDeadLetterSourceQueue, AttrDeadLetterMessageID, AttrDeadLetterReceiveCount}, 500},
		{"largest own attribute dropped", others + small + reasonAttr(minReasonBytes) + 10, []string{"small", AttrDeadLetterReason, AttrDeadLetterSourceQueue, AttrDeadLetterMessageID, AttrDeadLetterReceiveCount}, minReasonBytes},
		{"own attributes dropped", others + reasonAttr(minReasonBytes), []string{AttrDeadLetterReason, AttrDeadLetterSourceQueue, AttrDeadLetterMessageID, AttrDeadLetterReceiveCount}, minReasonBytes},
		{"reason cut further", 64, []string{AttrDeadLetterReason}, 64 - reasonAttr(0)},
		{"no room for attributes", 10, nil, 0},
		{"exactly the body", 0, nil, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := &fakeSQS{send: refuseOver(limit), delOne: func(*sqs.DeleteMessageInput) (*sqs.DeleteMessageOutput, error) {
				return &sqs.DeleteMessageOutput{}, nil
			}}
			d := newTestDriver(t, func(c *Config) { c.DeadLetterQueueURL = stdURL + "-dlq" }, f)
			d.dlqMaxSize.Store(limit)
			msg := &source.Message{ID: "m-1", Handle: "rh-1", Payload: []byte(strings.Repeat("x", limit-tt.room)), Headers: headers}
			if err := d.DeadLetter(context.Background(), msg, longReason); err != nil {
				t.Fatalf("dead letter with %d bytes for attributes: %v", tt.room, err)
			}
			in := f.lastSend
			if got := sqsSize(in); got > limit {
				t.Fatalf("sent %d bytes, the limit is %d", got, limit)
			}
			if aws.ToString(in.MessageBody) != string(msg.Payload) {
				t.Fatal("body changed")
			}
			var names []string
			for name := range in.MessageAttributes {
				names = append(names, name)
			}
			if !sameSet(names, tt.wantAttrs) {
				t.Errorf("attributes %v, want %v", names, tt.wantAttrs)
			}
			reason := aws.ToString(in.MessageAttributes[AttrDeadLetterReason].StringValue)
			switch {
			case tt.wantReason < 0 && reason != longReason:
				t.Errorf("reason cut to %d bytes although it fits", len(reason))
			case tt.wantReason >= 0 && (len(reason) > tt.wantReason || len(reason) < tt.wantReason-1): // -1: a character boundary
				t.Errorf("reason of %d bytes, want %d", len(reason), tt.wantReason)
			case tt.wantReason > 3 && (!strings.HasSuffix(reason, "...") || !strings.HasPrefix(longReason, strings.TrimSuffix(reason, "..."))):
				t.Errorf("cut reason %q is not a prefix of the reason marked with ...", reason)
			}
			if !reflect.DeepEqual(f.calls, []string{"SendMessage", "DeleteMessage"}) {
				t.Errorf("calls %v, want one send and the delete", f.calls)
			}
		})
	}

	t.Run("body over the limit", func(t *testing.T) {
		f := &fakeSQS{}
		d := newTestDriver(t, func(c *Config) { c.DeadLetterQueueURL = stdURL + "-dlq" }, f)
		d.dlqMaxSize.Store(limit)
		msg := &source.Message{ID: "m-1", Handle: "rh-1", Payload: []byte(strings.Repeat("x", limit+1))}
		err := d.DeadLetter(context.Background(), msg, "r")
		if !errors.Is(err, source.ErrNoDeadLetter) || !strings.Contains(err.Error(), "4097 bytes") {
			t.Fatalf("error %v, want ErrNoDeadLetter naming the size", err)
		}
		if len(f.calls) != 0 {
			t.Fatalf("calls %v, want none: the message stays in the queue for the fallback", f.calls)
		}
	})

	t.Run("limit learned from a refusal", func(t *testing.T) {
		f := &fakeSQS{send: refuseOver(2048), delOne: func(*sqs.DeleteMessageInput) (*sqs.DeleteMessageOutput, error) {
			return &sqs.DeleteMessageOutput{}, nil
		}}
		d := newTestDriver(t, func(c *Config) { c.DeadLetterQueueURL = stdURL + "-dlq" }, f)
		msg := &source.Message{ID: "m-1", Handle: "rh-1", Payload: []byte(strings.Repeat("x", 2000)), Headers: headers}
		if err := d.DeadLetter(context.Background(), msg, longReason); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(f.calls, []string{"SendMessage", "SendMessage", "DeleteMessage"}) || d.deadLetterLimit() != 2048 {
			t.Fatalf("calls %v, limit %d: want a refused send, one that fits 2048 bytes, the delete", f.calls, d.deadLetterLimit())
		}
		f.calls = nil
		if err := d.DeadLetter(context.Background(), msg, longReason); err != nil || len(f.calls) != 2 {
			t.Fatalf("second dead letter: %v, calls %v; want it cut at once", err, f.calls)
		}
	})

	t.Run("limit from the check", func(t *testing.T) {
		f := &fakeSQS{attrs: func(in *sqs.GetQueueAttributesInput) (*sqs.GetQueueAttributesOutput, error) {
			return &sqs.GetQueueAttributesOutput{Attributes: map[string]string{"MaximumMessageSize": "1024"}}, nil
		}}
		d := newTestDriver(t, func(c *Config) { c.DeadLetterQueueURL = stdURL + "-dlq" }, f)
		if err := d.Check(context.Background()); err != nil {
			t.Fatal(err)
		}
		if got := d.deadLetterLimit(); got != 1024 {
			t.Fatalf("dead-letter limit %d after the check, want the queue's 1024", got)
		}
	})
}

func sameSet(a, b []string) bool {
	m := map[string]int{}
	for _, s := range a {
		m[s]++
	}
	for _, s := range b {
		m[s]--
	}
	for _, n := range m {
		if n != 0 {
			return false
		}
	}
	return true
}

// Against fauxqs: a message the source queue accepted at SQS's 1 MiB maximum is dead-lettered (its
// attributes cut), a dead-letter queue's smaller MaximumMessageSize is read by Check or learned from
// its refusal, and a body larger than the dead-letter queue takes is left in the source queue with
// ErrNoDeadLetter.
func TestDeadLetterSizeLimitAgainstFauxqs(t *testing.T) {
	t.Parallel()
	srv := sqstest.Shared(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	reason := "max deliveries (3) reached after 3 deliveries; last nack reason: " + strings.Repeat("udf failed: stack ", 200)
	dlqMessage := func(dlq string) *types.Message {
		t.Helper()
		out, err := srv.Client().ReceiveMessage(ctx, &sqs.ReceiveMessageInput{QueueUrl: &dlq, MessageAttributeNames: []string{"All"}, WaitTimeSeconds: 1})
		if err != nil || len(out.Messages) != 1 {
			t.Fatalf("dead-letter queue: %v, %v; want one message", out, err)
		}
		return &out.Messages[0]
	}
	withColor := func(in *sqs.SendMessageInput) {
		in.MessageAttributes = map[string]types.MessageAttributeValue{"color": {DataType: aws.String("String"), StringValue: aws.String("red")}}
	}

	t.Run("1 MiB", func(t *testing.T) {
		q := srv.CreateQueueWithDLQ(t, sqstest.QueueName(t), false, 0, nil)
		d := openAt(ctx, t, srv, testConfig(q.URL, q.DLQURL), nil)
		if err := d.Check(ctx); err != nil {
			t.Fatal(err)
		}
		body := strings.Repeat("x", maxMessageSize-64)
		send(ctx, t, srv, q.URL, body, withColor)
		msg := receiveAll(ctx, t, d, 1)[0]
		if err := d.DeadLetter(ctx, msg, reason); err != nil {
			t.Fatalf("dead-lettering a message of %d bytes: code %s: %v", len(body), d.ErrorCode(err), err)
		}
		dl := dlqMessage(q.DLQURL)
		if aws.ToString(dl.Body) != body || dl.MessageAttributes[AttrDeadLetterReason].StringValue == nil {
			t.Errorf("dead letter of %d bytes with attributes %v, want the body and a reason", len(aws.ToString(dl.Body)), dl.MessageAttributes)
		}
		if v, f, _ := counts(ctx, t, srv, q.URL); v+f != 0 {
			t.Errorf("source queue holds %d visible, %d in flight after the dead letter; want it deleted", v, f)
		}
	})

	for _, check := range []bool{true, false} {
		name := "small dead-letter queue, limit learned from its refusal"
		if check {
			name = "small dead-letter queue, limit read by Check"
		}
		t.Run(name, func(t *testing.T) {
			base := sqstest.QueueName(t)
			dlq := srv.CreateQueue(t, base+"-dlq", map[string]string{"MaximumMessageSize": "1024"})
			url := srv.CreateQueue(t, base, nil)
			counter := &requestCounter{}
			d := openAt(ctx, t, srv, testConfig(url, dlq), counter)
			if check {
				if err := d.Check(ctx); err != nil {
					t.Fatal(err)
				}
			}
			body := strings.Repeat("y", 1000)
			send(ctx, t, srv, url, body, withColor)
			send(ctx, t, srv, url, strings.Repeat("z", 1025), nil)
			msgs := receiveAll(ctx, t, d, 2)
			if len(msgs[0].Payload) != 1000 {
				msgs[0], msgs[1] = msgs[1], msgs[0]
			}
			if err := d.DeadLetter(ctx, msgs[0], reason); err != nil {
				t.Fatalf("dead-lettering 1000 bytes to a queue of 1024: code %s: %v", d.ErrorCode(err), err)
			}
			wantSends := int64(1)
			if !check {
				wantSends = 2 // refused once, then cut to the limit SQS named
			}
			if got := counter.snapshot()["SendMessage"]; got != wantSends {
				t.Errorf("%d SendMessage calls, want %d", got, wantSends)
			}
			if dl := dlqMessage(dlq); aws.ToString(dl.Body) != body {
				t.Errorf("dead letter body of %d bytes, want the 1000", len(aws.ToString(dl.Body)))
			}
			if err := d.DeadLetter(ctx, msgs[1], reason); !errors.Is(err, source.ErrNoDeadLetter) {
				t.Fatalf("dead-lettering 1025 bytes to a queue of 1024: %v, want ErrNoDeadLetter", err)
			}
			if _, f, _ := counts(ctx, t, srv, url); f != 1 {
				t.Errorf("%d messages in flight in the source queue, want the one not dead-lettered", f)
			}
		})
	}
}
