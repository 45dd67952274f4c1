package sqssource

import (
	"context"
	"encoding/base64"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/smithy-go"

	"github.com/numaflow-connectors/sources/common/source"
	"github.com/numaflow-connectors/sources/sqs-source/sqstest"
)

// refusingChars is a fake SQS that refuses what real SQS refuses in a body or a String attribute value
// (characters outside XML's set: fauxqs checks bodies only).
func refusingChars(sent *[]*sqs.SendMessageInput) *fakeSQS {
	return &fakeSQS{
		send: func(in *sqs.SendMessageInput) (*sqs.SendMessageOutput, error) {
			if !validSQSText(*in.MessageBody) {
				return nil, &smithy.GenericAPIError{Code: "InvalidMessageContents", Message: "Invalid binary character"}
			}
			for name, v := range in.MessageAttributes {
				if v.StringValue != nil && !validSQSText(*v.StringValue) {
					return nil, &smithy.GenericAPIError{Code: "InvalidParameterValue", Message: "Message (user) attribute '" + name + "' value contains invalid binary character"}
				}
			}
			*sent = append(*sent, in)
			return &sqs.SendMessageOutput{}, nil
		},
		delOne: func(in *sqs.DeleteMessageInput) (*sqs.DeleteMessageOutput, error) {
			return &sqs.DeleteMessageOutput{}, nil
		},
	}
}

// A dead letter with characters SQS refuses (numa's nack reason is a UDF's error text, with terminal
// colour escapes; an attribute value; a body unwrapped from SNS) was refused as invalid_argument, and
// the adapter nacked the message back forever (on FIFO, with its group blocked). Attribute values get
// U+FFFD for what SQS refuses; a body that SQS refuses goes in base64, said by an attribute.
func TestDeadLetterOfCharactersSQSRefuses(t *testing.T) {
	var sent []*sqs.SendMessageInput
	d := newTestDriver(t, func(c *Config) { c.DeadLetterQueueURL = stdURL + "-dlq" }, refusingChars(&sent))
	payload := []byte("col1\x01col2")
	msg := &source.Message{ID: "m-1", Handle: "rh-1", Payload: payload, Deliveries: 3, Headers: map[string]string{"note": "a\x0bb"}}
	reason := "max deliveries (3) reached after 3 deliveries; last nack reason: \x1b[31mValueError\x1b[0m: bad record"
	if err := d.DeadLetter(context.Background(), msg, reason); err != nil {
		t.Fatalf("dead letter failed: %v (code %v): the adapter nacks it and it comes back forever", err, d.ErrorCode(err))
	}
	in := sent[0]
	if got := deref(in.MessageAttributes[AttrDeadLetterReason].StringValue); got != "max deliveries (3) reached after 3 deliveries; last nack reason: \uFFFD[31mValueError\uFFFD[0m: bad record" {
		t.Errorf("reason %q", got)
	}
	if got := deref(in.MessageAttributes["note"].StringValue); got != "a\uFFFDb" {
		t.Errorf("copied attribute %q", got)
	}
	if enc := deref(in.MessageAttributes[AttrDeadLetterBodyEncoding].StringValue); enc != "base64" {
		t.Fatalf("body encoding attribute %q, want base64", enc)
	}
	if b, err := base64.StdEncoding.DecodeString(*in.MessageBody); err != nil || string(b) != string(payload) {
		t.Errorf("body %q does not decode to the payload (%v)", *in.MessageBody, err)
	}
	// A body SQS takes goes as it is, with no encoding attribute.
	sent = nil
	msg.Payload = []byte("plain")
	if err := d.DeadLetter(context.Background(), msg, "r"); err != nil {
		t.Fatal(err)
	}
	if _, ok := sent[0].MessageAttributes[AttrDeadLetterBodyEncoding]; ok || *sent[0].MessageBody != "plain" {
		t.Errorf("a plain body was encoded: %q", *sent[0].MessageBody)
	}
}

// Through fauxqs: an SNS notification whose message holds a control character arrives escaped in the
// envelope, which SQS takes; unwrapped, the payload holds the raw character, which SQS refuses in a
// body. The dead letter reaches the dead-letter queue, in base64.
func TestIntegrationDeadLetterOfUnwrappedSNSControlCharacter(t *testing.T) {
	srv := sqstest.Shared(t)
	q := srv.CreateQueueWithDLQ(t, sqstest.QueueName(t), false, 0, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cfg := testConfig(q.URL, q.DLQURL)
	cfg.UnwrapSNS = true
	d := openAt(ctx, t, srv, cfg, nil)
	env := `{"Type":"Notification","MessageId":"sns-1","TopicArn":"arn:aws:sns:us-east-1:000000000000:t","Message":"col1\u0001col2","Timestamp":"2026-01-01T00:00:00Z"}`
	send(ctx, t, srv, q.URL, env, nil)
	msgs, err := d.Receive(ctx, 10)
	if err != nil || len(msgs) != 1 {
		t.Fatalf("receive: %d %v", len(msgs), err)
	}
	if err := d.DeadLetter(ctx, msgs[0], "max deliveries (3) reached"); err != nil {
		t.Fatalf("dead letter failed: %v (code %v)", err, d.ErrorCode(err))
	}
	out, err := srv.Client().ReceiveMessage(ctx, &sqs.ReceiveMessageInput{QueueUrl: &q.DLQURL, MessageAttributeNames: []string{"All"}})
	if err != nil || len(out.Messages) != 1 {
		t.Fatalf("dead-letter queue: %v %v", out, err)
	}
	m := out.Messages[0]
	b, _ := base64.StdEncoding.DecodeString(deref(m.Body))
	if string(b) != "col1\x01col2" || deref(m.MessageAttributes[AttrDeadLetterBodyEncoding].StringValue) != "base64" {
		t.Errorf("dead letter body %q (decoded %q), attributes %v", deref(m.Body), b, m.MessageAttributes)
	}
}
