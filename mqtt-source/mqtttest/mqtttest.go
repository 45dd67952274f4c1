// Package mqtttest runs a private Mosquitto broker (the mosquitto binary that `make deps` installs) on
// free loopback ports for tests: a plain listener and a TLS listener, both requiring a user name and
// password, persistence in a temporary directory, and max_queued_messages 0 (Mosquitto's default of
// 1000 silently drops QoS 1 messages). The broker is stopped by its PID when the test (or the test
// binary) ends. Tests are skipped when SKIP_BROKER_TESTS=1, or when mosquitto is not installed and CI
// is not set; in CI a missing mosquitto fails them.
//
// One broker per test (for restarts and kills):
//
//	srv := mqtttest.Start(t, mqtttest.Options{})
//
// One broker per test binary (use fresh topics per test, Name):
//
//	func TestMain(m *testing.M) { mqtttest.Main(m) }
//	... srv := mqtttest.Shared(t)
package mqtttest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/numaflow-connectors/sources/common/proctest"
)

// Binaries the package runs.
const (
	Binary       = "mosquitto"
	PasswdBinary = "mosquitto_passwd"
)

// User is the user name every broker accepts (with Server.Password).
const User = "numaflow"

// Options of a broker.
type Options struct {
	// RequireClientCert makes the TLS listener demand a client certificate signed by the CA.
	RequireClientCert bool
	// Config is appended to the generated mosquitto.conf.
	Config string
}

// Server is a running mosquitto.
type Server struct {
	Port     int    // plain MQTT listener on 127.0.0.1
	TLSPort  int    // TLS listener on 127.0.0.1 (certificates in Certs)
	Password string // of User
	Dir      string // configuration, password file, certificates and persistence
	Certs    *Certs
	conf     string
	mu       sync.Mutex
	proc     *proctest.Process
}

// need skips t when broker tests are off, or mosquitto is missing outside CI; fails it in CI.
func need(t testing.TB) {
	t.Helper()
	if os.Getenv("SKIP_BROKER_TESTS") == "1" {
		t.Skip("SKIP_BROKER_TESTS=1: not starting mosquitto")
	}
	for _, b := range []string{Binary, PasswdBinary} {
		if _, err := lookPath(b); err != nil {
			msg := b + " not found: run `make deps` (it installs the Debian package mosquitto)"
			if os.Getenv("CI") != "" {
				t.Fatal(msg)
			}
			t.Skip(msg)
		}
	}
}

