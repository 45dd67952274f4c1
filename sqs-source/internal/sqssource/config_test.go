package sqssource

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/numaflow-connectors/sources/common/config"
	"github.com/numaflow-connectors/sources/common/config/configtest"
)

const (
	stdURL  = "https://sqs.us-east-1.amazonaws.com/123456789012/orders"
	fifoURL = "https://sqs.us-east-1.amazonaws.com/123456789012/orders.fifo"
)

func validConfig() Config {
	return Config{
		QueueURL:          stdURL,
		VisibilityTimeout: 30 * time.Second,
		WaitTime:          20 * time.Second,
		MaxExtension:      time.Hour,
		AssumeRoleSession: "numaflow-sqs-source",
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(c *Config)
		want   []string // "VAR: substring" of each problem, in any order
	}{
		{"defaults are valid", func(c *Config) {}, nil},
		{"fifo with fifo dlq", func(c *Config) {
			c.QueueURL = fifoURL
			c.DeadLetterQueueURL = "https://sqs.us-east-1.amazonaws.com/123456789012/orders-dlq.fifo"
		}, nil},
		{"local endpoint url", func(c *Config) { c.QueueURL = "http://127.0.0.1:4566/000000000000/q_1-a" }, nil},
		{"role with external id", func(c *Config) {
			c.AssumeRoleARN = "arn:aws:iam::123456789012:role/path/reader"
			c.AssumeRoleExternal = "ext-123"
		}, nil},
		{"china partition role", func(c *Config) { c.AssumeRoleARN = "arn:aws-cn:iam::123456789012:role/r" }, nil},
		{"zero wait (short polling)", func(c *Config) { c.WaitTime = 0 }, nil},
		{"limits", func(c *Config) { c.VisibilityTimeout = 12 * time.Hour; c.MaxExtension = 12 * time.Hour }, nil},

		{"wait too long", func(c *Config) { c.WaitTime = 21 * time.Second }, []string{"SQS_WAIT_TIME: must be between 0s and 20s"}},
		{"wait negative", func(c *Config) { c.WaitTime = -time.Second }, []string{"SQS_WAIT_TIME: must be between"}},
		{"wait fractional", func(c *Config) { c.WaitTime = 1500 * time.Millisecond }, []string{"SQS_WAIT_TIME: must be a whole number of seconds"}},
		{"visibility zero", func(c *Config) { c.VisibilityTimeout = 0 }, []string{"SQS_VISIBILITY_TIMEOUT: must be between 1s and 12h"}},
		{"visibility too long", func(c *Config) { c.VisibilityTimeout = 13 * time.Hour }, []string{"SQS_VISIBILITY_TIMEOUT: must be between"}},
		{"visibility fractional", func(c *Config) { c.VisibilityTimeout = 2500 * time.Millisecond }, []string{"SQS_VISIBILITY_TIMEOUT: must be a whole number"}},
		{"max extension zero", func(c *Config) { c.MaxExtension = 0 }, []string{"SQS_MAX_EXTENSION: must be more than 0s"}},
		{"max extension over 12h", func(c *Config) { c.MaxExtension = 13 * time.Hour }, []string{"SQS_MAX_EXTENSION: must be more than 0s and at most 12h"}},
		{"queue url not a url", func(c *Config) { c.QueueURL = "orders" }, []string{"SQS_QUEUE_URL: must be an http(s) queue URL"}},
		{"queue url no path", func(c *Config) { c.QueueURL = "https://sqs.us-east-1.amazonaws.com/" }, []string{"SQS_QUEUE_URL: must have the path /<account-id>/<queue-name>"}},
		{"queue url bad name", func(c *Config) { c.QueueURL = "https://sqs.us-east-1.amazonaws.com/1/or:ders" }, []string{"SQS_QUEUE_URL: has an invalid queue name"}},
		{"queue url query", func(c *Config) { c.QueueURL = stdURL + "?x=1" }, []string{"SQS_QUEUE_URL: must not have a query"}},
		{"queue url arn", func(c *Config) { c.QueueURL = "arn:aws:sqs:us-east-1:123456789012:orders" }, []string{"SQS_QUEUE_URL: must be an http(s) queue URL"}},
		{"dlq same as queue", func(c *Config) { c.DeadLetterQueueURL = stdURL }, []string{"SQS_DEAD_LETTER_QUEUE_URL: must not be the source queue"}},
		{"dlq invalid", func(c *Config) { c.DeadLetterQueueURL = "not a url" }, []string{"SQS_DEAD_LETTER_QUEUE_URL: must be an http(s) queue URL"}},
		{"fifo queue standard dlq", func(c *Config) {
			c.QueueURL = fifoURL
			c.DeadLetterQueueURL = "https://sqs.us-east-1.amazonaws.com/123456789012/dlq"
		}, []string{"SQS_DEAD_LETTER_QUEUE_URL: must be a FIFO queue"}},
		{"standard queue fifo dlq", func(c *Config) {
			c.DeadLetterQueueURL = "https://sqs.us-east-1.amazonaws.com/123456789012/dlq.fifo"
		}, []string{"SQS_DEAD_LETTER_QUEUE_URL: must be a standard queue"}},
		{"external id without role", func(c *Config) { c.AssumeRoleExternal = "ext" }, []string{"SQS_ASSUME_ROLE_EXTERNAL_ID: is set but SQS_ASSUME_ROLE_ARN is not"}},
		{"role not an arn", func(c *Config) { c.AssumeRoleARN = "reader" }, []string{"SQS_ASSUME_ROLE_ARN: must be an IAM role ARN"}},
		{"role arn of a user", func(c *Config) { c.AssumeRoleARN = "arn:aws:iam::123456789012:user/bob" }, []string{"SQS_ASSUME_ROLE_ARN: must be an IAM role ARN"}},
		{"session name bad", func(c *Config) {
			c.AssumeRoleARN = "arn:aws:iam::123456789012:role/r"
			c.AssumeRoleSession = "has space"
		}, []string{"SQS_ASSUME_ROLE_SESSION_NAME: must be 2-64 characters"}},
		{"every problem at once", func(c *Config) {
			c.QueueURL = "ftp://x/1/q"
			c.DeadLetterQueueURL = "https://h/1/bad name"
			c.WaitTime = time.Minute
			c.VisibilityTimeout = 0
			c.MaxExtension = -time.Second
			c.AssumeRoleExternal = "x"
		}, []string{
			"SQS_QUEUE_URL: must be an http(s) queue URL",
			"SQS_DEAD_LETTER_QUEUE_URL: has an invalid queue name",
			"SQS_WAIT_TIME: must be between",
			"SQS_VISIBILITY_TIMEOUT: must be between",
			"SQS_MAX_EXTENSION: must be more than",
			"SQS_ASSUME_ROLE_EXTERNAL_ID: is set but SQS_ASSUME_ROLE_ARN is not",
			"SQS_ASSUME_ROLE_EXTERNAL_ID: must be 2-1224 characters",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := validConfig()
			tt.mutate(&c)
			err := c.Validate()
			got := problems(t, err)
			if len(got) != len(tt.want) {
				t.Fatalf("got %d problems %q, want %d %q", len(got), got, len(tt.want), tt.want)
			}
			for _, w := range tt.want {
				found := false
				for _, g := range got {
					if strings.HasPrefix(g, strings.SplitN(w, ":", 2)[0]+":") && strings.Contains(g, w[strings.Index(w, ":")+2:]) {
						found = true
					}
				}
				if !found {
					t.Errorf("no problem matching %q in %q", w, got)
				}
			}
		})
	}
}

// problems flattens a joined error into "VAR: problem" strings, checking each is a *config.FieldError.
func problems(t *testing.T, err error) []string {
	t.Helper()
	if err == nil {
		return nil
	}
	var out []string
	joined, ok := err.(interface{ Unwrap() []error })
	if !ok {
		t.Fatalf("Validate returned %T, want errors.Join of problems", err)
	}
	for _, e := range joined.Unwrap() {
		var fe *config.FieldError
		if !errors.As(e, &fe) {
			t.Fatalf("problem %v is %T, want *config.FieldError", e, e)
		}
		out = append(out, fe.Error())
	}
	return out
}

func TestIsFIFO(t *testing.T) {
	if !isFIFO(fifoURL) || isFIFO(stdURL) {
		t.Fatal("isFIFO got the queue kinds wrong")
	}
}

// Every variable with a documented range is accepted at each end when it is the only one set: no
// default of another variable may make a documented value invalid.
func TestEachVariableAloneAtItsDocumentedBounds(t *testing.T) {
	configtest.AloneAtBounds(t, Config{}, "SQS_QUEUE_URL="+stdURL)
	configtest.AloneAtBounds(t, Config{}, "SQS_QUEUE_URL="+fifoURL)
}
