// Package e2e holds the end-to-end tests of the root module: real connector binaries, started as
// processes, driven over their unix sockets the way numa drives them.
package e2e

import (
	"fmt"
	e2ebins "github.com/numaflow-connectors/sources/e2e/internal/bins"
	"os"
	"path/filepath"
	"testing"
)

// bins holds the binaries built once for the whole package.
var bins = map[string]string{}

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "e2e-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := func() int {
		defer os.RemoveAll(dir)
		built, err := e2ebins.Build(dir, "cmd/memsource", "cmd/udsource-run", "redis-streams-source")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		for d, b := range built {
			bins[filepath.Base(d)] = b
		}
		return m.Run()
	}()
	os.Exit(code)
}
