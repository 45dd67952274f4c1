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
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
)

// Connector names, which are also their module directories and binary names.
const (
	sqsSource    = "sqs-source"
	pubsubSource = "pubsub-source"
	redisSource  = "redis-streams-source"
)

var connectors = []string{sqsSource, pubsubSource, redisSource}

// bins maps a connector to its binary, built once for the package.
var bins = map[string]string{}

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	dir, err := os.MkdirTemp("", "badinput-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	_, file, _, _ := runtime.Caller(0)
	root := filepath.Dir(filepath.Dir(filepath.Dir(file)))
	for _, c := range connectors {
		out := filepath.Join(dir, c)
		// Built as `make build` builds it (static, trimmed); in the module's own directory so that
		// GOWORK=off builds exactly what a fork of the connector builds.
		cmd := exec.Command("go", "build", "-trimpath", "-o", out, ".")
		cmd.Dir = filepath.Join(root, c)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if b, err := cmd.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "building %s: %v\n%s", c, err, b)
			return 1
		}
		bins[c] = out
	}
	return m.Run()
}
