package redisstreams

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/numaflow-connectors/sources/common/config"
	"github.com/numaflow-connectors/sources/common/source"
	"github.com/numaflow-connectors/sources/redis-streams-source/redistest"
)

// Integration tests against a real redis-server (redistest).

func publishN(t *testing.T, c redis.Cmdable, stream string, n int, prefix string) []string {
	t.Helper()
	ids := make([]string, n)
	for i := range n {
		id, err := c.XAdd(context.Background(), &redis.XAddArgs{Stream: stream, Values: []any{testPayloadField, fmt.Sprintf("%s-%d", prefix, i)}}).Result()
		if err != nil {
			t.Fatalf("XADD: %v", err)
		}
		ids[i] = id
	}
	return ids
}

// receiveUntil calls Receive until n distinct entries arrived or within passed; errors are tolerated
// (an outage or a failover) and returned last.
func receiveUntil(t *testing.T, d *driver, n int, within time.Duration) ([]*source.Message, error) {
	t.Helper()
	seen := map[string]bool{}
	var out []*source.Message
	var last error
	deadline := time.Now().Add(within)
	for len(out) < n && time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		msgs, err := d.Receive(ctx, 500)
		cancel()
		if err != nil {
			last = err
			time.Sleep(100 * time.Millisecond) // the adapter's backoff
			continue
		}
		for _, m := range msgs {
			if !seen[m.ID] {
				seen[m.ID] = true
				out = append(out, m)
			}
		}
	}
	return out, last
}

func pendingOf(t *testing.T, c redis.Cmdable, stream string) []redis.XPendingExt {
	t.Helper()
	p, err := c.XPendingExt(context.Background(), &redis.XPendingExtArgs{Stream: stream, Group: "g", Start: "-", End: "+", Count: 1000}).Result()
	if err != nil {
		t.Fatalf("XPENDING: %v", err)
	}
	return p
}

func TestIntegrationReceiveAckBacklog(t *testing.T) {
	srv := redistest.Shared(t)
	c := srv.Client(t)
	ctx := context.Background()
	stream := redistest.Name(t)
	d := openTest(ctx, t, testConfig(srv.URL(), stream))
	if err := d.Check(ctx); err != nil {
		t.Fatalf("Check before the group exists (REDIS_CREATE_GROUP): %v", err)
	}
	publishN(t, c, stream, 10, "m")
	msgs, err := receiveUntil(t, d, 10, 10*time.Second)
	if len(msgs) != 10 {
		t.Fatalf("received %d of 10 (%v)", len(msgs), err)
	}
	for _, m := range msgs {
		if m.Deliveries != 1 {
			t.Errorf("first delivery counted %d", m.Deliveries)
		}
	}
	publishN(t, c, stream, 5, "later")
	if n, err := d.Backlog(ctx); n != 15 || err != nil {
		t.Fatalf("backlog = %d, %v; want 15 (5 undelivered + 10 pending)", n, err)
	}
	if err := d.Ack(ctx, handles(msgs[:4])); err != nil {
		t.Fatal(err)
	}
	if n, _ := d.Backlog(ctx); n != 11 {
		t.Fatalf("backlog after 4 acks = %d, want 11", n)
	}
	if p := pendingOf(t, c, stream); len(p) != 6 {
		t.Fatalf("%d pending after acking 4 of 10", len(p))
	}
}

