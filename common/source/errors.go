package source

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"syscall"
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

// unreachable reports whether an error of this kind means the broker or its resource cannot be used
// now: readiness goes false until a health check (or a receive with messages) passes.
func (c Code) unreachable() bool {
	switch c {
	case Unavailable, DeadlineExceeded, NotFound, PermissionDenied:
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

// BatchResult turns the per-entry failures of one batch call over n handles into the error the call
// returns: nil when nothing failed, the one error when every handle failed with that same error (the
// call failed as a whole), else a *BatchError. failed maps an index in the call's slice to its error.
func BatchResult(n int, failed map[int]error) error {
	if len(failed) == 0 {
		return nil
	}
	if len(failed) == n {
		var first error
		same := true
		for _, err := range failed {
			if first == nil {
				first = err
			} else if err != first {
				same = false
				break
			}
		}
		if same {
			return first
		}
	}
	return &BatchError{Failed: failed}
}

// EntryError is the failure of one entry of a batch call (one handle of an Ack, Nack or Extend) as the
// broker reported it, already classified: the adapter takes Code as it is and does not ask the driver.
type EntryError struct {
	Op       string // what the call did, as a gerund: "deleting", "extending the lease of"
	Resource string // the queue, subscription or stream
	Reason   string // the broker's own code or reason for the entry, e.g. ReceiptHandleIsInvalid
	Code     Code
	Err      error // the underlying error, when there is one
}

func (e *EntryError) Error() string {
	msg := fmt.Sprintf("%s %s: %s", e.Op, e.Resource, e.Reason)
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return msg
}

func (e *EntryError) Unwrap() error { return e.Err }

// NetworkCode classifies the transport failures every broker client shares: a TLS certificate the
// client does not trust or a handshake the server refused (PermissionDenied: fixing it takes a config
// change), TLS spoken to a plain-text port or the reverse (FailedPrecondition), an i/o timeout
// (DeadlineExceeded), a refused, reset or closed connection or a DNS failure (Unavailable). ok is false
// when err is none of these.
func NetworkCode(err error) (code Code, ok bool) {
	var (
		unknownCA x509.UnknownAuthorityError
		hostErr   x509.HostnameError
		invalid   x509.CertificateInvalidError
		verify    *tls.CertificateVerificationError
		alert     tls.AlertError
		header    tls.RecordHeaderError
		netErr    net.Error
	)
	switch {
	case err == nil:
		return Unknown, false
	case errors.As(err, &unknownCA), errors.As(err, &hostErr), errors.As(err, &invalid), errors.As(err, &verify),
		errors.As(err, &alert):
		return PermissionDenied, true
	case errors.As(err, &header):
		return FailedPrecondition, true
	case errors.As(err, &netErr) && netErr.Timeout():
		return DeadlineExceeded, true
	case errors.As(err, &netErr),
		errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE),
		errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return Unavailable, true
	}
	return Unknown, false
}

// Classify returns the code the adapter gives an error of d: context errors and *EntryError first,
// then d's ErrorCode, then NetworkCode for what the driver left Unknown. Drivers' tests use it to
// check what the adapter will do with their errors.
func Classify(d Driver, err error) Code {
	var entry *EntryError
	switch {
	case err == nil:
		return Unknown
	case errors.Is(err, context.Canceled):
		return Canceled
	case errors.Is(err, context.DeadlineExceeded):
		return DeadlineExceeded
	case errors.As(err, &entry):
		return entry.Code
	}
	if c := d.ErrorCode(err); c != Unknown {
		return c
	}
	c, _ := NetworkCode(err)
	return c
}
