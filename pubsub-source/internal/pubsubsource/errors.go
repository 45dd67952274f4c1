package pubsubsource

import (
	"errors"
	"fmt"

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

// ackIDError is the failure of one ack ID in an Acknowledge or ModifyAckDeadline call: reported by the
// service per ack ID with exactly-once delivery, or isolated by splitting a refused batch.
type ackIDError struct {
	op     string // acknowledging | modifying ack deadline on
	sub    string
	reason string // the service's reason, e.g. PERMANENT_FAILURE_INVALID_ACK_ID
	code   source.Code
	err    error // the call's error, when there is one
}

func (e *ackIDError) Error() string {
	if e.err != nil {
		return fmt.Sprintf("%s %s: %s: %v", e.op, e.sub, e.reason, e.err)
	}
	return fmt.Sprintf("%s %s: %s", e.op, e.sub, e.reason)
}

func (e *ackIDError) Unwrap() error { return e.err }

// errorCode classifies an error of this driver.
func errorCode(err error) source.Code {
	if err == nil {
		return source.Unknown
	}
	var ae *ackIDError
	if errors.As(err, &ae) {
		return ae.code
	}
	if s, ok := status.FromError(err); ok && s.Code() != codes.Unknown {
		if c, ok := codeTable[s.Code()]; ok {
			return c
		}
	}
	return source.Unknown
}
