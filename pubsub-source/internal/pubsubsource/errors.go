package pubsubsource

import (
	"errors"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/numaflow-connectors/sources/common/source"
)

// codeTable classifies gRPC status codes. Codes not listed are Unknown (retried like Unavailable).
var codeTable = map[codes.Code]source.Code{
	codes.NotFound:           source.NotFound,
	codes.PermissionDenied:   source.PermissionDenied,
	codes.Unauthenticated:    source.PermissionDenied,
	codes.InvalidArgument:    source.InvalidArgument,
	codes.Unavailable:        source.Unavailable,
	codes.Aborted:            source.Unavailable,
	codes.Internal:           source.Unavailable,
	codes.ResourceExhausted:  source.Throttled,
	codes.DeadlineExceeded:   source.DeadlineExceeded,
	codes.Canceled:           source.Canceled,
	codes.FailedPrecondition: source.FailedPrecondition,
	codes.OutOfRange:         source.InvalidArgument,
	codes.Unimplemented:      source.FailedPrecondition,
}

// entryError is the failure of one ack ID in an Acknowledge or ModifyAckDeadline call: reported by
// the service per ack ID with exactly-once delivery, or isolated by splitting a refused batch. reason
// is the service's (e.g. PERMANENT_FAILURE_INVALID_ACK_ID); err is the call's error, when there is one.
func (d *driver) entryError(op, reason string, code source.Code, err error) *source.EntryError {
	return &source.EntryError{Op: op, Resource: d.name, Reason: reason, Code: code, Err: err}
}

// errDetached is what a health check finds on a subscription detached from its topic: Pub/Sub has
// dropped its messages and refuses every pull with FAILED_PRECONDITION, for good (a subscription
// cannot be attached again). Classified not_found: the subscription the source reads is gone, so
// readiness goes false and stays false.
var errDetached = errors.New("the subscription is detached from its topic: Pub/Sub dropped its messages and refuses every pull")

// errNoConsume is what a health check finds when pulls are refused for permission and IAM confirms
// the caller lacks pubsub.subscriptions.consume on the subscription (it may still read it).
var errNoConsume = errors.New("the caller lacks pubsub.subscriptions.consume on the subscription (grant roles/pubsub.subscriber)")

// errorCode classifies an error of this driver by its gRPC status; a detached subscription, found by a
// health check or refused by a pull, is not_found; a missing consume permission found by a health
// check is permission_denied.
func errorCode(err error) source.Code {
	if err == nil {
		return source.Unknown
	}
	if errors.Is(err, errDetached) || detachedPull(err) {
		return source.NotFound
	}
	if errors.Is(err, errNoConsume) {
		return source.PermissionDenied
	}
	if s, ok := status.FromError(err); ok && s.Code() != codes.Unknown {
		if c, ok := codeTable[s.Code()]; ok {
			return c
		}
	}
	return source.Unknown
}

// detachedPull reports whether err is the service's refusal of a pull on a detached subscription.
// Pub/Sub documents the code ("Pull and StreamingPull requests will return FAILED_PRECONDITION") but
// not the text, so the status's own message (not the text wrapped around it, which names the
// subscription) is matched on "detached", case-insensitively.
func detachedPull(err error) bool {
	var se interface{ GRPCStatus() *status.Status }
	if !errors.As(err, &se) {
		return false
	}
	s := se.GRPCStatus()
	return s.Code() == codes.FailedPrecondition && strings.Contains(strings.ToLower(s.Message()), "detached")
}
