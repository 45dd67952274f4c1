package drivertest

import (
	"bytes"
	"context"
	"crypto/rand"
	"strings"
	"sync"
	"time"

	"github.com/numaflow-connectors/sources/common/numatest"
)

// The cases Run runs, one function each.

func testReadAtMostCount(f *fixture) {
	want := f.publishN(25, "count")
	r := f.replica()
	got := map[string]bool{}
	deadline := time.Now().Add(30 * time.Second)
	for len(got) < len(want) && time.Now().Before(deadline) {
		msgs := r.read(7, time.Second)
		if len(msgs) > 7 {
			f.t.Fatalf("read of 7 returned %d messages", len(msgs))
		}
		for _, m := range msgs {
			got[string(m.Payload)] = true
		}
		if len(msgs) > 0 {
			r.ack(msgs...)
		}
	}
	for _, w := range want {
		if !got[w] {
			f.t.Errorf("message %s never read", w)
		}
	}
}

func testEmptyReadWaits(f *fixture) {
	r := f.replica()
	start := time.Now()
	msgs := r.read(10, time.Second)
	took := time.Since(start)
	if len(msgs) != 0 {
		f.t.Fatalf("empty resource returned %d messages", len(msgs))
	}
	if took < 800*time.Millisecond {
		f.t.Errorf("empty read returned after %s: an instant empty read makes numa spin; wait up to the timeout", took)
	}
	if took > 2500*time.Millisecond {
		f.t.Errorf("empty read with a 1 s timeout returned after %s: never block past the deadline", took)
	}
}

func testReadWakesOnData(f *fixture) {
	r := f.replica()
	r.read(10, 200*time.Millisecond) // let receivers start
	go func() {
		time.Sleep(300 * time.Millisecond)
		_ = f.h.Publish(f.ctx, []Publication{{Payload: []byte("late")}})
	}()
	start := time.Now()
	var msgs []numatest.Message
	for len(msgs) == 0 && time.Since(start) < 20*time.Second {
		msgs = r.read(10, 10*time.Second)
	}
	took := time.Since(start)
	if len(msgs) == 0 || string(msgs[0].Payload) != "late" {
		f.t.Fatalf("got %q, want the late message", payloads(msgs))
	}
	if took > 8*time.Second {
		f.t.Errorf("a read with a 10 s timeout returned %s after data arrived: it should return soon after the first message", took)
	}
}

func testAckedNeverReturns(f *fixture) {
	f.publishN(5, "acked")
	r := f.replica()
	got := r.collect(5, 30*time.Second, true)
	if len(got) != 5 {
		f.t.Fatalf("read %d of 5", len(got))
	}
	// Past a lease and a restart, nothing may come back.
	wait := f.redelivery()
	r.close()
	r2 := f.replica()
	deadline := time.Now().Add(wait)
	for time.Now().Before(deadline) {
		if msgs := r2.read(10, 500*time.Millisecond); len(msgs) > 0 {
			f.t.Fatalf("acked messages came back: %q", payloads(msgs))
		}
	}
}

func testNackRedelivers(f *fixture) {
	f.publish(Publication{Payload: []byte("nack-me")})
	r := f.replica()
	first := r.collect(1, 30*time.Second, false)
	if len(first) != 1 {
		f.t.Fatalf("read %d of 1", len(first))
	}
	r.nack(nil, first...)
	again := r.collect(1, 10*time.Second, false)
	if len(again) != 1 {
		f.t.Fatalf("nacked message did not come back within 10 s")
	}
	if !bytes.Equal(again[0].Offset.Value, first[0].Offset.Value) || again[0].Offset.Partition != first[0].Offset.Partition {
		f.t.Errorf("offset changed on redelivery: %q/%d then %q/%d (numa deduplicates by offset)",
			first[0].Offset.Value, first[0].Offset.Partition, again[0].Offset.Value, again[0].Offset.Partition)
	}
	if string(again[0].Payload) != "nack-me" {
		f.t.Errorf("redelivered payload %q", again[0].Payload)
	}
	r.ack(again...)
}

func testNackDelay(f *fixture) {
	f.publish(Publication{Payload: []byte("later")})
	r := f.replica()
	first := r.collect(1, 30*time.Second, false)
	if len(first) != 1 {
		f.t.Fatalf("read %d of 1", len(first))
	}
	delay := uint64(2000)
	nacked := time.Now()
	r.nack(&numatest.NackOptions{Delay: &delay}, first...)
	again := r.collect(1, 20*time.Second, false)
	came := time.Since(nacked)
	if len(again) != 1 {
		f.t.Fatalf("message nacked with a 2 s delay did not come back within 20 s")
	}
	if came < 1800*time.Millisecond {
		f.t.Errorf("message nacked with a 2 s delay came back after %s", came)
	}
	r.ack(again...)
}

