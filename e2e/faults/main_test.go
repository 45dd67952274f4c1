// Package faults proves what each connector promises under faults and at scale: kill -9 during a
// drain, SIGTERM mid-batch, network cuts, broker restarts, a slow pipeline, three replicas sharing one
// resource and three shrinking to one. Every test runs the real connector binaries (built once in
// TestMain) as processes against real brokers, drives them over their sockets with numatest exactly as
// numa would, and asserts what a user would notice: nothing lost, duplicates bounded by what was in
// flight, held messages handed back at once, no hot spin, honest readiness.
//
// The tests are written once, as tables over one "kit" per connector (kit_test.go); the kits of one
// test run in parallel. SOAK=1 (make soak) multiplies message and kill counts; every test bounds
// itself with a deadline. docs/reliability.md lists what each test proves, with measured figures.
package faults

import (
	"os"
	"strconv"
	"testing"

	"github.com/numaflow-connectors/sources/e2e/internal/bins"
	"github.com/numaflow-connectors/sources/mqtt-source/mqtttest"
	"github.com/numaflow-connectors/sources/pubsub-source/pubsubtest"
	"github.com/numaflow-connectors/sources/rabbitmq-source/rabbitmqtest"
)

// binaries holds the connector binaries built once for the package, by connector directory name.
var binaries map[string]string

// connectors the package builds and tests. A connector whose directory has no main.go yet is skipped.
var connectors = []string{"sqs-source", "pubsub-source", "redis-streams-source", "rabbitmq-source", "mqtt-source"}

func TestMain(m *testing.M) {
	// The Pub/Sub emulator is shared by the package (a JVM takes seconds and hundreds of MB to start);
	// every test uses its own topic and subscription on it (pubsubtest.Shared).
	os.Exit(pubsubtest.Main(runTests(func() int {
		return rabbitmqtest.Run(runTests(func() int {
			return mqtttest.Run(runTests(func() int { return bins.Run(m, connectors, func(b map[string]string) { binaries = b }) }))
		}))
	})))
}

// runTests runs a test binary's tests (a *testing.M wrapped in more set-up).
type runTests func() int

func (r runTests) Run() int { return r() }

// soak is set by SOAK=1 (make soak): bigger and longer runs of the same tests.
var soak = os.Getenv("SOAK") == "1"

// scaled multiplies a count in soak mode (SOAK_FACTOR, default 5).
func scaled(n int) int {
	if !soak {
		return n
	}
	f, err := strconv.Atoi(os.Getenv("SOAK_FACTOR"))
	if err != nil || f < 1 {
		f = 5
	}
	return n * f
}
