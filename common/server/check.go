package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/numaflow-connectors/sources/common/config"
	"github.com/numaflow-connectors/sources/common/source"
)

// preflightTimeout bounds a whole --check run: an unreachable broker ends it with a clear failure
// instead of a hang.
const preflightTimeout = 30 * time.Second

// runPreflight opens the driver, runs its pre-flight checks and closes it: --check.
func runPreflight[C any](ctx context.Context, app App[C], cfg *C, common *config.Common, logger *slog.Logger, stdout io.Writer) int {
	driver, err := app.Open(ctx, cfg, &Env{Log: logger, Platform: common.Platform})
	if err == nil && driver == nil {
		err = errors.New("open returned no driver")
	}
	if err != nil {
		fmt.Fprintf(stdout, "opening the connector failed: %v\n", err)
		return ExitFailed
	}
	passed := preflight(ctx, driver, stdout)
	closeCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), common.ShutdownTimeout)
	defer cancel()
	if err := driver.Close(closeCtx); err != nil {
		logger.Warn("closing the driver failed", "error", err)
	}
	if !passed {
		return ExitFailed
	}
	return ExitOK
}

// preflight runs the driver's pre-flight checks (or, for a driver without them, its start-up Check),
// prints them as a table to w and reports whether every one passed.
func preflight(ctx context.Context, d source.Driver, w io.Writer) bool {
	ctx, cancel := context.WithTimeout(ctx, preflightTimeout)
	defer cancel()
	var checks []source.Check
	switch p := d.(type) {
	case source.Preflighter:
		checks = p.Preflight(ctx)
	case source.Checker:
		checks = []source.Check{{Name: "broker reachable", Err: p.Check(ctx),
			Fix: "see the error; this connector checks no permissions before it starts"}}
	default:
		checks = []source.Check{{Name: "pre-flight checks", Err: errors.New("this connector has none")}}
	}
	ok := len(checks) > 0
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "CHECK\tRESULT\tDETAIL")
	for _, c := range checks {
		result, detail := "pass", ""
		switch {
		case c.Skipped != "":
			ok = false
			result, detail = "skipped", c.Skipped
		case c.Err != nil:
			ok = false
			result = "FAIL"
			detail = fmt.Sprintf("%s: %v", source.Classify(d, c.Err), c.Err)
			if errors.Is(c.Err, context.DeadlineExceeded) {
				detail = fmt.Sprintf("no answer within %s (%v)", preflightTimeout, c.Err)
			}
			if c.Fix != "" {
				detail += ". Fix: " + c.Fix
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", c.Name, result, oneLine(detail))
	}
	_ = tw.Flush()
	if ok {
		fmt.Fprintf(w, "all %d checks passed\n", len(checks))
	} else {
		fmt.Fprintln(w, "some checks did not pass")
	}
	return ok
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }
