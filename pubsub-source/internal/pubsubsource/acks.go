package pubsubsource

import (
	"context"
	"fmt"
	"strings"
	"time"

	pb "cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	"github.com/googleapis/gax-go/v2/apierror"
	"google.golang.org/grpc/status"

	"github.com/numaflow-connectors/sources/common/source"
)

// acknowledge acknowledges the deliveries. With exactly-once delivery the service reports each ack ID it
// could not acknowledge; those come back in a *source.BatchError (transient ones classified
// Unavailable, expired or invalid ones InvalidArgument).
func (d *driver) acknowledge(ctx context.Context, handles []source.Handle) error {
	return d.batch(ctx, ackIDs(handles), "acknowledging", func(ctx context.Context, ids []string) error {
		return d.sub.Acknowledge(ctx, &pb.AcknowledgeRequest{Subscription: d.name, AckIds: ids}, noRetry)
	})
}

func (d *driver) modify(ctx context.Context, ids []string, deadline time.Duration) error {
	secs := int32(min(max((deadline+time.Second-1)/time.Second, 0), maxAckDeadline/time.Second))
	return d.batch(ctx, ids, "modifying ack deadline on", func(ctx context.Context, ids []string) error {
		return d.sub.ModifyAckDeadline(ctx, &pb.ModifyAckDeadlineRequest{Subscription: d.name, AckIds: ids, AckDeadlineSeconds: secs}, noRetry)
	})
}

// batch runs call on ids in chunks of at most maxAckIDs IDs and maxAckBytes bytes and collapses the
// per-ID failures with source.BatchResult.
func (d *driver) batch(ctx context.Context, ids []string, op string, call func(context.Context, []string) error) error {
	var failed map[int]error
	for lo := 0; lo < len(ids); {
		hi, size := lo, 0
		for hi < len(ids) && hi-lo < maxAckIDs && (hi == lo || size+len(ids[hi]) <= maxAckBytes) {
			size += len(ids[hi])
			hi++
		}
		f, err := d.call(ctx, ids[lo:hi], op, call)
		if err != nil {
			f = make(map[int]error, hi-lo)
			for i := range hi - lo {
				f[i] = err
			}
		}
		for i, e := range f {
			if failed == nil {
				failed = make(map[int]error)
			}
			failed[lo+i] = e
		}
		lo = hi
	}
	return source.BatchResult(len(ids), failed)
}

// call runs one chunk. It returns the per-ID failures when the service reported them (exactly-once
// delivery) or when a refused chunk could be split to find the IDs it refused; otherwise the call's
// error, wrapped.
func (d *driver) call(ctx context.Context, ids []string, op string, call func(context.Context, []string) error) (map[int]error, error) {
	err := call(ctx, ids)
	if err == nil {
		return nil, nil
	}
	if f, ok := d.perAckID(ids, op, err); ok {
		return f, nil
	}
	if len(ids) > 1 && refusedAckID(err) && ctx.Err() == nil {
		// The service refused the whole request for some of its IDs (the emulator does this for an
		// unknown ack ID): split it to find them, so the good ones are not given up.
		mid := len(ids) / 2
		left, lerr := d.call(ctx, ids[:mid], op, call)
		right, rerr := d.call(ctx, ids[mid:], op, call)
		out := make(map[int]error, len(left)+len(right))
		for i, e := range left {
			out[i] = e
		}
		if lerr != nil {
			for i := range mid {
				out[i] = lerr
			}
		}
		for i, e := range right {
			out[mid+i] = e
		}
		if rerr != nil {
			for i := range len(ids) - mid {
				out[mid+i] = rerr
			}
		}
		return out, nil
	}
	if len(ids) == 1 && errorCode(err) == source.InvalidArgument {
		return nil, d.entryError(op, "ack ID refused (expired or invalid)", source.InvalidArgument, err)
	}
	return nil, fmt.Errorf("%s subscription %s: %w", op, d.name, err)
}

// perAckID reads exactly-once delivery's per-ack-ID results from the error's ErrorInfo metadata
// (ack ID -> reason). IDs it names failed: TRANSIENT_* ones may be retried, the others (e.g.
// PERMANENT_FAILURE_INVALID_ACK_ID: the ack ID expired) not. IDs it does not name were processed,
// unless the call's status is itself transient, in which case they are retried too (a repeated ack is
// harmless). ok is false when the error carries no per-ID results.
func (d *driver) perAckID(ids []string, op string, err error) (map[int]error, bool) {
	ae, isAPI := apierror.FromError(err)
	if !isAPI {
		return nil, false
	}
	md := ae.Metadata()
	named := false
	for _, id := range ids {
		if _, ok := md[id]; ok {
			named = true
			break
		}
	}
	if !named {
		return nil, false
	}
	whole := errorCode(err)
	failed := make(map[int]error)
	for i, id := range ids {
		reason, ok := md[id]
		switch {
		case ok && strings.HasPrefix(reason, "TRANSIENT_"):
			failed[i] = d.entryError(op, reason, source.Unavailable, nil)
		case ok && reason == "PERMANENT_FAILURE_INVALID_ACK_ID":
			failed[i] = d.entryError(op, reason, source.InvalidArgument, nil)
		case ok:
			failed[i] = d.entryError(op, reason, source.FailedPrecondition, nil)
		case whole.Transient():
			failed[i] = fmt.Errorf("%s subscription %s: %w", op, d.name, err)
		}
	}
	return failed, true
}

// refusedAckID reports whether err is the service refusing a request for an ack ID in it ("Invalid ack
// id (ack_id=...)" from the emulator, "You have passed an invalid ack ID to the service" from Pub/Sub),
// as opposed to a request that is wrong as a whole.
func refusedAckID(err error) bool {
	if errorCode(err) != source.InvalidArgument {
		return false
	}
	msg := strings.ToLower(status.Convert(err).Message())
	return strings.Contains(msg, "ack id") || strings.Contains(msg, "ack_id")
}

func ackIDs(handles []source.Handle) []string {
	out := make([]string, len(handles))
	for i, h := range handles {
		out[i], _ = h.(string)
	}
	return out
}
