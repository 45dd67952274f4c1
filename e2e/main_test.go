// Package e2e holds the end-to-end tests of the root module: real connector binaries, started as
// processes, driven over their unix sockets the way numa drives them.
package e2e

import (
	e2ebins "github.com/numaflow-connectors/sources/e2e/internal/bins"
	"os"
	"testing"
)

// bins holds the binaries built once for the whole package.
var bins map[string]string

func TestMain(m *testing.M) {
	os.Exit(e2ebins.Run(m, []string{"common/cmd/memsource", "cmd/udsource-run", "redis-streams-source"},
		func(b map[string]string) { bins = b }))
}
