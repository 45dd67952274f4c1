// Package memsource is an in-memory broker and its source driver: the reference implementation of
// source.Driver. It passes the whole conformance suite, runs the local demo (`make run`) and backs the
// adapter's own tests. Read it first when writing a driver for a new broker: every method is a few
// lines because the adapter does the rest.
//
// The broker behaves like a queue with leases (think SQS): a received message is invisible until its
// lease ends, then it is delivered again with a new handle and a higher delivery count.
package memsource

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/numaflow-connectors/sources/common/source"
)

// Errors the broker returns; ErrorCode classifies them.
var (
	ErrNotFound      = errors.New("queue does not exist")
	ErrUnavailable   = errors.New("broker unavailable")
	ErrInvalidHandle = errors.New("invalid or expired handle")
	// ErrThrottled is a rate or quota refusal (classified Throttled): for fault injection.
	ErrThrottled = errors.New("throttled")
	// ErrDenied is a permanent refusal (classified PermissionDenied): for fault injection.
	ErrDenied = errors.New("access denied")
)

// Publication is a message to publish.
type Publication struct {
	Payload []byte
	Key     string
	Headers map[string]string
}

// DeadLetter is a message moved to a dead-letter queue.
type DeadLetter struct {
	Publication
	Reason     string
	Deliveries int // Message.Deliveries as DeadLetter got it
}

// Broker holds named queues in memory. Safe for concurrent use.
type Broker struct {
	mu      sync.Mutex
	queues  map[string]*queue
	down    bool
	wake    chan struct{} // closed and replaced whenever something may have become visible
	nextID  uint64
	receipt uint64
	calls   map[string]int
	faults  map[string]*Fault
}

// Operations a Fault can be set on (Broker.SetFault), as the driver names them.
const (
	OpReceive    = "receive"
	OpAck        = "ack"
	OpNack       = "nack"
	OpExtend     = "extend"
	OpDeadLetter = "dead_letter"
	OpBacklog    = "backlog"
	OpCheck      = "check"
)

// CreateQueue creates a queue (no-op when it exists).
func (b *Broker) CreateQueue(name string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.queues[name] == nil {
		b.queues[name] = &queue{}
	}
}

// DeleteQueue removes a queue and its messages.
func (b *Broker) DeleteQueue(name string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.queues, name)
}

// SetDown makes every call fail with ErrUnavailable (true) or work again (false): an outage.
func (b *Broker) SetDown(down bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.down = down
	b.notifyLocked()
}

// Calls returns how many times each driver operation reached the broker.
func (b *Broker) Calls(op string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.calls[op]
}

// Publish appends messages to a queue.
func (b *Broker) Publish(name string, pubs ...Publication) error {
	_, err := b.PublishIDs(name, pubs...)
	return err
}

// PublishIDs appends messages to a queue and returns their message IDs (the Numaflow offsets), in order.
func (b *Broker) PublishIDs(name string, pubs ...Publication) ([]string, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	q := b.queues[name]
	if q == nil {
		return nil, fmt.Errorf("publishing to %s: %w", name, ErrNotFound)
	}
	now := time.Now()
	ids := make([]string, 0, len(pubs))
	for _, p := range pubs {
		b.nextID++
		id := "m-" + strconv.FormatUint(b.nextID, 10)
		e := &entry{q: q, seq: b.nextID, id: id, pub: p, published: now, visibleAt: now,
			headers: make(map[string]string, len(p.Headers)+1)}
		for k, v := range p.Headers {
			e.headers[k] = v
		}
		e.headers["x-mem-id"] = id
		if p.Key != "" {
			e.keys = []string{p.Key}
		}
		q.order = append(q.order, e)
		q.live++
		ids = append(ids, id)
	}
	b.notifyLocked()
	return ids, nil
}

// Len returns how many messages of the queue are not yet acked.
func (b *Broker) Len(name string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	if q := b.queues[name]; q != nil {
		return q.live
	}
	return 0
}

// Leased returns how many messages of the queue are leased to a consumer right now (received, lease
// not ended, not acked) and their payload bytes.
func (b *Broker) Leased(name string) (n int, bytes int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	q := b.queues[name]
	if q == nil {
		return 0, 0
	}
	now := time.Now()
	for _, e := range q.order {
		if !e.gone && e.receipt != 0 && e.visibleAt.After(now) {
			n++
			bytes += int64(len(e.pub.Payload))
		}
	}
	return n, bytes
}

