// Package pubsubsource is the Google Cloud Pub/Sub driver behind the pubsub-source connector. It
// receives with the unary Pull API (exact control of ack deadlines), acks and modifies deadlines in
// batches, dead-letters to an optional topic and reads the backlog from Cloud Monitoring on demand.
// The portable adapter in common/source does buffering, retries, leases and shutdown.
package pubsubsource

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/numaflow-connectors/sources/common/config"
)

// Pub/Sub limits the configuration is checked against.
const (
	minAckDeadline = 10 * time.Second
	maxAckDeadline = 600 * time.Second // also the longest nack delay

	// defaultAckDeadline is PUBSUB_ACK_DEADLINE's default when PUBSUB_MAX_EXTENSION allows it.
	defaultAckDeadline = 30 * time.Second

	// PendingAuto is PendingMonitoring, or PendingOff when PUBSUB_EMULATOR_HOST is set (an emulator
	// has no Cloud Monitoring).
	PendingAuto = "auto"
	// PendingOff leaves the backlog unknown (Pending -1: Numaflow does not autoscale on it).
	PendingOff = "off"
	// PendingMonitoring reads subscription/num_undelivered_messages from Cloud Monitoring.
	PendingMonitoring = "monitoring"
)

// Config is the pubsub-source configuration, read from environment variables. The client library
// reads its own variables on top (PUBSUB_EMULATOR_HOST, GOOGLE_APPLICATION_CREDENTIALS and the rest of
// Application Default Credentials): they are not redeclared here.
type Config struct {
	Project            string        `env:"PUBSUB_PROJECT" desc:"Google Cloud project of the subscription. Required unless PUBSUB_SUBSCRIPTION is a full projects/P/subscriptions/S name or GOOGLE_CLOUD_PROJECT is set."`
	GoogleCloudProject string        `env:"GOOGLE_CLOUD_PROJECT" desc:"Fallback for PUBSUB_PROJECT (the variable many Google Cloud tools set)."`
	Subscription       string        `env:"PUBSUB_SUBSCRIPTION,required" desc:"Subscription to read: an ID (my-sub) in PUBSUB_PROJECT, or a full name projects/P/subscriptions/S. Pull subscriptions only."`
	AckDeadline        time.Duration `env:"PUBSUB_ACK_DEADLINE" envDefault:"0s" desc:"Ack deadline set on every received message and by every lease extension; whole seconds, 10s to 600s, at most PUBSUB_MAX_EXTENSION. 0s: 30s, or PUBSUB_MAX_EXTENSION (in whole seconds) when that is shorter. A replica that dies holding messages gives them back after at most this long, so it bounds crash recovery."`
	MaxExtension       time.Duration `env:"PUBSUB_MAX_EXTENSION" envDefault:"1h" desc:"Longest total time the lease of a held message is extended; after it the message is left to expire and Pub/Sub redelivers it. At least 10s, and at least PUBSUB_ACK_DEADLINE when that is set."`
	DeadLetterTopic    string        `env:"PUBSUB_DEAD_LETTER_TOPIC" desc:"Topic (ID in the subscription's project, or projects/P/topics/T) that receives messages nacked more often than numa's max deliveries: data, attributes and x-dead-letter-* attributes with the reason. Empty: DEAD_LETTER_FALLBACK applies (by default they stay, under the subscription's own dead-letter policy)."`
	Pending            string        `env:"PUBSUB_PENDING" envDefault:"auto" desc:"Backlog reported to Numaflow's autoscaler: monitoring (Cloud Monitoring's subscription/num_undelivered_messages, read at most every 30s; it lags by a minute or more; needs roles/monitoring.viewer, without which one warning is logged and the backlog is unknown), off (unknown: -1, no autoscaling on backlog), or auto: monitoring, or off when PUBSUB_EMULATOR_HOST is set (an emulator has no Cloud Monitoring)."`
}

