// Package sqssource is the AWS SQS driver behind the sqs-source connector: standard and FIFO queues,
// long polling, batched deletes and visibility changes, optional dead-letter queue and SNS envelope
// unwrapping. The portable adapter in common/source does batching, retries, leases and shutdown.
package sqssource

import (
	"errors"
	"net/url"
	"regexp"
	"strings"
	"time"

	"github.com/numaflow-connectors/sources/common/config"
)

// SQS limits the configuration is checked against.
const (
	maxWaitTime   = 20 * time.Second
	minVisibility = time.Second
	maxVisibility = 12 * time.Hour // also the longest total time a message can stay invisible
	maxBatch      = 10
	fifoSuffix    = ".fifo"
)

// Config is the sqs-source configuration, read from environment variables. The AWS SDK reads its own
// variables on top (AWS_REGION, AWS_ENDPOINT_URL_SQS, AWS_ACCESS_KEY_ID, AWS_PROFILE, AWS_ROLE_ARN +
// AWS_WEB_IDENTITY_TOKEN_FILE for IRSA, EKS Pod Identity, ...): they are not redeclared here.
type Config struct {
	QueueURL           string        `env:"SQS_QUEUE_URL,required" desc:"URL of the queue to read (standard or FIFO), e.g. https://sqs.us-east-1.amazonaws.com/123456789012/orders."`
	VisibilityTimeout  time.Duration `env:"SQS_VISIBILITY_TIMEOUT" envDefault:"30s" min:"1s" max:"12h" desc:"Visibility timeout set on each receive and renewed by the lease keeper while a message is held; whole seconds, 1s to 12h."`
	WaitTime           time.Duration `env:"SQS_WAIT_TIME" envDefault:"20s" min:"0s" max:"20s" desc:"Long-poll wait of each ReceiveMessage call; whole seconds, 0s to 20s. Receives run in the background, so numa's read timeout never cuts a poll short. 0s is short polling: SQS answers at once from a sample of its servers (a receive can come back empty while messages wait), and each empty answer is followed by a 1s pause, so an idle replica makes about 60 receive requests a minute instead of 3."`
	MaxExtension       time.Duration `env:"SQS_MAX_EXTENSION" envDefault:"1h" min:"1s" max:"12h" desc:"Longest total time a held message's visibility is extended; after it the message is left to expire and SQS redelivers it. More than 0s, at most 12h (SQS's own limit)."`
	DeadLetterQueueURL string        `env:"SQS_DEAD_LETTER_QUEUE_URL" desc:"Queue that receives messages nacked more often than numa's max deliveries (body, attributes and a reason); FIFO when the source queue is FIFO. Empty: DEAD_LETTER_FALLBACK applies (by default they stay in the queue, under its own redrive policy)."`
	AssumeRoleARN      string        `env:"SQS_ASSUME_ROLE_ARN" desc:"IAM role to assume (with STS AssumeRole) on top of the default credentials, e.g. for a queue in another account. Empty: use the default credentials as they are."`
	AssumeRoleExternal string        `env:"SQS_ASSUME_ROLE_EXTERNAL_ID" desc:"External ID passed when assuming SQS_ASSUME_ROLE_ARN, if the role's trust policy requires one."`
	AssumeRoleSession  string        `env:"SQS_ASSUME_ROLE_SESSION_NAME" envDefault:"numaflow-sqs-source" desc:"Session name used when assuming SQS_ASSUME_ROLE_ARN (2-64 characters of letters, digits and +=,.@_-); it shows in CloudTrail."`
	UnwrapSNS          bool          `env:"SQS_UNWRAP_SNS" envDefault:"false" desc:"Treat each body as an SNS notification envelope (an SNS subscription without raw message delivery): the payload is its Message and its MessageAttributes become headers. A body that is not an envelope is passed on as is with an x-sns-unwrap-error header."`
}

var (
	queueNameRE   = regexp.MustCompile(`^[A-Za-z0-9_-]{1,80}$`)
	roleARNRE     = regexp.MustCompile(`^arn:aws[a-z-]*:iam::[0-9]{12}:role/[\w+=,.@/-]{1,512}$`)
	sessionNameRE = regexp.MustCompile(`^[\w+=,.@-]{2,64}$`)
	externalIDRE  = regexp.MustCompile(`^[\w+=,.@:/-]+$`)
)

