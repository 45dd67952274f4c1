package sqssource

import (
	"context"
	"fmt"
	"math"
	"strconv"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"github.com/numaflow-connectors/sources/common/source"
)

// deleteMessages deletes the messages with DeleteMessageBatch. A receipt handle SQS refuses (invalid, or expired
// on a FIFO queue) is reported in a *source.BatchError with a ReceiptHandleIsInvalid error, classified
// InvalidArgument: the adapter logs and counts it and does not retry it; the message may come back
// (at-least-once). Deleting a message that is already gone succeeds at SQS.
func (d *driver) deleteMessages(ctx context.Context, handles []source.Handle) error {
	return d.batch(ctx, handles, "deleting messages from", func(ctx context.Context, ids, receipts []string) (map[string]types.BatchResultErrorEntry, map[string]bool, error) {
		entries := make([]types.DeleteMessageBatchRequestEntry, len(ids))
		for i := range ids {
			entries[i] = types.DeleteMessageBatchRequestEntry{Id: &ids[i], ReceiptHandle: &receipts[i]}
		}
		out, err := d.api.DeleteMessageBatch(ctx, &sqs.DeleteMessageBatchInput{QueueUrl: &d.cfg.QueueURL, Entries: entries})
		if err != nil {
			return nil, nil, fmt.Errorf("deleting messages from queue %s: %w", d.cfg.QueueURL, err)
		}
		ok := make(map[string]bool, len(out.Successful))
		for _, s := range out.Successful {
			ok[deref(s.Id)] = true
		}
		return failedByID(out.Failed), ok, nil
	})
}

// changeVisibility sets the visibility timeout of the messages to to. For a nack (delay rounded up to
// whole seconds, at most 12 h) a message that is no longer in flight is already visible: that counts
// as success.
func (d *driver) changeVisibility(ctx context.Context, handles []source.Handle, to time.Duration, nack bool) error {
	vis := seconds(to)
	return d.batch(ctx, handles, "changing visibility of messages in", func(ctx context.Context, ids, receipts []string) (map[string]types.BatchResultErrorEntry, map[string]bool, error) {
		entries := make([]types.ChangeMessageVisibilityBatchRequestEntry, len(ids))
		for i := range ids {
			entries[i] = types.ChangeMessageVisibilityBatchRequestEntry{Id: &ids[i], ReceiptHandle: &receipts[i], VisibilityTimeout: vis}
		}
		out, err := d.api.ChangeMessageVisibilityBatch(ctx, &sqs.ChangeMessageVisibilityBatchInput{QueueUrl: &d.cfg.QueueURL, Entries: entries})
		if err != nil {
			return nil, nil, fmt.Errorf("changing visibility of messages in queue %s: %w", d.cfg.QueueURL, err)
		}
		ok := make(map[string]bool, len(out.Successful))
		for _, s := range out.Successful {
			ok[deref(s.Id)] = true
		}
		failed := failedByID(out.Failed)
		if nack {
			for id, f := range failed {
				if isNotInflight(deref(f.Code)) {
					delete(failed, id)
					ok[id] = true
				}
			}
		}
		return failed, ok, nil
	})
}

func isNotInflight(code string) bool {
	return code == "MessageNotInflight" || code == "AWS.SimpleQueueService.MessageNotInflight"
}

// batchCall runs one SQS batch call for entries with the given ids and receipt handles and returns
// the failed entries and the successful ids, by entry id.
type batchCall func(ctx context.Context, ids, receipts []string) (map[string]types.BatchResultErrorEntry, map[string]bool, error)

// batch runs call over handles in chunks of 10 and maps per-entry failures back to indexes of handles.
// The result is source.BatchResult's.
func (d *driver) batch(ctx context.Context, handles []source.Handle, op string, call batchCall) error {
	if len(handles) == 0 {
		return nil
	}
	failed := map[int]error{}
	for start := 0; start < len(handles); start += maxBatch {
		end := min(start+maxBatch, len(handles))
		var ids, receipts []string
		var idx []int
		for i := start; i < end; i++ {
			rh, ok := handles[i].(string)
			if !ok || rh == "" {
				failed[i] = d.entryError(op, "ReceiptHandleIsInvalid", fmt.Sprintf("handle of type %T is not a receipt handle", handles[i]), true)
				continue
			}
			ids = append(ids, strconv.Itoa(len(ids)))
			receipts = append(receipts, rh)
			idx = append(idx, i)
		}
		if len(ids) == 0 {
			continue
		}
		bad, good, err := call(ctx, ids, receipts)
		if err != nil {
			for _, i := range idx {
				failed[i] = err
			}
			continue
		}
		for j, id := range ids {
			switch f, isBad := bad[id]; {
			case isBad:
				failed[idx[j]] = d.entryError(op, deref(f.Code), deref(f.Message), f.SenderFault)
			case !good[id]:
				failed[idx[j]] = d.entryError(op, "MissingResult", "SQS reported neither success nor failure for the entry", false)
			}
		}
	}
	return source.BatchResult(len(handles), failed)
}

func failedByID(entries []types.BatchResultErrorEntry) map[string]types.BatchResultErrorEntry {
	m := make(map[string]types.BatchResultErrorEntry, len(entries))
	for _, e := range entries {
		m[deref(e.Id)] = e
	}
	return m
}

// seconds rounds d up to whole seconds for SQS's integer timeouts.
func seconds(d time.Duration) int32 {
	if d <= 0 {
		return 0
	}
	return int32(math.Ceil(d.Seconds()))
}