func TestIntegrationExtendKeepsEntriesFromOtherReplicas(t *testing.T) {
	srv := redistest.Shared(t)
	c := srv.Client(t)
	ctx := context.Background()
	stream := redistest.Name(t)
	a := openTest(ctx, t, testConfig(srv.URL(), stream))
	b := openTest(ctx, t, testConfig(srv.URL(), stream))
	publishN(t, c, stream, 3, "held")
	held, _ := receiveUntil(t, a, 3, 10*time.Second)
	if len(held) != 3 {
		t.Fatalf("a received %d of 3", len(held))
	}
	// a keeps extending for 3 claim idle times; b's claim passes must get nothing.
	until := time.Now().Add(3 * testClaimIdle)
	for time.Now().Before(until) {
		if err := a.Extend(ctx, handles(held), testClaimIdle); err != nil {
			t.Fatalf("Extend: %v", err)
		}
		msgs, err := b.Receive(ctx, 500)
		if err != nil {
			t.Fatal(err)
		}
		if len(msgs) > 0 {
			t.Fatalf("b received %q held and extended by a", msgs[0].Payload)
		}
	}
	for _, p := range pendingOf(t, c, stream) {
		if p.Consumer != a.consumer || p.RetryCount != 1 {
			t.Errorf("pending %+v: extension must keep the owner and the delivery count", p)
		}
	}
	// a stops extending: after the claim idle time b takes them, counted as second deliveries.
	got, err := receiveUntil(t, b, 3, testClaimIdle+5*time.Second)
	if len(got) != 3 {
		t.Fatalf("b claimed %d of 3 (%v)", len(got), err)
	}
	for _, m := range got {
		if m.Deliveries != 2 {
			t.Errorf("claimed entry deliveries %d, want 2", m.Deliveries)
		}
	}
}

func TestIntegrationClaimFromDeadConsumerAndRemoveIt(t *testing.T) {
	srv := redistest.Shared(t)
	c := srv.Client(t)
	ctx := context.Background()
	stream := redistest.Name(t)
	dead := openTest(ctx, t, testConfig(srv.URL(), stream))
	publishN(t, c, stream, 20, "work")
	if got, _ := receiveUntil(t, dead, 20, 10*time.Second); len(got) != 20 {
		t.Fatalf("received %d of 20", len(got))
	}
	// dead crashes (nothing released). A replica started afterwards claims its entries.
	alive := openTest(ctx, t, testConfig(srv.URL(), stream))
	start := time.Now()
	got, err := receiveUntil(t, alive, 20, testClaimIdle+10*time.Second)
	if len(got) != 20 {
		t.Fatalf("claimed %d of 20 (%v)", len(got), err)
	}
	t.Logf("claimed the dead consumer's 20 entries after %s", time.Since(start).Round(time.Millisecond))
	if err := alive.Ack(ctx, handles(got)); err != nil {
		t.Fatal(err)
	}
	// The dead consumer, now with nothing pending and idle past the claim idle time, is removed by a
	// later claim pass; the live one stays.
	deadline := time.Now().Add(3 * testClaimIdle)
	for {
		if _, err := alive.Receive(ctx, 500); err != nil {
			t.Fatal(err)
		}
		cs, err := c.XInfoConsumers(ctx, stream, "g").Result()
		if err != nil {
			t.Fatal(err)
		}
		names := map[string]bool{}
		for _, x := range cs {
			names[x.Name] = true
		}
		if !names[alive.consumer] {
			t.Fatalf("the live consumer was removed: %v", names)
		}
		if !names[dead.consumer] {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("dead consumer %s still in the group after %s: %v", dead.consumer, 3*testClaimIdle, names)
		}
	}
}

func TestIntegrationRestartReplaysOwnPendingAndAcksDeleted(t *testing.T) {
	srv := redistest.Shared(t)
	c := srv.Client(t)
	ctx := context.Background()
	stream := redistest.Name(t)
	cfg := testConfig(srv.URL(), stream)
	cfg.Consumer = "replica-0"
	cfg.ClaimMinIdle = time.Hour // only the replay can bring them back quickly
	first := openTest(ctx, t, cfg)
	ids := publishN(t, c, stream, 5, "p")
	if got, _ := receiveUntil(t, first, 5, 10*time.Second); len(got) != 5 {
		t.Fatalf("received %d of 5", len(got))
	}
	// Crash; meanwhile two pending entries are deleted (XDEL, as by trimming).
	if err := c.XDel(ctx, stream, ids[1], ids[3]).Err(); err != nil {
		t.Fatal(err)
	}
	restarted := openTest(ctx, t, cfg)
	got, _ := receiveUntil(t, restarted, 3, 5*time.Second)
	var payloads []string
	for _, m := range got {
		payloads = append(payloads, string(m.Payload))
		if m.Deliveries != 2 {
			t.Errorf("replayed %s with deliveries %d, want 2", m.Payload, m.Deliveries)
		}
	}
	if strings.Join(payloads, ",") != "p-0,p-2,p-4" {
		t.Fatalf("replayed %q, want p-0,p-2,p-4", payloads)
	}
	if p := pendingOf(t, c, stream); len(p) != 3 {
		t.Fatalf("%d pending, want 3 (the deleted entries acked away)", len(p))
	}
}

