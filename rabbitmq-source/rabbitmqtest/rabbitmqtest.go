// Package rabbitmqtest runs a private RabbitMQ node (the Debian package's rabbitmq-server, which
// `make deps` installs) for tests: bound to 127.0.0.1 on free ports, with its own HOME, directories,
// Erlang cookie and epmd, stopped by PID when the test (or the test binary) ends.
//
// Tests are skipped only when rabbitmq-server is not installed and the CI variable is not set (in CI
// a missing server fails them), or when SKIP_BROKER_TESTS=1.
//
// One node per test binary (a node takes 5-7 s to start; use a fresh queue per test, Name):
//
//	func TestMain(m *testing.M) { rabbitmqtest.Main(m) }
//	... n := rabbitmqtest.Shared(t)
//
// A node of its own (e.g. with a short consumer_timeout): rabbitmqtest.Start(t, rabbitmqtest.Options{...}).
package rabbitmqtest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/numaflow-connectors/sources/common/proctest"
)

// Where the Debian package puts the node's scripts. They are called directly: the /usr/sbin wrappers
// switch to the rabbitmq user and its cookie.
const (
	binDir     = "/usr/lib/rabbitmq/bin"
	serverPath = binDir + "/rabbitmq-server"
	ctlPath    = binDir + "/rabbitmqctl"
)

// User and Password of every node.
const (
	User     = "test"
	Password = "test"
)

// Options of a node.
type Options struct {
	// ConsumerTimeout is the broker's consumer_timeout (0: the broker's default, 30 minutes). The
	// channel tick is 1 s on every node, so a timeout fires within about a second of being due.
	ConsumerTimeout time.Duration
	// TLS adds a TLS listener (Node.TLSPort) with a CA and server certificate made for the node
	// (Node.Certs); the plain listener stays.
	TLS bool
}

// Node is a running RabbitMQ node.
type Node struct {
	Name string // r<port>@localhost
	Port int    // AMQP, on 127.0.0.1
	Dir  string
	// With Options.TLS: the TLS listener's port and the certificates.
	TLSPort int
	Certs   *Certs
	env     []string
	epmd    *proctest.Process
	srv     *proctest.Process
	cpu     proctest.TreeCPU // the server script and its descendants (the Erlang VM), for CPUTime
}

// skipOrFail skips t when broker tests are off or (outside CI) the server is not installed, and fails
// it when the server is missing in CI.
func skipOrFail(t testing.TB) {
	t.Helper()
	if os.Getenv("SKIP_BROKER_TESTS") == "1" {
		t.Skip("SKIP_BROKER_TESTS=1: not starting rabbitmq")
	}
	if _, err := os.Stat(serverPath); err != nil {
		if os.Getenv("CI") == "" {
			t.Skipf("%s not installed (run `make deps`, which installs the Debian package rabbitmq-server)", serverPath)
		}
		t.Fatalf("%s not installed in CI: `make deps` must install the Debian package rabbitmq-server", serverPath)
	}
}

// Start runs a node for t, stopped (by PID) when t ends.
func Start(t testing.TB, opts Options) *Node {
	t.Helper()
	skipOrFail(t)
	n, err := start(t.TempDir(), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("rabbitmq node log:\n%s", n.Log())
		}
		n.Stop()
	})
	return n
}

