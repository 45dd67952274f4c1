package redisstreams

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/numaflow-connectors/sources/common/source/drivertest"
	"github.com/numaflow-connectors/sources/redis-streams-source/redistest"
)

// state is what the checks must not change: the stream, its groups, their consumers and pending lists.
func state(ctx context.Context, t *testing.T, c *redis.Client, stream, dlq string) string {
	t.Helper()
	var b strings.Builder
	n, _ := c.XLen(ctx, stream).Result()
	dn, _ := c.XLen(ctx, dlq).Result()
	exists, _ := c.Exists(ctx, dlq).Result()
	gs, _ := c.XInfoGroups(ctx, stream).Result()
	b.WriteString(strings.Join([]string{stream, itoa(n), dlq, itoa(dn), itoa(exists)}, " "))
	for _, g := range gs {
		cs, _ := c.XInfoConsumers(ctx, stream, g.Name).Result()
		b.WriteString(" group " + g.Name + " pending " + itoa(g.Pending) + " last " + g.LastDeliveredID + " consumers")
		for _, x := range cs {
			b.WriteString(" " + x.Name + ":" + itoa(x.Pending))
		}
	}
	return b.String()
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

func toAny(ss []string) []any {
	out := make([]any, len(ss))
	for i, s := range ss {
		out[i] = s
	}
	return out
}

// Every check passes for a user with every command the connector needs, and nothing changes in Redis;
// a user without one command fails exactly that check, naming the ACL rule to add; a stopped server
// fails the first check in bounded time.
func TestPreflightACL(t *testing.T) {
	srv := redistest.Shared(t)
	admin := srv.Client(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	stream := redistest.Name(t)
	publishN(t, admin, stream, 5, "e")
	if err := admin.XGroupCreate(ctx, stream, "g", "0").Err(); err != nil {
		t.Fatal(err)
	}
	// One entry read and pending, so claims and acks would change something if they ran.
	if err := admin.XReadGroup(ctx, &redis.XReadGroupArgs{Group: "g", Consumer: "other", Streams: []string{stream, ">"}, Count: 1}).Err(); err != nil {
		t.Fatal(err)
	}
	user := func(name string, rules ...string) {
		args := append([]any{"ACL", "SETUSER", name, "reset", "on", ">pw", "~*"}, toAny(rules)...)
		if err := admin.Do(ctx, args...).Err(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { admin.Do(context.Background(), "ACL", "DELUSER", name) })
	}
	all := []string{"+ping", "+xreadgroup", "+xack", "+xclaim", "+xautoclaim", "+xpending", "+xinfo", "+eval", "+xgroup", "+xrange", "+xadd", "+xdel"}
	user("preflight-all", all...)
	user("preflight-no-xautoclaim", append(all, "-xautoclaim")...)
	user("preflight-no-eval", append(all, "-eval")...)

	open := func(username string) *driver {
		cfg := testConfig(srv.URL(), stream)
		cfg.CreateGroup = false
		cfg.DeadLetterStream = stream + ":dlq"
		cfg.Username, cfg.Password = username, "pw"
		return openTest(ctx, t, cfg)
	}
	before := state(ctx, t, admin, stream, stream+":dlq")
	for name, o := range drivertest.Outcomes(open("preflight-all").Preflight(ctx)) {
		if o != "pass" {
			t.Errorf("user with every command: %s: %s", name, o)
		}
	}
	if after := state(ctx, t, admin, stream, stream+":dlq"); after != before {
		t.Fatalf("the checks changed redis:\nbefore %s\nafter  %s", before, after)
	}

	for _, tc := range []struct{ user, check, rule string }{
		{"preflight-no-xautoclaim", "XAUTOCLAIM (claiming from dead replicas) on " + stream, "+xautoclaim"},
		{"preflight-no-eval", "EVAL (consumer clean-up: XPENDING, XGROUP DELCONSUMER) on " + stream, "+eval"},
	} {
		got := drivertest.Outcomes(open(tc.user).Preflight(ctx))
		for name, o := range got {
			want := "pass"
			if name == tc.check {
				want = "fail"
			}
			if !strings.HasPrefix(o, want) {
				t.Errorf("%s: %s: %s, want %s", tc.user, name, o, want)
			}
		}
		if !strings.Contains(got[tc.check], "ACL SETUSER <user> "+tc.rule) {
			t.Errorf("%s: fix %q does not name the rule", tc.user, got[tc.check])
		}
	}

	down := redistest.Start(t, redistest.Options{})
	cfg := testConfig(down.URL(), stream)
	down.Kill()
	d := openTest(ctx, t, cfg)
	start := time.Now()
	got := drivertest.Outcomes(d.Preflight(ctx))
	if took := time.Since(start); took > 30*time.Second {
		t.Errorf("checks against a stopped server took %s", took)
	}
	if o := got["redis reachable (PING, with REDIS_USERNAME/REDIS_PASSWORD)"]; !strings.HasPrefix(o, "fail: check the address") || len(got) != 2 {
		t.Errorf("stopped server: %v", got)
	}
}
