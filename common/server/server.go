// Package server is the one call a connector's main makes: configuration, logging, metrics and
// health, the driver, the adapter, numa's source protocol served over a unix socket (sourcesvc.go,
// with numaflow-go's generated types and server-info file) and graceful shutdown.
package server

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/numaflow-connectors/sources/common/config"
	"github.com/numaflow-connectors/sources/common/config/envdoc"
	"github.com/numaflow-connectors/sources/common/logging"
	"github.com/numaflow-connectors/sources/common/source"
	"github.com/numaflow-connectors/sources/common/version"
)

// Env is what Open gets besides its own configuration.
type Env struct {
	Log      *slog.Logger
	Platform config.Platform
	// Budget is the adapter's receive budget (PREFETCH messages, PREFETCH_BYTES bytes, defaults
	// resolved), for a driver whose broker takes a flow-control window from its client (MQTT's
	// Receive Maximum). Such a driver receives one batch at a time; PREFETCH's default depends on
	// the receive concurrency (source.DefaultPrefetch), and Messages is the one for a concurrency of 1.
	Budget Budget
	// Fallback is DEAD_LETTER_FALLBACK as set: what the adapter does with a message to dead-letter when
	// the driver has no target; empty when it is not set (the adapter's default then follows the
	// driver's Capabilities.OrderedAcks). For a driver whose broker cannot take a message back (MQTT: a
	// kept message holds back the acknowledgements after it) and that warns about an explicit nack.
	Fallback source.Fallback
}

// Budget is how much the adapter holds at most: Messages messages and Bytes payload bytes.
// MaxMessageBytes is MAX_MESSAGE_BYTES: until a driver has seen a message's size, a window it takes
// from the broker should hold no more messages of this size than Bytes holds (at least one), as the
// adapter's first receives do; 0 when unknown.
type Budget struct {
	Messages        int
	Bytes           int64
	MaxMessageBytes int64
}

// App describes a connector binary. C is its configuration struct, read from env vars (caarlos0/env
// tags plus a desc tag for --help and the README); it may implement config.Validator.
type App[C any] struct {
	Name        string // e.g. "sqs-source"
	Description string // one line for --help
	// Open builds the driver from a valid configuration. It may build clients but must not fail
	// because the broker is unreachable or a resource is missing (implement source.Checker for that):
	// the source starts, reports not-ready and keeps retrying, so an outage never crash-loops the pod.
	Open func(ctx context.Context, cfg *C, env *Env) (source.Driver, error)
	// Preflight, when set, is what --check runs instead of Open and the driver's source.Preflighter:
	// for a broker where opening the driver already joins it as a running replica would (MQTT: a
	// persistent session in the share group, which a check must not leave behind). It makes its own
	// throwaway connections and returns one result per check.
	Preflight func(ctx context.Context, cfg *C, env *Env) []source.Check
}

// PlatformValidator is implemented by a connector's configuration whose checks need what Numaflow sets
// in the container (config.Platform: pod, namespace, pipeline, vertex or MonoVertex names), which the
// common configuration reads: Run calls it once both loaded without problems, before any network
// call, and its problems (config.Problem, joined) exit 2 like any other.
type PlatformValidator interface {
	ValidatePlatform(p config.Platform) error
}

// Exit statuses of Run.
const (
	ExitOK     = 0 // graceful shutdown, --help, --version
	ExitFailed = 1 // the driver, the adapter or a server could not start
	ExitConfig = 2 // bad flags or configuration (before any network call)
)

// Bounds of the shutdown and start-up steps around the configured SHUTDOWN_TIMEOUT.
const (
	grpcStopWait   = time.Second            // the gRPC server after the source is closed
	httpStopWait   = 500 * time.Millisecond // the metrics server
	httpReadHeader = 5 * time.Second
)