// Validate reports every problem in the configuration at once, each naming its variable. It makes no
// network call.
func (c *Config) Validate() error {
	var errs []error
	add := func(name, format string, args ...any) { errs = append(errs, config.Problem(name, format, args...)) }

	// An empty SQS_QUEUE_URL is reported by the loader (the field is required).
	if c.QueueURL != "" {
		if p := checkQueueURL(c.QueueURL); p != "" {
			add("SQS_QUEUE_URL", "%s", p)
		}
	}
	if c.DeadLetterQueueURL != "" {
		switch p := checkQueueURL(c.DeadLetterQueueURL); {
		case p != "":
			add("SQS_DEAD_LETTER_QUEUE_URL", "%s", p)
		case c.DeadLetterQueueURL == c.QueueURL:
			add("SQS_DEAD_LETTER_QUEUE_URL", "must not be the source queue SQS_QUEUE_URL")
		case c.QueueURL != "" && checkQueueURL(c.QueueURL) == "" && isFIFO(c.QueueURL) != isFIFO(c.DeadLetterQueueURL):
			if isFIFO(c.QueueURL) {
				add("SQS_DEAD_LETTER_QUEUE_URL", "must be a FIFO queue (name ending in .fifo) because SQS_QUEUE_URL is one")
			} else {
				add("SQS_DEAD_LETTER_QUEUE_URL", "must be a standard queue (name not ending in .fifo) because SQS_QUEUE_URL is one")
			}
		}
	}

	switch {
	case c.WaitTime < 0 || c.WaitTime > maxWaitTime:
		add("SQS_WAIT_TIME", "must be between 0s and 20s, got %s", c.WaitTime)
	case c.WaitTime%time.Second != 0:
		add("SQS_WAIT_TIME", "must be a whole number of seconds, got %s", c.WaitTime)
	}
	switch {
	case c.VisibilityTimeout < minVisibility || c.VisibilityTimeout > maxVisibility:
		add("SQS_VISIBILITY_TIMEOUT", "must be between 1s and 12h, got %s", c.VisibilityTimeout)
	case c.VisibilityTimeout%time.Second != 0:
		add("SQS_VISIBILITY_TIMEOUT", "must be a whole number of seconds, got %s", c.VisibilityTimeout)
	}
	if c.MaxExtension <= 0 || c.MaxExtension > maxVisibility {
		add("SQS_MAX_EXTENSION", "must be more than 0s and at most 12h, got %s", c.MaxExtension)
	}

	if c.AssumeRoleARN != "" && !roleARNRE.MatchString(c.AssumeRoleARN) {
		add("SQS_ASSUME_ROLE_ARN", "must be an IAM role ARN such as arn:aws:iam::123456789012:role/name, got %q", c.AssumeRoleARN)
	}
	if c.AssumeRoleExternal != "" {
		if c.AssumeRoleARN == "" {
			add("SQS_ASSUME_ROLE_EXTERNAL_ID", "is set but SQS_ASSUME_ROLE_ARN is not: an external ID is only used when assuming a role")
		}
		if n := len(c.AssumeRoleExternal); n < 2 || n > 1224 || !externalIDRE.MatchString(c.AssumeRoleExternal) {
			add("SQS_ASSUME_ROLE_EXTERNAL_ID", "must be 2-1224 characters of letters, digits and +=,.@:/-_")
		}
	}
	if c.AssumeRoleARN != "" && !sessionNameRE.MatchString(c.AssumeRoleSession) {
		add("SQS_ASSUME_ROLE_SESSION_NAME", "must be 2-64 characters of letters, digits and +=,.@_-, got %q", c.AssumeRoleSession)
	}
	return errors.Join(errs...)
}

// checkQueueURL returns what is wrong with a queue URL, or "".
func checkQueueURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "must be a queue URL such as https://sqs.us-east-1.amazonaws.com/123456789012/name: " + err.Error()
	}
	if u.Scheme != "https" && u.Scheme != "http" {
		return "must be an http(s) queue URL such as https://sqs.us-east-1.amazonaws.com/123456789012/name, got " + quote(raw)
	}
	if u.Host == "" {
		return "has no host: " + quote(raw)
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return "must not have a query or fragment: " + quote(raw)
	}
	parts := strings.Split(strings.Trim(u.Path, "/"), "/")
	if len(parts) != 2 || parts[0] == "" {
		return "must have the path /<account-id>/<queue-name>, got " + quote(raw)
	}
	name := strings.TrimSuffix(parts[1], fifoSuffix)
	if !queueNameRE.MatchString(name) || len(parts[1]) > 80 {
		return "has an invalid queue name " + quote(parts[1]) + " (1-80 letters, digits, - and _, FIFO names end in .fifo)"
	}
	return ""
}

func quote(s string) string { return `"` + s + `"` }

// isFIFO reports whether a queue URL names a FIFO queue (SQS requires their names to end in .fifo).
func isFIFO(queueURL string) bool {
	return strings.HasSuffix(strings.TrimRight(queueURL, "/"), fifoSuffix)
}
