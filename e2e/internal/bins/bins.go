// Package bins builds the repository's binaries once per test package, as `make build` builds them
// (static, trimmed, in the binary's own module directory, so GOWORK=off builds exactly what a fork
// builds).
package bins

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
)

// Root is the repository root.
func Root() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "..")
}

// Run is for TestMain: it builds dirs into a temporary directory, hands the binaries (by base name)
// to use, runs the tests, removes the directory and returns the exit code.
func Run(m *testing.M, dirs []string, use func(map[string]string)) int {
	dir, err := os.MkdirTemp("", "e2e-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	built, err := Build(dir, dirs...)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	byName := make(map[string]string, len(built))
	for d, b := range built {
		byName[filepath.Base(d)] = b
	}
	use(byName)
	return m.Run()
}

// Build builds each directory (relative to the repository root, e.g. "sqs-source" or
// "cmd/udsource-run") into dir and returns the binaries by directory. A directory without a main.go is
// skipped.
func Build(dir string, dirs ...string) (map[string]string, error) {
	out := make(map[string]string, len(dirs))
	for _, d := range dirs {
		src := filepath.Join(Root(), d)
		if _, err := os.Stat(filepath.Join(src, "main.go")); err != nil {
			continue
		}
		bin := filepath.Join(dir, filepath.Base(d))
		cmd := exec.Command("go", "build", "-trimpath", "-o", bin, ".")
		cmd.Dir = src
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if b, err := cmd.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("building %s: %v\n%s", d, err, b)
		}
		out[d] = bin
	}
	return out, nil
}
