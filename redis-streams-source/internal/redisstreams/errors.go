package redisstreams

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"syscall"

	"github.com/redis/go-redis/v9"

	"github.com/numaflow-connectors/sources/common/source"
)

// replyCodes classifies Redis error replies by their first word (the error prefix).
var replyCodes = map[string]source.Code{
	// the group or stream is missing
	"NOGROUP": source.NotFound,

	// credentials and ACLs
	"NOAUTH":    source.PermissionDenied,
	"WRONGPASS": source.PermissionDenied,
	"NOPERM":    source.PermissionDenied,

	// the key holds something else, or the server refuses in its state
	"WRONGTYPE": source.FailedPrecondition,
	"BUSYGROUP": source.FailedPrecondition,
	"NOSCRIPT":  source.FailedPrecondition,
	"EXECABORT": source.FailedPrecondition,

	// transient server states: loading, failover, cluster reconfiguration
	"LOADING":     source.Unavailable,
	"MASTERDOWN":  source.Unavailable,
	"CLUSTERDOWN": source.Unavailable,
	"TRYAGAIN":    source.Unavailable,
	"READONLY":    source.Unavailable, // a write reached a replica during a failover
	"MOVED":       source.Unavailable,
	"ASK":         source.Unavailable,
	"BUSY":        source.Unavailable,
	"NOREPLICAS":  source.Unavailable,
	"OOM":         source.Unavailable,
	"CROSSSLOT":   source.InvalidArgument,
}

// messageCodes classifies "ERR ..." replies and go-redis's own errors by a substring.
var messageCodes = []struct {
	text string
	code source.Code
}{
	{"no such key", source.NotFound},
	{"max number of clients reached", source.Throttled},
	{"invalid stream id", source.InvalidArgument},
	{"the id specified in xadd", source.InvalidArgument},
	{"syntax error", source.InvalidArgument},
	{"unknown command", source.FailedPrecondition},
	{"all sentinels specified in configuration are unreachable", source.Unavailable},
	{"connection pool timeout", source.Unavailable},
	{"connection unusable", source.Unavailable},
	{"i/o timeout", source.Unavailable},
}

// errorCode classifies err: driver errors, Redis error replies by prefix, TLS and network failures.
func errorCode(err error) source.Code {
	if err == nil {
		return source.Unknown
	}
	var he *handleError
	if errors.As(err, &he) {
		return source.InvalidArgument
	}
	if errors.Is(err, redis.ErrClosed) {
		return source.Canceled
	}
	var rerr redis.Error
	if errors.As(err, &rerr) {
		msg := rerr.Error()
		prefix, _, _ := strings.Cut(msg, " ")
		if c, ok := replyCodes[prefix]; ok {
			return c
		}
		if c, ok := byMessage(msg); ok {
			return c
		}
		return source.Unknown
	}
	// TLS: a certificate the client does not trust, or a handshake the server refused.
	var unknownCA x509.UnknownAuthorityError
	var hostErr x509.HostnameError
	var invalid x509.CertificateInvalidError
	var verify *tls.CertificateVerificationError
	var alert tls.AlertError
	var header tls.RecordHeaderError
	switch {
	case errors.As(err, &unknownCA), errors.As(err, &hostErr), errors.As(err, &invalid), errors.As(err, &verify):
		return source.PermissionDenied
	case errors.As(err, &alert):
		return source.PermissionDenied
	case errors.As(err, &header):
		return source.FailedPrecondition // TLS to a plain-text port, or the reverse
	}
	var netErr net.Error
	switch {
	case errors.As(err, &netErr),
		errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE),
		errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, redis.ErrPoolTimeout),
		errors.Is(err, redis.ErrPoolExhausted):
		return source.Unavailable
	}
	if c, ok := byMessage(err.Error()); ok {
		return c
	}
	return source.Unknown
}

func byMessage(msg string) (source.Code, bool) {
	lower := strings.ToLower(msg)
	for _, m := range messageCodes {
		if strings.Contains(lower, m.text) {
			return m.code, true
		}
	}
	return source.Unknown, false
}

// isNoGroup reports a NOGROUP reply: the stream or the group does not exist.
func isNoGroup(err error) bool { return redis.HasErrorPrefix(err, "NOGROUP") }

// handleError is the failure of one handle of a batch call: not ours, not pending, or not a handle.
type handleError struct {
	op     string // "extending", "releasing", "acking"
	stream string
	id     string
	reason string
}

func (e *handleError) Error() string {
	if e.stream == "" {
		return fmt.Sprintf("%s: %s", e.op, e.reason)
	}
	return fmt.Sprintf("%s entry %s of stream %s: %s", e.op, e.id, e.stream, e.reason)
}
