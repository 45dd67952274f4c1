package source

import (
	"cmp"
	"container/heap"
	"slices"
	"time"
)

// How a record moves between the ledger's states and pools: read (take, untake, requeue), answered
// (to the commit pool, delayed, released with the later messages of its key), and gone (forget, or
// taken back when our own receive got it again). Every function here holds the ledger's lock, or
// says that its caller does.

// taken is what one take handed out.
type taken struct {
	recs        []*record
	payloads    [][]byte        // read under the lock: an ack may drop a record's payload at any time
	redelivered int             // how many recs numa or the broker had delivered before
	expired     []*record       // not handed out, their lease ran out: in the commit pool, to release (expire)
	more        <-chan struct{} // closed when more may be readable (nil when take filled n)
	next        time.Time       // when the next delayed record is due (zero when none)
}

// take moves up to n readable records (due redeliveries first, then received ones in order) in
// flight. Redeliveries are counted under the lock too: a broker redelivery may raise a record's count
// at any time. A record whose lease ran out while it waited is not handed out (expire).
func (l *ledger) take(n int, now time.Time, stream uint64) taken {
	l.mu.Lock()
	defer l.mu.Unlock()
	var t taken
	readable := -1 // what numa read while a message that reached MaxExtension waited (-1: none did)
	hand := func(r *record) {
		if l.leased && !r.leaseUntil.After(now) {
			if r.maxedOut && r.emitted == 0 {
				readable = max(readable, int(min(l.handOuts-r.handOuts, uint64(l.prefetch))))
			}
			t.expired = append(t.expired, l.expire(r)...)
		} else {
			t.recs = append(t.recs, r)
		}
	}
	for len(t.recs) < n {
		r := l.delayed.popDue(now)
		if r == nil {
			break
		}
		hand(r)
	}
	for len(t.recs) < n {
		r := l.buffer.pop()
		if r == nil {
			break
		}
		hand(r)
	}
	// A message that reached MaxExtension in the buffer before numa read it: numa reads slower than
	// the buffer holds. Released and received again it would wait as long once more, one more delivery
	// at the broker each time (a redrive policy dead-letters it unread), so receives fill no more than
	// numa read meanwhile (at most half as much as before), until numa finds the buffer short: then
	// the limit doubles on each short read while it was what kept the buffer short.
	switch {
	case readable >= 0:
		l.limit = max(min(l.limit/2, readable), 1)
	case len(t.recs) < n && l.limit < l.prefetch && l.pools[receivePool].n+l.reserved >= l.limit:
		l.limit = min(2*l.limit, l.prefetch)
	}
	t.payloads = make([][]byte, len(t.recs))
	for i, r := range t.recs {
		l.setState(r, inFlight)
		l.handOuts++
		l.setAway(r, false)
		r.stream = stream
		r.emitted++
		if r.emitted > 1 {
			// Handed out again: one delivery more than the last hand-out, unless the broker's count
			// has already passed it (it redelivered the message to us meanwhile, and counted that).
			r.deliveries = max(r.deliveries, r.handed+1)
		}
		r.handed = r.deliveries
		t.payloads[i] = r.msg.Payload
		if r.deliveries > 1 {
			t.redelivered++
		}
	}
	switch {
	case len(t.expired) > 0:
		l.changed(false) // room for receives, and the gauges
	case len(t.recs) > 0:
		l.notifyGauges()
	}
	if len(t.recs) < n {
		t.more = l.waitData() // the reader may have to wait
	}
	t.next = l.delayed.nextDue()
	return t
}

// expire moves r, just taken off the buffer or the delayed queue because its lease ran out before
// numa read it (its extensions failed through a network cut, or MaxExtension was reached), to the
// commit pool, for the caller to release; with ordered keys the later buffered messages of its key go
// with it, so that none overtakes it. Its handle may be dead and the broker may have given the message
// to another replica: handed to numa, it would be a duplicate whose ack fails. Released instead, it is
// readable again at once if the broker still held it for us (an extension sent just before a cut may
// have landed after all), and the release fails harmlessly if not. Caller holds mu.
func (l *ledger) expire(r *record) []*record {
	rs := []*record{r}
	if l.ordered {
		rs = append(rs, l.laterOfKey(r)...)
	}
	for _, x := range rs {
		l.toCommitting(x, forRelease)
	}
	return rs
}

