package source

import (
	"context"
	"errors"
	"fmt"
	"strings"
)

// Code is the kind of a broker error, the only thing the adapter looks at to decide what to do.
type Code int

const (
	// Unknown errors are retried with backoff, like Unavailable.
	Unknown Code = iota
	// NotFound: the queue, subscription, stream or group does not exist.
	NotFound
	// PermissionDenied: credentials are missing, wrong or lack a permission.
	PermissionDenied
	// InvalidArgument: the request was malformed (e.g. an expired or bogus handle).
	InvalidArgument
	// Unavailable: the broker could not be reached or failed; retrying may work.
	Unavailable
	// Throttled: the broker rejected the call for rate or quota; retry after a backoff.
	Throttled
	// DeadlineExceeded: the call timed out.
	DeadlineExceeded
	// Canceled: the caller's context was cancelled (shutdown); not a broker problem.
	Canceled
	// FailedPrecondition: the broker refused in its current state (e.g. a message too large).
	FailedPrecondition
)

var codeNames = [...]string{"unknown", "not_found", "permission_denied", "invalid_argument", "unavailable",
	"throttled", "deadline_exceeded", "canceled", "failed_precondition"}

// String is the snake_case name used in logs and metric labels.
func (c Code) String() string {
	if c < 0 || int(c) >= len(codeNames) {
		return fmt.Sprintf("code(%d)", int(c))
	}
	return codeNames[c]
}

// Transient reports whether retrying the same call later may succeed.
func (c Code) Transient() bool {
	switch c {
	case Unknown, Unavailable, Throttled, DeadlineExceeded:
		return true
	}
	return false
}

// ErrNoDeadLetter is returned by DeadLetterer.DeadLetter when no dead-letter target is configured.
var ErrNoDeadLetter = errors.New("no dead-letter target configured")

// BatchError reports a batch call (Ack, Nack, Extend) in which some handles failed and the others
// succeeded. Failed maps the index of each failed handle in the call's slice to its error.
type BatchError struct {
	Failed map[int]error
}

func (e *BatchError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d entries failed", len(e.Failed))
	for _, err := range e.Failed {
		fmt.Fprintf(&b, " (first: %v)", err)
		break
	}
	return b.String()
}

// classify returns the code of err using the driver's table, with the context errors mapped here so a
// driver need not.
func classify(d Driver, err error) Code {
	switch {
	case err == nil:
		return Unknown
	case errors.Is(err, context.Canceled):
		return Canceled
	case errors.Is(err, context.DeadlineExceeded):
		return DeadlineExceeded
	}
	return d.ErrorCode(err)
}
