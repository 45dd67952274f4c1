package redisstreams

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/numaflow-connectors/sources/common/source"
)

// fakeAPI is a real client (of miniredis) with some calls replaced, for error paths.
type fakeAPI struct {
	redisAPI
	do          func(ctx context.Context, args ...any) *redis.Cmd // nil result: the real call
	xinfoGroups func(ctx context.Context, key string) *redis.XInfoGroupsCmd
	xinfoStream func(ctx context.Context, key string) *redis.XInfoStreamCmd
}

func (f *fakeAPI) XInfoStream(ctx context.Context, key string) *redis.XInfoStreamCmd {
	if f.xinfoStream != nil {
		return f.xinfoStream(ctx, key)
	}
	return f.redisAPI.XInfoStream(ctx, key)
}

func (f *fakeAPI) Do(ctx context.Context, args ...any) *redis.Cmd {
	if f.do != nil {
		if c := f.do(ctx, args...); c != nil {
			return c
		}
	}
	return f.redisAPI.Do(ctx, args...)
}

func (f *fakeAPI) XInfoGroups(ctx context.Context, key string) *redis.XInfoGroupsCmd {
	if f.xinfoGroups != nil {
		return f.xinfoGroups(ctx, key)
	}
	return f.redisAPI.XInfoGroups(ctx, key)
}

func cmdOf(ctx context.Context, v any, err error) *redis.Cmd {
	c := redis.NewCmd(ctx)
	if err != nil {
		c.SetErr(err)
	} else {
		c.SetVal(v)
	}
	return c
}

// miniDriver is a driver over miniredis with the test configuration changed by mutate.
func miniDriver(t *testing.T, mutate func(c *Config)) (*driver, *fakeAPI, *redis.Client, *miniredis.Miniredis) {
	t.Helper()
	mr := miniredis.RunT(t)
	client := redis.NewClient(&redis.Options{Addr: mr.Addr(), Protocol: 2, DisableIdentity: true, MaxRetries: -1})
	t.Cleanup(func() { _ = client.Close() })
	cfg := testConfig("redis://"+mr.Addr(), "s")
	if mutate != nil {
		mutate(&cfg)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("invalid test config: %v", err)
	}
	api := &fakeAPI{redisAPI: client}
	return newDriver(&cfg, "c1", api, testLogger(t)), api, client, mr
}

func add(t *testing.T, c *redis.Client, stream string, fields ...any) string {
	t.Helper()
	id, err := c.XAdd(context.Background(), &redis.XAddArgs{Stream: stream, Values: fields}).Result()
	if err != nil {
		t.Fatalf("XADD: %v", err)
	}
	return id
}

func receiveN(t *testing.T, d *driver, n int) []*source.Message {
	t.Helper()
	var out []*source.Message
	deadline := time.Now().Add(10 * time.Second)
	for len(out) < n && time.Now().Before(deadline) {
		msgs, err := d.Receive(context.Background(), 500)
		if err != nil {
			t.Fatalf("Receive: %v", err)
		}
		out = append(out, msgs...)
	}
	if len(out) != n {
		t.Fatalf("received %d entries, want %d", len(out), n)
	}
	return out
}

func handles(msgs []*source.Message) []source.Handle {
	out := make([]source.Handle, len(msgs))
	for i, m := range msgs {
		out[i] = m.Handle
	}
	return out
}

