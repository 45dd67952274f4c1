package mqttsource

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/numaproj/numaflow-go/pkg/sourcer"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/numaflow-connectors/sources/common/numatest"
	"github.com/numaflow-connectors/sources/common/source"
)

// With MQTT_ID_PROPERTY, the adapter keeps the handle it received last, which can be an older copy
// coming back from the driver's requeue while a newer copy of the same id is in flight. When numa acks
// the id, every copy held on the connection is acknowledged: a copy left unacknowledged would hold
// back every later acknowledgement of the connection (MQTT acknowledges in order).
func TestAckOfIDAcksEveryCopyThroughTheAdapter(t *testing.T) {
	d, _ := newFakeDriver(t, func(c *Config) { c.IDProperty = "msg-id" })
	src, err := source.New(d, source.Options{ReadBatchSize: 1, Prefetch: 2, PrefetchBytes: 1 << 20}, testLogger(t), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { src.Shutdown(context.Background()); _ = src.Close(context.Background()) }()
	ctx := t.Context()
	conn := &fakeConn{}
	read1 := func() sourcer.Message {
		t.Helper()
		for range 30 {
			if msgs := numatest.ReadFrom(ctx, src, 1, 200*time.Millisecond); len(msgs) == 1 {
				return msgs[0]
			}
		}
		t.Fatal("nothing read")
		return sourcer.Message{}
	}
	long, short := uint64(60_000), uint64(300)
	// Two messages nacked with a long delay fill the adapter's delayed pool (Prefetch 2).
	d.deliver(conn, pub(10, "factory/a/temperature", "a", "msg-id", "a"))
	d.deliver(conn, pub(11, "factory/a/temperature", "b", "msg-id", "b"))
	for range 2 {
		m := read1()
		src.Nack(ctx, numatest.NackRequest(sourcer.NackOffset{Offset: m.Offset(), NackOptions: &sourcer.NackOptions{Delay: &long}}))
	}
	// m1's first delivery (packet 1) is nacked with a short delay: the pool is full, so the adapter
	// hands it back to the driver.
	d.deliver(conn, pub(1, "factory/a/temperature", "x", "msg-id", "m1"))
	m := read1()
	src.Nack(ctx, numatest.NackRequest(sourcer.NackOffset{Offset: m.Offset(), NackOptions: &sourcer.NackOptions{Delay: &short}}))
	waitFor(t, func() bool { d.mu.Lock(); defer d.mu.Unlock(); return len(d.requeued) == 1 }, "m1 handed back to the driver")
	// The publisher's duplicate of m1 (packet 2) arrives and reaches numa; then packet 1 comes due and
	// is received again: the adapter now holds packet 1's handle.
	d.deliver(conn, pub(2, "factory/a/temperature", "x", "msg-id", "m1"))
	m = read1()
	waitFor(t, func() bool { d.mu.Lock(); defer d.mu.Unlock(); return len(d.requeued) == 0 }, "m1's packet 1 received again")
	time.Sleep(100 * time.Millisecond) // the adapter admits it (a copy of what numa holds)
	src.Ack(ctx, numatest.AckRequest(m.Offset()))
	waitFor(t, func() bool { return len(conn.acks()) >= 2 }, "both copies of m1 acknowledged")
	if got := conn.acks(); !slices.Contains(got, 1) || !slices.Contains(got, 2) {
		t.Fatalf("packets acknowledged: %v, want both copies of m1 (1 and 2)", got)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.held["m1"]) != 0 {
		t.Fatalf("%d copies of m1 still held after numa acked it", len(d.held["m1"]))
	}
}

// The same at the driver: an ack of any copy acknowledges every copy of the id held on the
// connection, older and newer, and takes the copies still waiting for Receive (queued or handed back)
// out of its queues, so numa does not get the message it acked once more.
func TestAckOfOlderCopyAcksNewerCopies(t *testing.T) {
	d, _ := newFakeDriver(t, func(c *Config) { c.IDProperty = "msg-id" })
	conn := &fakeConn{}
	d.deliver(conn, pub(1, "factory/a/temperature", "x", "msg-id", "m1"))
	d.deliver(conn, pub(2, "factory/a/temperature", "x", "msg-id", "m1"))
	msgs := receiveN(t, d, 2)
	// Copy 2 is handed back; copy 3 arrives and waits in the queue; numa acks copy 1.
	if err := d.Nack(t.Context(), handles(msgs[1]), time.Hour); err != nil {
		t.Fatal(err)
	}
	d.deliver(conn, pub(3, "factory/a/temperature", "x", "msg-id", "m1"))
	d.deliver(conn, pub(4, "factory/a/temperature", "y", "msg-id", "m2"))
	if err := d.Ack(t.Context(), handles(msgs[0])); err != nil {
		t.Fatal(err)
	}
	if got := conn.acks(); !slices.Equal(got, []uint16{1, 2, 3}) {
		t.Fatalf("acknowledged %v, want every copy of m1 (1, 2, 3)", got)
	}
	d.mu.Lock()
	n, bytes := d.waitingLocked()
	d.mu.Unlock()
	if n != 1 || bytes != 1 {
		t.Fatalf("%d deliveries (%d bytes) wait for Receive, want only m2's", n, bytes)
	}
	if next := receiveN(t, d, 1); next[0].ID != "m2" {
		t.Fatalf("received %q after m1 was acked, want m2", next[0].ID)
	}
	// An acked copy that comes back (the adapter still had it) is not acknowledged twice.
	if err := d.Ack(t.Context(), handles(msgs[1])); err != nil {
		t.Fatal(err)
	}
	if got := conn.acks(); len(got) != 3 {
		t.Fatalf("acknowledged %v, want no second acknowledgement", got)
	}
}

// waitFor polls cond for up to 5 s.
func waitFor(t *testing.T, cond func() bool, what string) {
	t.Helper()
	for end := time.Now().Add(5 * time.Second); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out waiting for: %s", what)
}
