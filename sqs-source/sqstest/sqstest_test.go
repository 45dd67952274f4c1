package sqstest_test

import (
	"context"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"github.com/numaflow-connectors/sources/sqs-source/sqstest"
)

func TestMain(m *testing.M) { sqstest.Main(m) }

func TestStartSendReceive(t *testing.T) {
	srv := sqstest.Start(t)
	url := srv.CreateQueue(t, sqstest.QueueName(t), nil)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c := srv.Client()
	if _, err := c.SendMessage(ctx, &sqs.SendMessageInput{QueueUrl: &url, MessageBody: aws.String("hello")}); err != nil {
		t.Fatalf("sending: %v", err)
	}
	out, err := c.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{QueueUrl: &url, WaitTimeSeconds: 5})
	if err != nil {
		t.Fatalf("receiving: %v", err)
	}
	if len(out.Messages) != 1 || *out.Messages[0].Body != "hello" {
		t.Fatalf("received %+v, want one message hello", out.Messages)
	}
}

func TestSharedFIFOWithDLQ(t *testing.T) {
	srv := sqstest.Shared(t)
	q := srv.CreateQueueWithDLQ(t, sqstest.QueueName(t), true, 3, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := srv.Client().GetQueueAttributes(ctx, &sqs.GetQueueAttributesInput{QueueUrl: &q.URL, AttributeNames: []types.QueueAttributeName{"All"}})
	if err != nil {
		t.Fatalf("getting attributes: %v", err)
	}
	if out.Attributes["FifoQueue"] != "true" || out.Attributes["RedrivePolicy"] == "" {
		t.Fatalf("attributes %v: want a FIFO queue with a redrive policy", out.Attributes)
	}
	if _, _, _, err := srv.Counts(ctx, q.DLQURL); err != nil {
		t.Fatal(err)
	}
}