// untake puts records that could not be sent before the read deadline back at the front.
func (l *ledger) untake(rs []*record) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for i := len(rs) - 1; i >= 0; i-- {
		r := rs[i]
		if r.state != inFlight {
			continue
		}
		r.emitted--
		r.handed = r.deliveries - 1 // as if not handed out: the next take gives it the same number
		l.setState(r, buffered)
		l.buffer.pushFront(r)
	}
	l.changed(true)
}

// requeueInFlight makes the records in flight on a read stream readable again, oldest first: the
// stream ended and numa will never answer for them. Records handed to a newer stream stay in flight.
// It returns how many.
func (l *ledger) requeueInFlight(stream uint64) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	var rs []*record
	for _, r := range l.recs {
		if r.state == inFlight && r.stream == stream {
			rs = append(rs, r)
		}
	}
	slices.SortFunc(rs, func(a, b *record) int { return cmp.Compare(b.seq, a.seq) })
	for _, r := range rs { // newest first to the front, so the oldest ends up first
		l.setState(r, buffered)
		l.buffer.pushFront(r)
	}
	l.changed(len(rs) > 0)
	return len(rs)
}

// lookup returns the held record of a message id.
func (l *ledger) lookup(id string) (*record, bool) {
	r, ok := l.recs[id]
	return r, ok
}

// commitKind is why a record goes to the commit pool.
type commitKind int

const (
	forAck        commitKind = iota // numa is done with it
	forRelease                      // back to the broker: it will be read again
	forDeadLetter                   // to the dead-letter target (or the fallback): payload kept
)

// toCommitting moves a held record (in any state but committing) out of the readable queues into the
// commit pool. Caller holds mu.
func (l *ledger) toCommitting(r *record, why commitKind) bool {
	switch r.state {
	case committing:
		return false
	case buffered:
		l.buffer.remove(r)
	case delayed:
		l.delayed.remove(r)
	}
	switch {
	case why == forAck:
		l.unseen.del(r.msg.ID) // done with for good
	case why == forRelease && r.emitted == 0:
		l.unseen.add(r.msg.ID) // numa never saw this delivery: see deliveriesOf
	}
	l.setState(r, committing)
	r.keepBody = why == forDeadLetter
	r.releasing = why == forRelease
	if !r.keepBody {
		l.enter(r, noPool)
	} // else its body stays in its pool's budget until the dead letter is done (forget)
	l.setAway(r, why != forAck)
	if !r.keepBody {
		r.msg.Payload = nil // numa has it, or the broker keeps it: only the handle is needed now
	}
	return true
}

// laterOfKey removes the buffered records of r's key (all received after r) and returns them in
// order; nil unless ordered keys apply. Caller holds mu.
func (l *ledger) laterOfKey(r *record) []*record {
	if len(r.msg.Keys) == 0 {
		return nil
	}
	key := r.msg.Keys[0]
	return l.buffer.removeIf(func(x *record) bool { return len(x.msg.Keys) > 0 && x.msg.Keys[0] == key })
}

// delay moves rs (a nacked in-flight record and the later buffered ones of its key) to the delayed
// pool, readable again at due; false (nothing moved) when they do not fit and must go back to the
// broker instead. Records already in the delayed pool fit by definition. Caller holds mu.
func (l *ledger) delay(rs []*record, due time.Time) bool {
	need := budget{}
	for _, r := range rs {
		if r.pool != delayPool {
			need.n++
			need.bytes += r.size
		}
	}
	if d := l.pools[delayPool]; need.n > 0 && d.n > 0 && (d.n+need.n > l.prefetch || d.bytes+need.bytes > l.prefetchBytes) {
		return false
	}
	if l.ordered && len(rs[0].msg.Keys) > 0 {
		due = l.keepKeyOrder(rs[0], due)
	}
	for _, r := range rs {
		if r.state == buffered {
			l.buffer.remove(r)
		}
		l.enter(r, delayPool)
		l.setState(r, delayed)
		l.setAway(r, true)
		r.due = due
		l.delayed.push(r)
	}
	return true
}