func TestIntegrationReleasedEntriesAreClaimedAtOnce(t *testing.T) {
	srv := redistest.Shared(t)
	c := srv.Client(t)
	ctx := context.Background()
	stream := redistest.Name(t)
	cfg := testConfig(srv.URL(), stream)
	cfg.ClaimMinIdle = 30 * time.Second
	a := openTest(ctx, t, cfg)
	b := openTest(ctx, t, cfg)
	publishN(t, c, stream, 4, "r")
	held, _ := receiveUntil(t, a, 4, 10*time.Second)
	if len(held) != 4 {
		t.Fatalf("received %d of 4", len(held))
	}
	if err := a.Nack(ctx, handles(held), 0); err != nil {
		t.Fatalf("Nack: %v", err)
	}
	// b's first claim pass (at its start) takes them, long before the 30 s claim idle time.
	got, err := receiveUntil(t, b, 4, 5*time.Second)
	if len(got) != 4 {
		t.Fatalf("b got %d of 4 released entries (%v)", len(got), err)
	}
}

func TestIntegrationGroupDeletedWhileRunning(t *testing.T) {
	srv := redistest.Shared(t)
	c := srv.Client(t)
	ctx := context.Background()
	stream := redistest.Name(t)
	cfg := testConfig(srv.URL(), stream)
	cfg.StartFrom = StartLatest
	d := openTest(ctx, t, cfg)
	if _, err := d.Receive(ctx, 10); err != nil { // creates the group at the end
		t.Fatal(err)
	}
	if err := c.XGroupDestroy(ctx, stream, "g").Err(); err != nil {
		t.Fatal(err)
	}
	publishN(t, c, stream, 1, "lost-window") // written while no group exists: latest skips it
	done := make(chan struct{})
	go func() {
		defer close(done)
		// The next Receive meets NOGROUP, recreates the group and reads on.
		_, _ = d.Receive(ctx, 10)
	}()
	<-done
	publishN(t, c, stream, 2, "after")
	got, err := receiveUntil(t, d, 2, 10*time.Second)
	if len(got) != 2 || string(got[0].Payload) != "after-0" {
		t.Fatalf("after the group was recreated got %d (%v)", len(got), err)
	}
}

func TestIntegrationDeadLetter(t *testing.T) {
	srv := redistest.Shared(t)
	c := srv.Client(t)
	ctx := context.Background()
	stream := redistest.Name(t)
	cfg := testConfig(srv.URL(), stream)
	cfg.DeadLetterStream = stream + ":dlq"
	d := openTest(ctx, t, cfg)
	id, err := c.XAdd(ctx, &redis.XAddArgs{Stream: stream, Values: []any{"data", "\x00poison", "tenant", "t1"}}).Result()
	if err != nil {
		t.Fatal(err)
	}
	got, _ := receiveUntil(t, d, 1, 10*time.Second)
	if len(got) != 1 {
		t.Fatal("nothing received")
	}
	if err := d.DeadLetter(ctx, got[0], "max deliveries (2) reached after 2 deliveries; last nack reason: bad"); err != nil {
		t.Fatalf("DeadLetter: %v", err)
	}
	es, err := c.XRange(ctx, cfg.DeadLetterStream, "-", "+").Result()
	if err != nil || len(es) != 1 {
		t.Fatalf("dead-letter stream: %v %v", es, err)
	}
	v := es[0].Values
	if v["data"] != "\x00poison" || v["tenant"] != "t1" || v[FieldDeadLetterStream] != stream || v[FieldDeadLetterID] != id ||
		v[FieldDeadLetterDeliveries] != "1" || !strings.Contains(v[FieldDeadLetterReason].(string), "last nack reason: bad") {
		t.Errorf("dead letter %q", v)
	}
	if p := pendingOf(t, c, stream); len(p) != 0 {
		t.Errorf("dead-lettered entry still pending")
	}
}

func TestIntegrationRedisDown(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{AppendOnly: true})
	ctx := context.Background()
	stream := redistest.Name(t)
	d := openTest(ctx, t, testConfig(srv.URL(), stream))
	publishN(t, srv.Client(t), stream, 2, "before")
	if got, _ := receiveUntil(t, d, 2, 10*time.Second); len(got) != 2 {
		t.Fatal("nothing received")
	}
	srv.Kill()
	start := time.Now()
	_, err := d.Receive(ctx, 10)
	if err == nil || source.Classify(d, err) != source.Unavailable {
		t.Fatalf("Receive with redis down: %v (%s), want unavailable", err, source.Classify(d, err))
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("Receive with redis down took %s", took)
	}
	if err := d.Check(ctx); err == nil || source.Classify(d, err) != source.Unavailable {
		t.Errorf("Check with redis down: %v", err)
	}
	if n, err := d.Backlog(ctx); n != -1 || err == nil {
		t.Errorf("Backlog with redis down: %d, %v", n, err)
	}
	srv.Restart(t)
	publishN(t, srv.Client(t), stream, 1, "after")
	// Back by itself: the held entries are replayed (the adapter ignores duplicates) and new ones read.
	got, err := receiveUntil(t, d, 3, 15*time.Second)
	if len(got) != 3 {
		t.Fatalf("after the restart got %d of 3 (%v)", len(got), err)
	}
}

func TestIntegrationWrongPassword(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{Password: "right"})
	ctx := context.Background()
	cfg := testConfig(strings.Replace(srv.URL(), ":right@", ":wrong@", 1), redistest.Name(t))
	d := openTest(ctx, t, cfg)
	_, err := d.Receive(ctx, 10)
	if err == nil || source.Classify(d, err) != source.PermissionDenied {
		t.Fatalf("Receive with a wrong password: %v (%s), want permission_denied", err, source.Classify(d, err))
	}
	cfg.URL = config.Secret(strings.Replace(srv.URL(), ":right@", "", 1))
	cfg.Password = "right"
	d = openTest(ctx, t, cfg)
	if err := d.Check(ctx); err != nil {
		t.Fatalf("REDIS_PASSWORD: %v", err)
	}
}

func TestIntegrationTLS(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{TLS: true, RequireClientCert: true})
	ctx := context.Background()
	stream := redistest.Name(t)
	wrong, err := redistest.NewCerts(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	withCert := func(cfg Config) Config {
		cfg.TLSCertFile, cfg.TLSKeyFile = srv.Certs.ClientCertFile, srv.Certs.ClientKeyFile
		return cfg
	}

	// rediss:// URL with the right CA and a client certificate.
	cfg := withCert(testConfig(srv.URL(), stream))
	cfg.TLSCAFile = srv.Certs.CAFile
	d := openTest(ctx, t, cfg)
	if err := d.Check(ctx); err != nil {
		t.Fatalf("TLS with the right CA: %v", err)
	}
	publishN(t, srv.Client(t), stream, 1, "tls")
	if got, err := receiveUntil(t, d, 1, 10*time.Second); len(got) != 1 {
		t.Fatalf("nothing received over TLS (%v)", err)
	}

	// REDIS_ADDRS with REDIS_TLS_* and a server name.
	cfg = withCert(testConfig("", stream))
	cfg.URL, cfg.Addrs, cfg.TLSCAFile, cfg.TLSServerName = "", srv.Addr, srv.Certs.CAFile, "localhost"
	if err := openTest(ctx, t, cfg).Check(ctx); err != nil {
		t.Fatalf("TLS with REDIS_ADDRS: %v", err)
	}

	for _, tc := range []struct {
		name   string
		mutate func(c *Config)
		want   source.Code
	}{
		{"wrong CA", func(c *Config) { c.TLSCAFile = wrong.CAFile }, source.PermissionDenied},
		{"system CAs only", func(c *Config) { c.TLSCAFile = "" }, source.PermissionDenied},
		{"wrong server name", func(c *Config) { c.TLSCAFile, c.TLSServerName = srv.Certs.CAFile, "redis.example.com" }, source.PermissionDenied},
		{"no client certificate", func(c *Config) { c.TLSCAFile, c.TLSCertFile, c.TLSKeyFile = srv.Certs.CAFile, "", "" }, -1},
		{"plain text to a TLS port", func(c *Config) { c.URL = config.Secret("redis://" + srv.Addr); c.TLSCertFile, c.TLSKeyFile = "", "" }, -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := withCert(testConfig(srv.URL(), stream))
			tc.mutate(&cfg)
			d := openTest(ctx, t, cfg)
			err := d.Check(ctx)
			if err == nil {
				t.Fatal("connected")
			}
			if tc.want >= 0 && source.Classify(d, err) != tc.want {
				t.Errorf("classified %s, want %s: %v", source.Classify(d, err), tc.want, err)
			}
			t.Logf("refused: %v (%s)", err, source.Classify(d, err))
		})
	}
}

func TestIntegrationCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster test skipped in -short mode")
	}
	cl := redistest.StartCluster(t)
	c := cl.Client(t)
	ctx := context.Background()
	base := redistest.Name(t)
	streams := []string{"{" + base + "}:eu", "{" + base + "}:us"}
	cfg := testConfig("", strings.Join(streams, ","))
	cfg.URL, cfg.Addrs, cfg.Mode = "", strings.Join(cl.Addrs[:2], ","), ModeCluster
	cfg.DeadLetterStream = "dlq-" + base // another slot: dead letters need no shared slot
	d := openTest(ctx, t, cfg)
	if err := d.Check(ctx); err != nil {
		t.Fatal(err)
	}
	for _, s := range streams {
		publishN(t, c, s, 50, s)
	}
	got, err := receiveUntil(t, d, 100, 20*time.Second)
	if len(got) != 100 {
		t.Fatalf("received %d of 100 from the cluster (%v)", len(got), err)
	}
	if n, err := d.Backlog(ctx); n != 100 || err != nil {
		t.Errorf("backlog %d, %v; want 100 pending", n, err)
	}
	if err := d.DeadLetter(ctx, got[0], "test"); err != nil {
		t.Fatalf("DeadLetter across slots: %v", err)
	}
	if err := d.Ack(ctx, handles(got[1:])); err != nil {
		t.Fatal(err)
	}
	if n, _ := d.Backlog(ctx); n != 0 {
		t.Errorf("backlog after acking everything: %d", n)
	}
	if n, _ := c.XLen(ctx, cfg.DeadLetterStream).Result(); n != 1 {
		t.Errorf("dead-letter stream has %d entries", n)
	}
}