func TestReceiveAndAck(t *testing.T) {
	d, _, c, _ := miniDriver(t, nil)
	ctx := context.Background()
	ids := []string{add(t, c, "s", "data", "one", "key", "k1"), add(t, c, "s", "data", "two", "h", "v")}
	msgs := receiveN(t, d, 2)
	for i, m := range msgs {
		if m.ID != "s:"+ids[i] || m.Deliveries != 1 {
			t.Errorf("message %d: id %q deliveries %d", i, m.ID, m.Deliveries)
		}
	}
	if string(msgs[0].Payload) != "one" || msgs[0].Keys[0] != "k1" || msgs[1].Headers["h"] != "v" {
		t.Errorf("mapping: %+v %+v", msgs[0], msgs[1])
	}
	if err := d.Ack(ctx, handles(msgs)); err != nil {
		t.Fatalf("Ack: %v", err)
	}
	if err := d.Ack(ctx, handles(msgs)); err != nil {
		t.Fatalf("second Ack: %v", err)
	}
	p, err := c.XPending(ctx, "s", "g").Result()
	if err != nil || p.Count != 0 {
		t.Fatalf("pending after ack: %+v, %v", p, err)
	}
}

func TestAckRejectsForeignHandles(t *testing.T) {
	d, _, c, _ := miniDriver(t, nil)
	add(t, c, "s", "data", "x")
	msgs := receiveN(t, d, 1)
	err := d.Ack(context.Background(), []source.Handle{msgs[0].Handle, "bogus"})
	var be *source.BatchError
	if !errors.As(err, &be) || len(be.Failed) != 1 || be.Failed[1] == nil {
		t.Fatalf("Ack with a bogus handle: %v, want a BatchError for index 1", err)
	}
	if source.Classify(d, be.Failed[1]) != source.InvalidArgument {
		t.Errorf("bogus handle classified %s", source.Classify(d, be.Failed[1]))
	}
}

func TestDeleteOnAck(t *testing.T) {
	d, _, c, _ := miniDriver(t, func(c *Config) { c.DeleteOnAck = true })
	add(t, c, "s", "data", "x")
	add(t, c, "s", "data", "y")
	msgs := receiveN(t, d, 2)
	if err := d.Ack(context.Background(), handles(msgs[:1])); err != nil {
		t.Fatal(err)
	}
	if n, _ := c.XLen(context.Background(), "s").Result(); n != 1 {
		t.Fatalf("stream length %d after acking one of two with REDIS_DELETE_ON_ACK, want 1", n)
	}
}

func TestStreamsInConfigOrder(t *testing.T) {
	d2, _, c2, _ := miniDriver(t, func(c *Config) { c.Stream = "b,a" })
	add(t, c2, "a", "data", "a1")
	add(t, c2, "b", "data", "b1")
	if err := d2.ensureGroups(context.Background()); err != nil {
		t.Fatal(err)
	}
	d2.groupsReady = true
	got, err := d2.read(context.Background(), 500)
	if err != nil {
		t.Fatal(err)
	}
	var order []string
	for _, m := range got {
		order = append(order, m.Headers[HeaderStream])
	}
	if !reflect.DeepEqual(order, []string{"b", "a"}) {
		t.Fatalf("streams in order %q, want the configured order [b a]", order)
	}
	// Fewer slots than streams: one entry per read, rotating over the streams.
	add(t, c2, "a", "data", "a2")
	add(t, c2, "b", "data", "b2")
	seen := map[string]bool{}
	for range 2 {
		got, err := d2.read(context.Background(), 1)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 1 {
			t.Fatalf("read of 1 over 2 streams returned %d", len(got))
		}
		seen[string(got[0].Payload)] = true
	}
	if !seen["a2"] || !seen["b2"] {
		t.Fatalf("rotating reads returned %v, want both streams", seen)
	}
}

func TestNoGroupIsRecreated(t *testing.T) {
	d, _, c, _ := miniDriver(t, nil)
	ctx := context.Background()
	add(t, c, "s", "data", "before")
	receiveN(t, d, 1)
	if err := c.XGroupDestroy(ctx, "s", "g").Err(); err != nil {
		t.Fatal(err)
	}
	add(t, c, "s", "data", "after")
	// The group starts again at REDIS_START_FROM (oldest): both entries come again.
	msgs := receiveN(t, d, 2)
	if string(msgs[1].Payload) != "after" {
		t.Fatalf("after recreating the group got %q", msgs[1].Payload)
	}
}

