package faults

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// minShare is the least fraction of the messages each of three replicas must deliver (a fair share is
// a third; this allows for one replica starting its receives a moment later than the others).
const minShare = 0.2

// shareLease is the lease of the no-fault scale test. The kits' short leases (4 s) make the fault tests
// fast, but with three replicas, an emulator on one event loop and other tests on two cores, a broker
// call can take longer than that; a lease that runs out before the extension lands is a redelivery,
// which this test must not count against the connector. "Without a fault" means within the lease.
const shareLease = 30 * time.Second

// Three replicas sharing one queue, subscription or consumer group drain scaled(30,000) messages:
// nothing is lost, nothing is delivered twice, and each does a fair share.
func TestThreeReplicasShareTheLoad(t *testing.T) {
	forEachKit(t, func(t *testing.T, k *kit) {
		n := scaled(30000)
		res := k.resource(t, resOptions{lease: shareLease})
		ctx, cancel := context.WithTimeout(context.Background(), budget())
		defer cancel()
		l := newLedger(n)
		reps := make([]*replica, 3)
		for i := range reps {
			reps[i] = newReplica(t, k, res, i, res.upstream())
			reps[i].mustStart(ctx)
		}
		start := time.Now()
		errs := make(chan error, len(reps))
		var wg sync.WaitGroup
		for _, r := range reps {
			wg.Go(func() { errs <- r.run(ctx, l, loopOpts{done: func(bool) bool { return l.complete() }}) })
		}
		for i, r := range reps { // subscribed (MQTT: a replica that is not gets no share of what is published)
			if !waitFor(ctx, func() bool { return r.readyz() == 200 }) {
				t.Fatalf("replica %d not ready", i)
			}
		}
		res.publish(t, makePayloads(n, newRand(t))) // while all three are reading
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
		took := time.Since(start)
		checkAll(t, l)
		per := l.perReplica()
		t.Logf("%s: %d messages drained by 3 replicas in %s (%.0f msg/s, publishing included): %d / %d / %d, %d duplicates",
			k.name, n, secs(took), float64(n)/took.Seconds(), per[0], per[1], per[2], l.duplicates())
		if d := l.duplicates(); d > 0 {
			t.Errorf("%d messages delivered twice without any fault", d)
		}
		for i := range reps {
			share := float64(per[i]) / float64(n)
			k.check(t, "scale-fair-share", share >= minShare,
				"replica %d delivered %.1f%% of the messages (at least %.0f%% expected)", i, 100*share, 100*minShare)
		}
	})
}

// Three replicas shrink to one mid-stream: two are killed with kill -9 while each holds a read batch
// unacked (and more prefetched). The survivor gets every one of their held messages within about a
// lease (limit 1.5 leases + 5 s), and nothing is lost.
func TestShrinkThreeToOne(t *testing.T) {
	forEachKit(t, func(t *testing.T, k *kit) {
		if k.handOff != "" {
			t.Skip(k.handOff)
		}
		n := scaled(20000)
		res := k.resource(t, resOptions{})
		res.publish(t, makePayloads(n, newRand(t)))
		ctx, cancel := context.WithTimeout(context.Background(), budget())
		defer cancel()
		l := newLedger(n)
		reps := make([]*replica, 3)
		for i := range reps {
			reps[i] = newReplica(t, k, res, i, res.upstream())
			reps[i].mustStart(ctx)
		}
		// Replicas 1 and 2 read until a third of the messages are out, then read one more batch and
		// hold it (a numa that is about to die); the survivor acks everything until all are in.
		// The survivor stops once everything was delivered and, after the kills, every message the
		// killed replicas held came back to it (or 10 s past the limit: the checks below report it).
		limit := k.lease + k.lease/2 + 5*time.Second
		var (
			killed atomic.Bool
			held   []int
			t0     time.Time
		)
		survivorDone := func(bool) bool {
			if !killed.Load() || !l.complete() {
				return false
			}
			back, _ := l.deliveredAfter(held, t0, 0)
			return back == len(held) || time.Since(t0) > limit+10*time.Second
		}
		errs := make([]chan error, 3)
		for i, r := range reps {
			o := loopOpts{done: survivorDone}
			if i > 0 {
				o.done = func(empty bool) bool { return !empty && l.uniqueCount() >= n/3 }
				o.holdLast = true
			}
			errs[i] = make(chan error, 1)
			go func() { errs[i] <- r.run(ctx, l, o) }()
		}
		for _, ch := range errs[1:] { // replicas 1 and 2 now hold their last batch
			if err := <-ch; err != nil {
				t.Fatal(err)
			}
		}
		bound := 0
		t0 = time.Now()
		for _, r := range reps[1:] {
			rec := r.kill9()
			held = append(held, rec.unacked...)
			bound += len(rec.unacked) + rec.recentAcked
		}
		killed.Store(true)
		if err := <-errs[0]; err != nil {
			t.Fatal(err)
		}
		took := time.Since(t0)
		checkAll(t, l)
		back, last := l.deliveredAfter(held, t0, 0)
		rt := last.Sub(t0)
		rep := l.explain([]time.Time{t0})
		t.Logf("%s: replicas 1 and 2 killed holding %d read messages; the survivor had %d of them back, the last %s after the kills (lease %s); "+
			"all %d delivered %s after the kills; %d duplicates (bound %d), %d of them acknowledged before the kills (the oldest %s before)",
			k.name, len(held), back, secs(rt), k.lease, n, secs(took), l.duplicates(), bound, rep.ackedBefore[0], rep.maxLag[0].Round(time.Millisecond))
		if rep.unexplained > 0 {
			t.Errorf("%d redeliveries not caused by the kills (a lease ran out while a replica held the message)", rep.unexplained)
		}
		if rep.maxLag[0] > ackWindow {
			t.Errorf("a message acknowledged %s before the kills was redelivered: acks take longer than %s to reach the broker", rep.maxLag[0], ackWindow)
		}
		if back != len(held) {
			t.Errorf("the survivor got only %d of the %d messages the killed replicas held", back, len(held))
		}
		if len(held) == 0 {
			t.Errorf("the killed replicas held nothing: the test proved nothing")
		}
		if rt > limit {
			t.Errorf("held messages took %s to reach the survivor (limit %s)", secs(rt), limit)
		}
		if d := l.duplicates(); d > bound {
			t.Errorf("%d duplicates, more than the %d in flight at the kills", d, bound)
		}
	})
}
