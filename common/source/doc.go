// Package source is the portable adapter every connector shares: Source implements numaflow-go's
// sourcer.Sourcer over a small, error-returning Driver (driver.go), and owns what is the same for
// every broker, so a driver only receives, acks, nacks, extends leases and reports its backlog.
//
// # Guarantees
//
//   - At least once: a message is committed at the broker only after numa acks it. Anything held when
//     numa's stream ends, at shutdown or in a crash comes back (released at once, or after its lease).
//   - Never stalls: Read returns by numa's deadline and waits for data until then; while the ledger
//     has room a Receive is always running; a delayed nack, a slow commit or a bad message never takes
//     receive room from new messages.
//   - Stable offsets: the offset is the broker's message id, the same on every redelivery; a message
//     the broker redelivers while it is held here is not handed to numa a second time, nor counted as
//     a delivery: MaxDeliveries counts deliveries to numa.
//   - Honest Pending: the broker's backlog from a reading at most Options.PendingRefresh old, never
//     below what is held here; it errs high while a backlog drains, never low.
//   - No dead handles: a held message's lease is extended until numa answers (lease.go); one whose
//     lease ran out anyway before numa read it (a cut longer than the lease, or MaxExtension) is
//     released to the broker, not handed to numa with a handle that may be dead while another replica
//     has the message.
//
// # Budgets
//
// Memory is bounded by count and by bytes (ledger.go):
//
//   - Options.Prefetch messages and Options.PrefetchBytes bytes (WireSize: payload, offset, keys,
//     headers), buffered or in flight at numa, or kept for a dead letter until it is done. Receives
//     ask for what fits (from a running estimate of message size); a receive that brings more bytes
//     than fit hands the rest back to the broker at once. A single message larger than PrefetchBytes
//     is still delivered, when nothing else is held: one at a time. While numa reads slower than
//     that (a buffered message reached MaxExtension before numa read it), receives fill no more than
//     numa read meanwhile, so unread messages are not released and received again and again.
//   - Locally delayed redeliveries (LocalRedelivery brokers) have a pool of the same size of their own;
//     a nack that does not fit goes back to the broker with its delay.
//   - Messages numa answered keep only their handle while the commit runs (a dead letter keeps its
//     body, counted above), at most 2 x Prefetch of them; beyond that, receiving pauses until commits
//     land.
//   - MaxMessageBytes bounds one message as numa receives it (at most numa's 64 MiB gRPC limit): a
//     larger one is dead-lettered, never sent to fail numa's read stream.
//
// # Read-ahead and out-of-order answers
//
// Reads may come while earlier batches are unanswered (numa's read-ahead), and acks and nacks may
// come one by one, in any order, for any subset of what was read (numa's streaming mode). Each message
// is in flight from its read to its answer and is never handed out again while in flight; a second
// answer, or an answer for an offset this process never handed out, is harmless.
//
// # Key order
//
// For brokers that order by key (Capabilities.OrderedKeys), every path that takes a message away from
// numa (a nack, MaxDeliveries, an oversize message, a failed dead letter, an expired lease, shutdown)
// takes the later buffered messages of its key with it, and a release our own receive gets back is
// taken back only in key order.
//
// # Ordered acknowledgements
//
// For brokers that take acknowledgements only in order (Capabilities.OrderedAcks: MQTT), a message
// kept for good would hold back every later one: the dead-letter fallback defaults to drop, and a dead
// letter refused for good goes to the fallback.
package source
