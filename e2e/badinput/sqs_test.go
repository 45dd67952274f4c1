package badinput

import (
	"context"
	"encoding/base64"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"github.com/numaflow-connectors/sources/sqs-source/sqstest"
)

// SQS accepts only XML characters in a body (#x9, #xA, #xD, #x20-#xD7FF, #xE000-#xFFFD,
// #x10000-#x10FFFF) and rejects an empty body or one with other characters (a NUL, say) at
// SendMessage: such a message never reaches a queue, so there is nothing for the connector to stall
// on. Bytes that are not UTF-8 cannot even be sent as they are: the SDK's JSON encoding turns them into
// U+FFFD, the queue stores that, and the SDK then reports a checksum mismatch to the sender. The bytes
// SQS does carry unchanged are Binary message attributes; the poison run sends non-UTF-8 bytes there,
// a body mangled as above, and the edge characters SQS allows in the body. (AWS also allows #x10000-#x10FFFF; fauxqs 1.9.2 rejects
// them, so they are left out here.)
const sqsEdgeBody = "\t\n\r \u00a0\ud7ff\ue000\ufffd"

func sqsEnv(srv *sqstest.Server, queue string, extra ...string) []string {
	env := append(srv.Env(), "SQS_QUEUE_URL="+queue, "AWS_SECRET_ACCESS_KEY="+sentinel, "LOG_LEVEL=debug",
		"SQS_VISIBILITY_TIMEOUT=5s", "SQS_WAIT_TIME=2s")
	return append(env, extra...)
}

func sqsSend(t *testing.T, srv *sqstest.Server, url string, bodies ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, b := range bodies {
		if _, err := srv.Client().SendMessage(ctx, &sqs.SendMessageInput{QueueUrl: &url, MessageBody: aws.String(b)}); err != nil {
			t.Fatalf("sending a %d-byte message: %v", len(b), err)
		}
	}
}

