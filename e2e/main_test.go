// Package e2e holds the end-to-end tests of the root module: real connector binaries, started as
// processes, driven over their unix sockets the way numa drives them.
package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
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
		_, file, _, _ := runtime.Caller(0)
		root := filepath.Dir(filepath.Dir(file))
		for name, pkg := range map[string]string{"memsource": "./cmd/memsource", "udsource-run": "./cmd/udsource-run",
			"redis-streams-source": "./redis-streams-source"} {
			out := filepath.Join(dir, name)
			cmd := exec.Command("go", "build", "-o", out, ".")
			cmd.Dir = filepath.Join(root, pkg)
			if b, err := cmd.CombinedOutput(); err != nil {
				fmt.Fprintf(os.Stderr, "building %s: %v\n%s", pkg, err, b)
				return 1
			}
			bins[name] = out
		}
		return m.Run()
	}()
	os.Exit(code)
}
