package memsource_test

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/numaflow-connectors/sources/common/source"
	"github.com/numaflow-connectors/sources/common/source/drivertest"
	"github.com/numaflow-connectors/sources/common/source/memsource"
)

var queues atomic.Int64

type harness struct {
	b     *memsource.Broker
	queue string
}

func newHarness(_ context.Context, _ *testing.T) (drivertest.Harness, error) {
	h := &harness{b: memsource.NewBroker(), queue: fmt.Sprintf("q%d", queues.Add(1))}
	h.b.CreateQueue(h.queue)
	return h, nil
}

func (h *harness) opts(queue string) memsource.Options {
	return memsource.Options{Queue: queue, Lease: time.Second, DeadLetter: true, Wait: time.Second}
}

func (h *harness) MakeDriver(context.Context) (source.Driver, error) {
	return memsource.NewDriver(h.b, h.opts(h.queue)), nil
}

func (h *harness) MakeMissingDriver(context.Context) (source.Driver, error) {
	return memsource.NewDriver(h.b, h.opts("missing-"+h.queue)), nil
}

func (h *harness) Publish(_ context.Context, msgs []drivertest.Publication) error {
	pubs := make([]memsource.Publication, len(msgs))
	for i, m := range msgs {
		pubs[i] = memsource.Publication{Payload: m.Payload, Key: m.Key, Headers: m.Headers}
	}
	return h.b.Publish(h.queue, pubs...)
}

func (h *harness) DeadLettered(context.Context) ([]drivertest.DeadLetter, error) {
	var out []drivertest.DeadLetter
	for _, d := range h.b.DeadLetters(h.queue) {
		out = append(out, drivertest.DeadLetter{Payload: d.Payload, Reason: d.Reason})
	}
	return out, nil
}

func (h *harness) Capabilities() drivertest.Capabilities {
	return drivertest.Capabilities{Keys: true, Headers: true, DeadLetter: true, Redelivery: 3 * time.Second,
		Binary: true, Backlog: true}
}

func (h *harness) Close() { h.b.DeleteQueue(h.queue) }

func TestConformance(t *testing.T) { drivertest.Run(t, newHarness) }

func TestFaultsAndOrderedKeys(t *testing.T) {
	ctx := context.Background()
	b := memsource.NewBroker()
	b.CreateQueue("q")
	d := memsource.NewDriver(b, memsource.Options{Queue: "q", Lease: time.Hour, Wait: 10 * time.Millisecond, OrderedKeys: true})
	ids, _ := b.PublishIDs("q", memsource.Publication{Payload: []byte("a1"), Key: "a"},
		memsource.Publication{Payload: []byte("a2"), Key: "a"}, memsource.Publication{Payload: []byte("b1"), Key: "b"})

	// A lost response leases the messages but returns an error.
	b.SetFault(memsource.OpReceive, memsource.Fault{LoseResponse: true, Times: 1})
	if m, err := d.Receive(ctx, 1); err == nil || len(m) != 0 || d.ErrorCode(err) != source.Unavailable {
		t.Fatalf("lost response: %v, %v", m, err)
	}
	if n, bytes := b.Leased("q"); n != 1 || bytes != 2 {
		t.Fatalf("leased %d (%d bytes) after a lost response, want 1 (2)", n, bytes)
	}
	// a1 is leased: a2 waits behind it (same key), b1 is readable.
	if n := b.Readable("q", true); n != 1 {
		t.Fatalf("readable %d, want 1 (b1)", n)
	}
	m, err := d.Receive(ctx, 10)
	if err != nil || len(m) != 1 || m[0].ID != ids[2] {
		t.Fatalf("received %v, %v; want only %s", m, err, ids[2])
	}
	// Errors and latency.
	b.SetFault(memsource.OpAck, memsource.Fault{Err: memsource.ErrThrottled, Latency: 20 * time.Millisecond})
	start := time.Now()
	if err := d.Ack(ctx, []source.Handle{m[0].Handle}); d.ErrorCode(err) != source.Throttled || time.Since(start) < 20*time.Millisecond {
		t.Fatalf("ack with a fault: %v after %s", err, time.Since(start))
	}
	b.ClearFaults()
	if err := d.Ack(ctx, []source.Handle{m[0].Handle}); err != nil || b.Has("q", ids[2]) {
		t.Fatalf("ack after clearing: %v", err)
	}
	if memsource.HandleID(m[0].Handle) != ids[2] || b.Deliveries("q", ids[0]) != 1 {
		t.Fatalf("HandleID %q, deliveries of %s: %d", memsource.HandleID(m[0].Handle), ids[0], b.Deliveries("q", ids[0]))
	}
}

