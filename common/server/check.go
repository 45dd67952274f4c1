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

// runPreflight runs the connector's pre-flight checks, prints them and returns the exit status: App.
// Preflight when the connector has one, else the driver's (opened for the purpose and closed after).
func runPreflight[C any](ctx context.Context, app App[C], cfg *C, common *config.Common, logger *slog.Logger, stdout io.Writer) int {
	ctx, cancel := context.WithTimeout(ctx, preflightTimeout)
	defer cancel()
	env := &Env{Log: logger, Platform: common.Platform}
	if app.Preflight != nil {
		return exitFor(printChecks(stdout, app.Preflight(ctx, cfg, env), func(error) string { return "" }))
	}
	driver, err := app.Open(ctx, cfg, env)
	if err == nil && driver == nil {
		err = errors.New("open returned no driver")
	}
	if err != nil {
		fmt.Fprintf(stdout, "opening the connector failed: %v\n", err)
		return ExitFailed
	}
	passed := printChecks(stdout, driverChecks(ctx, driver), func(err error) string { return source.Classify(driver, err).String() })
	closeCtx, cancelClose := context.WithTimeout(context.WithoutCancel(ctx), common.ShutdownTimeout)
	defer cancelClose()
	if err := driver.Close(closeCtx); err != nil {
		logger.Warn("closing the driver failed", "error", err)
	}
	return exitFor(passed)
}

func exitFor(passed bool) int {
	if passed {
		return ExitOK
	}
	return ExitFailed
}

// driverChecks runs the driver's pre-flight checks or, for a driver without them, its start-up Check.
func driverChecks(ctx context.Context, d source.Driver) []source.Check {
	switch p := d.(type) {
	case source.Preflighter:
		return p.Preflight(ctx)
	case source.Checker:
		return []source.Check{{Name: "broker reachable", Err: p.Check(ctx),
			Fix: "see the error; this connector checks no permissions before it starts"}}
	}
	return []source.Check{{Name: "pre-flight checks", Err: errors.New("this connector has none")}}
}

// printChecks prints checks as a table to w (kind names an error's class, "" for none) and reports
// whether every one passed.
func printChecks(w io.Writer, checks []source.Check, kind func(error) string) bool {
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
			detail = c.Err.Error()
			if k := kind(c.Err); k != "" {
				detail = k + ": " + detail
			}
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