func TestIntegrationSentinelFailover(t *testing.T) {
	if testing.Short() {
		t.Skip("sentinel test skipped in -short mode")
	}
	sn := redistest.StartSentinel(t)
	c := sn.Client(t)
	ctx := context.Background()
	stream := redistest.Name(t)
	cfg := testConfig("", stream)
	cfg.URL, cfg.Addrs, cfg.Mode, cfg.SentinelMaster = "", strings.Join(sn.SentinelAddrs, ","), ModeSentinel, sn.MasterName
	d := openTest(ctx, t, cfg)
	readBeforeFailover(ctx, t, d, c, c, stream)
	start := time.Now()
	newMaster := sn.KillMaster(t)
	t.Logf("sentinels promoted %s after %s", newMaster, time.Since(start).Round(time.Millisecond))
	// The source recovers by itself; the group survived on the replica.
	var pubErr error
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if pubErr = c.XAdd(ctx, &redis.XAddArgs{Stream: stream, Values: []any{testPayloadField, "after"}}).Err(); pubErr == nil {
			break
		}
	}
	if pubErr != nil {
		t.Fatalf("publishing after the failover: %v", pubErr)
	}
	got, err := receiveUntil(t, d, 1, 20*time.Second)
	if len(got) != 1 || string(got[0].Payload) != "after" {
		t.Fatalf("after the failover got %d (%v)", len(got), err)
	}
	if err != nil && !errors.Is(err, context.DeadlineExceeded) {
		t.Logf("errors during the failover (retried): %v", err)
	}
}

// The backlog when entries are trimmed or deleted past the group's position (where Redis 7.0 reports a
// NULL lag, or one that counts the trimmed entries, even after the group has read everything): exact
// when the group's position is before the first entry or after the last, otherwise never below what the
// group can still read and never above the stream's length.
func TestIntegrationBacklogTrimmedPastTheGroup(t *testing.T) {
	srv := redistest.Shared(t)
	c := srv.Client(t)
	ctx := context.Background()
	stream := redistest.Name(t)
	cfg := testConfig(srv.URL(), stream)
	cfg.ReadCount = 5
	cfg.ClaimMinIdle = time.Hour // no claim pass hands a held entry out again mid-test
	d := openTest(ctx, t, cfg)
	publishN(t, c, stream, 100, "t")
	var held []*source.Message
	read := func(n int) {
		t.Helper()
		got, err := receiveUntil(t, d, n, 10*time.Second)
		if len(got) != n {
			t.Fatalf("received %d of %d (%v)", len(got), n, err)
		}
		held = append(held, got...)
	}
	// truth is what the group can still read plus its pending count, counted entry by entry.
	truth := func() int64 {
		t.Helper()
		gs, err := c.XInfoGroups(ctx, stream).Result()
		if err != nil || len(gs) != 1 {
			t.Fatalf("XINFO GROUPS: %v %v", gs, err)
		}
		after, err := c.XRange(ctx, stream, "("+gs[0].LastDeliveredID, "+").Result()
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("redis: last-delivered-id %s entries-read %d lag %d pending %d; %d entries after it",
			gs[0].LastDeliveredID, gs[0].EntriesRead, gs[0].Lag, gs[0].Pending, len(after))
		return int64(len(after)) + gs[0].Pending
	}
	check := func(step string, exact bool) {
		t.Helper()
		want := truth()
		got, err := d.Backlog(ctx)
		if err != nil {
			t.Fatalf("%s: backlog: %v", step, err)
		}
		length, _ := c.XLen(ctx, stream).Result()
		pending := int64(len(pendingOf(t, c, stream)))
		t.Logf("%s: backlog %d, truth %d (length %d, pending %d)", step, got, want, length, pending)
		switch {
		case exact && got != want:
			t.Errorf("%s: backlog %d, want exactly %d", step, got, want)
		case got < want:
			t.Errorf("%s: backlog %d is below what is left (%d)", step, got, want)
		case got > length+pending:
			t.Errorf("%s: backlog %d is above the stream's length plus pending (%d)", step, got, length+pending)
		}
	}

	read(10)
	check("10 of 100 read", true)
	// Trimmed past the group: its lag still counts the 40 trimmed entries it never read.
	if err := c.XTrimMaxLen(ctx, stream, 50).Err(); err != nil {
		t.Fatal(err)
	}
	check("trimmed to the last 50, past the group", true)
	// Reading on from inside the stream: Redis keeps counting the trimmed entries.
	read(5)
	check("5 more read", false)
	// An entry deleted after the group's position: Redis's lag turns NULL.
	last, err := c.XRevRangeN(ctx, stream, "+", "-", 1).Result()
	if err != nil || len(last) != 1 {
		t.Fatalf("XREVRANGE: %v %v", last, err)
	}
	if err := c.XDel(ctx, stream, last[0].ID).Err(); err != nil {
		t.Fatal(err)
	}
	check("the last entry deleted", false)
	// Everything read and acked: nothing is left, whatever Redis's lag says.
	read(44)
	if err := d.Ack(ctx, handles(held)); err != nil {
		t.Fatal(err)
	}
	check("everything read and acked", true)
	// Trimmed past the group with deleted entries: the stream's length is exact.
	ids := publishN(t, c, stream, 30, "u")
	if err := c.XDel(ctx, stream, ids[25]).Err(); err != nil {
		t.Fatal(err)
	}
	check("29 new entries after a deletion", false)
	if err := c.XTrimMaxLen(ctx, stream, 20).Err(); err != nil {
		t.Fatal(err)
	}
	check("new entries, one deleted, trimmed to 20", true)
}

