package pubsubsource

import (
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

// errorCode classifies an error of this driver by its gRPC status.
func errorCode(err error) source.Code {
	if err == nil {
		return source.Unknown
	}
	if s, ok := status.FromError(err); ok && s.Code() != codes.Unknown {
		if c, ok := codeTable[s.Code()]; ok {
			return c
		}
	}
	return source.Unknown
}
