package source

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/numaproj/numaflow-go/pkg/sourcer"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/numaflow-connectors/sources/common/metrics"
)

// Source is the portable adapter: a numaflow-go sourcer.Sourcer over a Driver. It is a facade; each
// mechanism lives in its own file and type:
//
//	ledger.go    what is held, in which state, and the count and byte budgets (the one place that
//	             decides whether there is room to receive)
//	moves.go     how a held message moves between states: read, answered, released, forgotten
//	receive.go   the receive scheduler: how many Receive calls run, and what late ones bring
//	read.go      Read: bounded by numa's deadline, waits for data, never hands an offset out twice
//	commit.go    acks and releases: batched, retried per entry, one retry loop
//	nack.go      Nack: delay, MaxDeliveries, dead letters, key order
//	lease.go     the lease keeper
//	pending.go   the cached backlog
//	ready.go     readiness and the prober
//	shutdown.go  Shutdown, Close, Kill
//	errlog.go    the broker-error log limiter
type Source struct {
	d    Driver
	caps Capabilities
	opts Options
	log  *slog.Logger
	m    *metrics.Source
	dl   DeadLetterer  // nil when the driver cannot dead-letter
	dec  OffsetDecoder // nil when offsets cannot be turned back into handles

	led     *ledger
	recv    *receivers
	commits *committer
	pending *pendingCache
	ready   *readiness
	errs    *errorLog

	streamMu sync.Mutex
	stream   any      // the context of numa's current read stream, compared by identity (see watchStream)
	streamID uint64   // numbers the read streams
	nacks    idCounts // delivery counts of messages nacked back to the broker (under led.mu)

	jobs     *tracker // outstanding broker commits (acks, releases, dead letters)
	bg       *tracker // lease keeper, pending refreshes, prober
	bgCtx    context.Context
	bgCancel context.CancelFunc
	shutting atomic.Bool

	shutOnce  sync.Once
	closeOnce sync.Once
	closeErr  error
}

var _ sourcer.Sourcer = (*Source)(nil)

// New wraps d. It starts the receive scheduler and the lease keeper; Close stops them. reg may be nil
// (metrics not registered).
func New(d Driver, opts Options, log *slog.Logger, reg prometheus.Registerer) (*Source, error) {
	if d == nil {
		return nil, errors.New("source: nil driver")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	caps := d.Capabilities()
	caps.ReceiveConcurrency = max(caps.ReceiveConcurrency, 1)
	caps.AckConcurrency = max(caps.AckConcurrency, 1)
	opts, err := opts.withDefaults(caps)
	if err != nil {
		return nil, err
	}
	s := &Source{
		d: d, caps: caps, opts: opts, log: log, m: metrics.New(reg),
		led:  newLedger(opts.Prefetch, opts.PrefetchBytes, opts.MaxMessageBytes, caps.OrderedKeys, caps.Lease > 0),
		jobs: newTracker(),
		bg:   newTracker(),
	}
	s.dl, _ = d.(DeadLetterer)
	s.dec, _ = d.(OffsetDecoder)
	s.led.onChange = s.setGauges
	// Background work derives from a context owned by the adapter, cancelled by Close: numa's
	// per-call contexts end with each call and must not cut broker commits short.
	s.bgCtx, s.bgCancel = context.WithCancel(context.Background()) //nolint:contextcheck // owned by Close
	s.errs = newErrorLog(s.bgCtx, log, s.m)
	chk, _ := d.(Checker)
	s.ready = newReadiness(log, s.m, chk, func(err error) Code { return Classify(d, err) }, s.bg, s.bgCtx)
	s.commits = newCommitter(s)
	s.pending = newPendingCache(s)
	s.m.Pending.Set(-1)
	s.recv = startReceivers(s)
	if caps.Lease > 0 {
		s.bg.run(func() { s.leaseKeeper(s.bgCtx) })
	}
	return s, nil
}

// Ready reports whether the broker answered the last call (false while it is unreachable, its
// resource is missing, or access is denied).
func (s *Source) Ready() bool { return s.ready.get() }

// ActivePartitions is this replica's partition: every offset carries it.
func (s *Source) ActivePartitions(context.Context) []int32 { return []int32{s.opts.Partition} }

// TotalPartitions is unknown (nil): replicas come and go, so no exact count exists.
func (s *Source) TotalPartitions(context.Context) *int32 { return nil }

// Pending returns the broker's backlog for the whole source (see pendingCache); -1 when unknown.
func (s *Source) Pending(ctx context.Context) int64 { return s.pending.get(ctx) }

// setGauges publishes the ledger's per-state counts; called by the ledger under its lock.
func (s *Source) setGauges(counts [numStates]int, pools [numPools]budget) {
	s.m.Buffered.Set(float64(counts[buffered]))
	s.m.InFlight.Set(float64(counts[inFlight]))
	s.m.Delayed.Set(float64(counts[delayed]))
	s.m.HeldBytes.Set(float64(pools[receivePool].bytes))
}
