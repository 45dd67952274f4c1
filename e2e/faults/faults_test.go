package faults

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// budget bounds one test of one connector (soak runs get longer).
func budget() time.Duration {
	if soak {
		return 25 * time.Minute
	}
	return 3 * time.Minute
}

// A source killed with kill -9 at random points of a drain, and restarted each time with the same
// replica identity, loses nothing, and redelivers no more than what was in flight at the kills: the
// batch the client had read but not seen acknowledged, plus the acks confirmed in the last second,
// whose broker commit the adapter may not have finished.
func TestKill9DuringDrain(t *testing.T) {
	forEachKit(t, func(t *testing.T, k *kit) {
		n, kills := scaled(20000), scaled(5)
		rng := newRand(t)
		res := k.resource(t, resOptions{})
		res.publish(t, makePayloads(n, rng))
		l := newLedger(n)
		r := newReplica(t, k, res, 0, res.upstream())
		ctx, cancel := context.WithTimeout(context.Background(), budget())
		defer cancel()
		start := time.Now()
		r.mustStart(ctx)

		// Kill points: after a random number of delivered messages (10%-90% of the drain), then a
		// random 0-100 ms later, so kills land mid-read, mid-ack and between calls.
		at := make([]int, kills)
		delay := make([]time.Duration, kills)
		for i := range at {
			at[i] = n/10 + rng.IntN(n*8/10)
			delay[i] = time.Duration(rng.IntN(100)) * time.Millisecond
		}
		slices.Sort(at)
		var (
			mu       sync.Mutex
			recs     []*killRec
			lastKill time.Time
		)
		killerDone := make(chan struct{})
		go func() {
			defer close(killerDone)
			for i, x := range at {
				r.mu.Lock()
				gen := r.gen
				r.mu.Unlock()
				if !waitFor(ctx, func() bool { return l.uniqueCount() >= x }) {
					return
				}
				sleepCtx(ctx, delay[i])
				// Each kill hits a process the loop has restarted since the last one.
				if !waitFor(ctx, func() bool { r.mu.Lock(); defer r.mu.Unlock(); return r.gen >= gen && !r.stopped }) {
					return
				}
				rec := r.kill9()
				mu.Lock()
				recs = append(recs, rec)
				lastKill = rec.at
				mu.Unlock()
			}
		}()
		settle := k.lease + 3*time.Second // a kill's held messages are back within a lease
		err := r.run(ctx, l, loopOpts{restart: true, done: func(empty bool) bool {
			select {
			case <-killerDone:
			default:
				return false
			}
			mu.Lock()
			defer mu.Unlock()
			return empty && l.complete() && time.Since(lastKill) > settle
		}})
		if err != nil {
			t.Fatal(err)
		}
		<-killerDone
		took := time.Since(start)
		checkAll(t, l)
		if len(recs) != kills {
			t.Fatalf("only %d of %d kills happened before the deadline", len(recs), kills)
		}
		bound := 0
		kt := make([]time.Time, len(recs))
		for i, rec := range recs {
			kt[i] = rec.at
			bound += len(rec.unacked) + rec.recentAcked
		}
		rep := l.explain(kt)
		var maxLag time.Duration
		for i, rec := range recs {
			back, last := l.deliveredAfter(rec.unacked, rec.at, -1)
			rt := time.Duration(0)
			if back > 0 {
				rt = last.Sub(rec.at)
			}
			var acks []string
			for _, a := range rec.lastAcks {
				acks = append(acks, fmt.Sprintf("%d %s before", a.n, rec.at.Sub(a.at).Round(time.Millisecond)))
			}
			maxLag = max(maxLag, rep.maxLag[i])
			t.Logf("kill %d: %d read and unacked, last acks %v; %d redelivered because of it (%d of the unacked, the last %s after the kill; %d acknowledged before the kill, the oldest %s before)",
				i+1, len(rec.unacked), acks, rep.perKill[i], back, secs(rt), rep.ackedBefore[i], rep.maxLag[i].Round(time.Millisecond))
			// Unacked ones whose ack was under way may have been committed; the others must come back.
			if limit := 2*k.lease + 10*time.Second; rt > limit {
				t.Errorf("kill %d: held messages took %s to come back (lease %s, limit %s)", i+1, secs(rt), k.lease, limit)
			}
		}
		dups := l.duplicates()
		t.Logf("%s: %d messages, %d kills, %d duplicates (bound: %d read-and-unacked or acknowledged within %s of a kill); "+
			"acknowledged messages redelivered after a kill were acknowledged at most %s before it; drained in %s",
			k.name, n, kills, dups, bound, ackWindow, maxLag.Round(time.Millisecond), secs(took))
		if dups > bound {
			t.Errorf("%d duplicates, more than the %d messages in flight at the kills", dups, bound)
		}
		if rep.unexplained > 0 {
			t.Errorf("%d redeliveries with no kill in between (a lease ran out while the source held the message), e.g. %v", rep.unexplained, rep.samples)
		}
		if maxLag > ackWindow {
			t.Errorf("a message acknowledged %s before a kill was redelivered: acks take longer than %s to reach the broker", maxLag, ackWindow)
		}
	})
}