// LeasedIDs returns the IDs of the messages Leased counts, in publish order.
func (b *Broker) LeasedIDs(name string) []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	q := b.queues[name]
	if q == nil {
		return nil
	}
	now := time.Now()
	var out []string
	for _, e := range q.order {
		if !e.gone && e.receipt != 0 && e.visibleAt.After(now) {
			out = append(out, e.id)
		}
	}
	return out
}

// Readable returns how many messages of the queue a Receive could return right now: visible, and
// (with ordered keys) not behind an invisible message of the same key. ordered must match the
// driver's Options.OrderedKeys.
func (b *Broker) Readable(name string, ordered bool) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	q := b.queues[name]
	if q == nil {
		return 0
	}
	n := 0
	q.scan(time.Now(), ordered, func(*entry) bool { n++; return true })
	return n
}

// Has reports whether the message is still in the queue (not acked, not dead-lettered).
func (b *Broker) Has(name, id string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.queues[name].find(id) != nil
}

// Deliveries returns how many times the broker has delivered the message (0 when unknown or gone).
func (b *Broker) Deliveries(name, id string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	if e := b.queues[name].find(id); e != nil {
		return e.deliveries
	}
	return 0
}

// DeadLetters returns the messages dead-lettered from a queue.
func (b *Broker) DeadLetters(name string) []DeadLetter {
	b.mu.Lock()
	defer b.mu.Unlock()
	if q := b.queues[name]; q != nil {
		return append([]DeadLetter(nil), q.dead...)
	}
	return nil
}

func (b *Broker) notifyLocked() {
	close(b.wake)
	b.wake = make(chan struct{})
}

// Options configure a Driver.
type Options struct {
	Queue        string
	Lease        time.Duration // default 30 s
	MaxExtension time.Duration // default 1 h
	MaxReceive   int           // default 100
	DeadLetter   bool          // dead-letter to the queue's own dead-letter list (else ErrNoDeadLetter)
	// Wait is the longest a Receive waits for a message (a long poll; default 5 s).
	Wait time.Duration
	// OrderedKeys makes the queue deliver messages of one key in publish order, never one while an
	// earlier one of its key is leased or delayed (an SQS FIFO queue's message groups), and reports
	// Capabilities.OrderedKeys.
	OrderedKeys bool
	// LocalRedelivery is reported in Capabilities (the adapter then delays nacked messages itself).
	LocalRedelivery bool
	// ReceiveConcurrency, MaxAck and AckConcurrency are reported in Capabilities (defaults 4, 100, 2).
	ReceiveConcurrency int
	MaxAck             int
	AckConcurrency     int
	// MaxAnswer is the most messages one Receive returns, whatever it asks for (0: as many as it
	// asks): a broker that answers with fewer than asked while more wait, as Pub/Sub's Pull does.
	// FullReceive is reported in Capabilities.
	MaxAnswer   int
	FullReceive int
}

// Driver is the memsource driver. Handles are delivery receipts.
type Driver struct {
	b    *Broker
	opts Options
}

var (
	_ source.Driver       = (*Driver)(nil)
	_ source.DeadLetterer = (*Driver)(nil)
	_ source.Checker      = (*Driver)(nil)
)

type handle struct {
	id      string
	receipt uint64
	e       *entry
}

// HandleID returns the message ID of a handle this driver returned ("" for any other value): for
// test drivers that wrap this one.
func HandleID(h source.Handle) string { return handleOf(h).id }

// handleOf returns the handle h points at (zero for any other value).
func handleOf(h source.Handle) handle {
	if p, ok := h.(*handle); ok && p != nil {
		return *p
	}
	return handle{}
}

