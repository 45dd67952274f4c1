// Package rabbitmq is the RabbitMQ driver behind the rabbitmq-source connector: basic.consume with
// manual acks on one classic or quorum queue, a prefetch window sized to the adapter's count and byte
// budgets, reconnection with backoff, delivery tags kept per channel, dead-lettering through an
// exchange with publisher confirms. The portable adapter in common/source does batching, retries,
// local redelivery of nacked messages and shutdown.
package rabbitmq

import (
	"cmp"
	"crypto/tls"
	"errors"
	"maps"
	"net/url"
	"slices"
	"strings"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/numaflow-connectors/sources/common/config"
)

// Limits the configuration is checked against.
const (
	minConsumerTimeout = 2 * time.Second
	minReconnect       = 100 * time.Millisecond
)

// Config is the rabbitmq-source configuration, read from environment variables.
type Config struct {
	URL             config.Secret `env:"RABBITMQ_URL,required" desc:"Broker URL with credentials and virtual host: amqp://user:password@host:5672/vhost, or amqps:// for TLS (percent-encode special characters; the vhost / is %2F). Query parameters: auth_mechanism and channel_max only (TLS files and the heartbeat have variables of their own)."`
	Queue           string        `env:"RABBITMQ_QUEUE,required" desc:"Queue to consume (classic or quorum). It must exist: the source never declares it."`
	ConsumerTag     string        `env:"RABBITMQ_CONSUMER_TAG" desc:"Consumer tag and connection name of this replica, as shown by rabbitmqctl list_consumers. Default: NUMAFLOW_POD, else rabbitmq-source-<replica>."`
	TLSCAFile       string        `env:"RABBITMQ_TLS_CA_FILE" desc:"PEM file of the CA(s) that sign the broker's certificate, instead of the system's pool (amqps:// only)."`
	TLSCertFile     string        `env:"RABBITMQ_TLS_CERT_FILE" desc:"PEM client certificate for mutual TLS (with RABBITMQ_TLS_KEY_FILE). Read again for each new connection when the files have changed (a rotated secret); the CA file is read once."`
	TLSKeyFile      string        `env:"RABBITMQ_TLS_KEY_FILE" desc:"PEM private key of RABBITMQ_TLS_CERT_FILE."`
	TLSServerName   string        `env:"RABBITMQ_TLS_SERVER_NAME" desc:"Name the broker's certificate must carry, when it differs from the host in RABBITMQ_URL."`
	TLSInsecure     bool          `env:"RABBITMQ_TLS_INSECURE_SKIP_VERIFY" envDefault:"false" desc:"Accept any broker certificate (testing only: it allows a man in the middle)."`
	ConsumerTimeout time.Duration `env:"RABBITMQ_CONSUMER_TIMEOUT" envDefault:"30m" desc:"The broker's consumer_timeout (or the queue's x-consumer-timeout): a delivery held longer closes the channel. The source hands back any delivery it has held for nine tenths of it (a nack delay, a slow pipeline), so the channel is never closed for that; at least 2s."`

	DeadLetterExchange   string `env:"RABBITMQ_DEAD_LETTER_EXCHANGE" desc:"Exchange that receives messages nacked more often than numa's max deliveries (and oversize ones), published with confirms and the headers x-dead-letter-reason, x-dead-letter-deliveries and x-dead-letter-queue; then the original is acked. Empty: see RABBITMQ_DEAD_LETTER_REJECT."`
	DeadLetterRoutingKey string `env:"RABBITMQ_DEAD_LETTER_ROUTING_KEY" desc:"Routing key of dead-lettered messages. Empty: the message's own routing key."`
	DeadLetterReject     bool   `env:"RABBITMQ_DEAD_LETTER_REJECT" envDefault:"false" desc:"Without RABBITMQ_DEAD_LETTER_EXCHANGE: the queue has a dead-letter exchange of its own (x-dead-letter-exchange argument or policy), so a message is dead-lettered with basic.nack requeue=false and the broker's x-death header (reason rejected). false: DEAD_LETTER_FALLBACK applies."`

	ReconnectMax time.Duration `env:"RABBITMQ_RECONNECT_MAX" envDefault:"5s" desc:"Longest wait between reconnection attempts after the connection or channel is lost (the wait doubles from 100ms up to this), so also the longest the source stays down after the broker is back."`
	Heartbeat    time.Duration `env:"RABBITMQ_HEARTBEAT" envDefault:"10s" desc:"AMQP heartbeat interval: a silent connection is considered dead after about three of them."`
}

