package redistest

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"

	"github.com/numaflow-connectors/sources/common/proctest"
)

// Cluster is a running Redis Cluster of 3 masters with one replica each.
type Cluster struct {
	Addrs []string // every node, 127.0.0.1:PORT
	Nodes []*Server
	Certs *Certs // with ClusterOptions.TLS: one CA for every node
}

// ClusterOptions of a cluster.
type ClusterOptions struct {
	// TLS serves TLS only on every node (clients, replication and the cluster bus), with client
	// certificates required. The nodes announce themselves by IP (127.0.0.1), so the server
	// certificate carries that IP.
	TLS bool
}

// StartCluster runs a plain-text cluster (StartClusterWith without options).
func StartCluster(t testing.TB) *Cluster { return StartClusterWith(t, ClusterOptions{}) }

// StartClusterWith runs 6 cluster-enabled redis-servers (each with its own bus port), joins them with
// `redis-cli --cluster create ... --cluster-replicas 1` and waits until every node reports
// cluster_state:ok. The nodes are stopped when t ends.
func StartClusterWith(t testing.TB, opts ClusterOptions) *Cluster {
	t.Helper()
	need(t, ServerBinary, CLIBinary)
	c := &Cluster{}
	if opts.TLS {
		certs, err := NewCerts(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		c.Certs = certs
	}
	for range 6 {
		dir := t.TempDir()
		bus, err := proctest.FreePortE()
		if err != nil {
			t.Fatal(err)
		}
		args := []string{
			"--cluster-enabled", "yes",
			"--cluster-config-file", filepath.Join(dir, "nodes.conf"),
			"--cluster-node-timeout", "2000",
			"--cluster-port", strconv.Itoa(bus),
			"--cluster-announce-ip", "127.0.0.1",
			// A replica's first sync starts at once, not after the default 5 s diskless-sync delay:
			// until it ends, a master's writes are not on its replica (WAIT returns 0) and a failover
			// test would kill the only copy.
			"--repl-diskless-sync-delay", "0",
		}
		if opts.TLS {
			args = append(args, "--tls-cluster", "yes")
		}
		s, err := newServer(dir, Options{TLS: opts.TLS, RequireClientCert: opts.TLS, Certs: c.Certs, Args: args})
		if err != nil {
			t.Fatal(err)
		}
		s.proc = proctest.Start(t, ServerBinary, s.args, s.procOptions())
		c.Nodes = append(c.Nodes, s)
		c.Addrs = append(c.Addrs, s.Addr)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var args []string
	if c.Certs != nil {
		args = cliArgs(c.Certs)
	}
	args = append(append(args, "--cluster", "create"), c.Addrs...)
	args = append(args, "--cluster-replicas", "1", "--cluster-yes")
	if out, err := exec.CommandContext(ctx, CLIBinary, args...).CombinedOutput(); err != nil {
		t.Fatalf("redis-cli --cluster create: %v\n%s", err, out)
	}
	for _, n := range c.Nodes {
		cl := n.newClient()
		err := waitFor(ctx, func() error {
			info, err := cl.ClusterInfo(ctx).Result()
			if err != nil {
				return err
			}
			if !strings.Contains(info, "cluster_state:ok") {
				return fmt.Errorf("node %s: cluster not ok yet", n.Addr)
			}
			return nil
		})
		if err == nil {
			err = waitFor(ctx, func() error { return replicaInSync(ctx, cl, n.Addr) })
		}
		_ = cl.Close()
		if err != nil {
			t.Fatalf("waiting for the cluster: %v", err)
		}
	}
	// Every node must also know every slot's owner, or a client's first MOVED may point nowhere.
	cl := c.newClient()
	defer cl.Close()
	if err := waitFor(ctx, func() error {
		return cl.ForEachShard(ctx, func(ctx context.Context, s *redis.Client) error { return s.Ping(ctx).Err() })
	}); err != nil {
		t.Fatalf("waiting for the cluster's shards: %v", err)
	}
	return c
}

// Options returns cluster client options (RESP2, nothing sent beyond the commands; TLS with the
// cluster's CA and client certificate when it serves TLS).
func (c *Cluster) Options() *redis.ClusterOptions {
	o := &redis.ClusterOptions{
		Addrs: c.Addrs, Protocol: 2, DisableIdentity: true,
		MaintNotificationsConfig: &maintnotifications.Config{Mode: maintnotifications.ModeDisabled},
	}
	if c.Certs != nil {
		o.TLSConfig = c.Certs.ClientTLS()
	}
	return o
}

func (c *Cluster) newClient() *redis.ClusterClient { return redis.NewClusterClient(c.Options()) }

// Client returns a cluster client, closed when t ends.
func (c *Cluster) Client(t testing.TB) *redis.ClusterClient {
	cl := c.newClient()
	t.Cleanup(func() { _ = cl.Close() })
	return cl
}

// replicaInSync returns nil for a master, and for a replica whose link to its master is up (its
// first full sync done).
func replicaInSync(ctx context.Context, cl *redis.Client, addr string) error {
	info, err := cl.Info(ctx, "replication").Result()
	if err != nil {
		return err
	}
	if strings.Contains(info, "role:slave") && !strings.Contains(info, "master_link_status:up") {
		return fmt.Errorf("replica %s: not in sync with its master yet", addr)
	}
	return nil
}

// waitFor polls check every 100 ms until it returns nil or ctx ends.
func waitFor(ctx context.Context, check func() error) error {
	var last error
	for {
		if last = check(); last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last: %v)", ctx.Err(), last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}
