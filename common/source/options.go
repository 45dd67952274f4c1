package source

import (
	"fmt"
	"time"
)

// Fallback is what the adapter does with a message that must be dead-lettered when the driver has no
// dead-letter target.
type Fallback string

const (
	// FallbackNack nacks the message: it stays at the broker, whose own redrive policy (if any) applies.
	FallbackNack Fallback = "nack"
	// FallbackDrop acks the message and logs it with the reason: it is gone.
	FallbackDrop Fallback = "drop"
)

// Options tune the adapter. The server fills them from the common configuration; zero values take the
// defaults documented on each field.
type Options struct {
	// Partition is the partition id put on every offset and reported by ActivePartitions
	// (NUMAFLOW_REPLICA).
	Partition int32
	// ReadBatchSize is numa's batch size (NUMAFLOW_READ_BATCH_SIZE, default 500); it sizes prefetch.
	ReadBatchSize int
	// Prefetch is the most messages held at once, buffered or in flight at numa (default
	// DefaultPrefetch). It bounds memory and the number of leases held. Messages numa already answered
	// do not count while their commit is under way, up to another 2 x Prefetch.
	Prefetch int
	// PrefetchBytes is the most message bytes (WireSize: payload, offset, keys, headers) held at once
	// for numa, buffered or in flight (default DefaultPrefetchBytes). A single message larger than it
	// is still delivered, one at a time. Locally delayed redeliveries have a budget of their own of the
	// same size.
	PrefetchBytes int64
	// MaxMessageBytes: a larger message (WireSize: payload, offset, keys, headers) is dead-lettered (or
	// handled by Fallback) with a reason instead of being handed to numa (default
	// DefaultMaxMessageBytes; numa's read stream fails on a message over its gRPC limit, and numa
	// cannot write one over its inter-step buffer's max_payload).
	MaxMessageBytes int
	// Fallback applies when a message must be dead-lettered and the driver has no target (default nack;
	// drop for a driver with Capabilities.OrderedAcks, where a message kept for good stops the source).
	Fallback Fallback
	// AckRetry bounds how long an ack (or nack or extend) is retried on transient errors before it is
	// given up and left to broker redelivery (default 30 s).
	AckRetry time.Duration
	// PendingRefresh is how long a backlog reading is reused before the broker is asked again
	// (default 5 s, numa's own polling interval).
	PendingRefresh time.Duration
	// ReleaseWait is how long Shutdown waits for numa to ack the messages in flight before it releases
	// them to the broker anyway (default 2 s).
	ReleaseWait time.Duration
	// Linger is how long a Read that already has messages keeps waiting for more to fill its batch
	// (default 20 ms; never past the read deadline).
	Linger time.Duration
	// ExtendEvery is how often the lease keeper runs (default Lease/10, between 100 ms and 5 s).
	ExtendEvery time.Duration
}

// DefaultPrefetch is Prefetch when it is not set: room for the batch numa holds plus what the
// driver's receives fetch at once (ReceiveConcurrency receives of up to a batch each), and at least two
// batches. With less, receives wait for numa's acks instead of running while numa works: a driver
// with four concurrent pulls of 500 and a prefetch of two batches runs two of them at most, and only
// after an ack. A driver with one receive at a time gets two batches, the budget server.Env.Budget
// reports before the driver exists. The byte budget (PrefetchBytes) bounds the memory either way.
func DefaultPrefetch(batch int, c Capabilities) int {
	per := batch
	if c.MaxReceive > 0 {
		per = min(c.MaxReceive, batch)
	}
	return max(2*batch, batch+max(c.ReceiveConcurrency, 1)*per)
}

// DefaultPrefetchBytes is PrefetchBytes when neither the option nor the container's memory limit sets it.
const DefaultPrefetchBytes = 64 << 20

// DefaultMaxMessageBytes is the default Options.MaxMessageBytes (and MAX_MESSAGE_BYTES): the 1 MiB
// max_payload of numa's inter-step buffer (JetStream) by default, less 16 KiB for what numa adds to a
// message (its id, its own header). A larger message reaches numa, which then fails to write it to the
// buffer again and again: the vertex stalls on it.
const DefaultMaxMessageBytes = 1<<20 - 16<<10

func (o Options) withDefaults(c Capabilities) (Options, error) {
	if o.ReadBatchSize <= 0 {
		o.ReadBatchSize = 500
	}
	if o.Prefetch <= 0 {
		o.Prefetch = DefaultPrefetch(o.ReadBatchSize, c)
	}
	if o.PrefetchBytes <= 0 {
		o.PrefetchBytes = DefaultPrefetchBytes
	}
	if o.MaxMessageBytes <= 0 {
		o.MaxMessageBytes = DefaultMaxMessageBytes
	}
	switch o.Fallback {
	case "":
		o.Fallback = FallbackNack
		if c.OrderedAcks {
			o.Fallback = FallbackDrop
		}
	case FallbackNack, FallbackDrop:
	default:
		return o, fmt.Errorf("unknown fallback %q", o.Fallback)
	}
	if o.AckRetry <= 0 {
		o.AckRetry = 30 * time.Second
	}
	if o.PendingRefresh <= 0 {
		o.PendingRefresh = 5 * time.Second
	}
	if o.ReleaseWait <= 0 {
		o.ReleaseWait = 2 * time.Second
	}
	if o.Linger <= 0 {
		o.Linger = 20 * time.Millisecond
	}
	if o.ExtendEvery <= 0 {
		o.ExtendEvery = min(max(c.Lease/10, 100*time.Millisecond), 5*time.Second)
	}
	return o, nil
}
