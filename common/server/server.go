// Package server is the one call a connector's main makes: configuration, logging, metrics and
// health, the driver, the adapter, numaflow-go's gRPC server and graceful shutdown.
package server

import (
	"context"
	"log/slog"

	"github.com/numaflow-connectors/sources/common/config"
	"github.com/numaflow-connectors/sources/common/source"
)

// Env is what Open gets besides its own configuration.
type Env struct {
	Log      *slog.Logger
	Platform config.Platform
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
}

// Main runs app and exits: status 2 for bad configuration (before any network call), 1 when the
// driver cannot be built, 0 after a graceful shutdown.
func Main[C any](app App[C]) {
	panic("TODO")
}