// SIGTERM while numa holds a read batch unacked: the process exits 0 well within Kubernetes' 30 s grace
// period, and the held messages (and everything it had prefetched) are at once readable by another
// replica, not after the lease (30 s here, so "at once" is clearly told apart).
func TestSIGTERMReleasesHeldMessages(t *testing.T) {
	forEachKit(t, func(t *testing.T, k *kit) {
		const n, hold = 300, 100
		lease := 30 * time.Second
		res := k.resource(t, resOptions{lease: lease})
		res.publish(t, makePayloads(n, newRand(t)))
		ctx, cancel := context.WithTimeout(context.Background(), budget())
		defer cancel()

		a := newReplica(t, k, res, 0, res.upstream())
		a.mustStart(ctx)
		la := newLedger(n)
		var held []int
		for len(held) < hold && ctx.Err() == nil {
			msgs, err := a.client.Read(ctx, uint64(hold-len(held)), time.Second)
			if err != nil {
				t.Fatal(err)
			}
			held = append(held, la.record(0, msgs)...)
		}
		if len(held) < hold {
			t.Fatalf("replica 0 read only %d messages", len(held))
		}

		// Another replica takes over; with handOff the same replica, restarted once it has exited.
		next := 1
		if k.handOff != "" {
			next = 0
		}
		b := newReplica(t, k, res, next, res.upstream())
		lb := newLedger(n)
		bDone := make(chan error, 1)
		runB := func() {
			b.mustStart(ctx)
			go func() { bDone <- b.run(ctx, lb, loopOpts{done: func(bool) bool { return lb.complete() }}) }()
		}
		if k.handOff == "" {
			runB()
		}

		t0 := time.Now()
		code, took := a.sigterm()
		a.closeClient()
		if k.handOff != "" {
			runB()
		}
		if code != 0 {
			t.Errorf("exit status %d after SIGTERM, want 0", code)
		}
		if took > 10*time.Second {
			t.Errorf("exit took %s after SIGTERM; the grace period is 30 s and it should be well under", secs(took))
		}
		got := func() bool { n, _ := lb.deliveredAfter(held, t0, next); return n == len(held) }
		wctx, wcancel := context.WithTimeout(ctx, lease)
		defer wcancel()
		if !waitFor(wctx, got) {
			n, _ := lb.deliveredAfter(held, t0, next)
			t.Fatalf("replica %d got only %d of the %d held messages within the %s lease", next, n, len(held), lease)
		}
		_, last := lb.deliveredAfter(held, t0, next)
		heldBack := last.Sub(t0)
		// The rest were prefetched by replica 0 (buffered in its adapter): released at once too.
		var rest []int
		for i := range n {
			if !slices.Contains(held, i) {
				rest = append(rest, i)
			}
		}
		soon, _ := lb.deliveredAfter(rest, t0, next)
		if err := <-bDone; err != nil {
			t.Fatal(err)
		}
		_, lastRest := lb.deliveredAfter(rest, t0, next)
		restBack := lastRest.Sub(t0)
		t.Logf("%s: exit status %d %s after SIGTERM; replica %d had all %d held messages %s after SIGTERM; "+
			"%d of the other %d (prefetched by replica 0) by then, all of them %s after SIGTERM (lease %s)",
			k.name, code, secs(took), next, len(held), secs(heldBack), soon, len(rest), secs(restBack), lease)
		limit := lease / 3
		if k.releaseWithin != nil {
			limit = k.releaseWithin(lease)
		}
		if heldBack > limit {
			t.Errorf("the held messages took %s to reach replica %d: not at once (lease %s, limit %s)", secs(heldBack), next, lease, limit)
		}
		k.check(t, "sigterm-prefetched", restBack <= limit,
			"the messages replica 0 had prefetched took up to %s to reach replica %d: not at once (lease %s, limit %s)", secs(restBack), next, lease, limit)
		checkAll(t, lb)
	})
}

