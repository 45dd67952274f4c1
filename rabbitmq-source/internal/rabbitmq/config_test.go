package rabbitmq

import (
	"testing"
	"time"

	"github.com/numaflow-connectors/sources/common/config"
	"github.com/numaflow-connectors/sources/common/config/configtest"
	"github.com/numaflow-connectors/sources/common/config/envdoc"
)

func TestConfigDefaults(t *testing.T) {
	var c Config
	if err := config.Load(&c, []string{"RABBITMQ_URL=amqp://u:p@h:5672/v", "RABBITMQ_QUEUE=q"}); err != nil {
		t.Fatal(err)
	}
	if c.ConsumerTimeout != 30*time.Minute || c.HoldLimit() != 27*time.Minute {
		t.Errorf("consumer timeout %s, hold limit %s; want 30m and 27m", c.ConsumerTimeout, c.HoldLimit())
	}
}

// Every problem is reported at once, naming its variable, and a password never shows.
func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		env  []string
		want []string // substrings of the error; none: valid
	}{
		{name: "minimal", env: []string{"RABBITMQ_URL=amqp://u:p@h/v", "RABBITMQ_QUEUE=q"}},
		{name: "amqps with TLS files", env: []string{"RABBITMQ_URL=amqps://u:p@h/v", "RABBITMQ_QUEUE=q", "RABBITMQ_TLS_SERVER_NAME=broker", "RABBITMQ_TLS_INSECURE_SKIP_VERIFY=true"}},
		{name: "missing required", env: nil, want: []string{"RABBITMQ_URL: is required", "RABBITMQ_QUEUE: is required"}},
		{name: "bad scheme, password redacted", env: []string{"RABBITMQ_URL=http://u:s3cret@h/v", "RABBITMQ_QUEUE=q"}, want: []string{"RABBITMQ_URL: is not a valid"}},
		{name: "TLS without amqps", env: []string{"RABBITMQ_URL=amqp://u:p@h/v", "RABBITMQ_QUEUE=q", "RABBITMQ_TLS_CA_FILE=/nonexistent"},
			want: []string{"RABBITMQ_URL: RABBITMQ_TLS_* settings need an amqps:// URL", "RABBITMQ_TLS_CA_FILE: reading the CA file"}},
		{name: "cert without key", env: []string{"RABBITMQ_URL=amqps://u:p@h/v", "RABBITMQ_QUEUE=q", "RABBITMQ_TLS_CERT_FILE=/x"}, want: []string{"RABBITMQ_TLS_KEY_FILE: must be set"}},
		{name: "ranges", env: []string{"RABBITMQ_URL=amqp://u:p@h/v", "RABBITMQ_QUEUE=q", "RABBITMQ_CONSUMER_TIMEOUT=1s", "RABBITMQ_RECONNECT_MAX=1ms", "RABBITMQ_HEARTBEAT=0s"},
			want: []string{"RABBITMQ_CONSUMER_TIMEOUT: must be at least 2s", "RABBITMQ_RECONNECT_MAX", "RABBITMQ_HEARTBEAT"}},
		{name: "dead letters", env: []string{"RABBITMQ_URL=amqp://u:p@h/v", "RABBITMQ_QUEUE=q", "RABBITMQ_DEAD_LETTER_ROUTING_KEY=k", "RABBITMQ_DEAD_LETTER_REJECT=true"},
			want: []string{"RABBITMQ_DEAD_LETTER_ROUTING_KEY: is only used with RABBITMQ_DEAD_LETTER_EXCHANGE"}},
		{name: "port out of range", env: []string{"RABBITMQ_URL=amqp://u:s3cret@h:99999/v", "RABBITMQ_QUEUE=q"}, want: []string{"RABBITMQ_URL: port must be"}},
		{name: "heartbeat in the URL", env: []string{"RABBITMQ_URL=amqp://u:s3cret@h/v?heartbeat=0", "RABBITMQ_QUEUE=q"},
			want: []string{"RABBITMQ_URL: query parameter heartbeat", "RABBITMQ_HEARTBEAT"}},
		{name: "TLS files in the URL", env: []string{"RABBITMQ_URL=amqps://u:s3cret@h/v?cacertfile=/nonexistent", "RABBITMQ_QUEUE=q"},
			want: []string{"RABBITMQ_URL: query parameter cacertfile", "RABBITMQ_TLS_"}},
		{name: "auth mechanism in the URL", env: []string{"RABBITMQ_URL=amqps://u:p@h/v?auth_mechanism=EXTERNAL", "RABBITMQ_QUEUE=q"}},
		{name: "exchange and reject", env: []string{"RABBITMQ_URL=amqp://u:p@h/v", "RABBITMQ_QUEUE=q", "RABBITMQ_DEAD_LETTER_EXCHANGE=x", "RABBITMQ_DEAD_LETTER_REJECT=true"},
			want: []string{"RABBITMQ_DEAD_LETTER_REJECT: set only one"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var c Config
			configtest.Problems(t, config.Load(&c, tc.env), tc.want, "s3cret")
		})
	}
}

func TestREADME(t *testing.T) {
	configtest.Documented(t, Config{})
	configtest.README(t, "../../README.md", envdoc.Groups("rabbitmq-source", Config{})...)
}
