package sqssource

import (
	"context"
	"errors"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"github.com/aws/smithy-go"

	"github.com/numaflow-connectors/sources/common/source"
)

// Pre-flight checks (`sqs-source --check`). SQS has no call that asks "may I?", so each permission is
// probed with a request SQS refuses after authorizing it: a ReceiveMessage with an invalid wait
// (WaitTimeSeconds 21), deletes and visibility changes of a receipt handle that does not exist, a
// SendMessage without a body. Denied, the request fails with AccessDenied; allowed, with the refusal.
// None of them can receive, delete, change or send a message. (A server that accepts the invalid
// receive anyway gets VisibilityTimeout 0, so even then nothing is hidden.)

var _ source.Preflighter = (*driver)(nil)

// Names of the permission checks.
const (
	checkReceive    = "sqs:ReceiveMessage"
	checkDelete     = "sqs:DeleteMessage (acks)"
	checkVisibility = "sqs:ChangeMessageVisibility (nacks, leases)"
)

// preflightHandle is a receipt handle no queue ever issued.
const preflightHandle = "numaflow-connectors-preflight-not-a-receipt-handle"

// refusedAfterAuth are the SQS error codes that answer the probes above once the caller is allowed.
var refusedAfterAuth = map[string]bool{
	"InvalidParameterValue": true, "MissingParameter": true, "ReceiptHandleIsInvalid": true,
	"InvalidParameterValues": true, "ValidationError": true,
}

// Preflight checks the queue and every call the connector will make on it, and on the dead-letter
// queue when one is set.
func (d *driver) Preflight(ctx context.Context) []source.Check {
	q := d.cfg.QueueURL
	var checks []source.Check
	add := func(name string, err error, fix string) {
		c := source.Check{Name: name, Err: err}
		if err != nil {
			c.Fix = d.fixFor(err, fix)
		}
		checks = append(checks, c)
	}

	// The queue itself: GetQueueAttributes is also the backlog and the start-up check.
	_, err := d.api.GetQueueAttributes(ctx, &sqs.GetQueueAttributesInput{QueueUrl: &q,
		AttributeNames: []types.QueueAttributeName{types.QueueAttributeNameQueueArn}})
	add("queue reachable (sqs:GetQueueAttributes) "+q, err, "grant sqs:GetQueueAttributes on the queue")
	if err != nil {
		for _, name := range []string{checkReceive, checkDelete, checkVisibility} {
			checks = append(checks, source.Check{Name: name, Skipped: "the queue is not reachable"})
		}
		return append(checks, d.preflightDLQ(ctx, false)...)
	}

	_, err = d.api.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{QueueUrl: &q, MaxNumberOfMessages: 1,
		WaitTimeSeconds: 21, VisibilityTimeout: 0})
	add(checkReceive, refusal(err), "grant sqs:ReceiveMessage on the queue")

	del, err := d.api.DeleteMessageBatch(ctx, &sqs.DeleteMessageBatchInput{QueueUrl: &q,
		Entries: []types.DeleteMessageBatchRequestEntry{{Id: aws.String("0"), ReceiptHandle: aws.String(preflightHandle)}}})
	if err == nil && del != nil {
		err = entryRefusal(del.Failed)
	}
	add(checkDelete, refusal(err), "grant sqs:DeleteMessage on the queue")

	vis, err := d.api.ChangeMessageVisibilityBatch(ctx, &sqs.ChangeMessageVisibilityBatchInput{QueueUrl: &q,
		Entries: []types.ChangeMessageVisibilityBatchRequestEntry{{Id: aws.String("0"), ReceiptHandle: aws.String(preflightHandle)}}})
	if err == nil && vis != nil {
		err = entryRefusal(vis.Failed)
	}
	add(checkVisibility, refusal(err), "grant sqs:ChangeMessageVisibility on the queue")

	return append(checks, d.preflightDLQ(ctx, true)...)
}

// preflightDLQ checks the dead-letter queue: reachable, and SendMessage allowed.
func (d *driver) preflightDLQ(ctx context.Context, run bool) []source.Check {
	dlq := d.cfg.DeadLetterQueueURL
	if dlq == "" {
		return nil
	}
	reach := "dead-letter queue reachable (sqs:GetQueueAttributes) " + dlq
	if !run {
		return []source.Check{{Name: reach, Skipped: "the source queue is not reachable"},
			{Name: "sqs:SendMessage on the dead-letter queue", Skipped: "the source queue is not reachable"}}
	}
	var checks []source.Check
	_, err := d.api.GetQueueAttributes(ctx, &sqs.GetQueueAttributesInput{QueueUrl: &dlq,
		AttributeNames: []types.QueueAttributeName{types.QueueAttributeNameQueueArn}})
	checks = append(checks, source.Check{Name: reach, Err: err, Fix: d.fixFor(err, "grant sqs:GetQueueAttributes on the dead-letter queue")})
	if err != nil {
		return append(checks, source.Check{Name: "sqs:SendMessage on the dead-letter queue", Skipped: "the dead-letter queue is not reachable"})
	}
	_, err = d.api.SendMessage(ctx, &sqs.SendMessageInput{QueueUrl: &dlq, MessageBody: aws.String("")})
	err = refusal(err)
	return append(checks, source.Check{Name: "sqs:SendMessage on the dead-letter queue", Err: err,
		Fix: d.fixFor(err, "grant sqs:SendMessage on the dead-letter queue (and kms:GenerateDataKey, kms:Decrypt when it is encrypted with a KMS key)")})
}

// refusal turns a probe's answer into the check's outcome: the expected refusal (or, from a lenient
// server, success) passes; anything else, AccessDenied first of all, fails.
func refusal(err error) error {
	if err == nil {
		return nil
	}
	var api smithy.APIError
	if errors.As(err, &api) && refusedAfterAuth[shortCode(api.ErrorCode())] {
		return nil
	}
	return err
}

// entryRefusal is the outcome of a batch probe whose call succeeded: its entry must have failed as an
// invalid receipt handle (or, from a lenient server, not at all).
func entryRefusal(failed []types.BatchResultErrorEntry) error {
	for _, f := range failed {
		if code := aws.ToString(f.Code); !refusedAfterAuth[shortCode(code)] {
			return fmt.Errorf("%s: %s", code, aws.ToString(f.Message))
		}
	}
	return nil
}

// fixFor is what to do about a failed check: the permission to grant when access was denied, else
// by the kind of failure.
func (d *driver) fixFor(err error, grant string) string {
	if err == nil {
		return ""
	}
	switch source.Classify(d, err) {
	case source.PermissionDenied:
		return grant + " to the pod's role (deploy/sqs-source/iam-policy.json lists every permission the connector needs); check the credentials (IRSA, Pod Identity) too"
	case source.NotFound:
		return "create the queue, or fix its URL (region, account id, name)"
	case source.Unavailable, source.DeadlineExceeded:
		return "check the network path and the endpoint (AWS_REGION, AWS_ENDPOINT_URL_SQS, proxies) from the pod"
	default:
		return "see the error"
	}
}