func testMaxDeliveries(f *fixture) {
	f.publish(Publication{Payload: []byte("poison")}, Publication{Payload: []byte("fine")})
	r := f.replica()
	maxDel := uint32(2)
	reason := "test poison"
	opts := &numatest.NackOptions{MaxDeliveries: &maxDel, Reason: &reason}
	deliveries := 0
	deadline := time.Now().Add(40 * time.Second)
	fineSeen := false
	for time.Now().Before(deadline) && (deliveries < 2 || !fineSeen) {
		for _, m := range r.read(10, 500*time.Millisecond) {
			switch string(m.Payload) {
			case "poison":
				deliveries++
				r.nack(opts, m)
			default:
				fineSeen = true
				r.ack(m)
			}
		}
	}
	if !fineSeen {
		f.t.Fatalf("the good message never arrived: a poison message must not stall the stream")
	}
	if deliveries < 2 {
		f.t.Fatalf("poison message delivered %d times, want 2", deliveries)
	}
	// Delivered twice and nacked with MaxDeliveries 2: it must not come back from this source.
	until := time.Now().Add(f.redelivery())
	for time.Now().Before(until) {
		for _, m := range r.read(10, 500*time.Millisecond) {
			if string(m.Payload) == "poison" {
				if !f.caps.DeadLetter {
					r.nack(opts, m) // fallback nack keeps it at the broker; fine without a target
					return
				}
				f.t.Fatalf("message over MaxDeliveries came back (delivery %d)", deliveries+1)
			}
		}
	}
	if !f.caps.DeadLetter {
		return
	}
	var dls []DeadLetter
	eventually(f.t, 20*time.Second, "the dead-lettered message", func() bool {
		var err error
		dls, err = f.h.DeadLettered(f.ctx)
		return err == nil && len(dls) > 0
	})
	if string(dls[0].Payload) != "poison" {
		f.t.Errorf("dead-lettered payload %q", dls[0].Payload)
	}
	if dls[0].Reason != "" && !strings.Contains(dls[0].Reason, "test poison") {
		f.t.Errorf("dead-letter reason %q does not carry the nack reason", dls[0].Reason)
	}
	if got := r.counter("numaflow_source_dead_lettered_total", map[string]string{"reason": "max_deliveries"}); got != 1 {
		f.t.Errorf("dead_lettered_total = %v, want 1", got)
	}
}

func testCloseReleases(f *fixture) {
	want := f.publishN(5, "release")
	a := f.replica()
	held := a.collect(5, 30*time.Second, false)
	if len(held) != 5 {
		f.t.Fatalf("read %d of 5", len(held))
	}
	a.close()
	start := time.Now()
	b := f.replica()
	// Released at shutdown: another replica gets them now, not after a lease.
	within := 10 * time.Second
	got := b.collect(5, within, true)
	if len(got) != 5 {
		f.t.Fatalf("after a graceful close, another replica read %d of %d released messages within %s (%q)",
			len(got), len(want), within, payloads(got))
	}
	f.t.Logf("released messages re-read in %s", time.Since(start).Round(time.Millisecond))
}

func testCrashRedelivers(f *fixture) {
	if f.caps.Redelivery == 0 {
		f.t.Skip("harness has no short lease")
	}
	f.publishN(3, "crash")
	a := f.replica()
	if got := a.collect(3, 30*time.Second, false); len(got) != 3 {
		f.t.Fatalf("read %d of 3", len(got))
	}
	a.kill()
	b := f.replica()
	got := b.collect(3, f.caps.Redelivery+20*time.Second, true)
	if len(got) != 3 {
		f.t.Fatalf("after a crash, %d of 3 held messages came back", len(got))
	}
}

func testLeaseKeeper(f *fixture) {
	if f.caps.Redelivery == 0 {
		f.t.Skip("harness has no short lease")
	}
	f.publish(Publication{Payload: []byte("slow")})
	a := f.replica()
	held := a.collect(1, 30*time.Second, false)
	if len(held) != 1 {
		f.t.Fatalf("read %d of 1", len(held))
	}
	b := f.replica()
	// Hold it (a slow pipeline) for twice the redelivery time: b must never see it.
	until := time.Now().Add(2 * f.caps.Redelivery)
	for time.Now().Before(until) {
		if msgs := b.read(10, 500*time.Millisecond); len(msgs) > 0 {
			f.t.Fatalf("a held message reached another replica after %s: the lease was not kept", time.Since(until.Add(-2*f.caps.Redelivery)))
		}
	}
	a.ack(held...)
	a.close()
	until = time.Now().Add(f.caps.Redelivery)
	for time.Now().Before(until) {
		if msgs := b.read(10, 500*time.Millisecond); len(msgs) > 0 {
			f.t.Fatalf("acked message came back: %q", payloads(msgs))
		}
	}
}

