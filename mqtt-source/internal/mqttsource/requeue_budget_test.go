package mqttsource

import (
	"context"
	"runtime"
	"testing"
	"time"

	"github.com/numaproj/numaflow-go/pkg/sourcer"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/numaflow-connectors/sources/common/numatest"
	"github.com/numaflow-connectors/sources/common/server"
	"github.com/numaflow-connectors/sources/common/source"
	"github.com/numaflow-connectors/sources/mqtt-source/mqtttest"
)

// Messages the adapter hands back (its delayed pool full) wait in the driver's requeue, and count in
// the read-ahead budget: a pipeline that nacks everything with a long delay no longer pulls the
// broker's whole window (Receive Maximum, by count) into memory.
func TestIntegrationRequeueCountsInReadAhead(t *testing.T) {
	srv := mqtttest.Shared(t)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	name := mqtttest.Name(t)
	budget := server.Budget{Messages: 200, Bytes: 4 << 20} // the driver reads ahead 1 MiB
	cfg := testConfig(srv, name, name+"-0", name)
	d := openReady(ctx, t, cfg, budget)
	src, err := source.New(d, source.Options{ReadBatchSize: 10, Prefetch: budget.Messages, PrefetchBytes: budget.Bytes, MaxMessageBytes: 2 << 20},
		testLogger(t), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { src.Shutdown(ctx); _ = src.Close(ctx) }()
	const n = 40
	big := make([][]byte, n)
	for i := range big {
		big[i] = make([]byte, 1<<20)
		big[i][0] = byte(i)
	}
	if err := srv.Connect(t, "").Publish(ctx, name, 1, nil, big...); err != nil {
		t.Fatal(err)
	}
	big = nil
	// numa nacks everything with a minute's delay: 4 MiB fill the adapter's delayed pool, the rest is
	// handed back to the driver.
	delay := uint64(60_000)
	read := 0
	for end := time.Now().Add(6 * time.Second); time.Now().Before(end); {
		msgs := numatest.ReadFrom(ctx, src, 10, time.Second)
		read += len(msgs)
		var offs []sourcer.NackOffset
		for _, m := range msgs {
			offs = append(offs, sourcer.NackOffset{Offset: m.Offset(), NackOptions: &sourcer.NackOptions{Delay: &delay}})
		}
		if len(offs) > 0 {
			src.Nack(ctx, numatest.NackRequest(offs...))
		}
	}
	runtime.GC()
	d.mu.Lock()
	var rq int64
	for _, x := range d.requeued {
		rq += int64(len(x.pub.Payload))
	}
	nrq, counted, q, ip := len(d.requeued), d.requeuedBytes, d.queueBytes, d.inPahoBytes
	d.mu.Unlock()
	t.Logf("numa read and nacked %d messages; the driver's requeue holds %d (%d MiB), queue %d KiB, paho %d KiB",
		read, nrq, rq>>20, q>>10, ip>>10)
	if counted != rq {
		t.Errorf("requeue accounted as %d bytes, holds %d", counted, rq)
	}
	// The adapter holds 4 MiB received and 4 MiB delayed; the driver's requeue at most its read-ahead
	// (1 MiB), what the adapter's receive pool hands back (4 MiB) and one message.
	if limit := int64(6 << 20); rq+q+ip > limit {
		t.Errorf("the driver holds %d MiB of handed-back and read-ahead messages, want at most %d MiB", (rq+q+ip)>>20, limit>>20)
	}
	if nrq == 0 {
		t.Errorf("nothing was handed back to the driver (numa read %d messages): the test tests nothing", read)
	}
}

// The read-ahead budget counts the requeue: the reader stops and deliver waits while handed-back
// messages fill it, and both go on once Receive hands them out when due (no deadlock), or at Close.
func TestRequeueHoldsReaderUntilDue(t *testing.T) {
	d, _ := newFakeDriver(t, nil) // read-ahead 1 MiB, Receive Maximum 100
	conn := &fakeConn{}
	big := string(make([]byte, 700<<10))
	d.deliver(conn, pub(1, "factory/a/temperature", big))
	first := receiveN(t, d, 1)
	start := time.Now()
	if err := d.Nack(t.Context(), handles(first...), 400*time.Millisecond); err != nil {
		t.Fatal(err)
	}

	// The reader: 700 KiB handed back + 400 KiB read by paho is over the 1 MiB budget.
	d.publishRead(400 << 10)
	read := make(chan struct{})
	go func() { d.waitForRoom(); close(read) }()
	// deliver: the message read waits while the requeue and it are over the budget.
	queued := make(chan struct{})
	go func() { d.deliver(conn, pub(2, "factory/a/temperature", big)); close(queued) }()
	select {
	case <-read:
		t.Fatal("the reader went on with 1.1 MiB handed back and read, over a 1 MiB budget")
	case <-queued:
		t.Fatal("a 700 KiB message was queued behind 700 KiB handed back, over a 1 MiB budget")
	case <-time.After(200 * time.Millisecond):
	}

	// When due, Receive hands the requeue out first, and the read message follows.
	again := receiveN(t, d, 1)
	if time.Since(start) < 350*time.Millisecond || again[0].ID != first[0].ID {
		t.Fatalf("received %q after %s, want the handed-back message after its 400ms", again[0].ID, time.Since(start))
	}
	for _, ch := range []chan struct{}{queued, read} {
		select {
		case <-ch:
		case <-time.After(time.Second):
			t.Fatal("the reader or deliver still waits after the requeue was received")
		}
	}
	if next := receiveN(t, d, 1); string(next[0].Payload) != big {
		t.Fatal("the second message was not received")
	}

	// Handed back with a long delay, the requeue holds the reader until Close, which ends the wait.
	if err := d.Nack(t.Context(), handles(again...), time.Hour); err != nil {
		t.Fatal(err)
	}
	d.publishRead(400 << 10)
	waiting := make(chan struct{})
	go func() { d.waitForRoom(); close(waiting) }()
	select {
	case <-waiting:
		t.Fatal("the reader went on over the budget")
	case <-time.After(100 * time.Millisecond):
	}
	if err := d.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	select {
	case <-waiting:
	case <-time.After(time.Second):
		t.Fatal("Close did not end the reader's wait")
	}
}

// The requeue's accounting follows every way out of it: received when due, dropped with its lost
// connection.
func TestRequeueAccounting(t *testing.T) {
	d, _ := newFakeDriver(t, nil)
	conn := &fakeConn{}
	for i := range 3 {
		d.deliver(conn, pub(uint16(i+1), "factory/a/temperature", "12345"))
	}
	msgs := receiveN(t, d, 3)
	if err := d.Nack(t.Context(), handles(msgs...), 50*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	check := func(n int, bytes int64) {
		t.Helper()
		d.mu.Lock()
		defer d.mu.Unlock()
		if len(d.requeued) != n || d.requeuedBytes != bytes {
			t.Fatalf("requeue: %d deliveries, %d bytes; want %d, %d", len(d.requeued), d.requeuedBytes, n, bytes)
		}
	}
	check(3, 15)
	got := receiveN(t, d, 2)
	check(1, 5)
	if err := d.Nack(t.Context(), handles(got...), time.Hour); err != nil {
		t.Fatal(err)
	}
	check(3, 15)
	d.connectionDown() // the broker sends them again on the next connection
	check(0, 0)
}