// A handle points at its message: it must stop working once the message is acked, or its queue
// deleted and created again, and the broker's lookups by ID must agree with it.
func TestHandlesAndLookups(t *testing.T) {
	ctx := context.Background()
	b := memsource.NewBroker()
	b.CreateQueue("q")
	b.CreateQueue("other")
	d := memsource.NewDriver(b, memsource.Options{Queue: "q", Lease: time.Hour, Wait: 10 * time.Millisecond})
	_, _ = b.PublishIDs("other", memsource.Publication{Payload: []byte("o")}) // IDs are per broker: q's are not contiguous
	ids, _ := b.PublishIDs("q", memsource.Publication{Payload: []byte("1")}, memsource.Publication{Payload: []byte("2")},
		memsource.Publication{Payload: []byte("3")})
	m, err := d.Receive(ctx, 10)
	if err != nil || len(m) != 3 {
		t.Fatalf("received %d, %v", len(m), err)
	}
	if err := d.Ack(ctx, []source.Handle{m[1].Handle}); err != nil {
		t.Fatal(err)
	}
	if b.Has("q", ids[1]) || !b.Has("q", ids[0]) || !b.Has("q", ids[2]) || b.Has("other", ids[0]) || b.Has("q", "m-x") {
		t.Fatalf("Has after acking the middle message: %v %v %v", b.Has("q", ids[0]), b.Has("q", ids[1]), b.Has("q", ids[2]))
	}
	if b.Len("q") != 2 || b.Deliveries("q", ids[2]) != 1 || b.Deliveries("q", ids[1]) != 0 {
		t.Fatalf("Len %d, deliveries %d and %d", b.Len("q"), b.Deliveries("q", ids[2]), b.Deliveries("q", ids[1]))
	}
	// An acked message's handle: ack is a no-op, every other operation refuses it.
	if err := d.Ack(ctx, []source.Handle{m[1].Handle}); err != nil {
		t.Fatalf("acking twice: %v", err)
	}
	if err := d.Extend(ctx, []source.Handle{m[1].Handle}, time.Minute); !refused(d, err) {
		t.Fatalf("extending an acked message: %v", err)
	}
	// A queue deleted and created again holds none of the old messages.
	b.DeleteQueue("q")
	b.CreateQueue("q")
	if err := d.Nack(ctx, []source.Handle{m[0].Handle}, 0); !refused(d, err) {
		t.Fatalf("nacking a message of a deleted queue: %v", err)
	}
	if b.Has("q", ids[0]) || b.Len("q") != 0 {
		t.Fatalf("the new queue has %d messages", b.Len("q"))
	}
	if n, err := d.Backlog(ctx); err != nil || n != 0 {
		t.Fatalf("backlog %d, %v", n, err)
	}
}

// refused reports whether err refuses the one handle of a call as invalid.
func refused(d *memsource.Driver, err error) bool {
	var be *source.BatchError
	return errors.As(err, &be) && len(be.Failed) == 1 && d.ErrorCode(be.Failed[0]) == source.InvalidArgument
}

// MaxAnswer caps what one Receive returns, whatever it asks for (a broker that answers with what it has
// at hand), and FullReceive is reported as the driver's capability.
func TestMaxAnswer(t *testing.T) {
	ctx := context.Background()
	b := memsource.NewBroker()
	b.CreateQueue("q")
	for i := range 10 {
		_ = b.Publish("q", memsource.Publication{Payload: fmt.Appendf(nil, "%d", i)})
	}
	d := memsource.NewDriver(b, memsource.Options{Queue: "q", Wait: 10 * time.Millisecond, MaxReceive: 10, MaxAnswer: 4, FullReceive: 1})
	if c := d.Capabilities(); c.FullReceive != 1 {
		t.Errorf("FullReceive %d, want 1", c.FullReceive)
	}
	var got []int
	for range 4 {
		m, err := d.Receive(ctx, 10)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, len(m))
	}
	if fmt.Sprint(got) != "[4 4 2 0]" {
		t.Errorf("receives of 10 with MaxAnswer 4 returned %v, want [4 4 2 0]", got)
	}
}