func testDoubleAck(f *fixture) {
	f.publishN(2, "double")
	r := f.replica()
	got := r.collect(2, 30*time.Second, false)
	if len(got) != 2 {
		f.t.Fatalf("read %d of 2", len(got))
	}
	r.ack(got...)
	r.ack(got...)
	r.ack(numatest.Message{Offset: numatest.Offset{Value: []byte("never-handed-out"), Partition: partition}})
	// The source keeps working.
	f.publish(Publication{Payload: []byte("after")})
	next := r.collect(1, 20*time.Second, true)
	if len(next) != 1 || string(next[0].Payload) != "after" {
		f.t.Fatalf("after double acks, got %q, want [after]", payloads(next))
	}
}

func testPayloads(f *fixture) {
	var bin []byte
	if f.caps.Binary {
		bin = make([]byte, 512)
		for i := range bin {
			bin[i] = byte(i)
		}
	} else {
		bin = []byte("text only: ünïcödé ✓ \t tabs and \"quotes\"")
	}
	big := make([]byte, f.caps.MaxPayload)
	if f.caps.Binary {
		_, _ = rand.Read(big)
	} else {
		for i := range big {
			big[i] = 'a' + byte(i%26)
		}
	}
	f.publish(Publication{Payload: bin}, Publication{Payload: big})
	r := f.replica()
	got := r.collect(2, 60*time.Second, true)
	if len(got) != 2 {
		f.t.Fatalf("read %d of 2", len(got))
	}
	var sawBin, sawBig bool
	for _, m := range got {
		sawBin = sawBin || bytes.Equal(m.Payload, bin)
		sawBig = sawBig || bytes.Equal(m.Payload, big)
	}
	if !sawBin {
		f.t.Errorf("the %d-byte payload did not round-trip byte for byte", len(bin))
	}
	if !sawBig {
		f.t.Errorf("the %d-byte payload did not round-trip byte for byte", len(big))
	}
}

func testMapping(f *fixture) {
	before := time.Now()
	pub := Publication{Payload: []byte("mapped")}
	if f.caps.Keys {
		pub.Key = "key-1"
	}
	if f.caps.Headers {
		pub.Headers = map[string]string{"h-one": "1", "h-two": "zwei"}
	}
	f.publish(pub)
	after := time.Now()
	r := f.replica()
	got := r.collect(1, 30*time.Second, true)
	if len(got) != 1 {
		f.t.Fatalf("read %d of 1", len(got))
	}
	m := got[0]
	if f.caps.Keys && (len(m.Keys) == 0 || m.Keys[0] != "key-1") {
		f.t.Errorf("keys %q, want [key-1 ...]", m.Keys)
	}
	for k, v := range pub.Headers {
		if m.Headers[k] != v {
			f.t.Errorf("header %s = %q, want %q (headers %v)", k, m.Headers[k], v, m.Headers)
		}
	}
	// Broker clocks are loopback here, but allow for second-granularity timestamps.
	if m.EventTime.Before(before.Add(-5*time.Second)) || m.EventTime.After(after.Add(5*time.Second)) {
		f.t.Errorf("event time %s not near the publish time %s", m.EventTime, before)
	}
}

func testMissing(f *fixture) {
	if f.caps.NoMissingResource {
		f.t.Skip("the broker has no resource that can be missing")
	}
	r := f.replicaOf(f.h.MakeMissingDriver)
	start := time.Now()
	msgs := r.read(10, time.Second)
	if len(msgs) != 0 {
		f.t.Fatalf("missing resource returned messages")
	}
	if took := time.Since(start); took > 3*time.Second {
		f.t.Errorf("read on a missing resource took %s", took)
	}
	eventually(f.t, 15*time.Second, "a not_found broker error and readiness false", func() bool {
		return r.counter("numaflow_source_broker_errors_total", map[string]string{"op": "receive", "kind": "not_found"}) > 0 &&
			!r.src.Ready()
	})
	// It keeps running: reads still answer by their deadline.
	start = time.Now()
	r.read(10, 500*time.Millisecond)
	if took := time.Since(start); took > 2*time.Second {
		f.t.Errorf("read on a missing resource took %s", took)
	}
}