// A network cut between source and broker for 10 s mid-stream: the process stays up, idles (under 5%
// of a core), reports not ready, is ready again within 5 s of the heal, and loses nothing. Two kinds of
// cut: refused connections (toxiproxy stopped) and a silent blackhole (toxiproxy's timeout toxic with
// timeout 0 on both directions: connections stay open and carry nothing).
func TestNetworkCut(t *testing.T) {
	forEachKit(t, func(t *testing.T, k *kit) {
		for _, mode := range []string{cutRefuse, cutSilent} {
			t.Run(mode, func(t *testing.T) {
				res := k.resource(t, resOptions{})
				px := newProxy(t, res.upstream())
				outage(t, k, res, px.Addr, "cut-"+mode, func() { px.cut(t, mode) }, func() { px.heal(t, mode) }, nil)
			})
		}
	})
}

// A broker restart (Redis with AOF persistence, killed with kill -9 and started again on the same port
// 10 s later): the same checks as a network cut.
func TestBrokerRestart(t *testing.T) {
	forEachKit(t, func(t *testing.T, k *kit) {
		if k.noRestart != "" {
			t.Skip(k.noRestart)
		}
		res := k.resource(t, resOptions{persistent: true})
		outage(t, k, res, res.upstream(), "restart", nil, nil, res)
	})
}

const outageFor = 10 * time.Second

// outage drains scaled(6000) messages from res through addr with one replica and, a fifth of the way in,
// makes the broker unreachable for outageFor: with cut/heal, or by restarting the broker (restart set).
// Checks are named name+"-cpu", "-notready", "-ready", "-lost" (see kit.known).
func outage(t *testing.T, k *kit, res resource, addr, name string, cut, heal func(), restart resource) {
	n := scaled(6000)
	res.publish(t, makePayloads(n, newRand(t)))
	limit := budget()
	if restart != nil {
		limit += 5 * time.Minute // what a restarted broker may take to recover its data (restartBroker waits for it)
	}
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	l := newLedger(n)
	r := newReplica(t, k, res, 0, addr)
	r.mustStart(ctx)
	runDone := make(chan error, 1)
	go func() { runDone <- r.run(ctx, l, loopOpts{done: func(bool) bool { return l.complete() }}) }()
	if !waitFor(ctx, func() bool { return l.uniqueCount() >= n/5 }) {
		t.Fatalf("only %d messages delivered before the deadline", l.uniqueCount())
	}
	p := r.process()
	pid := r.pid()

	var (
		cpu       time.Duration
		window    time.Duration
		samples   int
		notReady  int
		firstDown = time.Duration(-1)
		crashed   bool
		during    int
		logLines  int
	)
	probe := func() {
		cpu0, err := cpuTime(pid)
		if err != nil {
			t.Fatal(err)
		}
		logs0 := strings.Count(p.Output(), "\n")
		defer func() { logLines = strings.Count(p.Output(), "\n") - logs0 }()
		t0 := time.Now()
		before := l.uniqueCount()
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
		for time.Since(t0) < outageFor {
			select {
			case <-p.Done():
				crashed = true
			case <-tick.C:
			}
			if crashed {
				break
			}
			samples++
			if r.readyz() != 200 {
				notReady++
				if firstDown < 0 {
					firstDown = time.Since(t0)
				}
			}
		}
		cpu1, err := cpuTime(pid)
		if err == nil {
			cpu, window = cpu1-cpu0, time.Since(t0)
		}
		during = l.uniqueCount() - before
	}
	if restart != nil {
		restart.restartBroker(t, probe)
	} else {
		cut()
		probe()
		heal()
	}
	healed := time.Now()
	if crashed {
		code, _ := p.Wait(0)
		t.Fatalf("the source exited (status %d) during the outage:\n%s", code, tail(p.Output(), 40))
	}
	readyIn := time.Duration(-1)
	rctx, rcancel := context.WithTimeout(ctx, 30*time.Second)
	if waitFor(rctx, func() bool { return r.readyz() == 200 }) {
		readyIn = time.Since(healed)
	}
	rcancel()
	if err := <-runDone; err != nil {
		t.Fatal(err)
	}
	drained := time.Since(healed)
	share := cpu.Seconds() / window.Seconds()
	t.Logf("%s: outage %s: CPU %s over %s (%.1f%% of a core), %d log lines; /readyz not 200 in %d of %d probes, first %s after the cut; "+
		"%d messages delivered from the buffer during the outage; ready %s after the heal; all %d delivered %s after the heal, %d duplicates",
		k.name, outageFor, cpu, secs(window), 100*share, logLines, notReady, samples, secs(firstDown), during, secs(readyIn), n, secs(drained), l.duplicates())
	k.check(t, name+"-cpu", share <= 0.05, "used %.1f%% of a core while the broker was unreachable (limit 5%%)", 100*share)
	k.check(t, name+"-notready", notReady > 0, "/readyz answered 200 throughout the %s outage", outageFor)
	k.check(t, name+"-ready", readyIn >= 0 && readyIn <= 5*time.Second,
		"/readyz took %s after the heal to answer 200 (limit 5 s; -1: not within 30 s)", secs(readyIn))
	checkAll(t, l)
}

