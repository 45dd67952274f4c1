package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os/exec"
	"os/signal"
	"syscall"
	"time"

	"github.com/numaflow-connectors/sources/common/numatest"
)

// Exit statuses.
const (
	exitOK    = 0
	exitFail  = 1
	exitUsage = 2
)

// nackReason is sent with every nack the runner makes.
const nackReason = "udsource-run --nack-ratio"

// run is the whole command; main only exits with its result.
func run(ctx context.Context, args, env []string, stdout, stderr io.Writer) int {
	c, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	if err != nil {
		fmt.Fprintf(stderr, "udsource-run: %v\n", err)
		return exitUsage
	}

	// stopCtx ends on Ctrl-C, SIGTERM or --duration: stop reading, finish the batch, shut down.
	stopCtx, stopSignals := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	defer stopSignals()
	if c.duration > 0 {
		var cancel context.CancelFunc
		stopCtx, cancel = context.WithTimeout(stopCtx, c.duration)
		defer cancel()
	}
	// Once stopping has begun, a second Ctrl-C kills the runner (the kernel then stops the child).
	context.AfterFunc(stopCtx, stopSignals)

	emb, env, err := startEmbedded(c, env, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "udsource-run: %v\n", err)
		return exitFail
	}
	defer emb.close()
	if c.check {
		return runCheck(ctx, c, env, stdout, stderr)
	}

	socket, serverInfo := c.socket, c.serverInfo
	var ch *child
	if len(c.command) > 0 {
		ch, socket, serverInfo, err = startChild(c, env, stdout, stderr)
		if err != nil {
			fmt.Fprintf(stderr, "udsource-run: %v\n", err)
			return exitFail
		}
		where := "this terminal"
		if ch.logPath != "" {
			where = ch.logPath
		}
		fmt.Fprintf(stderr, "udsource-run: started %s (pid %d), logs in %s\n", c.command[0], ch.cmd.Process.Pid, where)
	}

	code, stats := drive(stopCtx, c, ch, socket, serverInfo, emb.summaryWait(), stdout, stderr)

	if ch != nil {
		childErr, inTime := ch.stop(c.stopTimeout)
		switch {
		case !inTime:
			fmt.Fprintf(stderr, "udsource-run: the source did not exit within %s of SIGTERM; killed it\n", c.stopTimeout)
			code = exitFail
		case childErr != nil && code == exitOK:
			fmt.Fprintf(stderr, "udsource-run: the source stopped badly after SIGTERM: %s\n", describeExit(childErr))
			code = exitFail
		}
		keep := code != exitOK && ch.logPath != ""
		if keep {
			if t := ch.tail(20); t != "" {
				fmt.Fprintf(stderr, "udsource-run: last lines of %s:\n%s\n", ch.logPath, t)
			}
			fmt.Fprintf(stderr, "udsource-run: logs kept in %s\n", ch.logPath)
		}
		if err := ch.cleanup(keep); err != nil {
			fmt.Fprintf(stderr, "udsource-run: %v\n", err)
		}
	}
	if stats != nil {
		summary(stdout, *stats)
	}
	return code
}

