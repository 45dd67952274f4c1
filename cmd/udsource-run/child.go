package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// child is the connector process the runner started.
type child struct {
	cmd     *exec.Cmd
	dir     string // temporary directory: socket, server info, log
	logPath string // "" with --child-logs
	logFile *os.File
	done    chan struct{} // closed when the process has exited
	err     error         // Wait's result, set before done closes
}

// childEnv is env plus what Numaflow sets in a udsource container. Later entries win in os/exec.
func childEnv(env []string, c *config, socket, serverInfo string) []string {
	out := append([]string(nil), env...)
	hasMetrics := false
	for _, kv := range env {
		if strings.HasPrefix(kv, "METRICS_ADDR=") {
			hasMetrics = true
		}
	}
	if !hasMetrics {
		// Several local runs must not fight over the default metrics port.
		out = append(out, "METRICS_ADDR=")
	}
	return append(out,
		"SOURCE_SOCKET="+socket,
		"SOURCE_SERVER_INFO_FILE="+serverInfo,
		"NUMAFLOW_REPLICA=0",
		"NUMAFLOW_PIPELINE_NAME=local",
		"NUMAFLOW_VERTEX_NAME=in",
		"NUMAFLOW_UD_CONTAINER_TYPE=udsource",
		"NUMAFLOW_READ_BATCH_SIZE="+strconv.FormatUint(c.batch, 10),
		"NUMAFLOW_READ_TIMEOUT_MS="+strconv.FormatInt(c.timeout.Milliseconds(), 10),
	)
}

// startChild starts the connector in a fresh temporary directory, in its own process group (so a
// Ctrl-C on the terminal reaches only the runner, which then stops the connector in order).
func startChild(c *config, env []string, stdout, stderr io.Writer) (*child, string, string, error) {
	dir, err := os.MkdirTemp("", "udsource-run-")
	if err != nil {
		return nil, "", "", fmt.Errorf("creating temporary directory: %w", err)
	}
	socket, serverInfo := filepath.Join(dir, "source.sock"), filepath.Join(dir, "server-info")
	ch := &child{dir: dir, done: make(chan struct{})}
	cmd := exec.Command(c.command[0], c.command[1:]...)
	cmd.Env = childEnv(env, c, socket, serverInfo)
	cmd.SysProcAttr = childSysProcAttr()
	if c.childLogs {
		cmd.Stdout, cmd.Stderr = stdout, stderr
	} else {
		ch.logPath = filepath.Join(dir, "source.log")
		f, err := os.Create(ch.logPath)
		if err != nil {
			_ = os.RemoveAll(dir)
			return nil, "", "", fmt.Errorf("creating log file: %w", err)
		}
		ch.logFile = f
		cmd.Stdout, cmd.Stderr = f, f
	}
	if err := cmd.Start(); err != nil {
		ch.closeLog()
		_ = os.RemoveAll(dir)
		return nil, "", "", fmt.Errorf("starting %s: %w", c.command[0], err)
	}
	ch.cmd = cmd
	go func() {
		ch.err = cmd.Wait()
		close(ch.done)
	}()
	return ch, socket, serverInfo, nil
}

func (ch *child) closeLog() {
	if ch.logFile != nil {
		_ = ch.logFile.Close()
	}
}

// exited reports whether the process has ended.
func (ch *child) exited() bool {
	select {
	case <-ch.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM and waits up to timeout, then kills the whole process group. It returns the
// process's exit error (nil for status 0) and whether it exited by itself in time.
func (ch *child) stop(timeout time.Duration) (error, bool) {
	if !ch.exited() {
		_ = ch.cmd.Process.Signal(syscall.SIGTERM)
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-ch.done:
		return ch.err, true
	case <-t.C:
		_ = syscall.Kill(-ch.cmd.Process.Pid, syscall.SIGKILL)
		<-ch.done
		return ch.err, false
	}
}

// tail returns the last n lines of the log file.
func (ch *child) tail(n int) string {
	if ch.logPath == "" {
		return ""
	}
	b, err := os.ReadFile(ch.logPath)
	if err != nil {
		return ""
	}
	lines := bytes.Split(bytes.TrimRight(b, "\n"), []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return string(bytes.Join(lines, []byte("\n")))
}

// cleanup closes the log and removes the temporary directory unless keep (then the log stays).
func (ch *child) cleanup(keep bool) error {
	ch.closeLog()
	if keep {
		return nil
	}
	if err := os.RemoveAll(ch.dir); err != nil {
		return fmt.Errorf("removing %s: %w", ch.dir, err)
	}
	return nil
}

// describeExit turns Wait's error into words.
func describeExit(err error) string {
	if err == nil {
		return "exit status 0"
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return "killed by " + ws.Signal().String()
		}
		return fmt.Sprintf("exit status %d", ee.ExitCode())
	}
	return err.Error()
}