// lookPath finds a binary in PATH or in /usr/sbin (where Debian installs mosquitto, often not in a
// user's PATH).
func lookPath(b string) (string, error) {
	if p, err := exec.LookPath(b); err == nil {
		return p, nil
	}
	for _, dir := range []string{"/usr/sbin", "/usr/local/sbin"} {
		p := filepath.Join(dir, b)
		if st, err := os.Stat(p); err == nil && !st.IsDir() {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found", b)
}

// Start runs a broker for t, killed (by PID) when t ends.
func Start(t testing.TB, opts Options) *Server {
	t.Helper()
	need(t)
	s, err := newServer(t.TempDir(), opts)
	if err != nil {
		t.Fatal(err)
	}
	p, err := s.start()
	if err != nil {
		t.Fatal(err)
	}
	s.proc = p
	t.Cleanup(func() {
		s.Kill()
		if t.Failed() {
			t.Logf("mosquitto output:\n%s", s.Output())
		}
	})
	return s
}

func newServer(dir string, opts Options) (*Server, error) {
	port, err := proctest.FreePortE()
	if err != nil {
		return nil, err
	}
	tlsPort, err := proctest.FreePortE()
	if err != nil {
		return nil, err
	}
	certs, err := NewCerts(dir)
	if err != nil {
		return nil, err
	}
	var pw [8]byte
	_, _ = rand.Read(pw[:])
	s := &Server{Port: port, TLSPort: tlsPort, Password: hex.EncodeToString(pw[:]), Dir: dir, Certs: certs}
	passwd, err := lookPath(PasswdBinary)
	if err != nil {
		return nil, err
	}
	pwFile := filepath.Join(dir, "passwd")
	if out, err := exec.Command(passwd, "-c", "-b", pwFile, User, s.Password).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("writing the password file: %v: %s", err, out)
	}
	data := filepath.Join(dir, "data")
	if err := os.MkdirAll(data, 0o700); err != nil {
		return nil, fmt.Errorf("creating the persistence directory: %w", err)
	}
	requireCert := "false"
	if opts.RequireClientCert {
		requireCert = "true"
	}
	conf := fmt.Sprintf(`user root
pid_file %[1]s/mosquitto.pid
persistence true
persistence_location %[2]s/
log_dest stdout
log_type error
log_type warning
log_type notice
max_queued_messages 0
max_inflight_messages 0
allow_anonymous false
password_file %[3]s
listener %[4]d 127.0.0.1
listener %[5]d 127.0.0.1
cafile %[6]s
certfile %[7]s
keyfile %[8]s
require_certificate %[9]s
%[10]s
`, dir, data, pwFile, port, tlsPort, certs.CAFile, certs.ServerCertFile, certs.ServerKeyFile, requireCert, opts.Config)
	s.conf = filepath.Join(dir, "mosquitto.conf")
	if err := os.WriteFile(s.conf, []byte(conf), 0o600); err != nil {
		return nil, fmt.Errorf("writing mosquitto.conf: %w", err)
	}
	return s, nil
}

func (s *Server) start() (*proctest.Process, error) {
	bin, err := lookPath(Binary)
	if err != nil {
		return nil, err
	}
	return proctest.StartE(bin, []string{"-c", s.conf}, proctest.Options{Dir: s.Dir, Timeout: 20 * time.Second,
		Ready: func(ctx context.Context) error {
			for _, p := range []int{s.Port, s.TLSPort} {
				var d net.Dialer
				c, err := d.DialContext(ctx, "tcp", "127.0.0.1:"+strconv.Itoa(p))
				if err != nil {
					return err
				}
				_ = c.Close()
			}
			return nil
		}})
}

// URL is the plain listener's mqtt:// URL.
func (s *Server) URL() string { return "mqtt://127.0.0.1:" + strconv.Itoa(s.Port) }

// TLSURL is the TLS listener's mqtts:// URL (trust Certs.CAFile).
func (s *Server) TLSURL() string { return "mqtts://127.0.0.1:" + strconv.Itoa(s.TLSPort) }

// Addr is the plain listener's host:port.
func (s *Server) Addr() string { return "127.0.0.1:" + strconv.Itoa(s.Port) }

func (s *Server) process() *proctest.Process {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.proc
}

// PID is the broker process's id.
func (s *Server) PID() int { return s.process().Cmd.Process.Pid }

// Kill stops the broker at once (SIGKILL to its PID's process group), as a crash would: what it did
// not write to its persistence file is lost.
func (s *Server) Kill() { s.process().Kill() }

// CPUTime is the CPU time the broker process has used so far (for benchkit.Meter.Broker).
func (s *Server) CPUTime() time.Duration { return proctest.CPUTime(s.process().Cmd.Process.Pid) }

// Stop stops the broker gracefully (SIGTERM to its PID): it writes its persistence file and exits.
func (s *Server) Stop(t testing.TB) {
	t.Helper()
	p := s.process()
	if err := p.Cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatalf("stopping mosquitto: %v", err)
	}
	if _, ok := p.Wait(15 * time.Second); !ok {
		p.Kill()
		t.Fatalf("mosquitto did not stop within 15s of SIGTERM")
	}
}

// Restart starts the broker again, on the same ports and persistence directory, after Stop or Kill.
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	s.Kill() // no-op when stopped
	p, err := s.start()
	if err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	s.proc = p
	s.mu.Unlock()
}

// Output returns what the broker logged so far.
func (s *Server) Output() string { return s.process().Output() }

// ---- one broker per test binary ----

var shared = &proctest.Shared[*Server]{
	Name: "mqtttest",
	Start: func() (*Server, error) {
		dir, err := os.MkdirTemp("", "mqtttest")
		if err != nil {
			return nil, fmt.Errorf("creating a directory for mosquitto: %w", err)
		}
		s, err := newServer(dir, Options{})
		if err == nil {
			s.proc, err = s.start()
		}
		if err != nil {
			_ = os.RemoveAll(dir)
			return nil, err
		}
		return s, nil
	},
	Stop: func(s *Server, _ bool) {
		s.Kill()
		_ = os.RemoveAll(s.Dir)
	},
}

// Main runs the test binary's tests with one shared broker (started on first use by Shared) and stops
// it afterwards. Call it from TestMain.
func Main(m *testing.M) { shared.Main(m) }

// Shared returns the test binary's broker, starting it on first use. The test binary must call Main
// from TestMain. Use fresh topics and client ids per test (Name).
func Shared(t testing.TB) *Server {
	t.Helper()
	need(t)
	return shared.Get(t)
}

// Name returns a name unique to this test run, derived from the test's name: for topics, client ids
// and share groups.
func Name(t testing.TB) string {
	return proctest.Name(t, 40)
}

// Run is Main for a TestMain that wraps the tests in more set-up (anything with Run() int): it runs
// them with one shared broker and returns their exit code.
func Run(m interface{ Run() int }) int { return shared.Main(m) }