func TestNoGroupWithoutCreate(t *testing.T) {
	d, _, _, _ := miniDriver(t, func(c *Config) { c.CreateGroup = false; c.Stream = "missing:stream" })
	_, err := d.Receive(context.Background(), 10)
	if err == nil {
		t.Fatal("Receive on a missing group succeeded")
	}
	if source.Classify(d, err) != source.NotFound {
		t.Errorf("classified %s, want not_found: %v", source.Classify(d, err), err)
	}
	if !strings.Contains(err.Error(), "missing:stream") || !strings.Contains(err.Error(), "group g") {
		t.Errorf("error does not name the stream and the group: %v", err)
	}
	if err := d.Check(context.Background()); err == nil || source.Classify(d, err) != source.NotFound {
		t.Errorf("Check: %v", err)
	}
}

func TestDeletedEntriesInReplayAreAckedAway(t *testing.T) {
	d, api, c, _ := miniDriver(t, nil)
	ctx := context.Background()
	live := add(t, c, "s", "data", "live")
	gone := add(t, c, "s", "data", "gone")
	if err := c.XGroupCreate(ctx, "s", "g", "0").Err(); err != nil {
		t.Fatal(err)
	}
	// Put both in our pending list, then answer the replay as Redis does for a deleted entry.
	if err := c.XReadGroup(ctx, &redis.XReadGroupArgs{Group: "g", Consumer: "c1", Streams: []string{"s", ">"}}).Err(); err != nil {
		t.Fatal(err)
	}
	replayed := false
	api.do = func(ctx context.Context, args ...any) *redis.Cmd {
		if args[0] == "XREADGROUP" && args[len(args)-1] == "0" && !replayed {
			replayed = true
			return cmdOf(ctx, []any{[]any{"s", []any{[]any{live, []any{"data", "live"}}, []any{gone, nil}}}}, nil)
		}
		return nil
	}
	msgs, err := d.Receive(ctx, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) != 1 || string(msgs[0].Payload) != "live" {
		t.Fatalf("replay returned %d messages, want only the live one", len(msgs))
	}
	if msgs[0].Deliveries != 1 {
		t.Errorf("replayed entry deliveries %d, want the pending list's count", msgs[0].Deliveries)
	}
	pend, err := c.XPendingExt(ctx, &redis.XPendingExtArgs{Stream: "s", Group: "g", Start: "-", End: "+", Count: 10}).Result()
	if err != nil {
		t.Fatal(err)
	}
	if len(pend) != 1 || pend[0].ID != live {
		t.Fatalf("pending list %+v, want only the live entry (the deleted one acked away)", pend)
	}
}

func TestClaimReturnsDeletedIDsAckedAway(t *testing.T) {
	d, api, c, _ := miniDriver(t, nil)
	ctx := context.Background()
	id := add(t, c, "s", "data", "x")
	if err := c.XGroupCreate(ctx, "s", "g", "0").Err(); err != nil {
		t.Fatal(err)
	}
	if err := c.XReadGroup(ctx, &redis.XReadGroupArgs{Group: "g", Consumer: "dead", Streams: []string{"s", ">"}}).Err(); err != nil {
		t.Fatal(err)
	}
	api.do = func(ctx context.Context, args ...any) *redis.Cmd {
		if args[0] == "XAUTOCLAIM" {
			return cmdOf(ctx, []any{"0-0", []any{}, []any{id}}, nil)
		}
		return nil
	}
	d.groupsReady = true
	msgs, err := d.claim(ctx, 10)
	if err != nil || len(msgs) != 0 {
		t.Fatalf("claim: %d messages, %v", len(msgs), err)
	}
	if n, _ := c.XPending(ctx, "s", "g").Result(); n.Count != 0 {
		t.Fatalf("deleted ID still pending: %+v", n)
	}
	if d.claimCursor != nil || !d.nextClaim.After(time.Now()) {
		t.Errorf("claim pass not finished: cursor %v next %s", d.claimCursor, d.nextClaim)
	}
}