// refused checks that a driver with cfg cannot reach Redis: Check fails with a clear error, classified
// as want when want >= 0, and nothing is read.
func refused(ctx context.Context, t *testing.T, cfg Config, want source.Code) {
	t.Helper()
	d := openTest(ctx, t, cfg)
	err := d.Check(ctx)
	if err == nil {
		t.Fatal("connected")
	}
	if want >= 0 && source.Classify(d, err) != want {
		t.Errorf("classified %s, want %s: %v", source.Classify(d, err), want, err)
	}
	t.Logf("refused: %v (%s)", err, source.Classify(d, err))
	if msgs, err := d.Receive(ctx, 10); err == nil || len(msgs) > 0 {
		t.Errorf("Receive after a refused connection: %d messages, %v", len(msgs), err)
	}
}

// TLS in cluster mode: every node serves TLS only (clients, replication and the cluster bus), demands
// a client certificate and announces itself by IP, which its certificate carries.
func TestIntegrationClusterTLS(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster test skipped in -short mode")
	}
	start := time.Now()
	cl := redistest.StartClusterWith(t, redistest.ClusterOptions{TLS: true})
	t.Logf("TLS cluster up in %s", time.Since(start).Round(time.Millisecond))
	c := cl.Client(t)
	ctx := context.Background()
	wrong, err := redistest.NewCerts(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	base := redistest.Name(t)
	streams := []string{"{" + base + "}:eu", "{" + base + "}:us"}
	baseConfig := func() Config {
		cfg := testConfig("", strings.Join(streams, ","))
		cfg.URL, cfg.Addrs, cfg.Mode = "", strings.Join(cl.Addrs[:2], ","), ModeCluster
		cfg.TLSCAFile, cfg.TLSCertFile, cfg.TLSKeyFile = cl.Certs.CAFile, cl.Certs.ClientCertFile, cl.Certs.ClientKeyFile
		return cfg
	}

	t.Run("right CA", func(t *testing.T) {
		d := openTest(ctx, t, baseConfig())
		if err := d.Check(ctx); err != nil {
			t.Fatal(err)
		}
		for _, s := range streams {
			publishN(t, c, s, 20, s)
		}
		got, err := receiveUntil(t, d, 40, 20*time.Second)
		if len(got) != 40 {
			t.Fatalf("received %d of 40 over TLS from the cluster (%v)", len(got), err)
		}
		if n, err := d.Backlog(ctx); n != 40 || err != nil {
			t.Errorf("backlog %d, %v; want 40 pending", n, err)
		}
		if err := d.Ack(ctx, handles(got)); err != nil {
			t.Fatal(err)
		}
		if n, err := d.Backlog(ctx); n != 0 || err != nil {
			t.Errorf("backlog after acking everything: %d, %v", n, err)
		}
	})
	t.Run("rediss URL", func(t *testing.T) {
		cfg := baseConfig()
		cfg.URL, cfg.Addrs = config.Secret("rediss://"+cl.Addrs[2]), ""
		if err := openTest(ctx, t, cfg).Check(ctx); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("a server name every node certificate carries", func(t *testing.T) {
		cfg := baseConfig()
		cfg.TLSServerName = "localhost"
		d := openTest(ctx, t, cfg)
		if err := d.Check(ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := d.Backlog(ctx); err != nil { // reaches the node owning the streams' slot
			t.Fatal(err)
		}
	})
	for _, tc := range []struct {
		name   string
		mutate func(c *Config)
		want   source.Code
	}{
		{"wrong CA", func(c *Config) { c.TLSCAFile = wrong.CAFile }, source.PermissionDenied},
		{"a server name the certificates do not carry", func(c *Config) { c.TLSServerName = "redis.example.com" }, source.PermissionDenied},
		{"no client certificate", func(c *Config) { c.TLSCertFile, c.TLSKeyFile = "", "" }, -1},
		{"plain text", func(c *Config) { c.TLSCAFile, c.TLSCertFile, c.TLSKeyFile = "", "", "" }, -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := baseConfig()
			tc.mutate(&cfg)
			refused(ctx, t, cfg, tc.want)
		})
	}
}

// TLS in sentinel mode: the sentinels and the servers they watch serve TLS only and demand a client
// certificate; the sentinels also demand an ACL user of their own (REDIS_SENTINEL_USERNAME).
func TestIntegrationSentinelTLS(t *testing.T) {
	if testing.Short() {
		t.Skip("sentinel test skipped in -short mode")
	}
	start := time.Now()
	sn := redistest.StartSentinelWith(t, redistest.SentinelOptions{TLS: true, Username: "watcher", Password: "sentinel-s3cret"})
	t.Logf("TLS sentinels up in %s", time.Since(start).Round(time.Millisecond))
	c := sn.Client(t)
	ctx := context.Background()
	wrong, err := redistest.NewCerts(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	stream := redistest.Name(t)
	baseConfig := func() Config {
		cfg := testConfig("", stream)
		cfg.URL, cfg.Addrs, cfg.Mode, cfg.SentinelMaster = "", strings.Join(sn.SentinelAddrs, ","), ModeSentinel, sn.MasterName
		cfg.SentinelUsername, cfg.SentinelPassword = "watcher", "sentinel-s3cret"
		cfg.TLSCAFile, cfg.TLSCertFile, cfg.TLSKeyFile = sn.Certs.CAFile, sn.Certs.ClientCertFile, sn.Certs.ClientKeyFile
		return cfg
	}

	t.Run("right CA and sentinel user", func(t *testing.T) {
		d := openTest(ctx, t, baseConfig())
		if err := d.Check(ctx); err != nil {
			t.Fatal(err)
		}
		publishN(t, c, stream, 10, "tls")
		got, err := receiveUntil(t, d, 10, 10*time.Second)
		if len(got) != 10 {
			t.Fatalf("received %d of 10 over TLS through the sentinels (%v)", len(got), err)
		}
		if err := d.Ack(ctx, handles(got)); err != nil {
			t.Fatal(err)
		}
		if n, err := d.Backlog(ctx); n != 0 || err != nil {
			t.Errorf("backlog after acking everything: %d, %v", n, err)
		}
	})
	for _, tc := range []struct {
		name   string
		mutate func(c *Config)
		want   source.Code
	}{
		{"wrong CA", func(c *Config) { c.TLSCAFile = wrong.CAFile }, source.PermissionDenied},
		{"wrong sentinel password", func(c *Config) { c.SentinelPassword = "wrong" }, source.PermissionDenied},
		{"sentinel password without the user", func(c *Config) { c.SentinelUsername = "" }, source.PermissionDenied},
		{"no client certificate", func(c *Config) { c.TLSCertFile, c.TLSKeyFile = "", "" }, -1},
		{"plain text", func(c *Config) { c.TLSCAFile, c.TLSCertFile, c.TLSKeyFile = "", "", "" }, -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := baseConfig()
			tc.mutate(&cfg)
			refused(ctx, t, cfg, tc.want)
		})
	}
}
