package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/numaflow-connectors/sources/common/numatest"
	"github.com/numaflow-connectors/sources/common/proctest"
	"github.com/numaflow-connectors/sources/redis-streams-source/redistest"
)

// The connector binary with TLS in cluster and sentinel mode, configured by environment variables only:
// with the deployment's CA it reads; with a wrong CA it stays up, /readyz answers 503, the cause is
// logged and nothing is read, as in standalone mode; SIGTERM then stops it cleanly.
func TestBinaryTLSClusterAndSentinel(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the connector and starts a cluster and a sentinel deployment")
	}
	bin := proctest.Build(t, ".", "redis-streams-source")
	wrong, err := redistest.NewCerts(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	tlsEnv := func(c *redistest.Certs, ca string) []string {
		return []string{"REDIS_TLS_CA_FILE=" + ca, "REDIS_TLS_CERT_FILE=" + c.ClientCertFile, "REDIS_TLS_KEY_FILE=" + c.ClientKeyFile}
	}

	t.Run("cluster", func(t *testing.T) {
		cl := redistest.StartClusterWith(t, redistest.ClusterOptions{TLS: true})
		stream := "{" + redistest.Name(t) + "}:in"
		env := []string{"REDIS_MODE=cluster", "REDIS_ADDRS=" + strings.Join(cl.Addrs[:2], ","), "REDIS_STREAM=" + stream}
		publish(t, cl.Client(t), stream, 5)
		reads(t, bin, append(env, tlsEnv(cl.Certs, cl.Certs.CAFile)...), 5)
		refusesWrongCA(t, bin, append(env, tlsEnv(cl.Certs, wrong.CAFile)...))
	})
	t.Run("sentinel", func(t *testing.T) {
		sn := redistest.StartSentinelWith(t, redistest.SentinelOptions{TLS: true, Username: "watcher", Password: "sentinel-s3cret"})
		stream := redistest.Name(t)
		env := []string{"REDIS_MODE=sentinel", "REDIS_ADDRS=" + strings.Join(sn.SentinelAddrs, ","), "REDIS_STREAM=" + stream,
			"REDIS_SENTINEL_MASTER=" + sn.MasterName, "REDIS_SENTINEL_USERNAME=watcher"}
		// The sentinels' password from a mounted file, as from a Kubernetes Secret.
		pw := filepath.Join(t.TempDir(), "sentinel-password")
		if err := os.WriteFile(pw, []byte("sentinel-s3cret\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		env = append(env, "REDIS_SENTINEL_PASSWORD_FILE="+pw)
		publish(t, sn.Client(t), stream, 5)
		reads(t, bin, append(env, tlsEnv(sn.Certs, sn.Certs.CAFile)...), 5)
		refusesWrongCA(t, bin, append(env, tlsEnv(sn.Certs, wrong.CAFile)...))
	})
}

func publish(t *testing.T, c redis.Cmdable, stream string, n int) {
	t.Helper()
	for i := range n {
		if err := c.XAdd(context.Background(), &redis.XAddArgs{Stream: stream, Values: []any{"data", fmt.Sprint(i)}}).Err(); err != nil {
			t.Fatalf("XADD: %v", err)
		}
	}
}

// connector is the binary running with env, dialled as numa would.
type connector struct {
	proc    *proctest.Process
	client  *numatest.Client
	metrics string
}

func start(t *testing.T, bin string, env []string) *connector {
	t.Helper()
	dir, err := os.MkdirTemp("", "rss") // a short path: unix socket names are limited
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	sock, info := filepath.Join(dir, "s.sock"), filepath.Join(dir, "info")
	metrics := fmt.Sprintf("127.0.0.1:%d", proctest.FreePort(t))
	base := []string{"SOURCE_SOCKET=" + sock, "SOURCE_SERVER_INFO_FILE=" + info, "METRICS_ADDR=" + metrics,
		"REDIS_GROUP=g", "REDIS_CLAIM_MIN_IDLE=2s", "LOG_FORMAT=text"}
	p := proctest.Start(t, bin, nil, proctest.Options{Env: append(base, env...)})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := numatest.Dial(ctx, numatest.Options{Socket: sock, ServerInfoFile: info})
	if err != nil {
		t.Fatalf("dialing the connector: %v\n%s", err, p.Output())
	}
	t.Cleanup(func() { _ = c.Close() })
	return &connector{proc: p, client: c, metrics: metrics}
}

// stop sends SIGTERM and expects a clean exit.
func (c *connector) stop(t *testing.T) {
	t.Helper()
	_ = c.client.Close()
	if err := c.proc.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code, ok := c.proc.Wait(30 * time.Second); !ok || code != 0 {
		t.Errorf("after SIGTERM: exit %d (exited: %v)\n%s", code, ok, c.proc.Output())
	}
}

func reads(t *testing.T, bin string, env []string, n int) {
	t.Helper()
	c := start(t, bin, env)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	got := 0
	for got < n && ctx.Err() == nil {
		msgs, err := c.client.Read(ctx, 100, time.Second)
		if err != nil {
			t.Fatalf("reading: %v\n%s", err, c.proc.Output())
		}
		offs := make([]numatest.Offset, len(msgs))
		for i, m := range msgs {
			offs[i] = m.Offset
		}
		if len(offs) > 0 {
			if err := c.client.Ack(ctx, offs); err != nil {
				t.Fatal(err)
			}
		}
		got += len(msgs)
	}
	if got != n {
		t.Fatalf("read %d of %d over TLS\n%s", got, n, c.proc.Output())
	}
	c.stop(t)
}

func refusesWrongCA(t *testing.T, bin string, env []string) {
	t.Helper()
	c := start(t, bin, env)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var code int
	var body string
	for ctx.Err() == nil {
		code, body = readyz(ctx, c.metrics)
		if code == http.StatusServiceUnavailable {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if code != http.StatusServiceUnavailable {
		t.Fatalf("/readyz answered %d %q with a wrong CA\n%s", code, body, c.proc.Output())
	}
	if msgs, err := c.client.Read(ctx, 100, 2*time.Second); err != nil || len(msgs) != 0 {
		t.Errorf("read %d messages (%v) through a refused TLS connection", len(msgs), err)
	}
	const cause = "certificate signed by unknown authority"
	for !strings.Contains(c.proc.Output(), cause) && ctx.Err() == nil {
		time.Sleep(100 * time.Millisecond)
	}
	if !strings.Contains(c.proc.Output(), cause) {
		t.Errorf("the log does not name the cause (%q)\n%s", cause, c.proc.Output())
	}
	select {
	case <-c.proc.Done():
		t.Fatalf("the connector exited with a wrong CA\n%s", c.proc.Output())
	default:
	}
	t.Logf("wrong CA: /readyz %d %q", code, body)
	c.stop(t)
}

func readyz(ctx context.Context, addr string) (int, string) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/readyz", nil)
	if err != nil {
		return 0, err.Error()
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, strings.TrimSpace(string(b))
}
