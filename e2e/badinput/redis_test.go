package badinput

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/redis/go-redis/v9"

	"github.com/numaflow-connectors/sources/common/numatest"
	"github.com/numaflow-connectors/sources/redis-streams-source/redistest"
)

// redisEnv points the connector at srv, which requires the sentinel password, given here in the URL.
func redisEnv(srv *redistest.Server, stream string, extra ...string) []string {
	env := []string{"REDIS_URL=" + srv.URL(), "REDIS_STREAM=" + stream, "REDIS_GROUP=badinput", "LOG_LEVEL=debug"}
	return append(env, extra...)
}

func xadd(t *testing.T, rc *redis.Client, stream string, fields ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	vals := make([]any, len(fields))
	for i, f := range fields {
		vals[i] = f
	}
	if err := rc.XAdd(ctx, &redis.XAddArgs{Stream: stream, Values: vals}).Err(); err != nil {
		t.Fatalf("XADD to %s: %v", stream, err)
	}
}

func TestRedisPoisonAndOversize(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t, redistest.Options{Password: sentinel})
	rc := srv.Client(t)

	// Poison with REDIS_PAYLOAD_FIELD set: non-UTF-8 bytes, an empty value, 1000 KiB, an entry without
	// the payload field; then a normal entry, which must arrive, as must each of the others.
	t.Run("poison", func(t *testing.T) {
		stream := redistest.Name(t)
		xadd(t, rc, stream, "data", nonUTF8, "n", "1")
		xadd(t, rc, stream, "data", "", "n", "2")
		xadd(t, rc, stream, "data", largeBody, "n", "3")
		xadd(t, rc, stream, "other", "no payload field", "n", "4")
		c := startConnector(t, redisSource, redisEnv(srv, stream, "LOG_FORMAT=json", "REDIS_PAYLOAD_FIELD=data"))
		c.drainUntil(t, drainTimeout, seenEach(
			payloadIs(nonUTF8),
			func(m numatest.Message) bool { return len(m.Payload) == 0 && m.Headers["n"] == "2" },
			payloadIs(largeBody),
			func(m numatest.Message) bool {
				return len(m.Payload) == 0 && m.Headers["n"] == "4" && m.Headers["x-redis-missing-payload-field"] == "data"
			},
		))
		xadd(t, rc, stream, "data", "after-poison")
		c.drainUntil(t, drainTimeout, payloadIs("after-poison"))
		c.finish(t)
	})

	// Non-UTF-8 bytes where the protocol wants text: a header value, a header name (any field other
	// than REDIS_PAYLOAD_FIELD) and the key. Numaflow's headers and keys are protobuf strings, which
	// must be valid UTF-8: an entry passed on as it is fails to marshal, numaflow-go then stops its
	// gRPC server and the process exits, and on restart the same entry is replayed from the pending
	// list: a crash loop on one entry. The stream must go on instead.
	t.Run("non-UTF-8 header and key", func(t *testing.T) {
		stream := redistest.Name(t)
		xadd(t, rc, stream, "data", "bad-header", "h", nonUTF8)
		xadd(t, rc, stream, "data", "bad-key", "k", nonUTF8)
		xadd(t, rc, stream, "data", "bad-field-name", nonUTF8, "v")
		xadd(t, rc, stream, "data", "after-poison")
		c := startConnector(t, redisSource, redisEnv(srv, stream, "LOG_FORMAT=text", "REDIS_PAYLOAD_FIELD=data", "REDIS_KEY_FIELD=k"))
		ctx, cancel := context.WithTimeout(context.Background(), drainTimeout)
		defer cancel()
		var msgs []numatest.Message
		for ctx.Err() == nil {
			got, err := c.client.Read(ctx, 500, time.Second)
			if err != nil {
				t.Fatalf("reading: %v\n%s", err, c.proc.Output())
			}
			msgs = append(msgs, got...)
			offs := make([]numatest.Offset, len(got))
			for i, m := range got {
				offs[i] = m.Offset
			}
			if len(offs) > 0 {
				if err := c.client.Ack(ctx, offs); err != nil {
					t.Fatal(err)
				}
			}
			if _, ok := find(msgs, []byte("after-poison")); ok {
				break
			}
		}
		for _, p := range []string{"bad-header", "bad-key", "bad-field-name", "after-poison"} {
			if _, ok := find(msgs, []byte(p)); !ok {
				t.Errorf("%s did not arrive (got %s)", p, describe(msgs))
			}
		}
		for _, m := range msgs {
			for k, v := range m.Headers {
				if !utf8.ValidString(k) || !utf8.ValidString(v) {
					t.Errorf("header %q=%q is not valid UTF-8", k, v)
				}
			}
			for _, k := range m.Keys {
				if !utf8.ValidString(k) {
					t.Errorf("key %q is not valid UTF-8", k)
				}
			}
		}
		c.finish(t)
	})

	// Without REDIS_PAYLOAD_FIELD the payload is the fields as JSON: non-UTF-8 bytes become U+FFFD.
	t.Run("non-UTF-8 in JSON payload", func(t *testing.T) {
		stream := redistest.Name(t)
		xadd(t, rc, stream, "f", nonUTF8)
		xadd(t, rc, stream, "f", "after-poison")
		c := startConnector(t, redisSource, redisEnv(srv, stream, "LOG_FORMAT=json"))
		msgs := c.drainUntil(t, drainTimeout, payloadIs(`{"f":"after-poison"}`))
		var fields map[string]string
		if err := json.Unmarshal(msgs[0].Payload, &fields); err != nil || !strings.Contains(fields["f"], "\ufffd") || !strings.HasSuffix(fields["f"], "poison") {
			t.Errorf("first payload %q (%v), want a JSON object whose f has U+FFFD for the invalid bytes", msgs[0].Payload, err)
		}
		c.finish(t)
	})

	// Over MAX_MESSAGE_BYTES, with a dead-letter stream: copied there with the reason, acked, and the
	// stream goes on. The password comes from REDIS_PASSWORD_FILE this time.
	t.Run("oversize dead-lettered", func(t *testing.T) {
		stream := redistest.Name(t)
		dl := stream + "-dl"
		xadd(t, rc, stream, "data", "before")
		xadd(t, rc, stream, "data", bigPayload)
		xadd(t, rc, stream, "data", "after")
		pw := writeFile(t, shortDir(t), "password", sentinel+"\n")
		env := []string{"REDIS_URL=redis://" + srv.Addr, "REDIS_PASSWORD_FILE=" + pw, "REDIS_STREAM=" + stream, "REDIS_GROUP=badinput",
			"LOG_LEVEL=debug", "LOG_FORMAT=text", "REDIS_PAYLOAD_FIELD=data", "MAX_MESSAGE_BYTES=" + smallLimit, "REDIS_DEAD_LETTER_STREAM=" + dl}
		c := startConnector(t, redisSource, env)
		msgs := c.drainUntil(t, drainTimeout, seenAll("before", "after"))
		assertOversizeNotDelivered(t, msgs)
		eventually(t, 20*time.Second, func(ctx context.Context) error {
			es, err := rc.XRange(ctx, dl, "-", "+").Result()
			if err != nil {
				return err
			}
			err = errNotYet
			for _, e := range es {
				reason, _ := e.Values["dead-letter-reason"].(string)
				if e.Values["data"] == bigPayload && strings.Contains(reason, reasonTooLarge) {
					return nil
				}
				err = fmt.Errorf("dead-letter stream holds %d fields with reason %q", len(e.Values), reason)
			}
			return err
		})
		c.waitOutput(t, 5*time.Second, "message dead-lettered", reasonTooLarge)
		eventually(t, 10*time.Second, pendingZero(rc, stream))
		c.finish(t)
	})

	// Over the limit with no dead-letter stream and the default fallback (nack): the entry stays in the
	// group's pending list, the stream goes on and nothing spins.
	t.Run("oversize nacked", func(t *testing.T) {
		stream := redistest.Name(t)
		xadd(t, rc, stream, "data", "before")
		xadd(t, rc, stream, "data", bigPayload)
		xadd(t, rc, stream, "data", "after")
		c := startConnector(t, redisSource, redisEnv(srv, stream, "LOG_FORMAT=text", "REDIS_PAYLOAD_FIELD=data", "MAX_MESSAGE_BYTES="+smallLimit))
		assertOversizeNotDelivered(t, c.drainUntil(t, drainTimeout, seenAll("before", "after")))
		c.assertNoNackSpin(t)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if p, err := rc.XPending(ctx, stream, "badinput").Result(); err != nil || p.Count != 1 {
			t.Errorf("pending list: %+v (%v), want the oversize entry still pending", p, err)
		}
		c.finish(t)
	})

	t.Run("oversize dropped", func(t *testing.T) {
		stream := redistest.Name(t)
		xadd(t, rc, stream, "data", "before")
		xadd(t, rc, stream, "data", bigPayload)
		xadd(t, rc, stream, "data", "after")
		env := []string{"REDIS_URL=redis://" + srv.Addr, "REDIS_PASSWORD=" + sentinel, "REDIS_STREAM=" + stream, "REDIS_GROUP=badinput",
			"LOG_LEVEL=debug", "LOG_FORMAT=json", "REDIS_PAYLOAD_FIELD=data", "MAX_MESSAGE_BYTES=" + smallLimit, "DEAD_LETTER_FALLBACK=drop"}
		c := startConnector(t, redisSource, env)
		msgs := c.drainUntil(t, drainTimeout, seenAll("before", "after"))
		assertOversizeNotDelivered(t, msgs)
		c.waitOutput(t, 5*time.Second, "message dropped", reasonTooLarge)
		// Dropped means acked: nothing is left in the group's pending list.
		eventually(t, 10*time.Second, pendingZero(rc, stream))
		c.finish(t)
	})
}

