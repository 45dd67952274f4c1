// Package redistest runs real Redis servers (the redis-server, redis-cli and redis-sentinel binaries that
// `make deps` installs) on free loopback ports for tests: a standalone server, a 6-node cluster, and a
// master + replica watched by 3 sentinels, each with TLS if asked (certificates generated for the test,
// with 127.0.0.1 as an IP SAN, one CA per deployment). Every process runs in its own temporary
// directory and is stopped by its PID when the test ends. Tests are skipped only when
// SKIP_BROKER_TESTS=1; a missing binary fails them with the command that fixes it.
//
// One server per test:
//
//	srv := redistest.Start(t, redistest.Options{})
//	client := srv.Client(t)
//
// One server per test binary (faster when many tests need one; use a fresh stream per test, Name):
//
//	func TestMain(m *testing.M) { redistest.Main(m) }
//	... srv := redistest.Shared(t)
package redistest

import (
	"context"
	"crypto/tls"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"

	"github.com/numaflow-connectors/sources/common/proctest"
)

// Binaries the package runs.
const (
	ServerBinary   = "redis-server"
	CLIBinary      = "redis-cli"
	SentinelBinary = "redis-sentinel"
)

// skip reports whether broker tests are switched off (SKIP_BROKER_TESTS=1).
func skip() bool { return os.Getenv("SKIP_BROKER_TESTS") == "1" }

// need skips t when broker tests are off and fails it when a binary is missing.
func need(t testing.TB, binaries ...string) {
	t.Helper()
	if skip() {
		t.Skip("SKIP_BROKER_TESTS=1: not starting redis")
	}
	for _, b := range binaries {
		if _, err := exec.LookPath(b); err != nil {
			t.Fatalf("%s not found in PATH: run `make deps` (it installs the Debian packages redis-server, redis-tools and redis-sentinel)", b)
		}
	}
}

// Options of a standalone server.
type Options struct {
	// TLS serves TLS only, with a CA and certificates generated for the test (Server.Certs).
	TLS bool
	// RequireClientCert makes the TLS server demand a client certificate signed by the CA.
	RequireClientCert bool
	// Certs, with TLS, are the certificates to serve (one CA for several servers, as a cluster or a
	// sentinel deployment needs); nil generates new ones.
	Certs *Certs
	// Password sets requirepass.
	Password string
	// AppendOnly persists every write (appendfsync always), so a kill -9 and Restart keep the data.
	AppendOnly bool
	// Args are extra redis-server arguments, e.g. "--replicaof", "127.0.0.1 7000".
	Args []string
}

// Server is a running redis-server.
type Server struct {
	Addr  string // 127.0.0.1:PORT
	Port  int
	Dir   string
	Certs *Certs // with Options.TLS
	opts  Options
	args  []string
	mu    sync.Mutex
	proc  *proctest.Process
}

// Start runs a redis-server for t, stopped (by PID) when t ends.
func Start(t testing.TB, opts Options) *Server {
	t.Helper()
	need(t, ServerBinary)
	s, err := newServer(t.TempDir(), opts)
	if err != nil {
		t.Fatal(err)
	}
	s.proc = proctest.Start(t, ServerBinary, s.args, s.procOptions())
	return s
}

func newServer(dir string, opts Options) (*Server, error) {
	port, err := proctest.FreePortE()
	if err != nil {
		return nil, err
	}
	s := &Server{Addr: "127.0.0.1:" + strconv.Itoa(port), Port: port, Dir: dir, opts: opts}
	s.args = []string{"--bind", "127.0.0.1", "--dir", dir, "--save", "", "--daemonize", "no", "--loglevel", "notice"}
	if opts.AppendOnly {
		s.args = append(s.args, "--appendonly", "yes", "--appendfsync", "always")
	} else {
		s.args = append(s.args, "--appendonly", "no")
	}
	if opts.TLS {
		certs := opts.Certs
		if certs == nil {
			if certs, err = NewCerts(dir); err != nil {
				return nil, err
			}
		}
		s.Certs = certs
		s.args = append(s.args, "--port", "0", "--tls-port", strconv.Itoa(port))
		s.args = append(s.args, serverArgs(certs, opts.RequireClientCert)...)
	} else {
		s.args = append(s.args, "--port", strconv.Itoa(port))
	}
	if opts.Password != "" {
		s.args = append(s.args, "--requirepass", opts.Password)
	}
	s.args = append(s.args, opts.Args...)
	return s, nil
}