// Main runs app and exits: status 2 for bad configuration (before any network call), 1 when the
// driver cannot be built, 0 after a graceful shutdown (on SIGTERM or SIGINT).
func Main[C any](app App[C]) {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	code := Run(ctx, app, os.Args[1:], os.Environ(), os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// Run is Main without the process: args are the command-line arguments (without the program name),
// environ the environment in os.Environ form. It serves until ctx is done (Main cancels it on SIGTERM
// or SIGINT), then shuts down within SHUTDOWN_TIMEOUT and returns the exit status.
func Run[C any](ctx context.Context, app App[C], args []string, environ []string, stdout, stderr io.Writer) int {
	return run(ctx, app, args, environ, stdout, stderr, os.DirFS("/"))
}

// run is Run reading the container's cgroup files under root (a test's fake tree).
func run[C any](ctx context.Context, app App[C], args []string, environ []string, stdout, stderr io.Writer, root fs.FS) int {
	// Flags.
	fs := flag.NewFlagSet(app.Name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	var help, showVersion, envJSON, validate, check bool
	var cpuProfile string
	fs.BoolVar(&help, "help", false, "print the environment variables this connector reads and exit")
	fs.BoolVar(&help, "h", false, "same as --help")
	fs.BoolVar(&showVersion, "version", false, "print the version and exit")
	fs.BoolVar(&envJSON, "env-json", false, "print the environment variables as JSON (for tools that check manifests) and exit")
	fs.StringVar(&cpuProfile, "cpu-profile", "", "write a CPU profile of the whole run to this file (open it with go tool pprof)")
	fs.BoolVar(&check, "check", false, "pre-flight check: load and validate the configuration as a start would, connect to the broker and verify everything the connector will need (its queue, subscription or stream, and each permission), print a table of checks, and exit: 0 when all pass, 1 when not, 2 for bad configuration; no message is received, acked or changed")
	fs.BoolVar(&validate, "validate", false, "load and validate the configuration from the environment exactly as a start would, print every problem, and exit: 0 when valid, 2 when not; no network call")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: %s [--help] [--version] [--validate] [--check]\nConfigured by environment variables: run %s --help for the list.\n", app.Name, app.Name)
	}
	if err := fs.Parse(args); err != nil {
		return ExitConfig
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "%s: unexpected argument %q (configuration is read from environment variables; see --help)\n", app.Name, fs.Arg(0))
		return ExitConfig
	}
	if help {
		if err := envdoc.WriteHelp(stdout, app.Name, app.Description, envdoc.Groups(app.Name, new(C))...); err != nil {
			fmt.Fprintln(stderr, err)
			return ExitFailed
		}
		return ExitOK
	}
	if showVersion {
		fmt.Fprintln(stdout, version.String(app.Name))
		return ExitOK
	}
	if envJSON {
		if err := envdoc.WriteJSON(stdout, envdoc.Groups(app.Name, new(C))...); err != nil {
			fmt.Fprintln(stderr, err)
			return ExitFailed
		}
		return ExitOK
	}

	// Configuration: every problem of both structs at once, before any network call.
	var (
		cfg    C
		common config.Common
	)
	if bad := printProblems(stderr, config.Load(&cfg, environ), config.Load(&common, environ)); bad {
		return ExitConfig
	}
	if pv, ok := any(&cfg).(PlatformValidator); ok {
		if bad := printProblems(stderr, pv.ValidatePlatform(common.Platform)); bad {
			return ExitConfig
		}
	}
	if validate {
		fmt.Fprintf(stdout, "%s: configuration valid\n", app.Name)
		return ExitOK
	}
	if cpuProfile != "" {
		stopProfile, err := startCPUProfile(cpuProfile)
		if err != nil {
			fmt.Fprintf(stderr, "--cpu-profile: %v\n", err)
			return ExitConfig
		}
		defer stopProfile()
	}

	// Logging.
	ver, commit := version.Get()
	logger, err := logging.New(stderr, common.LogLevel, common.LogFormat)
	if err != nil { // Common.Validate already checked both values
		fmt.Fprintf(stderr, "config: %v\n", err)
		return ExitConfig
	}
	logger = logger.With("connector", app.Name, "version", ver, "replica", common.Replica)
	defer restoreStdLog()()
	logging.RouteStdLog(logger)
	logger.Info("starting", "commit", commit, "numaflow_go", version.NumaflowGo(), "go", runtime.Version(),
		"pipeline", common.Pipeline, "vertex", common.Vertex, "pod", common.Pod)
	logger.Debug("configuration", "config", cfg, "common", common)

	if check { // no metrics server, no memory settings: nothing but the checks
		return runPreflight(ctx, app, &cfg, &common, logger, stdout)
	}

	// Memory: the Go runtime's soft limit, the payload budget and the collector's headroom from the
	// container's limit.
	limit, hasLimit := containerMemoryLimit(root, logger)
	prefetchBytes, restoreMemLimit := applyMemoryLimit(limit, hasLimit, environ, common.PrefetchBytes, logger)
	defer restoreMemLimit()
	defer applyGCHeadroom(environ, common.GCHeadroom, limit, hasLimit, logger)()

	// Metrics and health.
	reg := prometheus.NewRegistry()
	buildInfo := prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: "numaflow_source", Name: "build_info", Help: "Always 1; the labels say what runs.",
		ConstLabels: prometheus.Labels{"connector": app.Name, "version": ver, "commit": commit, "numaflow_go": version.NumaflowGo()},
	})
	buildInfo.Set(1)
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), buildInfo)
	h := &health{}
	stopHTTP := func(context.Context) {}
	if common.MetricsAddr != "" {
		stopHTTP, err = serveHTTP(common.MetricsAddr, reg, h, logger)
		if err != nil {
			logger.Error("starting the metrics server failed", "addr", common.MetricsAddr, "error", err)
			return ExitFailed
		}
	}
	defer stopHTTP(context.WithoutCancel(ctx))

	// Driver and adapter.
	opts := sourceOptions(&common, prefetchBytes)
	env := &Env{Log: logger, Platform: common.Platform, Budget: Budget{Messages: common.PrefetchOrDefault(), Bytes: opts.PrefetchBytes,
		MaxMessageBytes: int64(opts.MaxMessageBytes)}, Fallback: opts.Fallback}
	driver, err := app.Open(ctx, &cfg, env)
	if err == nil && driver == nil {
		err = errors.New("open returned no driver")
	}
	if err != nil {
		logger.Error("opening the driver failed", "error", err)
		return ExitFailed
	}

	// A driver's start-up check (source.Checker) is the adapter's first readiness probe, which logs
	// its outcome: one broker call for the log line and readiness.
	src, err := source.New(driver, opts, logger, reg)
	if err != nil {
		logger.Error("creating the source failed", "error", err)
		closeCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), common.ShutdownTimeout)
		defer cancel()
		if err := driver.Close(closeCtx); err != nil {
			logger.Warn("closing the driver failed", "error", err)
		}
		return ExitFailed
	}
	h.src.Store(src)

	// numa's source protocol (sourcesvc.go). Its context is ours to cancel after the source is closed;
	// it stops by itself after a panic in a handler.
	grpcCtx, stopGRPC := context.WithCancel(context.WithoutCancel(ctx))
	defer stopGRPC()
	grpcDone := make(chan error, 1)
	for _, p := range []string{common.SourceSocket, common.SourceServerInfoFile} {
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			logger.Warn("creating a directory failed", "path", filepath.Dir(p), "error", err)
		}
	}
	go func() {
		grpcDone <- ServeSource(grpcCtx, src, Listen{common.SourceSocket, common.SourceServerInfoFile, common.ContainerType})
	}()
	logger.Info("serving", "socket", common.SourceSocket, "server_info_file", common.SourceServerInfoFile)

	code := ExitOK
	select {
	case <-ctx.Done():
		logger.Info("shutting down", "reason", context.Cause(ctx))
	case err := <-grpcDone:
		grpcDone <- err // for the wait below
		if err != nil {
			logger.Error("grpc server failed", "socket", common.SourceSocket, "error", err)
			code = ExitFailed
		} else {
			logger.Warn("grpc server stopped; shutting down")
		}
	}

	// Shutdown: release held messages at once, flush acks, close the driver, all within
	// SHUTDOWN_TIMEOUT; then stop the gRPC server (numa's streams end with it).
	h.stopping.Store(true)
	shutCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), common.ShutdownTimeout)
	defer cancel()
	start := time.Now()
	src.Shutdown(shutCtx)
	if err := src.Close(shutCtx); err != nil {
		logger.Warn("closing the source failed", "error", err)
	}
	stopGRPC()
	t := time.NewTimer(grpcStopWait)
	defer t.Stop()
	select {
	case <-grpcDone:
	case <-t.C:
		logger.Warn("grpc server still stopping; exiting anyway")
	}
	// A server that stopped by itself without our signal (e.g. after a panic in a handler) is a failure.
	if code == ExitOK && ctx.Err() == nil {
		code = ExitFailed
	}
	logger.Info("stopped", "took", time.Since(start).Round(time.Millisecond).String(), "exit_status", code)
	return code
}

