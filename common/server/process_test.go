package server

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/numaflow-connectors/sources/common/numatest"
	"github.com/numaflow-connectors/sources/common/proctest"
)

// buildDemo builds testdata/demo, a connector on an in-memory broker made with Main.
func buildDemo(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds and runs a binary")
	}
	bin := filepath.Join(t.TempDir(), "demo-source")
	if out, err := exec.Command("go", "build", "-race", "-o", bin, "./testdata/demo").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// Main as a process: a missing variable exits 2 naming it; SIGTERM with a message in flight exits 0
// quickly even though numaflow-go's own graceful stop would wait for numa's streams for 15 s.
func TestMainProcess(t *testing.T) {
	bin := buildDemo(t)

	t.Run("missing variable", func(t *testing.T) {
		cmd := exec.Command(bin)
		cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		err := cmd.Run()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 2 {
			t.Fatalf("exit: %v, want status 2", err)
		}
		if got := strings.TrimSpace(stderr.String()); got != "config: DEMO_QUEUE: is required but not set" {
			t.Errorf("stderr = %q", got)
		}
	})

	t.Run("SIGTERM", func(t *testing.T) {
		environ, socket, infoFile := baseEnv(t)
		environ = append(environ, "DEMO_QUEUE=q")
		p := proctest.Start(t, bin, nil, proctest.Options{
			Env: environ,
			Ready: func(context.Context) error {
				_, err := os.Stat(socket)
				return err
			},
		})
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		c, err := numatest.Dial(ctx, numatest.Options{Socket: socket, ServerInfoFile: infoFile})
		if err != nil {
			t.Fatalf("dialing: %v", err)
		}
		defer c.Close()
		if msgs, err := c.Read(ctx, 1, time.Second); err != nil || len(msgs) != 1 {
			t.Fatalf("Read = %d messages, %v", len(msgs), err)
		}
		began := time.Now()
		if err := p.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		code, exited := p.Wait(10 * time.Second)
		if !exited || code != 0 {
			t.Fatalf("exit %d (exited %v), want 0:\n%s", code, exited, p.Output())
		}
		if took := time.Since(began); took > 5*time.Second {
			t.Errorf("SIGTERM to exit took %s", took)
		}
		for _, s := range []string{`"msg":"shutting down"`, `"msg":"releasing held messages"`, `"msg":"stopped"`} {
			if !strings.Contains(p.Output(), s) {
				t.Errorf("output lacks %s:\n%s", s, p.Output())
			}
		}
	})
}