func (s *Server) procOptions() proctest.Options {
	return proctest.Options{Dir: s.Dir, Timeout: 20 * time.Second, Ready: func(ctx context.Context) error {
		c := s.newClient()
		defer c.Close()
		return c.Ping(ctx).Err()
	}}
}

// URL is the server's redis:// (or rediss://) URL, with the password when one is set.
func (s *Server) URL() string {
	scheme := "redis"
	if s.opts.TLS {
		scheme = "rediss"
	}
	auth := ""
	if s.opts.Password != "" {
		auth = ":" + s.opts.Password + "@"
	}
	return scheme + "://" + auth + s.Addr
}

// tlsConfig trusts the test CA and presents the client certificate (nil without TLS).
func (s *Server) tlsConfig() *tls.Config {
	if s.Certs == nil {
		return nil
	}
	return s.Certs.ClientTLS()
}

// Options returns client options for the server (RESP2, no retries, nothing sent beyond the commands).
func (s *Server) Options() *redis.Options {
	return &redis.Options{
		Addr: s.Addr, Password: s.opts.Password, TLSConfig: s.tlsConfig(), Protocol: 2,
		DisableIdentity: true, MaxRetries: -1,
		MaintNotificationsConfig: &maintnotifications.Config{Mode: maintnotifications.ModeDisabled},
	}
}

func (s *Server) newClient() *redis.Client { return redis.NewClient(s.Options()) }

// Client returns a client of the server, closed when t ends.
func (s *Server) Client(t testing.TB) *redis.Client {
	c := s.newClient()
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// pid is the server process's id.
func (s *Server) pid() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.proc.Cmd.Process.Pid
}

// CPUTime is the CPU time the server process has used so far (for benchkit.Meter.Broker).
func (s *Server) CPUTime() time.Duration { return proctest.CPUTime(s.pid()) }

// Kill stops the server at once (SIGKILL to its PID's process group), as a crash would.
func (s *Server) Kill() {
	s.mu.Lock()
	p := s.proc
	s.mu.Unlock()
	p.Kill()
}

// Restart kills the server (if it runs) and starts it again on the same port and directory. Without
// Options.AppendOnly its data is gone.
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	s.Kill()
	p := proctest.Start(t, ServerBinary, s.args, s.procOptions())
	s.mu.Lock()
	s.proc = p
	s.mu.Unlock()
}

// Output returns what the server logged so far.
func (s *Server) Output() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.proc.Output()
}

// ---- one server per test binary ----

var shared = &proctest.Shared[*Server]{
	Name: "redistest",
	Start: func() (*Server, error) {
		dir, err := os.MkdirTemp("", "redistest")
		if err != nil {
			return nil, fmt.Errorf("creating a directory for redis: %w", err)
		}
		s, err := newServer(dir, Options{})
		if err == nil {
			s.proc, err = proctest.StartE(ServerBinary, s.args, s.procOptions())
		}
		if err != nil {
			_ = os.RemoveAll(dir)
			return nil, err
		}
		return s, nil
	},
	Stop: func(s *Server, _ bool) {
		s.proc.Kill()
		_ = os.RemoveAll(s.Dir)
	},
}

// Main runs the test binary's tests with one shared server (started on first use by Shared) and stops
// it afterwards. Call it from TestMain.
func Main(m *testing.M) { shared.Main(m) }

// Shared returns the test binary's server, starting it on first use. The test binary must call Main
// from TestMain. Use fresh keys per test (Name).
func Shared(t testing.TB) *Server {
	t.Helper()
	need(t, ServerBinary)
	return shared.Get(t)
}

// Name returns a key name unique to this test run, derived from the test's name.
func Name(t testing.TB) string {
	return proctest.Name(t, 60)
}