func TestReceiveErrorReplaysAfterwards(t *testing.T) {
	d, api, c, _ := miniDriver(t, nil)
	ctx := context.Background()
	add(t, c, "s", "data", "x")
	receiveN(t, d, 1) // the entry is in our pending list, held by "the adapter"
	api.do = func(ctx context.Context, args ...any) *redis.Cmd {
		return cmdOf(ctx, nil, redisDown{})
	}
	_, err := d.Receive(ctx, 10)
	if err == nil || source.Classify(d, err) != source.Unavailable {
		t.Fatalf("Receive with redis down: %v (%s)", err, source.Classify(d, err))
	}
	api.do = nil
	// Back: the reply of a lost read may have left entries in our pending list: they are replayed.
	msgs, err := d.Receive(ctx, 10)
	// Redis counts the re-read as a second delivery; numa saw the entry once (the adapter holds it), so
	// the driver says 1, or MaxDeliveries would be reached a delivery early after every outage.
	if err != nil || len(msgs) != 1 || msgs[0].Deliveries != 1 {
		t.Fatalf("after the outage: %d messages (%v), want the pending entry replayed with 1 delivery", len(msgs), err)
	}
}

type redisDown struct{}

func (redisDown) Error() string   { return "dial tcp 127.0.0.1:1: connect: connection refused" }
func (redisDown) Timeout() bool   { return false }
func (redisDown) Temporary() bool { return true }

func TestDeadLetter(t *testing.T) {
	d, _, c, _ := miniDriver(t, func(c *Config) { c.DeadLetterStream = "dlq" })
	ctx := context.Background()
	id := add(t, c, "s", "z", "1", "data", "poison", "a", "2")
	msgs := receiveN(t, d, 1)
	if err := d.DeadLetter(ctx, msgs[0], "max deliveries (3) reached"); err != nil {
		t.Fatalf("DeadLetter: %v", err)
	}
	v, err := c.Do(ctx, "XRANGE", "dlq", "-", "+").Result()
	if err != nil {
		t.Fatal(err)
	}
	es, err := parseEntries(v)
	if err != nil || len(es) != 1 {
		t.Fatalf("dead-letter stream: %v %v", es, err)
	}
	want := []string{"z", "1", "data", "poison", "a", "2", FieldDeadLetterReason, "max deliveries (3) reached",
		FieldDeadLetterStream, "s", FieldDeadLetterID, id, FieldDeadLetterDeliveries, "1"}
	if !reflect.DeepEqual(es[0].fields, want) {
		t.Errorf("dead-lettered fields %q, want %q", es[0].fields, want)
	}
	if p, _ := c.XPending(ctx, "s", "g").Result(); p.Count != 0 {
		t.Errorf("dead-lettered entry still pending")
	}
	d2, _, _, _ := miniDriver(t, nil)
	if err := d2.DeadLetter(ctx, msgs[0], "r"); !errors.Is(err, source.ErrNoDeadLetter) {
		t.Errorf("without a dead-letter stream: %v, want ErrNoDeadLetter", err)
	}
}

