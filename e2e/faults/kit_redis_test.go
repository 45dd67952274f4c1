package faults

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/numaflow-connectors/sources/redis-streams-source/redistest"
)

// redisKit: a redis-server per test (cheap, and the restart test needs its own), a fresh stream and
// consumer group per resource. The lease is REDIS_CLAIM_MIN_IDLE: entries idle longer are claimed by
// another replica; released entries are taken on that replica's next claim pass (every half of it).
func redisKit() *kit {
	return &kit{
		name:  "redis-streams-source",
		lease: 4 * time.Second,
		newResource: func(t *testing.T, o resOptions) resource {
			srv := redistest.Start(t, redistest.Options{AppendOnly: o.persistent})
			return &redisResource{srv: srv, client: srv.Client(t), stream: redistest.Name(t), lease: o.lease}
		},
		releaseWithin: func(lease time.Duration) time.Duration { return lease/2 + 3*time.Second },
		known:         knownIssues(nil),
	}
}

type redisResource struct {
	srv    *redistest.Server
	client *redis.Client
	stream string
	lease  time.Duration
}

func (r *redisResource) upstream() string { return r.srv.Addr }

func (r *redisResource) env(addr string) []string {
	return []string{"REDIS_ADDRS=" + addr, "REDIS_STREAM=" + r.stream, "REDIS_GROUP=faults", "REDIS_PAYLOAD_FIELD=p",
		"REDIS_CLAIM_MIN_IDLE=" + r.lease.String(), "REDIS_BLOCK=" + min(r.lease/4, 2*time.Second).String()}
}

func (r *redisResource) publish(t *testing.T, payloads [][]byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for lo := 0; lo < len(payloads); lo += 1000 {
		pipe := r.client.Pipeline()
		for _, p := range payloads[lo:min(lo+1000, len(payloads))] {
			pipe.XAdd(ctx, &redis.XAddArgs{Stream: r.stream, Values: []any{"p", p}})
		}
		if _, err := pipe.Exec(ctx); err != nil {
			t.Fatalf("adding to stream %s: %v", r.stream, err)
		}
	}
}

// restartBroker kills redis-server (kill -9: with appendfsync always, every acknowledged write is on
// disk) and starts it again on the same port and directory after down has run.
func (r *redisResource) restartBroker(t *testing.T, down func()) {
	t.Helper()
	r.srv.Kill()
	down()
	r.srv.Restart(t)
}