func TestSQSPoisonAndOversize(t *testing.T) {
	t.Parallel()
	srv := sqstest.Start(t)

	// Poison: edge characters, non-UTF-8 bytes in a Binary attribute, a 1000 KiB body; then a normal
	// message, which must arrive, as must each of the others, byte for byte.
	t.Run("poison", func(t *testing.T) {
		url := srv.CreateQueue(t, sqstest.QueueName(t), nil)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_, err := srv.Client().SendMessage(ctx, &sqs.SendMessageInput{QueueUrl: &url, MessageBody: aws.String("binary-attribute"),
			MessageAttributes: map[string]types.MessageAttributeValue{
				"blob": {DataType: aws.String("Binary"), BinaryValue: []byte(nonUTF8)},
			}})
		if err != nil {
			t.Fatalf("sending a binary attribute: %v", err)
		}
		sqsSend(t, srv, url, sqsEdgeBody, largeBody)
		for _, body := range []string{"", "\x00nul"} {
			if _, err := srv.Client().SendMessage(ctx, &sqs.SendMessageInput{QueueUrl: &url, MessageBody: aws.String(body)}); err == nil {
				t.Errorf("SQS accepted the body %q; the connector's handling of it is untested", body)
			}
		}
		if _, err := srv.Client().SendMessage(ctx, &sqs.SendMessageInput{QueueUrl: &url, MessageBody: aws.String("\x80\xffmangled")}); err == nil {
			t.Logf("a non-UTF-8 body was sent without the checksum error seen so far")
		}
		c := startConnector(t, sqsSource, sqsEnv(srv, url, "LOG_FORMAT=json"))
		msgs := c.drainUntil(t, drainTimeout, seenAll("binary-attribute", sqsEdgeBody, largeBody, "\ufffd\ufffdmangled"))
		sqsSend(t, srv, url, "after-poison")
		msgs = append(msgs, c.drainUntil(t, drainTimeout, payloadIs("after-poison"))...)

		if m, _ := find(msgs, []byte("binary-attribute")); m.Headers["blob"] != base64.StdEncoding.EncodeToString([]byte(nonUTF8)) {
			t.Errorf("binary attribute header = %q, want the bytes in base64", m.Headers["blob"])
		}
		c.finish(t)
	})

	t.Run("oversize dead-lettered", func(t *testing.T) {
		q := srv.CreateQueueWithDLQ(t, sqstest.QueueName(t), false, 0, nil)
		sqsSend(t, srv, q.URL, "before", bigPayload, "after")
		c := startConnector(t, sqsSource, sqsEnv(srv, q.URL, "LOG_FORMAT=text", "MAX_MESSAGE_BYTES="+smallLimit,
			"SQS_DEAD_LETTER_QUEUE_URL="+q.DLQURL))
		msgs := c.drainUntil(t, drainTimeout, seenAll("before", "after"))
		assertOversizeNotDelivered(t, msgs)
		eventually(t, 20*time.Second, func(ctx context.Context) error {
			out, err := srv.Client().ReceiveMessage(ctx, &sqs.ReceiveMessageInput{QueueUrl: &q.DLQURL, MaxNumberOfMessages: 10,
				WaitTimeSeconds: 1, VisibilityTimeout: 1, MessageAttributeNames: []string{"All"}})
			if err != nil {
				return err
			}
			err = errNotYet
			for _, m := range out.Messages {
				reason := aws.ToString(m.MessageAttributes["dead-letter-reason"].StringValue)
				if aws.ToString(m.Body) == bigPayload && strings.Contains(reason, reasonTooLarge) {
					return nil
				}
				err = fmt.Errorf("dead-letter queue holds a %d-byte message with reason %q", len(aws.ToString(m.Body)), reason)
			}
			return err
		})
		c.waitOutput(t, 5*time.Second, "message dead-lettered", reasonTooLarge)
		c.finish(t)
	})

	// Over the limit with no dead-letter queue and the default fallback (nack): the message stays in
	// the queue (its redrive policy applies), the stream goes on and nothing spins.
	t.Run("oversize nacked", func(t *testing.T) {
		url := srv.CreateQueue(t, sqstest.QueueName(t), nil)
		sqsSend(t, srv, url, "before", bigPayload, "after")
		c := startConnector(t, sqsSource, sqsEnv(srv, url, "LOG_FORMAT=text", "MAX_MESSAGE_BYTES="+smallLimit))
		assertOversizeNotDelivered(t, c.drainUntil(t, drainTimeout, seenAll("before", "after")))
		c.assertNoNackSpin(t)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if visible, inFlight, _, err := srv.Counts(ctx, url); err != nil || visible+inFlight != 1 {
			t.Errorf("queue holds %d visible and %d in flight (%v), want the oversize message still there", visible, inFlight, err)
		}
		c.finish(t)
	})

	t.Run("oversize dropped", func(t *testing.T) {
		url := srv.CreateQueue(t, sqstest.QueueName(t), nil)
		sqsSend(t, srv, url, "before", bigPayload, "after")
		c := startConnector(t, sqsSource, sqsEnv(srv, url, "LOG_FORMAT=json", "MAX_MESSAGE_BYTES="+smallLimit, "DEAD_LETTER_FALLBACK=drop"))
		msgs := c.drainUntil(t, drainTimeout, seenAll("before", "after"))
		assertOversizeNotDelivered(t, msgs)
		c.waitOutput(t, 5*time.Second, "message dropped", reasonTooLarge)
		// Dropped means deleted: nothing is left in the queue, visible or in flight.
		eventually(t, 20*time.Second, func(ctx context.Context) error {
			visible, inFlight, _, err := srv.Counts(ctx, url)
			if err != nil {
				return err
			}
			if visible+inFlight != 0 {
				return fmt.Errorf("%d visible and %d in flight", visible, inFlight)
			}
			return nil
		})
		c.finish(t)
	})
}
