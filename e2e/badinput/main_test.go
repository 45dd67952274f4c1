// Package badinput proves that the connector binaries survive bad input (issue 7, parts 3 and 4):
// bad configuration exits 2 at once, naming the variable, with no broker call; poison messages never
// stall the stream; messages over MAX_MESSAGE_BYTES are dead-lettered or dropped with a reason, never
// a crash loop; a secret never reaches the output, --help or --env-json; TLS to Redis is verified.
//
// The real binaries are built once in TestMain and started as processes; brokers are the real ones
// (fauxqs, the Pub/Sub emulator or its pstest fallback, redis-server), started by each connector's
// test package on loopback and stopped by PID.
package badinput

import (
	"github.com/numaflow-connectors/sources/e2e/internal/bins"
	"os"
	"testing"
)

// Connector names, which are also their module directories and binary names.
const (
	sqsSource    = "sqs-source"
	pubsubSource = "pubsub-source"
	redisSource  = "redis-streams-source"
	mqttSource   = "mqtt-source"
	rabbitSource = "rabbitmq-source"
)

var connectors = []string{sqsSource, pubsubSource, redisSource, mqttSource, rabbitSource}

// binaries maps a connector to its binary, built once for the package.
var binaries map[string]string

func TestMain(m *testing.M) {
	os.Exit(bins.Run(m, connectors, func(b map[string]string) { binaries = b }))
}