// keepKeyOrder makes delayed messages of first's key come back in receive order whatever their
// delays: first is due no earlier than the earlier messages of its key, and the later ones no earlier
// than first. It returns first's due time. Caller holds mu.
func (l *ledger) keepKeyOrder(first *record, due time.Time) time.Time {
	key := first.msg.Keys[0]
	var later []*record
	for _, x := range l.delayed {
		if len(x.msg.Keys) == 0 || x.msg.Keys[0] != key {
			continue
		}
		if x.seq < first.seq {
			due = latest(due, x.due)
		} else {
			later = append(later, x)
		}
	}
	for _, x := range later {
		if x.due.Before(due) {
			x.due = due
			heap.Fix(&l.delayed, int(x.heapIndex))
		}
	}
	return due
}

func latest(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// handles returns the current handle and generation of each record.
func (l *ledger) handles(rs []*record) ([]Handle, []int32) {
	l.mu.Lock()
	defer l.mu.Unlock()
	hs := make([]Handle, len(rs))
	gens := make([]int32, len(rs))
	for i, r := range rs {
		hs[i], gens[i] = r.msg.Handle, r.gen
	}
	return hs, gens
}

// forget removes records the broker has committed or taken back. A record the broker handed to us
// again while the call ran with an older handle (its generation moved past gens[i]) is not forgotten:
// it comes back in again, for the caller to repeat the call with the newest handle (an ack acks the
// new delivery too, a release releases it too), so a redelivery racing a release is never left
// hidden for a lease.
func (l *ledger) forget(rs []*record, gens []int32) (again []*record) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for i, r := range rs {
		cur, ok := l.recs[r.msg.ID]
		if !ok || cur != r {
			continue
		}
		if gens != nil && r.gen != gens[i] {
			again = append(again, r)
			continue
		}
		l.counts[r.state]--
		l.enter(r, noPool)
		l.setAway(r, false)
		delete(l.recs, r.msg.ID)
	}
	l.changed(false)
	return again
}

// takeBack makes released records that our own receive got back during the release readable again,
// in receive order, as far as the receive budget allows; the others are returned, to be released
// once more, and with ordered keys so are the later records of their keys, which must not overtake
// them. Nothing is taken back once the ledger is closed.
func (l *ledger) takeBack(rs []*record) (left []*record) {
	if len(rs) == 0 {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	slices.SortFunc(rs, func(a, b *record) int { return cmp.Compare(a.seq, b.seq) })
	var back []*record
	var leftKeys map[string]bool // ordered keys: a key whose earlier record stays left keeps the later ones left too
	for _, r := range rs {
		p := l.pools[receivePool]
		fits := p.n < l.prefetch && (p.n == 0 || p.bytes+r.size <= l.prefetchBytes)
		key := ""
		if l.ordered && len(r.msg.Keys) > 0 {
			key = r.msg.Keys[0]
		}
		if l.closed || r.msg.Payload == nil && r.size > 0 || !fits || key != "" && leftKeys[key] {
			left = append(left, r)
			if key != "" {
				if leftKeys == nil {
					leftKeys = map[string]bool{}
				}
				leftKeys[key] = true
			}
			continue
		}
		l.setState(r, buffered)
		l.enter(r, receivePool)
		l.setAway(r, false)
		back = append(back, r)
	}
	for i := len(back) - 1; i >= 0; i-- { // oldest ends up first
		l.buffer.pushFront(back[i])
	}
	l.changed(len(back) > 0)
	return left
}

// selectRecords moves the records sel picks to the commit pool and returns them in receive order.
func (l *ledger) selectRecords(sel func(*record) bool) []*record {
	l.mu.Lock()
	defer l.mu.Unlock()
	var rs []*record
	for _, r := range l.recs {
		if r.state != committing && sel(r) {
			rs = append(rs, r)
		}
	}
	slices.SortFunc(rs, func(a, b *record) int { return cmp.Compare(a.seq, b.seq) })
	for _, r := range rs {
		l.toCommitting(r, forRelease)
	}
	l.changed(false)
	return rs
}
