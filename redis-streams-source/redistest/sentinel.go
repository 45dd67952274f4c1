package redistest

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"

	"github.com/numaflow-connectors/sources/common/proctest"
)

// masterName is the name the sentinels monitor.
const masterName = "mymaster"

// Sentinel is a master, a replica of it and 3 sentinels (quorum 2, down after 1 s).
type Sentinel struct {
	MasterName    string
	SentinelAddrs []string
	Master        *Server
	Replica       *Server
	sentinels     []*proctest.Process
}

// StartSentinel runs the master, the replica and the sentinels and waits until the replica is in
// sync and every sentinel knows the replica and the other sentinels. Everything is stopped when t ends.
func StartSentinel(t testing.TB) *Sentinel {
	t.Helper()
	need(t, ServerBinary, SentinelBinary)
	s := &Sentinel{MasterName: masterName}
	s.Master = Start(t, Options{})
	s.Replica = Start(t, Options{Args: []string{"--replicaof", "127.0.0.1", fmt.Sprint(s.Master.Port)}})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	rc := s.Replica.newClient()
	defer rc.Close()
	if err := waitFor(ctx, func() error {
		info, err := rc.Info(ctx, "replication").Result()
		if err != nil {
			return err
		}
		if !strings.Contains(info, "master_link_status:up") {
			return fmt.Errorf("replica not in sync yet")
		}
		return nil
	}); err != nil {
		t.Fatalf("waiting for the replica: %v", err)
	}
	for range 3 {
		dir := t.TempDir()
		port, err := proctest.FreePortE()
		if err != nil {
			t.Fatal(err)
		}
		conf := filepath.Join(dir, "sentinel.conf")
		text := fmt.Sprintf("port %d\nbind 127.0.0.1\ndir %s\nsentinel monitor %s 127.0.0.1 %d 2\n"+
			"sentinel down-after-milliseconds %[3]s 1000\nsentinel failover-timeout %[3]s 5000\nsentinel parallel-syncs %[3]s 1\n",
			port, dir, masterName, s.Master.Port)
		if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
			t.Fatalf("writing %s: %v", conf, err)
		}
		addr := fmt.Sprintf("127.0.0.1:%d", port)
		p := proctest.Start(t, SentinelBinary, []string{conf}, proctest.Options{Dir: dir, Timeout: 20 * time.Second,
			Ready: func(ctx context.Context) error {
				c := newSentinelClient(addr)
				defer c.Close()
				return c.Ping(ctx).Err()
			}})
		s.sentinels = append(s.sentinels, p)
		s.SentinelAddrs = append(s.SentinelAddrs, addr)
	}
	for _, addr := range s.SentinelAddrs {
		c := newSentinelClient(addr)
		err := waitFor(ctx, func() error {
			reps, err := c.Replicas(ctx, masterName).Result()
			if err != nil {
				return err
			}
			sens, err := c.Sentinels(ctx, masterName).Result()
			if err != nil {
				return err
			}
			if len(reps) < 1 || len(sens) < 2 {
				return fmt.Errorf("sentinel %s knows %d replicas and %d other sentinels", addr, len(reps), len(sens))
			}
			return nil
		})
		_ = c.Close()
		if err != nil {
			t.Fatalf("waiting for the sentinels: %v", err)
		}
	}
	return s
}

func newSentinelClient(addr string) *redis.SentinelClient {
	return redis.NewSentinelClient(&redis.Options{Addr: addr, Protocol: 2, DisableIdentity: true,
		MaintNotificationsConfig: &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}})
}

// masterAddr asks the first reachable sentinel for the current master's address.
func (s *Sentinel) masterAddr(ctx context.Context) (string, error) {
	var last error
	for _, addr := range s.SentinelAddrs {
		c := newSentinelClient(addr)
		hp, err := c.GetMasterAddrByName(ctx, masterName).Result()
		_ = c.Close()
		if err == nil && len(hp) == 2 {
			return hp[0] + ":" + hp[1], nil
		}
		last = err
	}
	return "", fmt.Errorf("asking the sentinels for the master: %v", last)
}

// Options returns failover client options for the sentinels (RESP2, nothing sent beyond the commands).
func (s *Sentinel) Options() *redis.FailoverOptions {
	return &redis.FailoverOptions{MasterName: masterName, SentinelAddrs: s.SentinelAddrs, Protocol: 2, DisableIdentity: true}
}

// Client returns a failover client, closed when t ends.
func (s *Sentinel) Client(t testing.TB) *redis.Client {
	c := redis.NewFailoverClient(s.Options())
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// KillMaster kills the master (SIGKILL by PID) and waits until the sentinels have promoted the
// replica; it returns the new master's address.
func (s *Sentinel) KillMaster(t testing.TB) string {
	t.Helper()
	s.Master.Kill()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var addr string
	err := waitFor(ctx, func() error {
		var err error
		addr, err = s.masterAddr(ctx)
		if err != nil {
			return err
		}
		if addr != s.Replica.Addr {
			return fmt.Errorf("master still %s", addr)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("waiting for the failover: %v", err)
	}
	return addr
}
