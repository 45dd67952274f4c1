package redisstreams

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/redis/go-redis/v9"

	"github.com/numaflow-connectors/sources/common/source"
)

// Pre-flight checks (`redis-streams-source --check`). Redis checks a command's ACL permissions (the
// command and its keys) before it runs it, and a stream command parses its arguments when it runs. So
// each command the connector uses is sent once with an argument it refuses (a count that is not a
// number, an ID that is not an ID, a group that does not exist): an allowed user gets that refusal, a
// user without the permission gets NOPERM. Nothing is read, acked, claimed, deleted, created or added.

var _ source.Preflighter = (*driver)(nil)

const (
	preflightGroup = "numaflow-connectors-preflight-no-such-group"
	notAnID        = "not-an-id"
	notANumber     = "not-a-number"
)

// preflightScript is the consumer clean-up script's shape: the commands it runs, each refused.
const preflightScript = `local r = redis.pcall('XPENDING', KEYS[1], ARGV[1], '-', '+', 'not-a-number')
if type(r) == 'table' and r.err and string.find(r.err, 'NOPERM') then return r end
return redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])`

// probe is one command the connector uses, with the arguments that make Redis refuse it after the ACL
// check.
type probe struct {
	name string // the check's name
	acl  string // what to allow, for the fix
	args []any
	note string // when the command is needed
}

func (d *driver) probes(s string) []probe {
	ps := []probe{
		{"XREADGROUP (receive)", "+xreadgroup", []any{"XREADGROUP", "GROUP", d.group, d.consumer, "COUNT", notANumber, "STREAMS", s, ">"}, ""},
		{"XACK (ack)", "+xack", []any{"XACK", s, d.group, notAnID}, ""},
		{"XCLAIM (lease extension)", "+xclaim", []any{"XCLAIM", s, d.group, d.consumer, 0, notAnID}, ""},
		{"XAUTOCLAIM (claiming from dead replicas)", "+xautoclaim", []any{"XAUTOCLAIM", s, d.group, d.consumer, notANumber, "0-0"}, ""},
		{"XPENDING (redeliveries)", "+xpending", []any{"XPENDING", s, d.group, "-", "+", notANumber}, ""},
		{"XINFO STREAM (pending)", "+xinfo|stream", []any{"XINFO", "STREAM", s, "FULL", "COUNT", notANumber}, ""},
		{"XINFO CONSUMERS (consumer clean-up)", "+xinfo|consumers", []any{"XINFO", "CONSUMERS", s, preflightGroup}, ""},
		{"EVAL (consumer clean-up: XPENDING, XGROUP DELCONSUMER)", "+eval +xpending +xgroup|delconsumer",
			[]any{"EVAL", preflightScript, 1, s, preflightGroup, d.consumer}, "without it, consumers of scaled-down replicas are never removed"},
		{"XRANGE (dead-lettering)", "+xrange", []any{"XRANGE", s, notAnID, "+"}, ""},
	}
	if d.create {
		ps = append(ps, probe{"XGROUP CREATE (REDIS_CREATE_GROUP)", "+xgroup|create", []any{"XGROUP", "CREATE", s, preflightGroup, notAnID}, ""})
	}
	if d.delOnAck {
		ps = append(ps, probe{"XDEL (REDIS_DELETE_ON_ACK)", "+xdel", []any{"XDEL", s, notAnID}, ""})
	}
	return ps
}

// Preflight checks the connection, every stream and its group, and each command the connector uses
// on it (and XADD on the dead-letter stream).
func (d *driver) Preflight(ctx context.Context) []source.Check {
	var checks []source.Check
	err := d.api.Ping(ctx).Err()
	checks = append(checks, source.Check{Name: "redis reachable (PING, with REDIS_USERNAME/REDIS_PASSWORD)", Err: err, Fix: d.fixFor(err, "")})
	if err != nil {
		return append(checks, source.Check{Name: "streams, groups and commands", Skipped: "redis is not reachable"})
	}
	for _, s := range d.streams {
		checks = append(checks, d.groupCheck(ctx, s))
		for _, p := range d.probes(s) {
			err := probeOutcome(d.api.Do(ctx, p.args...).Err())
			fix := d.fixFor(err, p.acl)
			if fix != "" && p.note != "" {
				fix += " (" + p.note + ")"
			}
			checks = append(checks, source.Check{Name: fmt.Sprintf("%s on %s", p.name, s), Err: err, Fix: fix})
		}
	}
	if d.dlq != "" {
		err := probeOutcome(d.api.Do(ctx, "XADD", d.dlq, "MAXLEN", notANumber, "*", "f", "v").Err())
		checks = append(checks, source.Check{Name: "XADD on the dead-letter stream " + d.dlq, Err: err, Fix: d.fixFor(err, "+xadd")})
	}
	return checks
}

// groupCheck checks that stream s has the group, or that the connector may create it.
func (d *driver) groupCheck(ctx context.Context, s string) source.Check {
	name := fmt.Sprintf("stream %s, group %s (XINFO GROUPS)", s, d.group)
	gs, err := d.api.XInfoGroups(ctx, s).Result()
	switch {
	case err != nil && d.create && strings.Contains(strings.ToLower(err.Error()), "no such key"):
		return source.Check{Name: name + ": the stream and group are created at the first read"}
	case err != nil:
		return source.Check{Name: name, Err: err, Fix: d.fixFor(err, "+xinfo|groups")}
	case !slices.ContainsFunc(gs, func(g redis.XInfoGroup) bool { return g.Name == d.group }) && !d.create:
		return source.Check{Name: name, Err: errGroupMissing,
			Fix: fmt.Sprintf("create it (XGROUP CREATE %s %s $ MKSTREAM) or set REDIS_CREATE_GROUP=true", s, d.group)}
	}
	return source.Check{Name: name}
}

// probeOutcome turns a probe's reply into the check's outcome: Redis's refusal of the argument means the
// command was allowed; NOPERM, and a connection that failed, do not.
func probeOutcome(err error) error {
	var rerr redis.Error
	if err == nil || errors.As(err, &rerr) && !strings.HasPrefix(rerr.Error(), "NOPERM") {
		return nil
	}
	return err
}

// fixFor is what to do about a failed check: the ACL rule to add when permission was denied, else by
// the kind of failure.
func (d *driver) fixFor(err error, acl string) string {
	if err == nil {
		return ""
	}
	switch source.Classify(d, err) {
	case source.PermissionDenied:
		if acl == "" {
			return "check REDIS_USERNAME and REDIS_PASSWORD (or the URL's), and the TLS settings"
		}
		return fmt.Sprintf("allow it for the connector's user: ACL SETUSER <user> %s, with the stream keys (~pattern) too", acl)
	case source.NotFound:
		return "create the stream and group, or set REDIS_CREATE_GROUP=true"
	case source.Unavailable, source.DeadlineExceeded:
		return "check the address, the network path from the pod and REDIS_MODE"
	default:
		return "see the error"
	}
}