func pendingZero(rc *redis.Client, stream string) func(context.Context) error {
	return func(ctx context.Context) error {
		p, err := rc.XPending(ctx, stream, "badinput").Result()
		if err != nil {
			return err
		}
		if p.Count != 0 {
			return fmt.Errorf("%d entries still pending", p.Count)
		}
		return nil
	}
}

// TLS to Redis is verified: the right CA reads; a wrong CA, or a server name the certificate does not
// carry, is refused (no entry read, readiness false, the cause logged), and the process stays up.
func TestRedisTLSIsVerified(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t, redistest.Options{TLS: true, Password: sentinel})
	rc := srv.Client(t)
	wrong, err := redistest.NewCerts(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	env := func(stream string, extra ...string) []string {
		return append([]string{"REDIS_URL=rediss://" + srv.Addr, "REDIS_PASSWORD=" + sentinel, "REDIS_STREAM=" + stream,
			"REDIS_GROUP=badinput", "LOG_LEVEL=debug", "REDIS_PAYLOAD_FIELD=data"}, extra...)
	}

	t.Run("right CA", func(t *testing.T) {
		stream := redistest.Name(t)
		xadd(t, rc, stream, "data", "over-tls")
		c := startConnector(t, redisSource, env(stream, "REDIS_TLS_CA_FILE="+srv.Certs.CAFile))
		c.drainUntil(t, drainTimeout, payloadIs("over-tls"))
		c.finish(t)
	})

	for _, tc := range []struct{ name, extra, log string }{
		{"wrong CA", "REDIS_TLS_CA_FILE=" + wrong.CAFile, "certificate signed by unknown authority"},
		{"wrong server name", "REDIS_TLS_SERVER_NAME=not-this-server.example", "not-this-server.example"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			stream := redistest.Name(t)
			xadd(t, rc, stream, "data", "must-not-be-read")
			extra := []string{tc.extra}
			if tc.name == "wrong server name" {
				extra = append(extra, "REDIS_TLS_CA_FILE="+srv.Certs.CAFile)
			}
			c := startConnector(t, redisSource, env(stream, extra...))
			eventually(t, 20*time.Second, func(ctx context.Context) error {
				code, body, err := c.readyz(ctx)
				if err != nil {
					return err
				}
				if code != http.StatusServiceUnavailable || body != "broker unreachable" {
					return fmt.Errorf("/readyz answered %d %q", code, body)
				}
				return nil
			})
			if msgs := c.readFor(t, 2*time.Second); len(msgs) != 0 {
				t.Errorf("read %d messages over TLS that should have been refused", len(msgs))
			}
			c.waitOutput(t, 10*time.Second, tc.log)
			// Nothing was consumed: the group, if it exists at all, has read nothing.
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if groups, err := rc.XInfoGroups(ctx, stream).Result(); err == nil && len(groups) > 0 && groups[0].EntriesRead > 0 {
				t.Errorf("the group read %d entries through a refused TLS connection", groups[0].EntriesRead)
			}
			c.finish(t)
		})
	}
}