// A slow pipeline: one replica holds each of its first batches for three leases before acking, while a
// second replica reads the same resource. The lease keeper must keep every held message (in flight and
// prefetched) from going to the other replica: no message is delivered twice.
func TestSlowPipeline(t *testing.T) {
	forEachKit(t, func(t *testing.T, k *kit) {
		if k.handOff != "" {
			t.Skip(k.handOff) // and no lease runs out while a message is held
		}
		n := scaled(2000)
		// Replica 0 holds two batches (what it prefetches: replica 1 drains the rest meanwhile), each
		// for three leases; ten in soak mode (many more extensions per message).
		const slow = 2
		hold := 3 * k.lease
		if soak {
			hold = 10 * k.lease
		}
		res := k.resource(t, resOptions{})
		res.publish(t, makePayloads(n, newRand(t)))
		ctx, cancel := context.WithTimeout(context.Background(), budget())
		defer cancel()
		l := newLedger(n)
		// Replica 0 reads batches of 100 and prefetches 200 (twice NUMAFLOW_READ_BATCH_SIZE).
		a := newReplica(t, k, res, 0, res.upstream(), "NUMAFLOW_READ_BATCH_SIZE=100")
		a.mustStart(ctx)
		aDone := make(chan error, 1)
		batches := 0
		go func() {
			aDone <- a.run(ctx, l, loopOpts{batch: 100, ackDelay: hold, slowBatches: slow, done: func(empty bool) bool {
				if !empty {
					batches++
				}
				return batches >= slow || l.complete()
			}})
		}()
		if !waitFor(ctx, func() bool { return l.uniqueCount() > 0 }) {
			t.Fatal("replica 0 read nothing")
		}
		b := newReplica(t, k, res, 1, res.upstream())
		b.mustStart(ctx)
		bDone := make(chan error, 1)
		go func() { bDone <- b.run(ctx, l, loopOpts{done: func(bool) bool { return l.complete() }}) }()
		start := time.Now()
		if err := <-aDone; err != nil {
			t.Fatal(err)
		}
		held := time.Since(start)
		code, _ := a.sigterm() // hands its prefetched messages to replica 1
		a.closeClient()
		if code != 0 {
			t.Errorf("replica 0 exited with status %d", code)
		}
		if err := <-bDone; err != nil {
			t.Fatal(err)
		}
		checkAll(t, l)
		per := l.perReplica()
		t.Logf("%s: replica 0 held %d batches of 100 for %s each (lease %s, %s in all); deliveries: replica 0 %d, replica 1 %d; %d duplicates",
			k.name, batches, secs(hold), k.lease, secs(held), per[0], per[1], l.duplicates())
		if d := l.duplicates(); d > 0 {
			t.Errorf("%d messages were delivered twice: a held lease ran out", d)
		}
	})
}