// printProblems prints every configuration problem, one line each, and reports whether there were any.
func printProblems(w io.Writer, errs ...error) bool {
	bad := false
	for _, err := range errs {
		if err == nil {
			continue
		}
		bad = true
		var ce *config.Errors
		if !errors.As(err, &ce) {
			if j, ok := err.(interface{ Unwrap() []error }); ok { // errors.Join of problems
				printProblems(w, j.Unwrap()...)
				continue
			}
			var fe *config.FieldError
			if errors.As(err, &fe) {
				fmt.Fprintf(w, "config: %s: %s\n", fe.Var, fe.Problem)
				continue
			}
			fmt.Fprintf(w, "config: %v\n", err)
			continue
		}
		for _, p := range ce.Problems {
			if p.Var == "" {
				fmt.Fprintf(w, "config: %s\n", p.Problem)
			} else {
				fmt.Fprintf(w, "config: %s: %s\n", p.Var, p.Problem)
			}
		}
	}
	return bad
}

// restoreStdLog saves the standard logger's settings and returns a func that puts them back, so a Run
// inside a test leaves the log package as it found it.
func restoreStdLog() func() {
	out, flags, prefix := log.Writer(), log.Flags(), log.Prefix()
	return func() {
		log.SetOutput(out)
		log.SetFlags(flags)
		log.SetPrefix(prefix)
	}
}