var (
	// Resource IDs: 3-255 characters, starting with a letter, of letters, digits and -_.~+%; not
	// starting with goog.
	resourceIDRE = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9\-_.~+%]{2,254}$`)
	// Project IDs (optionally domain-scoped, example.com:my-project) or project numbers.
	projectRE  = regexp.MustCompile(`^(?:(?:[a-z0-9-]+\.)+[a-z]+:)?[a-z][a-z0-9-]{4,28}[a-z0-9]$|^[0-9]{1,20}$`)
	fullSubRE  = regexp.MustCompile(`^projects/([^/]+)/subscriptions/([^/]+)$`)
	fullTopRE  = regexp.MustCompile(`^projects/([^/]+)/topics/([^/]+)$`)
	deletedTop = "_deleted-topic_"
)

// Validate reports every problem in the configuration at once, each naming its variable. It makes no
// network call.
func (c *Config) Validate() error {
	var errs []error
	add := func(name, format string, args ...any) { errs = append(errs, config.Problem(name, format, args...)) }

	subProject, subID, full := splitName(c.Subscription, fullSubRE)
	switch {
	case c.Subscription == "":
		// Reported by the loader (the field is required).
	case strings.HasPrefix(c.Subscription, "projects/") && !full:
		add("PUBSUB_SUBSCRIPTION", "must be a subscription ID or projects/PROJECT/subscriptions/ID, got %q", c.Subscription)
	case !validID(subID):
		add("PUBSUB_SUBSCRIPTION", "has an invalid subscription ID %q (3-255 letters, digits and -_.~+%%, starting with a letter, not with goog)", subID)
	}
	if full && !projectRE.MatchString(subProject) {
		add("PUBSUB_SUBSCRIPTION", "has an invalid project %q", subProject)
	}

	if c.Project != "" && !projectRE.MatchString(c.Project) {
		add("PUBSUB_PROJECT", "must be a project ID such as my-project (6-30 lowercase letters, digits and hyphens) or a project number, got %q", c.Project)
	}
	if c.GoogleCloudProject != "" && c.Project == "" && !projectRE.MatchString(c.GoogleCloudProject) {
		add("GOOGLE_CLOUD_PROJECT", "must be a project ID or number, got %q", c.GoogleCloudProject)
	}
	if full && c.Project != "" && c.Project != subProject {
		add("PUBSUB_PROJECT", "is %q but PUBSUB_SUBSCRIPTION names project %q: set one of them", c.Project, subProject)
	}
	if !full && c.Project == "" && c.GoogleCloudProject == "" {
		add("PUBSUB_PROJECT", "is required when PUBSUB_SUBSCRIPTION is only an ID (or set GOOGLE_CLOUD_PROJECT, or give projects/P/subscriptions/S)")
	}

	if c.DeadLetterTopic != "" {
		tp, tid, tfull := splitName(c.DeadLetterTopic, fullTopRE)
		switch {
		case strings.HasPrefix(c.DeadLetterTopic, "projects/") && !tfull:
			add("PUBSUB_DEAD_LETTER_TOPIC", "must be a topic ID or projects/PROJECT/topics/ID, got %q", c.DeadLetterTopic)
		case tid == deletedTop || !validID(tid):
			add("PUBSUB_DEAD_LETTER_TOPIC", "has an invalid topic ID %q (3-255 letters, digits and -_.~+%%, starting with a letter, not with goog)", tid)
		case tfull && !projectRE.MatchString(tp):
			add("PUBSUB_DEAD_LETTER_TOPIC", "has an invalid project %q", tp)
		}
	}

	ackOK := false
	switch {
	case c.AckDeadline == 0: // the default follows PUBSUB_MAX_EXTENSION (ackDeadline)
		ackOK = true
	case c.AckDeadline < minAckDeadline || c.AckDeadline > maxAckDeadline:
		add("PUBSUB_ACK_DEADLINE", "must be between 10s and 600s (Pub/Sub's limits), or 0s for the default, got %s", c.AckDeadline)
	case c.AckDeadline%time.Second != 0:
		add("PUBSUB_ACK_DEADLINE", "must be a whole number of seconds, got %s", c.AckDeadline)
	default:
		ackOK = true
	}
	switch {
	case c.MaxExtension < minAckDeadline:
		add("PUBSUB_MAX_EXTENSION", "must be at least 10s (Pub/Sub's shortest ack deadline), got %s", c.MaxExtension)
	case ackOK && c.AckDeadline > 0 && c.MaxExtension < c.AckDeadline:
		add("PUBSUB_MAX_EXTENSION", "must be at least PUBSUB_ACK_DEADLINE (%s), got %s", c.AckDeadline, c.MaxExtension)
	}
	switch c.Pending {
	case PendingAuto, PendingOff, PendingMonitoring:
	default:
		add("PUBSUB_PENDING", "must be %q, %q or %q, got %q", PendingAuto, PendingMonitoring, PendingOff, c.Pending)
	}
	return errors.Join(errs...)
}

// ackDeadline is PUBSUB_ACK_DEADLINE, or when it is 0s defaultAckDeadline or PUBSUB_MAX_EXTENSION (in
// whole seconds) when that is shorter: the default never conflicts with a valid PUBSUB_MAX_EXTENSION.
// Valid after Validate.
func (c *Config) ackDeadline() time.Duration {
	if c.AckDeadline > 0 {
		return c.AckDeadline
	}
	return max(min(defaultAckDeadline, c.MaxExtension.Truncate(time.Second)), minAckDeadline)
}

// pendingMode is PUBSUB_PENDING with auto resolved: off when emulatorHost (PUBSUB_EMULATOR_HOST) is set,
// monitoring otherwise.
func (c *Config) pendingMode(emulatorHost string) string {
	if c.Pending != PendingAuto && c.Pending != "" {
		return c.Pending
	}
	if emulatorHost != "" {
		return PendingOff
	}
	return PendingMonitoring
}

// projectID is the project of the subscription: from its full name, PUBSUB_PROJECT or
// GOOGLE_CLOUD_PROJECT, in that order. Valid after Validate.
func (c *Config) projectID() string {
	if p, _, full := splitName(c.Subscription, fullSubRE); full {
		return p
	}
	if c.Project != "" {
		return c.Project
	}
	return c.GoogleCloudProject
}

// subscriptionName is the full resource name projects/P/subscriptions/S.
func (c *Config) subscriptionName() string {
	_, id, _ := splitName(c.Subscription, fullSubRE)
	return fmt.Sprintf("projects/%s/subscriptions/%s", c.projectID(), id)
}

// subscriptionID is the short ID of the subscription (the subscription_id label in Cloud Monitoring).
func (c *Config) subscriptionID() string {
	_, id, _ := splitName(c.Subscription, fullSubRE)
	return id
}

// deadLetterTopicName is the full resource name of PUBSUB_DEAD_LETTER_TOPIC ("" when unset); an ID is
// taken to be in the subscription's project.
func (c *Config) deadLetterTopicName() string {
	if c.DeadLetterTopic == "" {
		return ""
	}
	if p, id, full := splitName(c.DeadLetterTopic, fullTopRE); full {
		return fmt.Sprintf("projects/%s/topics/%s", p, id)
	}
	return fmt.Sprintf("projects/%s/topics/%s", c.projectID(), c.DeadLetterTopic)
}

// splitName splits a full resource name matched by re into project and ID; a plain ID comes back as
// ("", id, false).
func splitName(s string, re *regexp.Regexp) (project, id string, full bool) {
	if m := re.FindStringSubmatch(s); m != nil {
		return m[1], m[2], true
	}
	return "", s, false
}

func validID(id string) bool {
	return resourceIDRE.MatchString(id) && !strings.HasPrefix(strings.ToLower(id), "goog")
}
