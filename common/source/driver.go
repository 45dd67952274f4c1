package source

import (
	"context"
	"time"
)

// Handle is a driver's ack handle for one delivery of a message: an SQS receipt handle, a Pub/Sub ack
// ID, a Redis entry ID. The adapter never looks inside it; it only passes back the newest handle it was
// given for a message.
type Handle any

// Message is one delivery of one broker message, as a driver's Receive returns it.
type Message struct {
	// ID identifies the message, not the delivery: it must be unique across every replica reading the
	// same queue, subscription or group, and the same on every redelivery of the message. The adapter
	// turns it into the Numaflow offset, so a reused ID loses a message and an ID that changes on
	// redelivery loses the free deduplication numa gives. Must not be empty.
	ID string
	// Handle is the broker's handle for this delivery (see Handle).
	Handle Handle
	// Payload is the message body, passed to numa byte for byte.
	Payload []byte
	// EventTime is the broker's timestamp for the message (sent or publish time). Never zero: use the
	// receive time if the broker gives none.
	EventTime time.Time
	// Keys become the Numaflow message keys (e.g. the FIFO group or the ordering key). May be nil.
	Keys []string
	// Headers become the Numaflow message headers. May be nil.
	//
	// The adapter never writes to Payload, Keys or Headers (invalid UTF-8 is replaced in copies), so a
	// driver may share them with its client's buffers or between deliveries of the same message.
	Headers map[string]string
	// Deliveries is how many times the broker has delivered this message, this delivery included
	// (1 = first delivery); 0 when the broker cannot tell. The adapter keeps its own count as well and
	// uses the larger of the two for NackOptions.MaxDeliveries.
	Deliveries int
}

// Capabilities tell the adapter how to drive a driver. Zero values are safe defaults.
type Capabilities struct {
	// MaxReceive is the most messages one Receive may return (SQS: 10). 0 means no limit of the
	// broker's own (the adapter still passes a max).
	MaxReceive int
	// ReceiveConcurrency is the most Receive calls the adapter runs at once (default 1). The adapter
	// starts with one, doubles the calls while receives come back full, and drops back to one when
	// receives come back empty with no full batch for a second, so an idle source makes one call at a
	// time. Calls run only while the budgets have room.
	ReceiveConcurrency int
	// FullReceive is the fewest messages that make a Receive count as full, the sign that the broker
	// holds more and another call would find some. 0 means as many as asked (SQS and Redis fill a
	// receive whenever they can). A broker that answers with fewer than asked while more are waiting
	// sets it lower: Pub/Sub's Pull returns whatever it has at hand (the emulator at most 100 of the
	// 500 asked), so there any message counts (1). Only a receive that could ask for MaxReceive
	// counts: one the budgets cut short says nothing about the broker.
	FullReceive int
	// MaxAck is the most handles one Ack, Nack or Extend call may carry (SQS: 10). 0 means no limit.
	MaxAck int
	// AckConcurrency is the most Ack/Nack/Extend calls the adapter runs at once (default 1).
	AckConcurrency int
	// Lease is how long a delivery stays invisible to other consumers after Receive or Extend, before
	// the broker would redeliver it (SQS visibility timeout, Pub/Sub ack deadline, Redis claim idle
	// time). 0 means the broker has no leases and Extend is never called.
	Lease time.Duration
	// MaxExtension is the longest total time the adapter keeps extending the lease of one delivery
	// (a connector setting such as SQS_MAX_EXTENSION); after it the lease is left to expire and the
	// broker redelivers. 0 means no limit.
	MaxExtension time.Duration
	// MaxNackDelay is the longest delay Nack can honour (SQS 12h, Pub/Sub 600s). Longer nack delays are
	// cut to it. Ignored with LocalRedelivery.
	MaxNackDelay time.Duration
	// LocalRedelivery means the broker cannot make a held message readable again on demand: the
	// adapter then keeps a nacked message (extending its lease) and hands it to numa again itself after
	// the nack delay. Nack is then called only to give messages up: at shutdown, for what a receive
	// brought beyond the budgets, and for a nacked message when the adapter's delayed pool is full
	// (with the delay it was nacked with, which the driver may treat as 0).
	LocalRedelivery bool
	// OrderedKeys means the broker delivers messages with the same key in order (SQS FIFO groups,
	// Pub/Sub ordering keys). Whenever the adapter takes a message away from numa (a nack,
	// MaxDeliveries, oversize, a failed dead letter, shutdown), it also releases the later messages of
	// the same key that it still holds unread, so order survives every path.
	OrderedKeys bool
	// OrderedAcks means the broker takes acknowledgements only in the order it delivered the messages
	// (MQTT): a message the adapter keeps holds back every acknowledgement after it, and the broker
	// stops sending once its window of unacknowledged messages is full. Keeping a message for good (the
	// nack fallback) would then stop the source, so Options.Fallback defaults to drop, and a dead letter
	// the target refuses for good (a non-transient error) goes to the fallback as if there were none.
	OrderedAcks bool
}