func start(dir string, opts Options) (*Node, error) {
	ports := make([]int, 4)
	for i := range ports {
		for {
			p, err := proctest.FreePortE()
			if err != nil {
				return nil, err
			}
			// The CLI tools use distribution ports 35672-35682.
			if (p < 35672 || p > 35682) && !contains(ports[:i], p) {
				ports[i] = p
				break
			}
		}
	}
	n := &Node{Name: fmt.Sprintf("r%d@localhost", ports[0]), Port: ports[0], Dir: dir}
	home := filepath.Join(dir, "home")
	for _, d := range []string{home, filepath.Join(dir, "mnesia"), filepath.Join(dir, "log")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("creating %s: %w", d, err)
		}
	}
	conf := fmt.Sprintf("loopback_users = none\ndefault_user = %s\ndefault_pass = %s\nlisteners.tcp.default = 127.0.0.1:%d\n",
		User, Password, ports[0])
	if opts.TLS {
		certs, err := newCerts(dir)
		if err != nil {
			return nil, err
		}
		n.TLSPort, n.Certs = ports[3], certs
		conf += fmt.Sprintf("listeners.ssl.default = 127.0.0.1:%d\nssl_options.cacertfile = %s\nssl_options.certfile = %s\n"+
			"ssl_options.keyfile = %s\nssl_options.verify = verify_none\nssl_options.fail_if_no_peer_cert = false\n",
			ports[3], certs.CAFile, certs.ServerCertFile, certs.ServerKeyFile)
	}
	if opts.ConsumerTimeout > 0 {
		conf += fmt.Sprintf("consumer_timeout = %d\n", opts.ConsumerTimeout.Milliseconds())
	}
	files := map[string]string{
		"rabbitmq.conf":     conf,
		"advanced.config":   "[{rabbit, [{channel_tick_interval, 1000}]}].\n",
		"enabled_plugins":   "[].\n",
		"rabbitmq-env.conf": "",
	}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o600); err != nil {
			return nil, fmt.Errorf("writing %s: %w", name, err)
		}
	}
	n.env = []string{
		"HOME=" + home,
		"RABBITMQ_NODENAME=" + n.Name,
		"RABBITMQ_NODE_IP_ADDRESS=127.0.0.1",
		"RABBITMQ_NODE_PORT=" + strconv.Itoa(ports[0]),
		"RABBITMQ_DIST_PORT=" + strconv.Itoa(ports[1]),
		"ERL_EPMD_PORT=" + strconv.Itoa(ports[2]),
		"ERL_EPMD_ADDRESS=127.0.0.1",
		"RABBITMQ_CONFIG_FILE=" + filepath.Join(dir, "rabbitmq.conf"),
		"RABBITMQ_ADVANCED_CONFIG_FILE=" + filepath.Join(dir, "advanced.config"),
		"RABBITMQ_CONF_ENV_FILE=" + filepath.Join(dir, "rabbitmq-env.conf"),
		"RABBITMQ_ENABLED_PLUGINS_FILE=" + filepath.Join(dir, "enabled_plugins"),
		"RABBITMQ_MNESIA_BASE=" + filepath.Join(dir, "mnesia"),
		"RABBITMQ_LOG_BASE=" + filepath.Join(dir, "log"),
		"RABBITMQ_PID_FILE=" + filepath.Join(dir, "rabbit.pid"),
		"RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS=-kernel inet_dist_use_interface {127,0,0,1}",
	}
	epmd, err := exec.LookPath("epmd")
	if err != nil {
		return nil, fmt.Errorf("epmd not found (it comes with the Debian package erlang-base): %w", err)
	}
	n.epmd, err = proctest.StartE(epmd, []string{"-address", "127.0.0.1", "-port", strconv.Itoa(ports[2])},
		proctest.Options{Dir: dir, Env: n.env})
	if err != nil {
		return nil, err
	}
	n.srv, err = proctest.StartE(serverPath, nil, n.serverOptions())
	if err != nil {
		n.epmd.Kill()
		return nil, err
	}
	return n, nil
}

// serverOptions start the server script and wait until the AMQP port answers.
func (n *Node) serverOptions() proctest.Options {
	// Launcher: the script runs the Erlang VM in the background and waits for it; without the
	// watcher a test binary killed by -timeout left the node running on its port.
	return proctest.Options{Dir: n.Dir, Env: n.env, Timeout: 60 * time.Second, Launcher: true,
		Ready: func(context.Context) error {
			c, err := amqp.Dial(n.URL())
			if err != nil {
				return err
			}
			return c.Close()
		}}
}

func contains(s []int, v int) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// CPUTime is the CPU time the node's processes (the server script, the Erlang VM it runs and their
// children, found once per start) have used so far, for benchkit.Meter.Broker.
func (n *Node) CPUTime() time.Duration {
	if n.srv == nil {
		return 0
	}
	return n.cpu.Of(n.srv.Cmd.Process.Pid)
}

// URL is the node's amqp:// URL with the test user and the default virtual host.
func (n *Node) URL() string {
	return fmt.Sprintf("amqp://%s:%s@127.0.0.1:%d/", User, Password, n.Port)
}

// Kill stops the node at once (SIGKILL to its process group), as a crash would; epmd keeps running.
// Durable queues and persistent messages survive it (Restart).
func (n *Node) Kill() {
	if n.srv != nil {
		n.srv.Kill()
	}
}