// health answers /healthz and /readyz.
type health struct {
	src      atomic.Pointer[source.Source]
	stopping atomic.Bool
}

func (h *health) healthz(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, _ = io.WriteString(w, "ok\n")
}

func (h *health) readyz(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	src := h.src.Load()
	switch {
	case h.stopping.Load():
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = io.WriteString(w, "shutting down\n")
	case src == nil:
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = io.WriteString(w, "starting\n")
	case !src.Ready():
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = io.WriteString(w, "broker unreachable\n")
	default:
		_, _ = io.WriteString(w, "ready\n")
	}
}

// serveHTTP serves /metrics, /healthz and /readyz on addr and returns the func that stops the server
// (within httpStopWait of its ctx).
func serveHTTP(addr string, reg *prometheus.Registry, h *health, logger *slog.Logger) (func(context.Context), error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listening on %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	mux.HandleFunc("GET /healthz", h.healthz)
	mux.HandleFunc("GET /readyz", h.readyz)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: httpReadHeader,
		ErrorLog: slog.NewLogLogger(logger.Handler(), slog.LevelWarn)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			logger.Error("metrics server failed", "error", err)
		}
	}()
	logger.Info("serving metrics and health", "addr", ln.Addr().String())
	return func(ctx context.Context) {
		ctx, cancel := context.WithTimeout(ctx, httpStopWait)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			_ = srv.Close()
		}
		<-done
	}, nil
}

// sourceOptions maps the common configuration onto the adapter's options; prefetchBytes is
// PREFETCH_BYTES with its default resolved (applyMemoryLimit).
func sourceOptions(c *config.Common, prefetchBytes int64) source.Options {
	return source.Options{
		Partition:       int32(c.Replica),
		ReadBatchSize:   c.ReadBatchSize,
		Prefetch:        c.Prefetch,
		PrefetchBytes:   prefetchBytes,
		MaxMessageBytes: c.MaxMessageBytes,
		Fallback:        source.Fallback(c.DeadLetterFallback),
		AckRetry:        c.AckRetryTimeout,
		PendingRefresh:  c.PendingRefresh,
		ReleaseWait:     c.ReleaseWaitOrDefault(),
	}
}

// startCPUProfile starts writing a CPU profile to path; the returned func ends it.
func startCPUProfile(path string) (func(), error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}, nil
}
