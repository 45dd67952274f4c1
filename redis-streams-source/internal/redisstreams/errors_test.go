package redisstreams

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"syscall"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/numaflow-connectors/sources/common/source"
)

// replyError is a Redis error reply as go-redis returns it.
type replyError string

func (e replyError) Error() string { return string(e) }
func (replyError) RedisError()     {}

var _ redis.Error = replyError("")

func TestErrorCode(t *testing.T) {
	wrap := func(err error) error { return fmt.Errorf("reading stream s with group g: %w", err) }
	tests := []struct {
		err  error
		want source.Code
	}{
		{replyError("NOGROUP No such key 's' or consumer group 'g' in XREADGROUP with GROUP option"), source.NotFound},
		{replyError("ERR no such key"), source.NotFound},
		{errGroupMissing, source.NotFound},
		{replyError("NOAUTH Authentication required."), source.PermissionDenied},
		{replyError("WRONGPASS invalid username-password pair or user is disabled."), source.PermissionDenied},
		{replyError("NOPERM this user has no permissions to run the 'xautoclaim' command"), source.PermissionDenied},
		{replyError("WRONGTYPE Operation against a key holding the wrong kind of value"), source.FailedPrecondition},
		{replyError("LOADING Redis is loading the dataset in memory"), source.Unavailable},
		{replyError("READONLY You can't write against a read only replica."), source.Unavailable},
		{replyError("CLUSTERDOWN The cluster is down"), source.Unavailable},
		{replyError("MASTERDOWN Link with MASTER is down"), source.Unavailable},
		{replyError("TRYAGAIN Multiple keys request during rehashing of slot"), source.Unavailable},
		{replyError("OOM command not allowed when used memory > 'maxmemory'."), source.Unavailable},
		{replyError("CROSSSLOT Keys in request don't hash to the same slot"), source.InvalidArgument},
		{replyError("ERR Invalid stream ID specified as stream command argument"), source.InvalidArgument},
		{replyError("ERR max number of clients reached"), source.Throttled},
		{replyError("ERR something new"), source.Unknown},
		{redis.ErrPoolTimeout, source.Unavailable},
		{errors.New("redis: all sentinels specified in configuration are unreachable"), source.Unavailable},
		{redis.ErrClosed, source.Canceled},
		{errors.New("something else"), source.Unknown},
		// Transport failures are the adapter's (source.NetworkCode): the driver leaves them Unknown.
		{&net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}, source.Unknown},
		{&net.OpError{Op: "read", Net: "tcp", Err: timeoutErr{}}, source.Unknown},
		{x509.UnknownAuthorityError{}, source.Unknown},
		{nil, source.Unknown},
	}
	d := &driver{}
	for _, tt := range tests {
		name := "nil"
		if tt.err != nil {
			name = tt.err.Error()
		}
		t.Run(name, func(t *testing.T) {
			if got := d.ErrorCode(tt.err); got != tt.want {
				t.Errorf("ErrorCode(%v) = %s, want %s", tt.err, got, tt.want)
			}
			if tt.err != nil {
				if got := d.ErrorCode(wrap(tt.err)); got != tt.want {
					t.Errorf("ErrorCode(wrapped %v) = %s, want %s", tt.err, got, tt.want)
				}
			}
		})
	}
}

// What go-redis's sentinel client returns when no sentinel answers wraps what each one failed with.
func TestErrorCodeAllSentinelsUnreachable(t *testing.T) {
	unreachable := func(errs ...error) error {
		return fmt.Errorf("redis: all sentinels specified in configuration are unreachable: %w", errors.Join(errs...))
	}
	for _, tt := range []struct {
		err  error
		want source.Code
	}{
		{unreachable(&tls.CertificateVerificationError{Err: x509.UnknownAuthorityError{}}), source.PermissionDenied},
		{unreachable(replyError("WRONGPASS invalid username-password pair or user is disabled.")), source.PermissionDenied},
		{unreachable(&net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}), source.Unavailable},
		{unreachable(errors.New("something new")), source.Unavailable},
	} {
		if got := source.Classify(&driver{}, tt.err); got != tt.want {
			t.Errorf("Classify(%v) = %s, want %s", tt.err, got, tt.want)
		}
	}
}

// TestEntryError: a handle the driver refuses is an invalid_argument entry error naming the stream.
func TestEntryError(t *testing.T) {
	d := &driver{group: "g"}
	e := d.entryError("extending", "s", "1-0", "gone")
	if e.Code != source.InvalidArgument || e.Error() != "extending entry 1-0 of stream s: gone" {
		t.Errorf("entry error %q classified %s", e, e.Code)
	}
	if e := d.entryError("acking", "", "", "not a redis-streams handle: int"); e.Error() != "acking group g: not a redis-streams handle: int" {
		t.Errorf("entry error %q", e)
	}
}

type timeoutErr struct{}

func (timeoutErr) Error() string   { return "i/o timeout" }
func (timeoutErr) Timeout() bool   { return true }
func (timeoutErr) Temporary() bool { return true }

// TestErrorCodeOfRealFailures classifies errors as go-redis really returns them.
func TestErrorCodeOfRealFailures(t *testing.T) {
	ctx := context.Background()
	// Nothing listens on a port that was just free.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	c := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1, Protocol: 2, DisableIdentity: true})
	defer c.Close()
	err = c.Ping(ctx).Err()
	if got := source.Classify(&driver{}, err); got != source.Unavailable {
		t.Errorf("connection refused (%v) = %s, want unavailable", err, got)
	}
	_ = c.Close()
	if got := errorCode(c.Ping(ctx).Err()); got != source.Canceled {
		t.Errorf("closed client = %s, want canceled", got)
	}
}