// Shutdown stops the node cleanly (SIGTERM; it closes every connection with CONNECTION_FORCED and
// writes its queues' state), waiting up to 30 s; epmd keeps running. Restart starts it again.
func (n *Node) Shutdown(t testing.TB) {
	t.Helper()
	if n.srv == nil {
		return
	}
	_ = n.srv.Signal(syscall.SIGTERM)
	if _, exited := n.srv.Wait(30 * time.Second); !exited {
		t.Fatalf("rabbitmq did not stop within 30 s of SIGTERM\n%s", n.Log())
	}
	n.srv.Kill() // the rest of its process group, if any
}

// Restart kills the node (if it runs) and starts it again with the same name, ports and directories.
func (n *Node) Restart(t testing.TB) {
	t.Helper()
	n.Kill()
	var err error
	n.srv, err = proctest.StartE(serverPath, nil, n.serverOptions())
	if err != nil {
		t.Fatal(err)
	}
}

// WaitForQueue waits until queue can be declared passively and returns how long that took. After a
// restart the node accepts connections before it has recovered its durable queues: a queue killed with
// kill -9 comes back seconds later, and once took minutes on a loaded machine.
func (n *Node) WaitForQueue(t testing.TB, queue string, within time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	var last error
	for time.Since(start) < within {
		if last = n.queueExists(queue); last == nil {
			return time.Since(start)
		}
		time.Sleep(250 * time.Millisecond)
	}
	t.Fatalf("queue %s not back %s after the restart: %v\n%s", queue, within, last, n.Log())
	return 0
}

func (n *Node) queueExists(queue string) error {
	c, err := amqp.Dial(n.URL())
	if err != nil {
		return err
	}
	defer c.Close()
	ch, err := c.Channel()
	if err != nil {
		return err
	}
	_, err = ch.QueueDeclarePassive(queue, true, false, false, false, nil)
	return err
}

// TLSURL is the node's amqps:// URL for host (127.0.0.1 or localhost; both are in the certificate).
func (n *Node) TLSURL(host string) string {
	return fmt.Sprintf("amqps://%s:%s@%s:%d/", User, Password, host, n.TLSPort)
}

// Stop stops the node: SIGTERM to the server script's PID (a clean stop takes about 3 s), SIGKILL to
// its process group after 15 s, then epmd. Idempotent.
func (n *Node) Stop() {
	if n.srv != nil {
		_ = n.srv.Signal(syscall.SIGTERM)
		if _, exited := n.srv.Wait(15 * time.Second); !exited {
			n.srv.Kill()
		}
		n.srv.Kill() // the rest of its process group, if any
	}
	if n.epmd != nil {
		n.epmd.Kill()
	}
}

