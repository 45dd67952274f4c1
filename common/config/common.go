package config

import (
	"errors"
	"net"
	"strconv"
	"strings"
	"time"
)

// kubernetesGrace is Kubernetes' default termination grace period; shutdown must end before it.
const kubernetesGrace = 30 * time.Second

// maxGRPCMessage is the largest gRPC message numa (v1.8.3+) and numaflow-go's server take: a message
// the source cannot send stops numa's read stream.
const maxGRPCMessage = 64 << 20

// defaultReleaseWait is RELEASE_WAIT when it is 0s and SHUTDOWN_TIMEOUT is at least twice as long.
const defaultReleaseWait = 2 * time.Second

// Common is the configuration every connector has: logging, metrics, socket paths, adapter tuning and
// what Numaflow sets in the container (Platform).
type Common struct {
	LogLevel             string        `env:"LOG_LEVEL" envDefault:"info" desc:"Log level: debug, info, warn or error."`
	LogFormat            string        `env:"LOG_FORMAT" envDefault:"json" desc:"Log format: json (one object per line) or text."`
	MetricsAddr          string        `env:"METRICS_ADDR" envDefault:":9090" envKeepEmpty:"true" desc:"Listen address of the HTTP server for /metrics (Prometheus), /healthz and /readyz. Set it empty to disable the server."`
	SourceSocket         string        `env:"SOURCE_SOCKET" envDefault:"/var/run/numaflow/source.sock" desc:"Unix socket numa connects to. Change it only for local runs."`
	SourceServerInfoFile string        `env:"SOURCE_SERVER_INFO_FILE" envDefault:"/var/run/numaflow/sourcer-server-info" desc:"Server info file numa waits for before it connects. Change it only for local runs."`
	Prefetch             int           `env:"PREFETCH" envDefault:"0" min:"0" desc:"Most messages held at once, buffered or in flight at numa; it bounds memory and held leases. 0: NUMAFLOW_READ_BATCH_SIZE plus what the connector's concurrent receives fetch at once, at least twice NUMAFLOW_READ_BATCH_SIZE (see the connector's README)."`
	PrefetchBytes        Bytes         `env:"PREFETCH_BYTES" envDefault:"0" min:"0" desc:"Most bytes of messages (payloads, offsets, keys and headers) held at once for numa, buffered or in flight; a single larger message is still delivered, one at a time. Locally delayed redeliveries have a budget of their own of the same size. Bytes, or with a unit: 512Ki, 64Mi, 1Gi. 0: a quarter of the container's memory limit (read from cgroups), between 8Mi and 256Mi; 64Mi when there is no limit."`
	GCHeadroom           Bytes         `env:"GC_HEADROOM" envDefault:"0" min:"0" desc:"Least the Go heap may grow between garbage collections (Go's default, GOGC=100, lets it grow only by as much as is live, which for a connector's small live heap means many collections a second). Trades at most this much memory for CPU; GOMEMLIMIT still bounds the heap. Bytes, or with a unit: 16Mi. 0: an eighth of the container's memory limit, at most 16Mi. Ignored when GOGC is set (Go's own policy)."`
	MaxMessageBytes      int           `env:"MAX_MESSAGE_BYTES" envDefault:"1032192" min:"1" max:"67108864" desc:"Largest message handed to numa, in bytes: its payload, offset, keys and headers with their protobuf framing; a larger message is dead-lettered (or handled by DEAD_LETTER_FALLBACK) with a reason. The default is the 1 MiB max_payload of numa's inter-step buffer (JetStream) less 16 KiB for what numa adds: a larger message would reach numa, which fails to write it to the buffer again and again. Raise it only with the ISB service's max_payload (numa before v1.8.3 takes at most 4 MiB, later 64 MiB, 67108864, the most this may be)."`
	DeadLetterFallback   string        `env:"DEAD_LETTER_FALLBACK" desc:"What happens to a message nacked more often than numa's max deliveries, or over MAX_MESSAGE_BYTES, when the connector has no dead-letter target: nack (it stays at the broker, whose own redrive policy applies) or drop (it is acked, logged and counted in dropped_total: gone). Empty: nack, except where the broker takes acknowledgements only in order (mqtt-source): drop, since a message kept there for good holds back every later acknowledgement and stops the source."`
	AckRetryTimeout      time.Duration `env:"ACK_RETRY_TIMEOUT" envDefault:"30s" min:"1ms" desc:"How long a failed ack, nack or lease extension is retried before it is left to the broker's redelivery."`
	PendingRefresh       time.Duration `env:"PENDING_REFRESH" envDefault:"5s" min:"1ms" desc:"How long a backlog reading from the broker is reused before it is asked again (numa asks every 5s)."`
	ReleaseWait          time.Duration `env:"RELEASE_WAIT" envDefault:"0s" min:"0s" max:"24s" desc:"At shutdown, how long to wait for numa to ack messages in flight before they are handed back to the broker; less than SHUTDOWN_TIMEOUT. 0s: 2s, or half of SHUTDOWN_TIMEOUT when that is shorter."`
	ShutdownTimeout      time.Duration `env:"SHUTDOWN_TIMEOUT" envDefault:"25s" min:"1ms" max:"29s" desc:"Longest graceful shutdown after SIGTERM (release held messages, flush acks, close); below Kubernetes' 30s grace period."`
	Platform
}