// NewDriver returns a driver for one queue of b. The queue need not exist yet.
func NewDriver(b *Broker, opts Options) *Driver {
	if opts.Lease <= 0 {
		opts.Lease = 30 * time.Second
	}
	if opts.MaxExtension <= 0 {
		opts.MaxExtension = time.Hour
	}
	if opts.MaxReceive <= 0 {
		opts.MaxReceive = 100
	}
	if opts.Wait <= 0 {
		opts.Wait = 5 * time.Second
	}
	if opts.ReceiveConcurrency <= 0 {
		opts.ReceiveConcurrency = 4
	}
	if opts.MaxAck <= 0 {
		opts.MaxAck = 100
	}
	if opts.AckConcurrency <= 0 {
		opts.AckConcurrency = 2
	}
	return &Driver{b: b, opts: opts}
}

// Capabilities implements source.Driver.
func (d *Driver) Capabilities() source.Capabilities {
	return source.Capabilities{
		MaxReceive: d.opts.MaxReceive, ReceiveConcurrency: d.opts.ReceiveConcurrency, MaxAck: d.opts.MaxAck,
		AckConcurrency: d.opts.AckConcurrency, Lease: d.opts.Lease, MaxExtension: d.opts.MaxExtension,
		MaxNackDelay: 12 * time.Hour, LocalRedelivery: d.opts.LocalRedelivery, OrderedKeys: d.opts.OrderedKeys,
		FullReceive: d.opts.FullReceive,
	}
}

// queueLocked returns the queue or an error when the broker is down or the queue missing.
func (d *Driver) queueLocked(op string) (*queue, error) {
	d.b.calls[op]++
	if d.b.down {
		return nil, fmt.Errorf("%s on %s: %w", op, d.opts.Queue, ErrUnavailable)
	}
	q := d.b.queues[d.opts.Queue]
	if q == nil {
		return nil, fmt.Errorf("%s on %s: %w", op, d.opts.Queue, ErrNotFound)
	}
	return q, nil
}

// Receive implements source.Driver: it long-polls for up to Options.Wait.
func (d *Driver) Receive(ctx context.Context, max int) ([]*source.Message, error) {
	f := d.b.injectFault(ctx, OpReceive)
	if f.Err != nil {
		d.b.mu.Lock()
		d.b.calls[OpReceive]++
		d.b.mu.Unlock()
		return nil, fmt.Errorf("receive on %s: %w", d.opts.Queue, f.Err)
	}
	if d.opts.MaxAnswer > 0 {
		max = min(max, d.opts.MaxAnswer)
	}
	timer := time.NewTimer(d.opts.Wait)
	defer timer.Stop()
	for {
		d.b.mu.Lock()
		q, err := d.queueLocked(OpReceive)
		if err != nil {
			d.b.mu.Unlock()
			return nil, err
		}
		now := time.Now()
		var out []*source.Message
		next := q.scan(now, d.opts.OrderedKeys, func(e *entry) bool {
			if len(out) >= max {
				return false
			}
			d.b.receipt++
			e.receipt = d.b.receipt
			e.deliveries++
			e.visibleAt = now.Add(d.opts.Lease)
			out = append(out, toMessage(e))
			return true
		})
		wake := d.b.wake
		d.b.mu.Unlock()
		if len(out) > 0 {
			if f.LoseResponse {
				return nil, fmt.Errorf("receive on %s: response lost: %w", d.opts.Queue, ErrUnavailable)
			}
			return out, nil
		}
		due := time.Hour
		if !next.IsZero() {
			due = time.Until(next)
		}
		t := time.NewTimer(due)
		select {
		case <-wake:
		case <-t.C:
		case <-timer.C:
			t.Stop()
			if f.LoseResponse {
				return nil, fmt.Errorf("receive on %s: response lost: %w", d.opts.Queue, ErrUnavailable)
			}
			return nil, nil
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		}
		t.Stop()
	}
}

// delivery is a message and its handle, allocated together: one allocation per message delivered.
type delivery struct {
	msg source.Message
	h   handle
}

// toMessage is one delivery of e. Its keys and headers are the entry's own, built once at publish:
// the adapter never writes to a message's payload, keys or headers.
func toMessage(e *entry) *source.Message {
	d := &delivery{h: handle{e.id, e.receipt, e}}
	d.msg = source.Message{
		ID: e.id, Handle: &d.h, Payload: e.pub.Payload, EventTime: e.published,
		Keys: e.keys, Headers: e.headers, Deliveries: e.deliveries,
	}
	return &d.msg
}