func testCloseIdempotent(f *fixture) {
	f.publishN(3, "idem")
	r := f.replica()
	r.collect(1, 30*time.Second, false)
	ctx, cancel := context.WithTimeout(f.ctx, 20*time.Second)
	defer cancel()
	r.stop()
	r.closed = true
	for i := 0; i < 3; i++ {
		if err := r.src.Close(ctx); err != nil {
			f.t.Fatalf("close #%d: %v", i+1, err)
		}
	}
	// Calls after Close must neither panic nor block.
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		in := inProcess{r.src}
		_, _ = in.read(ctx, 10, 100*time.Millisecond)
		_ = in.ack(ctx, []numatest.Offset{{Value: []byte("x")}})
		_, _ = in.pending(ctx)
	}()
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		f.t.Fatalf("calls after Close blocked")
	}
	b := f.replica()
	if got := b.collect(3, 20*time.Second, true); len(got) != 3 {
		f.t.Fatalf("after Close, %d of 3 messages were readable elsewhere", len(got))
	}
}

func testPending(f *fixture) {
	if !f.caps.Backlog {
		r := f.replica()
		p, err := r.numa.pending(f.ctx)
		if err != nil {
			f.t.Fatalf("pending: %v", err)
		}
		if p >= 0 {
			f.t.Errorf("pending = %d for a broker without a backlog count; want negative (unknown)", p)
		}
		return
	}
	f.publishN(20, "pending")
	r := f.replica()
	var p int64
	eventually(f.t, 20*time.Second, "pending = 20", func() bool {
		var err error
		p, err = r.numa.pending(f.ctx)
		return err == nil && p == 20
	})
	got := r.collect(10, 30*time.Second, false)
	// Read but not acked: still pending.
	time.Sleep(300 * time.Millisecond)
	if p, _ = r.numa.pending(f.ctx); p != 20 {
		f.t.Errorf("pending = %d with %d read but unacked of 20; read-but-unacked messages count", p, len(got))
	}
	r.ack(got...)
	r.collect(20-len(got), 30*time.Second, true)
	eventually(f.t, 20*time.Second, "pending = 0 after the drain", func() bool {
		p, _ = r.numa.pending(f.ctx)
		return p == 0
	})
}

// testPendingDuringBatch: numa's lag reader runs on its own timer and waits for the source's actor,
// which is free while a batch is written to the ISB, so Pending mostly lands between a Read and its
// Ack. The batch is read but not acked: it is part of the backlog. Over the socket numatest.Run asks
// between every Read and its Ack (PendingStrict); in process the same loop runs by hand. Each write
// takes longer than the harness's PendingRefresh, so the answer comes from a reading taken while the
// batch was out, and the last batch is the whole backlog.
func testPendingDuringBatch(f *fixture) {
	if !f.caps.Backlog {
		return
	}
	const n, batch, write = 30, 10, 300 * time.Millisecond
	f.publishN(n, "inflight")
	r := f.replica()
	// Once the backlog is seen, the answers below are known (not -1).
	eventually(f.t, 20*time.Second, "pending = 30", func() bool {
		p, err := r.numa.pending(f.ctx)
		return err == nil && p == n
	})
	if s, ok := r.numa.(overSocket); ok {
		ctx, cancel := context.WithTimeout(f.ctx, time.Minute)
		defer cancel()
		st, err := s.c.Run(ctx, numatest.LoopOptions{BatchSize: batch, Timeout: 500 * time.Millisecond, Limit: n,
			AckDelay: write, PendingEvery: time.Nanosecond, PartitionsEvery: -1, PendingStrict: true})
		if err != nil {
			f.t.Fatalf("numa's loop with Pending between each Read and its Ack: %v (stats %+v)", err, st)
		}
		if st.Acked != n || st.PendingMidBatch < st.Batches {
			f.t.Fatalf("stats %+v; want %d acked and Pending between each Read and its Ack", st, n)
		}
		return
	}
	acked := 0
	deadline := time.Now().Add(time.Minute)
	for acked < n && time.Now().Before(deadline) {
		msgs := r.read(batch, 500*time.Millisecond)
		if len(msgs) == 0 {
			continue
		}
		time.Sleep(write)
		p, err := r.numa.pending(f.ctx)
		if err != nil {
			f.t.Fatalf("pending: %v", err)
		}
		if p >= 0 && p < int64(len(msgs)) {
			f.t.Fatalf("pending = %d with %d messages read and not yet acked; read-but-unacked messages are part of the backlog", p, len(msgs))
		}
		r.ack(msgs...)
		acked += len(msgs)
	}
	if acked < n {
		f.t.Fatalf("%d of %d messages read within a minute", acked, n)
	}
}

func testPartitions(f *fixture) {
	f.publishN(3, "part")
	r := f.replica()
	parts, err := r.numa.partitions(f.ctx)
	if err != nil {
		f.t.Fatalf("partitions: %v", err)
	}
	if len(parts) != 1 || parts[0] != partition {
		f.t.Fatalf("active partitions %v, want [%d]", parts, partition)
	}
	for _, m := range r.collect(3, 30*time.Second, true) {
		if m.Offset.Partition != partition {
			f.t.Errorf("offset partition %d, want %d", m.Offset.Partition, partition)
		}
	}
}
