package source

import (
	"context"
	"log/slog"

	"github.com/numaproj/numaflow-go/pkg/sourcer"
	"github.com/prometheus/client_golang/prometheus"
)

// Source is the portable adapter: a numaflow-go sourcer.Sourcer over a Driver.
type Source struct {
	d    Driver
	opts Options
	log  *slog.Logger
}

var _ sourcer.Sourcer = (*Source)(nil)

// New wraps d. It starts the background receivers, the lease keeper and the acker; Close stops them.
// reg may be nil (metrics not registered).
func New(d Driver, opts Options, log *slog.Logger, reg prometheus.Registerer) (*Source, error) {
	panic("TODO")
}

func (s *Source) Read(ctx context.Context, req sourcer.ReadRequest, ch chan<- sourcer.Message) {}
func (s *Source) Ack(ctx context.Context, req sourcer.AckRequest)                             {}
func (s *Source) Nack(ctx context.Context, req sourcer.NackRequest)                           {}
func (s *Source) Pending(ctx context.Context) int64                                           { return -1 }
func (s *Source) ActivePartitions(ctx context.Context) []int32                                { return nil }
func (s *Source) TotalPartitions(ctx context.Context) *int32                                  { return nil }

// Ready reports whether the broker answered the last call (false while it is unreachable, its
// resource is missing, or access is denied).
func (s *Source) Ready() bool { return false }

// Shutdown stops receiving, releases buffered messages at once, waits up to Options.ReleaseWait for
// numa to ack what is in flight, releases the rest and flushes pending acks. Reads after it return
// empty at once. Idempotent.
func (s *Source) Shutdown(ctx context.Context) {}

// Close calls Shutdown, waits for every background goroutine and closes the driver. Idempotent.
func (s *Source) Close(ctx context.Context) error { return nil }
