package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/numaflow-connectors/sources/common/numatest"
)

// config is the runner's command line.
type config struct {
	check         bool   // run the connector's pre-flight check instead of driving it
	embedded      string // embedded broker to start: "" or "redis"
	embeddedCount int
	embeddedBytes int
	batch         uint64
	timeout       time.Duration
	limit         int64
	duration      time.Duration
	idle          int
	print         string
	nackRatio     float64
	nackDelay     time.Duration
	maxDeliveries uint
	ackDelay      time.Duration
	noAck         bool
	seed          uint64
	maxPayload    int

	socket     string
	serverInfo string
	childLogs  bool

	startTimeout  time.Duration
	stopTimeout   time.Duration
	progressEvery time.Duration

	command []string // connector binary and its arguments
}

const (
	printCount = "count"
	printFull  = "full"
)

func parseFlags(args []string, stderr io.Writer) (*config, error) {
	c := &config{}
	fs := flag.NewFlagSet("udsource-run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, `udsource-run plays Numaflow's numa container against a user-defined source.

usage:
  udsource-run [flags] -- /path/to/connector [args]   start the connector and drive it
  udsource-run [flags] --socket S --server-info F     drive a source that is already running
  udsource-run --check [--embedded redis] -- /path/to/connector   its pre-flight check only

The connector gets the runner's environment plus SOURCE_SOCKET and SOURCE_SERVER_INFO_FILE (in a
fresh temporary directory), NUMAFLOW_REPLICA=0, NUMAFLOW_PIPELINE_NAME=local, NUMAFLOW_VERTEX_NAME=in,
NUMAFLOW_READ_BATCH_SIZE and NUMAFLOW_READ_TIMEOUT_MS from --batch and --timeout, and an empty
METRICS_ADDR unless the environment sets one. Its output goes to a log file unless --child-logs.

flags:
`)
		fs.PrintDefaults()
	}
	fs.BoolVar(&c.check, "check", false, "run the connector's pre-flight check (<connector> --check, with the runner's environment and embedded broker) and exit with its status")
	fs.Uint64Var(&c.batch, "batch", numatest.DefaultBatchSize, "messages per read (numa's readBatchSize)")
	fs.DurationVar(&c.timeout, "timeout", numatest.DefaultTimeout, "read timeout (numa's readTimeout)")
	fs.Int64Var(&c.limit, "limit", 0, "stop after this many messages acked (or held with --no-ack); 0 = no limit")
	fs.DurationVar(&c.duration, "duration", 0, "stop after this long; 0 = until Ctrl-C or --idle")
	fs.IntVar(&c.idle, "idle", 0, "stop after this many consecutive empty reads; 0 = never")
	fs.StringVar(&c.print, "print", printCount, "full: print every message; count: only count them")
	fs.Float64Var(&c.nackRatio, "nack-ratio", 0, "fraction of messages to nack, 0..1 (chosen by a seeded RNG)")
	fs.DurationVar(&c.nackDelay, "nack-delay", 0, "redelivery delay sent with each nack (NackOptions.Delay)")
	fs.UintVar(&c.maxDeliveries, "max-deliveries", 0, "NackOptions.MaxDeliveries sent with each nack; 0 = unset")
	fs.DurationVar(&c.ackDelay, "ack-delay", 0, "wait this long before acking each batch (a slow pipeline)")
	fs.BoolVar(&c.noAck, "no-ack", false, "never ack nor nack, like a crashed numa")
	fs.Uint64Var(&c.seed, "seed", 1, "seed of the RNG that picks the messages to nack")
	fs.IntVar(&c.maxPayload, "isb-max-payload", numatest.DefaultMaxPayload, "the ISB's max_payload in bytes: stop with an error at a larger message (payload, keys and headers), which numa cannot write to its buffer and retries forever; 0 = none (a MonoVertex)")
	fs.StringVar(&c.socket, "socket", "", "attach to the source listening on this unix socket instead of starting one")
	fs.StringVar(&c.serverInfo, "server-info", "", "server-info file of the source given by --socket")
	fs.BoolVar(&c.childLogs, "child-logs", false, "let the connector write to this terminal instead of a log file")
	fs.DurationVar(&c.startTimeout, "start-timeout", 30*time.Second, "how long to wait for the source to be ready")
	fs.DurationVar(&c.stopTimeout, "stop-timeout", 30*time.Second, "how long the connector may take to exit after SIGTERM")
	fs.StringVar(&c.embedded, "embedded", "", "start an embedded broker for the connector: redis (miniredis seeded with --embedded-messages entries, PENDING_REFRESH=200ms so the summary's pending is read after the last ack; skipped when REDIS_URL or REDIS_ADDRS is set)")
	fs.IntVar(&c.embeddedCount, "embedded-messages", 100000, "entries seeded into the embedded broker")
	fs.IntVar(&c.embeddedBytes, "embedded-payload-bytes", 64, "payload size of the seeded entries")
	fs.DurationVar(&c.progressEvery, "progress-every", 0, "progress line interval; 0 = 500ms on a terminal, 5s otherwise")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	c.command = fs.Args()

	var problems []error
	attach := c.socket != "" || c.serverInfo != ""
	switch {
	case attach && len(c.command) > 0:
		problems = append(problems, errors.New("give either a connector command or --socket/--server-info, not both"))
	case attach && (c.socket == "" || c.serverInfo == ""):
		problems = append(problems, errors.New("--socket and --server-info go together"))
	case !attach && len(c.command) == 0:
		problems = append(problems, errors.New("no connector: give -- /path/to/connector or --socket and --server-info"))
	}
	if c.check && len(c.command) == 0 {
		problems = append(problems, errors.New("--check needs a connector command"))
	}
	if c.batch == 0 {
		problems = append(problems, errors.New("--batch must be at least 1"))
	}
	if c.timeout < time.Millisecond || c.timeout.Milliseconds() > int64(^uint32(0)) {
		problems = append(problems, fmt.Errorf("--timeout %s is out of range (1ms..%d ms)", c.timeout, ^uint32(0)))
	}
	if c.limit < 0 || c.duration < 0 || c.idle < 0 || c.nackDelay < 0 || c.ackDelay < 0 {
		problems = append(problems, errors.New("--limit, --duration, --idle, --nack-delay and --ack-delay must not be negative"))
	}
	if c.print != printCount && c.print != printFull {
		problems = append(problems, fmt.Errorf("--print %q: want full or count", c.print))
	}
	if c.nackRatio < 0 || c.nackRatio > 1 {
		problems = append(problems, fmt.Errorf("--nack-ratio %v: want 0..1", c.nackRatio))
	}
	if c.maxDeliveries > uint(^uint32(0)) {
		problems = append(problems, fmt.Errorf("--max-deliveries %d is too large", c.maxDeliveries))
	}
	if c.noAck && c.nackRatio > 0 {
		problems = append(problems, errors.New("--no-ack and --nack-ratio exclude each other"))
	}
	if c.startTimeout <= 0 || c.stopTimeout <= 0 || c.progressEvery < 0 {
		problems = append(problems, errors.New("--start-timeout and --stop-timeout must be positive, --progress-every not negative"))
	}
	if c.embedded != "" && c.embedded != "redis" {
		problems = append(problems, fmt.Errorf("--embedded %q: only redis is supported", c.embedded))
	}
	if c.embedded != "" && len(c.command) == 0 {
		problems = append(problems, errors.New("--embedded needs a connector command"))
	}
	if c.embeddedCount < 0 || c.embeddedBytes < 0 {
		problems = append(problems, errors.New("--embedded-messages and --embedded-payload-bytes must not be negative"))
	}
	if len(problems) > 0 {
		return nil, errors.Join(problems...)
	}
	return c, nil
}