// Validate reports every problem in the configuration at once, each naming its variable. It reads the
// TLS files but makes no network call.
func (c *Config) Validate() error {
	var errs []error
	add := func(name, format string, args ...any) { errs = append(errs, config.Problem(name, format, args...)) }

	if raw := c.URL.Reveal(); raw != "" {
		u, err := amqp.ParseURI(raw)
		switch {
		case err != nil:
			add("RABBITMQ_URL", "is not a valid amqp:// or amqps:// URL: %s", redact(err.Error(), raw))
		case u.Scheme != "amqps" && c.tlsSet():
			add("RABBITMQ_URL", "RABBITMQ_TLS_* settings need an amqps:// URL")
		}
		if err == nil && (u.Port < 1 || u.Port > 65535) {
			add("RABBITMQ_URL", "port must be between 1 and 65535, got %d", u.Port)
		}
		if q, err := url.Parse(raw); err == nil {
			for _, name := range slices.Sorted(maps.Keys(q.Query())) {
				if why, ok := urlParams[name]; !ok || why != "" {
					add("RABBITMQ_URL", "query parameter %s is not used: %s", name, cmp.Or(why, "only auth_mechanism and channel_max are"))
				}
			}
		}
	}
	if c.Queue != "" && len(c.Queue) > 255 {
		add("RABBITMQ_QUEUE", "must be at most 255 bytes, got %d", len(c.Queue))
	}
	if len(c.ConsumerTag) > 200 {
		add("RABBITMQ_CONSUMER_TAG", "must be at most 200 bytes, got %d", len(c.ConsumerTag))
	}
	switch {
	case c.TLSCertFile != "" && c.TLSKeyFile == "":
		add("RABBITMQ_TLS_KEY_FILE", "must be set with RABBITMQ_TLS_CERT_FILE")
	case c.TLSCertFile == "" && c.TLSKeyFile != "":
		add("RABBITMQ_TLS_CERT_FILE", "must be set with RABBITMQ_TLS_KEY_FILE")
	}
	if _, err := c.tlsConfig(); err != nil {
		errs = append(errs, err)
	}
	if c.ConsumerTimeout < minConsumerTimeout {
		add("RABBITMQ_CONSUMER_TIMEOUT", "must be at least %s, got %s", minConsumerTimeout, c.ConsumerTimeout)
	}
	if c.DeadLetterRoutingKey != "" && c.DeadLetterExchange == "" {
		add("RABBITMQ_DEAD_LETTER_ROUTING_KEY", "is only used with RABBITMQ_DEAD_LETTER_EXCHANGE")
	}
	if c.DeadLetterReject && c.DeadLetterExchange != "" {
		add("RABBITMQ_DEAD_LETTER_REJECT", "set only one of RABBITMQ_DEAD_LETTER_EXCHANGE and RABBITMQ_DEAD_LETTER_REJECT")
	}
	if c.ReconnectMax < minReconnect {
		add("RABBITMQ_RECONNECT_MAX", "must be at least %s, got %s", minReconnect, c.ReconnectMax)
	}
	if c.Heartbeat < time.Second {
		add("RABBITMQ_HEARTBEAT", "must be at least 1s, got %s", c.Heartbeat)
	}
	return errors.Join(errs...)
}

// urlParams are the URI query parameters amqp091-go reads: "" for those the source honours, else why
// it does not. A parameter the source overrides or ignores would otherwise be accepted silently: a
// heartbeat of 0 turned off the dead-connection detection RABBITMQ_HEARTBEAT is checked for, and TLS
// files named there were read only at each connection attempt (a missing one failed every attempt
// instead of the start) or not at all (with RABBITMQ_TLS_*).
var urlParams = map[string]string{
	"auth_mechanism":         "",
	"channel_max":            "",
	"heartbeat":              "set RABBITMQ_HEARTBEAT instead (the URL's value would override it)",
	"connection_timeout":     "the source bounds each connection attempt itself (10s)",
	"certfile":               "set RABBITMQ_TLS_CERT_FILE instead",
	"keyfile":                "set RABBITMQ_TLS_KEY_FILE instead",
	"cacertfile":             "set RABBITMQ_TLS_CA_FILE instead",
	"server_name_indication": "set RABBITMQ_TLS_SERVER_NAME instead",
}

// HoldLimit is how long the source holds one delivery before it hands it back to the broker: nine
// tenths of RABBITMQ_CONSUMER_TIMEOUT, so the broker's check (which runs on its channel tick) never
// finds one held past the timeout.
func (c *Config) HoldLimit() time.Duration { return c.ConsumerTimeout / 10 * 9 }

// redact keeps the password of raw out of msg.
func redact(msg, raw string) string {
	if u, err := amqp.ParseURI(raw); err == nil && u.Password != "" {
		return strings.ReplaceAll(msg, u.Password, "[redacted]")
	}
	if i, j := strings.Index(raw, "://"), strings.LastIndex(raw, "@"); i >= 0 && j > i {
		return strings.ReplaceAll(msg, raw[i+3:j], "[redacted]")
	}
	return msg
}

func (c *Config) tlsSet() bool {
	return c.TLSCAFile != "" || c.TLSCertFile != "" || c.TLSKeyFile != "" || c.TLSServerName != "" || c.TLSInsecure
}

// tlsConfig builds the TLS configuration from the RABBITMQ_TLS_* settings; nil when none is set (an
// amqps:// URL then uses the system's pool). Its errors are *config.FieldError naming the variable.
func (c *Config) tlsConfig() (*tls.Config, error) {
	if !c.tlsSet() {
		return nil, nil
	}
	return config.TLSFiles{Prefix: "RABBITMQ_", CAFile: c.TLSCAFile, CertFile: c.TLSCertFile, KeyFile: c.TLSKeyFile,
		ServerName: c.TLSServerName, Insecure: c.TLSInsecure}.Config()
}
