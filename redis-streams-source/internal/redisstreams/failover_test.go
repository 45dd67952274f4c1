package redisstreams

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/numaflow-connectors/sources/redis-streams-source/redistest"
)

// A cluster master fails over (the node's process dies; its replica is promoted within the node
// timeout). go-redis reloads the cluster's slot map only on MOVED, ASK or READONLY, or once the map is
// ClusterStateReloadInterval old (60 s by default since go-redis 9.x); a node that refuses connections
// triggers none of them. So every call of the source to that slot failed with "connection refused"
// for up to a minute after the cluster had recovered: no reads, no acks, no lease extensions (other
// replicas, stalled the same way, then claim each other's entries), pending unknown.
func TestIntegrationClusterFailover(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster test skipped in -short mode")
	}
	cl := redistest.StartCluster(t)
	c := cl.Client(t)
	ctx := context.Background()
	stream := "{" + redistest.Name(t) + "}:s"
	cfg := testConfig("", stream)
	cfg.URL, cfg.Addrs, cfg.Mode = "", strings.Join(cl.Addrs, ","), ModeCluster
	d := openTest(ctx, t, cfg)
	m, err := c.MasterForKey(ctx, stream)
	if err != nil {
		t.Fatal(err)
	}
	readBeforeFailover(ctx, t, d, c, m, stream)
	addr := m.Options().Addr
	for _, n := range cl.Nodes {
		if n.Addr == addr {
			n.Kill()
		}
	}
	start := time.Now()
	// A client made after the failover finds the new master at once.
	var pubErr error
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		fresh := redis.NewClusterClient(cl.Options())
		pubErr = fresh.XAdd(ctx, &redis.XAddArgs{Stream: stream, Values: []any{testPayloadField, "after"}}).Err()
		_ = fresh.Close()
		if pubErr == nil {
			break
		}
	}
	if pubErr != nil {
		t.Fatalf("publishing after the failover: %v", pubErr)
	}
	recovered := time.Since(start)
	got, err := receiveUntil(t, d, 1, 15*time.Second)
	if len(got) != 1 || string(got[0].Payload) != "after" {
		t.Fatalf("the cluster took %s to fail over; 15 s later the source still had not read from the new master (last error: %v)",
			recovered.Round(100*time.Millisecond), err)
	}
	t.Logf("failed over in %s, read %s later", recovered.Round(100*time.Millisecond), (time.Since(start) - recovered).Round(100*time.Millisecond))
}

// doer sends a command as it is (redis.Cmdable has no Do): a master's client.
type doer interface {
	Do(ctx context.Context, args ...any) *redis.Cmd
}

// readBeforeFailover publishes 10 entries to stream, reads and acks them with d, and waits until a
// replica of master has them (the group's state included): a failover must not lose what the test
// counts on. WAIT blocks for its timeout, which must stay under the client's 3 s read timeout.
func readBeforeFailover(ctx context.Context, t *testing.T, d *driver, c redis.Cmdable, master doer, stream string) {
	t.Helper()
	publishN(t, c, stream, 10, "before")
	got, _ := receiveUntil(t, d, 10, 10*time.Second)
	if len(got) != 10 {
		t.Fatalf("received %d of 10", len(got))
	}
	if err := d.Ack(ctx, handles(got)); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(20 * time.Second); ; {
		n, err := master.Do(ctx, "WAIT", 1, 1000).Int()
		if err == nil && n >= 1 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the master's writes did not reach a replica in 20 s (WAIT: %d, %v)", n, err)
		}
	}
}