// Validate checks ranges and relations; every problem names its variable.
func (c *Common) Validate() error {
	var errs []error
	add := func(name, format string, args ...any) { errs = append(errs, Problem(name, format, args...)) }

	switch strings.ToLower(c.LogLevel) {
	case "debug", "info", "warn", "error":
	default:
		add("LOG_LEVEL", "must be debug, info, warn or error, got %q", c.LogLevel)
	}
	switch strings.ToLower(c.LogFormat) {
	case "json", "text":
	default:
		add("LOG_FORMAT", "must be json or text, got %q", c.LogFormat)
	}
	if c.MetricsAddr != "" {
		// The port must be a number net.Listen takes: a name or an out-of-range number would pass here and
		// fail only at start, with exit 1 and no variable named.
		if _, port, err := net.SplitHostPort(c.MetricsAddr); err != nil || !validPort(port) {
			add("METRICS_ADDR", "must be host:port or :port with a port from 0 to 65535 (or empty to disable), got %q", c.MetricsAddr)
		}
	}
	if c.SourceSocket == "" {
		add("SOURCE_SOCKET", "must not be empty")
	} else if len(c.SourceSocket) > maxSocketPath {
		// bind would refuse it only after the driver was opened, with exit 1 and no variable named.
		add("SOURCE_SOCKET", "must be at most %d bytes (a unix socket path), got %d", maxSocketPath, len(c.SourceSocket))
	}
	if c.SourceServerInfoFile == "" {
		add("SOURCE_SERVER_INFO_FILE", "must not be empty")
	}
	if c.Prefetch < 0 {
		add("PREFETCH", "must be 0 (derived from the read batch size) or more, got %d", c.Prefetch)
	}
	if c.GCHeadroom < 0 {
		add("GC_HEADROOM", "must be 0 (derived from the container's memory limit) or more, got %d", c.GCHeadroom)
	}
	if c.PrefetchBytes < 0 {
		add("PREFETCH_BYTES", "must be 0 (derived from the container's memory limit) or more, got %d", c.PrefetchBytes)
	}
	if c.MaxMessageBytes <= 0 || c.MaxMessageBytes > maxGRPCMessage {
		add("MAX_MESSAGE_BYTES", "must be more than 0 and at most %d (64 MiB, numa's gRPC limit), got %d", maxGRPCMessage, c.MaxMessageBytes)
	}
	switch c.DeadLetterFallback {
	case "", "nack", "drop":
	default:
		add("DEAD_LETTER_FALLBACK", "must be nack or drop (or empty for the connector's default), got %q", c.DeadLetterFallback)
	}
	positive := func(name string, d time.Duration) {
		if d <= 0 {
			add(name, "must be more than 0s, got %s", d)
		}
	}
	positive("ACK_RETRY_TIMEOUT", c.AckRetryTimeout)
	positive("PENDING_REFRESH", c.PendingRefresh)
	if c.ReleaseWait < 0 {
		add("RELEASE_WAIT", "must be 0s (2s, or half of SHUTDOWN_TIMEOUT) or more, got %s", c.ReleaseWait)
	}
	switch {
	case c.ShutdownTimeout <= 0 || c.ShutdownTimeout >= kubernetesGrace:
		add("SHUTDOWN_TIMEOUT", "must be more than 0s and less than %s (Kubernetes' grace period), got %s", kubernetesGrace, c.ShutdownTimeout)
	case c.ReleaseWait > 0 && c.ReleaseWait >= c.ShutdownTimeout:
		add("RELEASE_WAIT", "must be less than SHUTDOWN_TIMEOUT (%s), got %s", c.ShutdownTimeout, c.ReleaseWait)
	}

	if c.Replica < 0 || c.Replica > 65535 {
		add("NUMAFLOW_REPLICA", "must be between 0 and 65535 (it is the partition id), got %d", c.Replica)
	}
	if c.ReadBatchSize <= 0 {
		add("NUMAFLOW_READ_BATCH_SIZE", "must be more than 0, got %d", c.ReadBatchSize)
	}
	if c.ReadTimeoutMS <= 0 {
		add("NUMAFLOW_READ_TIMEOUT_MS", "must be more than 0, got %d", c.ReadTimeoutMS)
	}
	return errors.Join(errs...)
}

// maxSocketPath is the longest unix socket path Linux binds (sun_path holds 108 bytes with the NUL).
const maxSocketPath = 107

// validPort reports whether port is a decimal port number, 0 to 65535.
func validPort(port string) bool {
	_, err := strconv.ParseUint(port, 10, 16)
	return err == nil
}

// PrefetchOrDefault is PREFETCH, or when it is 0 twice NUMAFLOW_READ_BATCH_SIZE: the adapter's
// default for a driver with one receive at a time (source.DefaultPrefetch), which is what the push
// brokers that size their flow control from it have.
func (c *Common) PrefetchOrDefault() int {
	if c.Prefetch > 0 {
		return c.Prefetch
	}
	return 2 * c.ReadBatchSize
}

// ReleaseWaitOrDefault is RELEASE_WAIT, or when it is 0s defaultReleaseWait or half of
// SHUTDOWN_TIMEOUT, whichever is shorter: the default never conflicts with a valid SHUTDOWN_TIMEOUT.
func (c *Common) ReleaseWaitOrDefault() time.Duration {
	if c.ReleaseWait > 0 {
		return c.ReleaseWait
	}
	return min(defaultReleaseWait, c.ShutdownTimeout/2)
}