// Driver is what a broker connector implements. The adapter (Source) turns it into a numaflow-go
// sourcer.Sourcer and owns batching, retries, leases, offsets, nack options, pending, shutdown and
// metrics, so a driver stays small and does none of that.
//
// Every method is called from several goroutines at once and must be safe for that.
//
// Errors: return the broker's error wrapped with %w and a gerund naming the resource
// ("receiving from queue X: %w"). Do not retry inside a method; the adapter retries with backoff and
// decides what is transient from ErrorCode. Do not log errors you return. Never panic.
type Driver interface {
	// Capabilities is called once, before any other method.
	Capabilities() Capabilities

	// Receive returns up to max messages (max <= Capabilities.MaxReceive when that is set). It may
	// block waiting for messages (a long poll) until ctx is done; the adapter calls it in the background,
	// never on numa's read deadline, so it should wait as long as the broker allows rather than poll.
	// It returns (nil, nil) when a wait ended with nothing. When ctx is cancelled it returns promptly.
	// The adapter does not cancel a Receive to stop: at shutdown it stops calling, waits a few seconds
	// for the calls that run, and releases what they return, so a driver must not detach or abandon a
	// call of its own (no goroutine that outlives Receive).
	// It must not return a message it returned before unless the broker redelivered it (a redelivery
	// carries the same ID and a new Handle; the adapter then keeps the newest handle and does not hand
	// the message to numa twice while it is in flight).
	// Every returned message is leased for Capabilities.Lease from the moment of the call.
	Receive(ctx context.Context, max int) ([]*Message, error)

	// Ack commits the deliveries at the broker: they must never be delivered again. len(handles) <=
	// Capabilities.MaxAck when that is set. Acking a handle twice must not be an error. A handle the
	// broker refuses as expired or invalid (the message may come back: at-least-once) is reported as
	// failed with an error that ErrorCode classifies InvalidArgument: the adapter logs and counts it and
	// does not retry it. When some handles succeed and others fail, return a *BatchError so only the
	// failed ones are retried.
	Ack(ctx context.Context, handles []Handle) error

	// Nack makes the deliveries readable again after delay (0 = at once; delay <= MaxNackDelay).
	// Same batch rules and error rules as Ack. Used for numa's nacks, for releasing held messages at
	// shutdown, for what a receive brought beyond the budgets, and for later messages of a key.
	Nack(ctx context.Context, handles []Handle, delay time.Duration) error

	// Extend renews the lease of the deliveries to lease from now. Same batch and error rules as Ack.
	// Not called when Capabilities.Lease is 0.
	Extend(ctx context.Context, handles []Handle, lease time.Duration) error

	// Backlog returns how many messages the whole source has not yet acked, across every replica,
	// including those received and not yet acked; -1 when the broker cannot tell. It is cached by the
	// adapter and may be slow; it must not count the adapter's buffer a second time.
	Backlog(ctx context.Context) (int64, error)

	// ErrorCode classifies an error returned by this driver (see Code). It is called for every error.
	ErrorCode(err error) Code

	// Close releases the driver's resources. The adapter calls it once, after the last call of any
	// other method has returned and after held messages were released.
	Close(ctx context.Context) error
}

// DeadLetterer is implemented by a driver that can dead-letter a message: move it to a dead-letter
// queue, topic or stream (payload, headers, and the reason) and then ack it, so it is never delivered
// again from the source. The adapter calls it for a message nacked with NackOptions.MaxDeliveries
// exceeded, and for a message over the configured size limit. Return ErrNoDeadLetter when no
// dead-letter target is configured; the adapter then applies its configured fallback.
//
// msg is a copy made for the call, with the newest handle: the driver may keep it. With
// LocalRedelivery its Deliveries counts the deliveries the adapter made itself too (the broker's count
// misses them); otherwise it is the broker's count (0 when the broker has none).
type DeadLetterer interface {
	DeadLetter(ctx context.Context, msg *Message, reason string) error
}

// ReceiveStopper is implemented by a driver whose broker pushes messages to it (RabbitMQ's consumer):
// at shutdown the adapter calls StopReceiving once Receive is no longer called and before it releases
// what it holds, so the broker does not push released messages straight back to this replica, where
// they would wait until Close instead of going to another one. What arrives meanwhile stays with the
// driver, which hands it back when closed. ctx bounds the call.
type ReceiveStopper interface {
	StopReceiving(ctx context.Context) error
}

// OffsetDecoder is implemented by a driver that can rebuild an ack handle from an offset alone (Redis:
// the offset names the stream and the entry). numa re-sends acks to a restarted source; with this the
// adapter can still commit offsets it never handed out in this process.
type OffsetDecoder interface {
	HandleFromID(id string) (Handle, bool)
}

// Checker is implemented by a driver that can check that its queue, subscription or stream exists and
// is accessible. The server calls it once at start to log a clear message (the source keeps running
// and retrying either way, so a broker outage never crash-loops the pod).
type Checker interface {
	Check(ctx context.Context) error
}

// Preflighter is implemented by a driver that can verify, before a rollout, each thing it will need:
// the broker reachable, its queue, subscription or stream there, and every permission its calls need
// (receive, ack, nack, extend, dead-letter, backlog). No check may receive, ack or change a message.
// `<connector> --check` runs it (see server.Main).
type Preflighter interface {
	Preflight(ctx context.Context) []Check
}

// Check is the outcome of one pre-flight check.
type Check struct {
	Name string // what was checked, e.g. "sqs:ReceiveMessage on orders"
	Err  error  // nil when it passed
	Fix  string // when it failed: what to do about it
	// Skipped says why the check did not run (an earlier check it needs failed); a skipped check is
	// not a pass.
	Skipped string
}
