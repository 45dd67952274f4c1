// Package rabbitmq is the RabbitMQ driver behind the rabbitmq-source connector: basic.consume with
// manual acks on one classic or quorum queue, a prefetch window sized to the adapter's count and byte
// budgets, reconnection with backoff, delivery tags kept per channel, dead-lettering through an
// exchange with publisher confirms. The portable adapter in common/source does batching, retries,
// local redelivery of nacked messages and shutdown.
package rabbitmq

import (
	"crypto/tls"
	"errors"
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
	URL             config.Secret `env:"RABBITMQ_URL,required" desc:"Broker URL with credentials and virtual host: amqp://user:password@host:5672/vhost, or amqps:// for TLS (percent-encode special characters; the vhost / is %2F)."`
	Queue           string        `env:"RABBITMQ_QUEUE,required" desc:"Queue to consume (classic or quorum). It must exist: the source never declares it."`
	ConsumerTag     string        `env:"RABBITMQ_CONSUMER_TAG" desc:"Consumer tag and connection name of this replica, as shown by rabbitmqctl list_consumers. Default: NUMAFLOW_POD, else rabbitmq-source-<replica>."`
	TLSCAFile       string        `env:"RABBITMQ_TLS_CA_FILE" desc:"PEM file of the CA(s) that sign the broker's certificate, instead of the system's pool (amqps:// only)."`
	TLSCertFile     string        `env:"RABBITMQ_TLS_CERT_FILE" desc:"PEM client certificate for mutual TLS (with RABBITMQ_TLS_KEY_FILE)."`
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