// drive dials the source and plays numa until stopCtx ends, a stop condition is met or something
// fails. It returns the exit status so far and the final stats (nil when the loop never ran).
// settle is waited before the summary's pending figure is asked for (see embeddedRedis.summaryWait).
func drive(stopCtx context.Context, c *config, ch *child, socket, serverInfo string, settle time.Duration, stdout, stderr io.Writer) (int, *numatest.Stats) {
	// A child that exits early ends the wait for it at once.
	dialCtx, cancelDial := context.WithTimeout(stopCtx, c.startTimeout)
	defer cancelDial()
	if ch != nil {
		go func() {
			select {
			case <-ch.done:
				cancelDial()
			case <-dialCtx.Done():
			}
		}()
	}
	client, err := numatest.Dial(dialCtx, numatest.Options{Socket: socket, ServerInfoFile: serverInfo})
	if err != nil {
		switch {
		case ch != nil && ch.exited():
			fmt.Fprintf(stderr, "udsource-run: the source exited early (%s)\n", describeExit(ch.err))
		case stopCtx.Err() != nil:
			fmt.Fprintf(stderr, "udsource-run: stopped before the source was ready\n")
			return exitOK, nil
		default:
			fmt.Fprintf(stderr, "udsource-run: connecting to the source: %v\n", err)
		}
		return exitFail, nil
	}
	defer func() {
		if err := client.Close(); err != nil {
			fmt.Fprintf(stderr, "udsource-run: %v\n", err)
		}
	}()
	if !client.NackSupported() && c.nackRatio > 0 {
		si := client.ServerInfo()
		fmt.Fprintf(stderr, "udsource-run: numa sends no nacks to the source's SDK (language %q, version %q: nacks need a known language and Go, Java or Python 0.11.0, Rust 0.4.0), neither will this run\n",
			si.Language, si.Version)
	}

	disp := newDisplay(stdout, stderr, c.progressEvery)
	opts := numatest.LoopOptions{
		BatchSize:  c.batch,
		Timeout:    c.timeout,
		Decide:     decider(c),
		AckDelay:   c.ackDelay,
		Limit:      c.limit,
		Idle:       c.idle,
		StopGrace:  c.stopTimeout,
		OnStats:    disp.update,
		MaxPayload: c.maxPayload,
	}
	if c.maxPayload <= 0 {
		opts.MaxPayload = -1 // none
	}
	if c.print == printFull {
		opts.OnBatch = disp.printBatch
	}
	stats, err := client.Run(stopCtx, opts)
	disp.close()
	if err == nil {
		// The summary shows the backlog as it is now, not as of the last scheduled PendingFn.
		time.Sleep(settle) // at most maxSummaryWait; a second Ctrl-C still ends the runner at once
		pctx, cancel := context.WithTimeout(context.WithoutCancel(stopCtx), 5*time.Second)
		p, perr := client.Pending(pctx)
		cancel()
		if perr == nil {
			stats.LastPending = p
		}
		return exitOK, &stats
	}
	if ch != nil {
		// A broken stream is usually the child dying: give its exit a moment to be seen.
		t := time.NewTimer(time.Second)
		select {
		case <-ch.done:
		case <-t.C:
		}
		t.Stop()
	}
	switch {
	case errors.Is(err, numatest.ErrOverMaxPayload):
		fmt.Fprintf(stderr, "udsource-run: %v (in a pipeline whose ISB takes such messages, raise --isb-max-payload with its max_payload; else lower the connector's MAX_MESSAGE_BYTES)\n", err)
	case ch != nil && ch.exited():
		fmt.Fprintf(stderr, "udsource-run: the source exited early (%s): %v\n", describeExit(ch.err), err)
	default:
		fmt.Fprintf(stderr, "udsource-run: the source failed: %v\n", err)
	}
	return exitFail, &stats
}

// decider returns the fate of each message: held with --no-ack, else nacked with probability
// --nack-ratio (a seeded RNG, so a run is repeatable), else acked.
func decider(c *config) func(numatest.Message) numatest.Decision {
	if c.noAck {
		return func(numatest.Message) numatest.Decision { return numatest.Hold }
	}
	if c.nackRatio == 0 {
		return nil
	}
	opts := &numatest.NackOptions{Reason: ptr(nackReason)}
	if c.nackDelay > 0 {
		opts.Delay = ptr(uint64(c.nackDelay.Milliseconds()))
	}
	if c.maxDeliveries > 0 {
		opts.MaxDeliveries = ptr(uint32(c.maxDeliveries))
	}
	rng := rand.New(rand.NewPCG(c.seed, 0x756473))
	return func(numatest.Message) numatest.Decision {
		if rng.Float64() < c.nackRatio {
			return numatest.Nack(opts)
		}
		return numatest.Ack
	}
}

func ptr[T any](v T) *T { return &v }

// runCheck runs the connector's pre-flight check (its --check flag) with the runner's environment and
// returns its exit status.
func runCheck(ctx context.Context, c *config, env []string, stdout, stderr io.Writer) int {
	cmd := exec.CommandContext(ctx, c.command[0], append(c.command[1:], "--check")...)
	cmd.Env, cmd.Stdout, cmd.Stderr = env, stdout, stderr
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &ee) && ee.ExitCode() > 0:
		return ee.ExitCode()
	default:
		fmt.Fprintf(stderr, "udsource-run: running %s --check: %v\n", c.command[0], err)
		return exitFail
	}
}
