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
	Certs         *Certs // with SentinelOptions.TLS: one CA for the servers and the sentinels
	opts          SentinelOptions
	sentinels     []*proctest.Process
}

// SentinelOptions of a sentinel deployment.
type SentinelOptions struct {
	// TLS serves TLS only, with client certificates required, on the master, the replica and the
	// sentinels; replication and the sentinels' own connections use TLS too.
	TLS bool
	// Password protects the sentinels themselves: the default user's password, or with Username the
	// password of that ACL user (the default user is then disabled). The sentinels authenticate to
	// each other with the same credentials.
	Password string
	// Username is an ACL user on the sentinels (needs Password).
	Username string
}

// StartSentinel runs a plain-text deployment without passwords (StartSentinelWith without options).
func StartSentinel(t testing.TB) *Sentinel { return StartSentinelWith(t, SentinelOptions{}) }

// StartSentinelWith runs the master, the replica and the sentinels and waits until the replica is in
// sync and every sentinel knows the replica and the other sentinels. Everything is stopped when t ends.
func StartSentinelWith(t testing.TB, opts SentinelOptions) *Sentinel {
	t.Helper()
	need(t, ServerBinary, SentinelBinary)
	if opts.Username != "" && opts.Password == "" {
		t.Fatal("redistest: SentinelOptions.Username needs a Password")
	}
	s := &Sentinel{MasterName: masterName, opts: opts}
	if opts.TLS {
		certs, err := NewCerts(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		s.Certs = certs
	}
	// The replica's first sync starts at once, not after the default 5 s diskless-sync delay.
	server := Options{TLS: opts.TLS, RequireClientCert: opts.TLS, Certs: s.Certs, Args: []string{"--repl-diskless-sync-delay", "0"}}
	s.Master = Start(t, server)
	server.Args = append(server.Args, "--replicaof", "127.0.0.1", fmt.Sprint(s.Master.Port))
	s.Replica = Start(t, server)
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
		if err := os.WriteFile(conf, []byte(s.config(port, dir)), 0o600); err != nil {
			t.Fatalf("writing %s: %v", conf, err)
		}
		addr := fmt.Sprintf("127.0.0.1:%d", port)
		p := proctest.Start(t, SentinelBinary, []string{conf}, proctest.Options{Dir: dir, Timeout: 20 * time.Second,
			Ready: func(ctx context.Context) error {
				c := s.sentinelClient(addr)
				defer c.Close()
				return c.Ping(ctx).Err()
			}})
		s.sentinels = append(s.sentinels, p)
		s.SentinelAddrs = append(s.SentinelAddrs, addr)
	}
	for _, addr := range s.SentinelAddrs {
		c := s.sentinelClient(addr)
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

// config is a sentinel's configuration file.
func (s *Sentinel) config(port int, dir string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "bind 127.0.0.1\ndir %s\n", dir)
	if s.Certs != nil {
		fmt.Fprintf(&b, "port 0\ntls-port %d\n", port)
		args := serverArgs(s.Certs, true)
		for i := 0; i+1 < len(args); i += 2 {
			fmt.Fprintf(&b, "%s %s\n", strings.TrimPrefix(args[i], "--"), args[i+1])
		}
	} else {
		fmt.Fprintf(&b, "port %d\n", port)
	}
	switch {
	case s.opts.Username != "":
		fmt.Fprintf(&b, "user default off\nuser %s on >%s allchannels +@all\nsentinel sentinel-user %[1]s\nsentinel sentinel-pass %[2]s\n",
			s.opts.Username, s.opts.Password)
	case s.opts.Password != "":
		fmt.Fprintf(&b, "requirepass %s\nsentinel sentinel-pass %[1]s\n", s.opts.Password)
	}
	fmt.Fprintf(&b, "sentinel monitor %s 127.0.0.1 %d 2\nsentinel down-after-milliseconds %[1]s 1000\n"+
		"sentinel failover-timeout %[1]s 5000\nsentinel parallel-syncs %[1]s 1\n", masterName, s.Master.Port)
	return b.String()
}

// sentinelClient is a client of one sentinel, with the deployment's TLS and sentinel credentials.
func (s *Sentinel) sentinelClient(addr string) *redis.SentinelClient {
	o := &redis.Options{Addr: addr, Protocol: 2, DisableIdentity: true, Username: s.opts.Username, Password: s.opts.Password,
		MaintNotificationsConfig: &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}}
	if s.Certs != nil {
		o.TLSConfig = s.Certs.ClientTLS()
	}
	return redis.NewSentinelClient(o)
}

// masterAddr asks the first reachable sentinel for the current master's address.
func (s *Sentinel) masterAddr(ctx context.Context) (string, error) {
	var last error
	for _, addr := range s.SentinelAddrs {
		c := s.sentinelClient(addr)
		hp, err := c.GetMasterAddrByName(ctx, masterName).Result()
		_ = c.Close()
		if err == nil && len(hp) == 2 {
			return hp[0] + ":" + hp[1], nil
		}
		last = err
	}
	return "", fmt.Errorf("asking the sentinels for the master: %v", last)
}

// Options returns failover client options for the sentinels (RESP2, nothing sent beyond the
// commands; the deployment's TLS and sentinel credentials).
func (s *Sentinel) Options() *redis.FailoverOptions {
	o := &redis.FailoverOptions{MasterName: masterName, SentinelAddrs: s.SentinelAddrs, Protocol: 2, DisableIdentity: true,
		SentinelUsername: s.opts.Username, SentinelPassword: s.opts.Password}
	if s.Certs != nil {
		o.TLSConfig = s.Certs.ClientTLS()
	}
	return o
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