func TestDeadLetterOfTrimmedEntry(t *testing.T) {
	d, _, c, _ := miniDriver(t, func(c *Config) { c.DeadLetterStream = "dlq" })
	ctx := context.Background()
	add(t, c, "s", "data", "poison", "h", "v")
	msgs := receiveN(t, d, 1)
	if err := c.XTrimMaxLen(ctx, "s", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if err := d.DeadLetter(ctx, msgs[0], "r"); err != nil {
		t.Fatalf("DeadLetter: %v", err)
	}
	es, err := c.XRange(ctx, "dlq", "-", "+").Result()
	if err != nil || len(es) != 1 || es[0].Values["data"] != "poison" || es[0].Values["h"] != "v" {
		t.Fatalf("dead letter of a trimmed entry: %+v %v", es, err)
	}
}

func TestExtendOnlyOwnEntries(t *testing.T) {
	d, _, c, _ := miniDriver(t, nil)
	ctx := context.Background()
	add(t, c, "s", "data", "x")
	add(t, c, "s", "data", "y")
	msgs := receiveN(t, d, 2)
	// Another consumer claims the second entry (our lease lapsed).
	if err := c.XClaim(ctx, &redis.XClaimArgs{Stream: "s", Group: "g", Consumer: "other", Messages: []string{msgs[1].Handle.(handle).id}}).Err(); err != nil {
		t.Fatal(err)
	}
	err := d.Extend(ctx, handles(msgs), time.Minute)
	var be *source.BatchError
	if !errors.As(err, &be) || len(be.Failed) != 1 || be.Failed[1] == nil || source.Classify(d, be.Failed[1]) != source.InvalidArgument {
		t.Fatalf("Extend: %v, want the claimed entry failed as invalid_argument", err)
	}
	pend, _ := c.XPendingExt(ctx, &redis.XPendingExtArgs{Stream: "s", Group: "g", Start: "-", End: "+", Count: 10}).Result()
	if len(pend) != 2 || pend[1].Consumer != "other" {
		t.Fatalf("pending %+v: the other consumer's entry must stay its own", pend)
	}
}

func TestBacklogErrors(t *testing.T) {
	d, api, c, _ := miniDriver(t, nil)
	ctx := context.Background()
	add(t, c, "s", "data", "x")
	api.xinfoGroups = func(ctx context.Context, key string) *redis.XInfoGroupsCmd {
		c := redis.NewXInfoGroupsCmd(ctx, key)
		c.SetErr(redisDown{})
		return c
	}
	if n, err := d.Backlog(ctx); n != -1 || err == nil {
		t.Errorf("Backlog with redis down = %d, %v; want -1 and the error", n, err)
	}
	api.xinfoGroups = func(ctx context.Context, key string) *redis.XInfoGroupsCmd {
		c := redis.NewXInfoGroupsCmd(ctx, key)
		c.SetVal([]redis.XInfoGroup{{Name: "other", Lag: 1}})
		return c
	}
	if n, err := d.Backlog(ctx); n != -1 || source.Classify(d, err) != source.NotFound {
		t.Errorf("Backlog without our group = %d, %v; want -1 and not_found", n, err)
	}
	// Redis's lag unknown and XINFO STREAM refused: unknown, as before that permission was needed.
	api.xinfoGroups = func(ctx context.Context, key string) *redis.XInfoGroupsCmd {
		c := redis.NewXInfoGroupsCmd(ctx, key)
		c.SetVal([]redis.XInfoGroup{{Name: "g", Lag: -1, Pending: 3, LastDeliveredID: "1-0"}})
		return c
	}
	api.xinfoStream = func(ctx context.Context, key string) *redis.XInfoStreamCmd {
		c := redis.NewXInfoStreamCmd(ctx, key)
		c.SetErr(errors.New("NOPERM User numaflow has no permissions to run the 'xinfo|stream' command"))
		return c
	}
	if n, err := d.Backlog(ctx); n != -1 || err != nil {
		t.Errorf("Backlog with an unknown lag and no XINFO STREAM = %d, %v; want -1", n, err)
	}
	api.xinfoGroups = func(ctx context.Context, key string) *redis.XInfoGroupsCmd {
		c := redis.NewXInfoGroupsCmd(ctx, key)
		c.SetVal([]redis.XInfoGroup{{Name: "g", Lag: 4, Pending: 3, LastDeliveredID: "1-0"}})
		return c
	}
	if n, err := d.Backlog(ctx); n != 7 || err != nil {
		t.Errorf("Backlog with a lag and no XINFO STREAM = %d, %v; want lag 4 + pending 3", n, err)
	}
	api.xinfoStream = func(ctx context.Context, key string) *redis.XInfoStreamCmd {
		c := redis.NewXInfoStreamCmd(ctx, key)
		c.SetErr(redisDown{})
		return c
	}
	if n, err := d.Backlog(ctx); n != -1 || err == nil {
		t.Errorf("Backlog with XINFO STREAM failing = %d, %v; want -1 and the error", n, err)
	}
}

// miniredis reports the stream's length as every group's lag, read or not (and no stream counters):
// once the group has delivered everything the backlog is its pending count alone, whatever the lag.
func TestBacklogDrainedIsZeroWhateverTheLag(t *testing.T) {
	d, _, c, _ := miniDriver(t, func(c *Config) { c.ClaimMinIdle = time.Hour })
	ctx := context.Background()
	for i := range 100 {
		add(t, c, "s", "data", fmt.Sprint(i))
	}
	first, err := d.Receive(ctx, 1) // creates the group (at the start) and reads one
	if err != nil || len(first) != 1 {
		t.Fatalf("first receive: %d, %v", len(first), err)
	}
	if n, err := d.Backlog(ctx); n < 100 || err != nil {
		t.Errorf("backlog with 99 undelivered and 1 pending = %d, %v; want at least 100", n, err)
	}
	msgs := append(first, receiveN(t, d, 99)...)
	if n, err := d.Backlog(ctx); n != 100 || err != nil {
		t.Errorf("backlog with everything delivered and 100 pending = %d, %v; want 100", n, err)
	}
	if err := d.Ack(ctx, handles(msgs[:60])); err != nil {
		t.Fatal(err)
	}
	if n, err := d.Backlog(ctx); n != 40 || err != nil {
		t.Errorf("backlog with everything delivered and 40 pending = %d, %v; want 40", n, err)
	}
	if err := d.Ack(ctx, handles(msgs[60:])); err != nil {
		t.Fatal(err)
	}
	if n, err := d.Backlog(ctx); n != 0 || err != nil {
		t.Errorf("backlog with everything acked = %d, %v; want 0", n, err)
	}
}

func TestUndelivered(t *testing.T) {
	entry := func(id string) redis.XMessage { return redis.XMessage{ID: id} }
	// A Redis 7 stream of 50 entries 51-0..100-0 after 100 were added (the first 50 trimmed).
	trimmed := redis.XInfoStream{Length: 50, EntriesAdded: 100, FirstEntry: entry("51-0"), LastEntry: entry("100-0"),
		LastGeneratedID: "100-0", RecordedFirstEntryID: "51-0"}
	for _, tc := range []struct {
		name  string
		group redis.XInfoGroup
		st    *redis.XInfoStream
		want  int64
		ok    bool
	}{
		{"empty stream", redis.XInfoGroup{LastDeliveredID: "5-0", Lag: 3}, &redis.XInfoStream{LastGeneratedID: "9-0"}, 0, true},
		{"never read", redis.XInfoGroup{LastDeliveredID: "0-0", Lag: -1}, &trimmed, 50, true},
		{"trimmed past the group: its lag counts the trimmed entries", redis.XInfoGroup{LastDeliveredID: "10-0", EntriesRead: 10, Lag: 90}, &trimmed, 50, true},
		{"trimmed past the group, lag NULL", redis.XInfoGroup{LastDeliveredID: "10-0", Lag: -1}, &trimmed, 50, true},
		{"read everything after a trim: Redis 7.0 still reports the trimmed entries", redis.XInfoGroup{LastDeliveredID: "100-0", EntriesRead: 60, Lag: 40}, &trimmed, 0, true},
		{"past the last entry (it was deleted)", redis.XInfoGroup{LastDeliveredID: "101-0", Lag: -1},
			&redis.XInfoStream{Length: 50, EntriesAdded: 101, FirstEntry: entry("51-0"), LastEntry: entry("100-0"), LastGeneratedID: "101-0", MaxDeletedEntryID: "101-0"}, 0, true},
		{"inside the stream, lag intact", redis.XInfoGroup{LastDeliveredID: "90-0", EntriesRead: 90, Lag: 10}, &trimmed, 10, true},
		{"inside the stream, lag high after a trim: at most the entries after the first", redis.XInfoGroup{LastDeliveredID: "55-0", EntriesRead: 15, Lag: 85}, &trimmed, 49, true},
		{"inside the stream, lag NULL (deleted entries ahead): entries-added less entries-read",
			redis.XInfoGroup{LastDeliveredID: "95-0", EntriesRead: 95, Lag: -1}, &trimmed, 5, true},
		{"inside the stream, lag and entries-read NULL", redis.XInfoGroup{LastDeliveredID: "55-0", Lag: -1}, &trimmed, 49, true},
		{"inside the stream, lag 0 is impossible before the last entry", redis.XInfoGroup{LastDeliveredID: "99-0", EntriesRead: 100, Lag: 0}, &trimmed, 1, true},
		{"no stream counters (miniredis): drained", redis.XInfoGroup{LastDeliveredID: "100-0", Lag: 100},
			&redis.XInfoStream{Length: 100, LastGeneratedID: "100-0"}, 0, true},
		{"no stream counters (miniredis): its lag is the length", redis.XInfoGroup{LastDeliveredID: "30-0", Lag: 100},
			&redis.XInfoStream{Length: 100, LastGeneratedID: "100-0"}, 100, true},
		{"no stream counters (no lag reported): not 0", redis.XInfoGroup{LastDeliveredID: "30-0"},
			&redis.XInfoStream{Length: 100, LastGeneratedID: "100-0"}, 100, true},
		{"no XINFO STREAM: the lag", redis.XInfoGroup{LastDeliveredID: "30-0", Lag: 70}, nil, 70, true},
		{"no XINFO STREAM and no lag: unknown", redis.XInfoGroup{LastDeliveredID: "30-0", Lag: -1}, nil, -1, false},
		{"an ID that does not parse", redis.XInfoGroup{LastDeliveredID: "x", Lag: 3}, &trimmed, 0, false},
	} {
		got, ok := undelivered(tc.group, tc.st)
		if got != tc.want || ok != tc.ok {
			t.Errorf("%s: undelivered = %d, %v; want %d, %v", tc.name, got, ok, tc.want, tc.ok)
		}
	}
}

func TestHandleFromID(t *testing.T) {
	d, _, _, _ := miniDriver(t, func(c *Config) { c.Stream = "a:b,c" })
	if h, ok := d.HandleFromID("a:b:1700000000000-3"); !ok || h != (handle{stream: "a:b", id: "1700000000000-3"}) {
		t.Errorf("HandleFromID = %v, %v", h, ok)
	}
	for _, bad := range []string{"x:1-0", "c", "c:nope", "never-handed-out"} {
		if _, ok := d.HandleFromID(bad); ok {
			t.Errorf("HandleFromID(%q) accepted", bad)
		}
	}
}

func TestCapabilities(t *testing.T) {
	d, _, _, _ := miniDriver(t, func(c *Config) { c.MaxExtension = 30 * time.Minute })
	caps := d.Capabilities()
	if !caps.LocalRedelivery || caps.Lease != testClaimIdle || caps.MaxExtension != 30*time.Minute || caps.MaxReceive != 500 ||
		caps.ReceiveConcurrency != 1 || caps.MaxAck != maxAck {
		t.Errorf("capabilities %+v", caps)
	}
}

func TestCloseIsIdempotent(t *testing.T) {
	d, _, _, _ := miniDriver(t, nil)
	if err := d.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := d.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
}
