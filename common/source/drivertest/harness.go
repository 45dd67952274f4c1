// Package drivertest is the conformance suite every source driver must pass, in process (calling the
// adapter's sourcer methods directly) and over a real unix socket (driven by numatest exactly as numa
// drives a source). A connector runs it from a test against its real broker:
//
//	func TestConformance(t *testing.T) { drivertest.Run(t, newHarness) }
package drivertest

import (
	"context"
	"testing"
	"time"

	"github.com/numaflow-connectors/sources/common/source"
)

// Publication is one message a harness publishes to its broker.
type Publication struct {
	Payload []byte
	// Key is published as the broker's key (FIFO group, ordering key, key field) when the harness
	// supports keys; the suite then expects it as the message's first key.
	Key string
	// Headers are published as broker attributes or fields when the harness supports headers; the
	// suite expects each to come back as a header (drivers may add more headers of their own).
	Headers map[string]string
}

// DeadLetter is a message found at the harness's dead-letter target.
type DeadLetter struct {
	Payload []byte
	Reason  string // the reason the adapter gave, when the broker keeps it; "" otherwise
}

// Capabilities of a harness; a false one skips the tests that need it.
type Capabilities struct {
	Keys       bool // Publication.Key comes back as Keys[0]
	Headers    bool // Publication.Headers come back in Headers
	DeadLetter bool // the driver implements source.DeadLetterer and DeadLettered can read the target
	// Redelivery is the longest the broker takes to redeliver a message whose holder died without
	// releasing it (a short lease the harness configured, plus slack). 0 skips the crash tests.
	Redelivery time.Duration
	// MaxPayload is the largest payload the broker accepts (default 1 MiB).
	MaxPayload int
	// Binary: payloads may hold any bytes (false for brokers that need valid UTF-8 text, like SQS).
	Binary bool
	// Backlog: the driver reports a backlog (Pending is not -1).
	Backlog bool
	// NoMissingResource: nothing the driver reads from can be missing (MQTT topics exist once a client
	// names them), so MakeMissingDriver is never called and the missing-resource test is skipped.
	NoMissingResource bool
}

// Harness gives the suite a fresh resource (queue, subscription, stream) per test.
type Harness interface {
	// MakeDriver opens a driver on this harness's resource. Called several times per test: drivers on
	// the same resource act as replicas of one vertex, or as a restarted process. The harness should
	// configure a short lease (2-10 s) so expiry tests run quickly.
	MakeDriver(ctx context.Context) (source.Driver, error)
	// MakeMissingDriver opens a driver whose resource does not exist (the constructor must succeed;
	// the missing resource shows in Receive's error).
	MakeMissingDriver(ctx context.Context) (source.Driver, error)
	// Publish sends messages to the resource, in order.
	Publish(ctx context.Context, msgs []Publication) error
	// DeadLettered returns every message that reached the dead-letter target so far.
	DeadLettered(ctx context.Context) ([]DeadLetter, error)
	// Capabilities of the harness and its broker.
	Capabilities() Capabilities
	// Close deletes the resource and releases the harness.
	Close()
}

// NewHarness creates a harness with a fresh resource for one test.
type NewHarness func(ctx context.Context, t *testing.T) (Harness, error)

// Outcomes summarises pre-flight checks (source.Preflighter) by name for a test's assertions: "pass",
// "skipped", or "fail: " and the check's fix.
func Outcomes(checks []source.Check) map[string]string {
	out := make(map[string]string, len(checks))
	for _, c := range checks {
		switch {
		case c.Skipped != "":
			out[c.Name] = "skipped"
		case c.Err != nil:
			out[c.Name] = "fail: " + c.Fix
		default:
			out[c.Name] = "pass"
		}
	}
	return out
}