// Log returns what the node printed and its log file.
func (n *Node) Log() string {
	var b strings.Builder
	if n.srv != nil {
		b.WriteString(n.srv.Output())
	}
	if logs, _ := filepath.Glob(filepath.Join(n.Dir, "log", "*.log")); len(logs) > 0 {
		for _, l := range logs {
			if data, err := os.ReadFile(l); err == nil {
				fmt.Fprintf(&b, "\n--- %s ---\n%s", filepath.Base(l), tail(data, 8000))
			}
		}
	}
	return b.String()
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

// Ctl runs rabbitmqctl against the node and returns its output.
func (n *Node) Ctl(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, ctlPath, append([]string{"-n", n.Name, "-q"}, args...)...)
	cmd.Env = append(os.Environ(), n.env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("rabbitmqctl %s: %w: %s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// CloseConnections closes, from the broker side, every client connection whose name (the
// connection_name client property) contains name, and returns how many it closed.
func (n *Node) CloseConnections(ctx context.Context, name, reason string) (int, error) {
	out, err := n.Ctl(ctx, "list_connections", "pid", "client_properties")
	if err != nil {
		return 0, err
	}
	closed := 0
	for _, line := range strings.Split(out, "\n") {
		pid, props, ok := strings.Cut(strings.TrimSpace(line), "\t")
		if !ok || !strings.Contains(props, name) {
			continue
		}
		if _, err := n.Ctl(ctx, "close_connection", pid, reason); err != nil {
			return closed, err
		}
		closed++
	}
	if closed == 0 {
		return 0, errors.New("no connection named " + name + " in:\n" + out)
	}
	return closed, nil
}

// Dial connects to the node; the connection is closed when t ends.
func (n *Node) Dial(t testing.TB) *amqp.Connection {
	t.Helper()
	c, err := amqp.Dial(n.URL())
	if err != nil {
		t.Fatalf("connecting to rabbitmq: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// ---- one node per test binary ----

var shared = &proctest.Shared[*Node]{
	Name: "rabbitmqtest",
	Start: func() (*Node, error) {
		dir, err := os.MkdirTemp("", "rabbitmqtest")
		if err != nil {
			return nil, fmt.Errorf("creating a directory for rabbitmq: %w", err)
		}
		n, err := start(dir, Options{})
		if err != nil {
			_ = os.RemoveAll(dir)
			return nil, err
		}
		return n, nil
	},
	Stop: func(n *Node, failed bool) {
		n.Stop()
		if failed {
			fmt.Fprintf(os.Stderr, "rabbitmq node log (%s):\n%s\n", n.Dir, tail([]byte(n.Log()), 4000))
		}
		_ = os.RemoveAll(n.Dir)
	},
}

// Main runs the test binary's tests with one shared node (started on first use by Shared) and stops
// it afterwards. Call it from TestMain.
func Main(m *testing.M) { shared.Main(m) }

// Run is Main for a TestMain that wraps the tests in more set-up (m runs them): it returns the exit
// code instead of exiting.
func Run(m interface{ Run() int }) int { return shared.Main(m) }

// Shared returns the test binary's node, starting it on first use. The test binary must call Main
// from TestMain. Use a fresh queue per test (Name).
func Shared(t testing.TB) *Node {
	t.Helper()
	skipOrFail(t)
	return shared.Get(t)
}

// Name returns a queue name unique to this test run, derived from the test's name.
func Name(t testing.TB) string {
	return proctest.Name(t, 60)
}

// Queue kinds for DeclareQueue.
const (
	Classic = "classic"
	Quorum  = "quorum"
)

// DeclareQueue declares a durable queue of kind with extra arguments (e.g. x-dead-letter-exchange)
// and deletes it when t ends.
func (n *Node) DeclareQueue(t testing.TB, name, kind string, args amqp.Table) {
	t.Helper()
	c := n.Dial(t)
	ch, err := c.Channel()
	if err != nil {
		t.Fatalf("opening a channel: %v", err)
	}
	defer ch.Close()
	a := amqp.Table{"x-queue-type": kind}
	for k, v := range args {
		a[k] = v
	}
	if _, err := ch.QueueDeclare(name, true, false, false, false, a); err != nil {
		t.Fatalf("declaring queue %s: %v", name, err)
	}
	t.Cleanup(func() {
		c, err := amqp.Dial(n.URL())
		if err != nil {
			return
		}
		defer c.Close()
		if ch, err := c.Channel(); err == nil {
			_, _ = ch.QueueDelete(name, false, false, false)
		}
	})
}

// Publish publishes msgs to queue through the default exchange with publisher confirms, persistent.
func (n *Node) Publish(ctx context.Context, queue string, msgs ...amqp.Publishing) error {
	c, err := amqp.Dial(n.URL())
	if err != nil {
		return err
	}
	defer c.Close()
	return PublishOn(ctx, c, "", queue, msgs...)
}

// PublishOn publishes msgs to exchange with key on a fresh confirm-mode channel of c and waits for
// every confirm.
func PublishOn(ctx context.Context, c *amqp.Connection, exchange, key string, msgs ...amqp.Publishing) error {
	ch, err := c.Channel()
	if err != nil {
		return err
	}
	defer ch.Close()
	if err := ch.Confirm(false); err != nil {
		return err
	}
	dcs := make([]*amqp.DeferredConfirmation, 0, len(msgs))
	for _, m := range msgs {
		if m.DeliveryMode == 0 {
			m.DeliveryMode = amqp.Persistent
		}
		dc, err := ch.PublishWithDeferredConfirmWithContext(ctx, exchange, key, false, false, m)
		if err != nil {
			return fmt.Errorf("publishing to %s: %w", key, err)
		}
		dcs = append(dcs, dc)
	}
	for _, dc := range dcs {
		ok, err := dc.WaitContext(ctx)
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("publish to %s nacked by the broker", key)
		}
	}
	return nil
}
