package redisstreams

import (
	"errors"
	"strings"

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
}

// errorCode classifies err: Redis error replies by prefix, then go-redis's own errors. Transport
// failures (TLS, network) are left Unknown: the adapter classifies those with source.NetworkCode.
func errorCode(err error) source.Code {
	switch {
	case err == nil:
		return source.Unknown
	case errors.Is(err, redis.ErrClosed):
		return source.Canceled
	case errors.Is(err, redis.ErrPoolTimeout), errors.Is(err, redis.ErrPoolExhausted):
		return source.Unavailable
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
	if _, ok := source.NetworkCode(err); ok {
		// Also when wrapped, e.g. in go-redis's "all sentinels ... unreachable": a certificate the
		// sentinels present that is not trusted is permission_denied there as everywhere.
		return source.Unknown
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

// entryError is the failure of one handle of a batch call (not ours, not pending, or not a handle):
// InvalidArgument, so the adapter does not retry it.
func (d *driver) entryError(op, stream, id, reason string) *source.EntryError {
	if stream == "" {
		return &source.EntryError{Op: op, Resource: "group " + d.group, Reason: reason, Code: source.InvalidArgument}
	}
	return &source.EntryError{Op: op + " entry " + id + " of", Resource: "stream " + stream, Reason: reason, Code: source.InvalidArgument}
}