// each applies f to the entry of every valid handle and reports the invalid ones in a BatchError.
// The caller has applied op's fault.
func (d *Driver) each(op string, handles []source.Handle, f func(q *queue, e *entry)) error {
	d.b.mu.Lock()
	defer d.b.mu.Unlock()
	q, err := d.queueLocked(op)
	if err != nil {
		return err
	}
	var failed map[int]error
	for i, h := range handles {
		hd := handleOf(h)
		e := q.entry(hd)
		if e == nil && op == "ack" {
			continue // already acked: fine
		}
		if e == nil || e.receipt != hd.receipt {
			if failed == nil {
				failed = make(map[int]error)
			}
			failed[i] = fmt.Errorf("%s %s on %s: %w", op, hd.id, d.opts.Queue, ErrInvalidHandle)
			continue
		}
		f(q, e)
	}
	d.b.notifyLocked()
	if failed != nil {
		return &source.BatchError{Failed: failed}
	}
	return nil
}

// Ack implements source.Driver.
func (d *Driver) Ack(ctx context.Context, handles []source.Handle) error {
	if err := d.fault(ctx, OpAck); err != nil {
		return err
	}
	return d.each(OpAck, handles, func(q *queue, e *entry) { q.remove(e) })
}

// Nack implements source.Driver.
func (d *Driver) Nack(ctx context.Context, handles []source.Handle, delay time.Duration) error {
	if err := d.fault(ctx, OpNack); err != nil {
		return err
	}
	at := time.Now().Add(delay)
	return d.each(OpNack, handles, func(q *queue, e *entry) { q.setVisible(e, at); e.receipt = 0 })
}

// Extend implements source.Driver.
func (d *Driver) Extend(ctx context.Context, handles []source.Handle, lease time.Duration) error {
	if err := d.fault(ctx, OpExtend); err != nil {
		return err
	}
	at := time.Now().Add(lease)
	return d.each(OpExtend, handles, func(q *queue, e *entry) { q.setVisible(e, at) })
}

// Backlog implements source.Driver: every message not yet acked.
func (d *Driver) Backlog(ctx context.Context) (int64, error) {
	if err := d.fault(ctx, OpBacklog); err != nil {
		return -1, err
	}
	d.b.mu.Lock()
	defer d.b.mu.Unlock()
	q, err := d.queueLocked("backlog")
	if err != nil {
		return -1, err
	}
	return int64(q.live), nil
}

// DeadLetter implements source.DeadLetterer.
func (d *Driver) DeadLetter(ctx context.Context, m *source.Message, reason string) error {
	if !d.opts.DeadLetter {
		return source.ErrNoDeadLetter
	}
	if err := d.fault(ctx, OpDeadLetter); err != nil {
		return err
	}
	d.b.mu.Lock()
	defer d.b.mu.Unlock()
	q, err := d.queueLocked("dead_letter")
	if err != nil {
		return err
	}
	e := q.entry(handleOf(m.Handle))
	if e == nil {
		return nil // already gone
	}
	q.dead = append(q.dead, DeadLetter{Publication: e.pub, Reason: reason, Deliveries: m.Deliveries})
	q.remove(e)
	return nil
}

// Check implements source.Checker.
func (d *Driver) Check(ctx context.Context) error {
	if err := d.fault(ctx, OpCheck); err != nil {
		return err
	}
	d.b.mu.Lock()
	defer d.b.mu.Unlock()
	_, err := d.queueLocked("check")
	return err
}

// ErrorCode implements source.Driver.
func (d *Driver) ErrorCode(err error) source.Code {
	switch {
	case errors.Is(err, ErrNotFound):
		return source.NotFound
	case errors.Is(err, ErrUnavailable):
		return source.Unavailable
	case errors.Is(err, ErrInvalidHandle):
		return source.InvalidArgument
	case errors.Is(err, ErrThrottled):
		return source.Throttled
	case errors.Is(err, ErrDenied):
		return source.PermissionDenied
	case errors.Is(err, context.Canceled):
		return source.Canceled
	case errors.Is(err, context.DeadlineExceeded):
		return source.DeadlineExceeded
	}
	return source.Unknown
}

// Close implements source.Driver.
func (d *Driver) Close(context.Context) error { return nil }
