package source

import (
	"math"
	"sync"
	"time"
	"unicode/utf8"
)

// The ledger is the one record of what the adapter holds, and the one place that decides whether
// there is room to receive. Every message a driver returns becomes a record, kept until the broker
// has committed it or taken it back:
//
//	buffered -> inFlight (handed to numa) -> committing (ack, release or dead letter under way) -> gone
//	buffered or delayed -> committing (its lease ran out before numa read it: released to the broker)
//	inFlight -> delayed (nacked, LocalRedelivery) -> inFlight ...
//	inFlight -> buffered (numa's read stream ended before it answered)
//
// Three budgets, each with its own pool, so no pool takes room from another:
//   - receive pool: buffered + in flight + reservations of running receives, at most Options.Prefetch
//     messages and Options.PrefetchBytes payload bytes. A single message larger than PrefetchBytes is
//     still taken, when the pool is otherwise empty: one at a time.
//   - delayed pool: locally delayed redeliveries, at most Prefetch messages and PrefetchBytes bytes;
//     a nack that does not fit is handed back to the broker instead (see nack.go).
//   - commit pool: records whose commit is under way, at most 2 x Prefetch; their payloads are
//     dropped unless a dead letter needs them. While it is full, receiving pauses (a slow broker
//     commit is backpressure).
//
// Waiters never miss a change: a waiter takes dataCh or roomCh in the same critical section in which
// it found nothing to do, and the next change that can make a record readable or free room closes it
// (channels are made only when someone is about to wait).
type ledger struct {
	ordered       bool // Capabilities.OrderedKeys: track keys whose earlier message is away
	leased        bool // Capabilities.Lease > 0: a record whose lease ran out is not handed to numa
	prefetch      int
	prefetchBytes int64
	// limit is how many messages receives may fill the receive pool up to: Prefetch, less while numa
	// reads slower than the buffer holds (see take).
	limit         int
	maxCommitting int
	firstUnit     int // the largest ask before a message's size is known (see firstReceive)

	mu       sync.Mutex
	recs     map[string]*record
	counts   [numStates]int // records per state
	pools    [numPools]budget
	buffer   queue      // buffered records, in receive order
	delayed  delayQueue // locally nacked records, by due time
	reserved int        // messages promised to running receives
	resBytes int64      // bytes promised to running receives (estimate)
	sizeEst  int64      // running estimate of a payload's size
	sized    bool       // sizeEst has seen a message
	seq      uint64
	handOuts uint64         // records handed to numa so far (see take)
	closed   bool           // shutting down: nothing more is admitted
	away     map[string]int // ordered keys: records per key taken away from numa (released, dead-lettered, delayed)
	// unseen counts, by message ID, the broker deliveries this process handed back before numa read
	// them (a batch over budget, a key-mate of a released message, shutdown). A broker's delivery count
	// includes them; MaxDeliveries must not (see deliveriesOf).
	unseen   idCounts
	dataCh   chan struct{}
	roomCh   chan struct{}
	extCh    chan struct{}                                       // closed when lease extension calls end (see awaitExtensions)
	onChange func(counts [numStates]int, pools [numPools]budget) // gauges; called under mu
}

// pool is the budget a record counts against. A record stays in the pool it entered until it leaves
// the ledger's pools for the commit pool: a delayed record that is read again stays in the delayed pool,
// so redeliveries never take receive room and never exceed a budget.
type pool uint8

const (
	noPool      pool = iota // committing: counted by state, payload dropped
	receivePool             // received, buffered or in flight (or committing for a dead letter)
	delayPool               // nacked for a local redelivery, waiting or read again
	numPools
)

// budget is what a pool holds.
type budget struct {
	n     int
	bytes int64
}

type state uint8

const (
	buffered   state = iota // received, not yet handed to numa
	inFlight                // handed to numa, no answer yet
	committing              // acked, nacked, dead-lettered or released: a broker call is under way
	delayed                 // nacked; held here until its due time (LocalRedelivery)
	numStates
)

// record is one held message. Fields other than msg's are guarded by ledger.mu; msg.Handle is
// replaced (under mu) when the broker redelivers the message to us, and gen counts those
// replacements, so a broker call made with an older handle can tell it raced a redelivery.
type record struct {
	msg        *Message
	size       int64     // bytes at receive (WireSize: payload, offset, keys, headers)
	received   time.Time // first receive in this process (for MaxExtension)
	leaseUntil time.Time
	due        time.Time // delayed: when it becomes readable again
	seq        uint64    // receive order
	handOuts   uint64    // ledger.handOuts when it was received
	stream     uint64    // in flight: the read stream it was handed to (see Source.watchStream)
	deliveries int       // deliveries to numa, this one included (max of broker count and ours)
	handed     int       // deliveries at the last hand-out to numa (see ledger.take)
	emitted    int32     // times handed to numa by this process
	gen        int32     // bumped whenever msg.Handle is replaced
	heapIndex  int32     // in the delayed queue; -1 when not in it
	queued     bool      // in the buffer queue
	state      state
	pool       pool
	maxedOut   bool // MaxExtension reached: no more extensions
	keepBody   bool // committing for a dead letter: the payload is still needed
	releasing  bool // committing for a release: the release sets its lease, extensions must not
	extending  bool // a lease extension call for it is under way (lease.go): a release waits for it
	away       bool // taken away from numa (released, dead-lettered, delayed): later messages of its key wait
	repair     bool // a key or header is not valid UTF-8: toWire sends a repaired copy
}

func newLedger(prefetch int, prefetchBytes int64, maxMessage int, ordered, leased bool) *ledger {
	return &ledger{
		ordered: ordered, leased: leased, away: make(map[string]int),
		prefetch: prefetch, prefetchBytes: prefetchBytes, maxCommitting: 2 * prefetch, limit: prefetch,
		firstUnit: int(min(max(prefetchBytes/int64(max(maxMessage, 1)), 1), firstReceive)),
		recs:      make(map[string]*record),
	}
}

// ---- budgets ----

// reserve promises room for one Receive of at most limit messages (limit <= 0: no limit of the
// broker's own) and returns how many to ask for; 0 when there is no room. whole says the ask is as
// large as a receive may be at the current message size (limit, or the per-receive share of the byte
// budget), not cut short by the room left: only then does a full answer show the broker holds more.
// The caller gives the promise back with admit (or unreserve when the call failed).
func (l *ledger) reserve(limit int) (n int, bytes int64, whole bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed || l.counts[committing] >= l.maxCommitting {
		return 0, 0, false
	}
	held := l.pools[receivePool].n + l.reserved
	heldBytes := l.pools[receivePool].bytes + l.resBytes
	room := l.limit - held
	if room <= 0 || (heldBytes >= l.prefetchBytes && held > 0) {
		return 0, 0, false
	}
	unit := math.MaxInt // the largest ask of one receive
	if limit > 0 {
		unit = limit
	}
	est := l.estimate()
	if !l.sized {
		unit = min(unit, l.firstUnit) // no size seen yet: a small first ask, in case messages are big
	} else {
		// One receive brings at most an eighth of the byte budget: a broker client holds a reply in
		// its own buffers (often twice) while it decodes it, on top of what the ledger holds.
		unit = min(unit, int(max(l.prefetchBytes/receiveShare/max(l.sizeEst, 1), 1)))
	}
	n = min(room, unit)
	if fit := (l.prefetchBytes - heldBytes) / est; int64(n) > fit {
		if fit == 0 && held > 0 {
			return 0, 0, false // less room than one message is likely to need: wait for more
		}
		n = int(max(fit, 1))
	}
	l.reserved += n
	l.resBytes += int64(n) * est
	return n, int64(n) * est, n == unit
}

// firstReceive caps each receive until the ledger has seen a message's size, and so does the number
// of messages of MaxMessageBytes PrefetchBytes holds (at least one): a restart with a backlog of 50
// MiB messages must not take ten of them into a 64 MiB budget.
const firstReceive = 10

// receiveShare: one receive asks for at most 1/receiveShare of the byte budget.
const receiveShare = 8

// estimate is the payload size reservations assume: the running average, and never less than a
// fair share of the byte budget, so small messages are bounded by count alone. Caller holds mu.
func (l *ledger) estimate() int64 {
	fair := max(l.prefetchBytes/int64(max(l.prefetch, 1)), 1)
	return max(l.sizeEst, fair)
}

// unreserve gives back a reservation whose Receive brought nothing to admit.
func (l *ledger) unreserve(n int, bytes int64) {
	l.mu.Lock()
	l.reserved -= n
	l.resBytes -= bytes
	l.changed(false)
	l.mu.Unlock()
}

// admitted is what admit did with one Receive's messages.
type admitted struct {
	added    int        // new records, now buffered
	tooLarge []*record  // new records over MaxMessageBytes, now committing (to be dead-lettered)
	surplus  []*Message // to hand back to the broker at once
	dups     int        // redeliveries of records already held
	rejected int        // messages without an id
}

// deliveriesOf is the broker's delivery count of m less the deliveries this process handed back
// before numa read them: a message returned unread (over budget, behind a released key-mate, at
// shutdown) must not reach MaxDeliveries early. Handed back by an earlier process, or by another
// replica, it still counts: that is not known here. Caller holds mu.
func (l *ledger) deliveriesOf(m *Message) int {
	return m.Deliveries - l.unseen.get(m.ID)
}

// WireSize is at most how many bytes m takes in numa's ReadResponse: its payload, offset (ID), keys
// and headers (made valid UTF-8, see wireLen), plus the protobuf framing of each field (a tag and a length: at most 6 bytes for a field
// up to 64 MiB; 18 per header entry, which is a message of two fields) and of the response around it.
// It is what Options.MaxMessageBytes and Options.PrefetchBytes count, so a message whose headers push
// it over numa's gRPC limit is dead-lettered as too large instead of failing numa's read stream again
// and again.
func WireSize(m *Message) int64 {
	n, _ := wireSize(m)
	return n
}

// wireSize is WireSize, and whether every key and header is valid UTF-8 already: then they go on the
// wire as they are, with no second look (see toWire).
func wireSize(m *Message) (n int64, valid bool) {
	const fieldFraming, entryFraming, responseFraming = 6, 18, 64
	n, valid = int64(len(m.Payload)+len(m.ID)+responseFraming), true
	for _, k := range m.Keys {
		kn, ok := wireLen(k)
		n += int64(kn + fieldFraming)
		valid = valid && ok
	}
	for k, v := range m.Headers {
		kn, kok := wireLen(k)
		vn, vok := wireLen(v)
		n += int64(kn + vn + entryFraming)
		valid = valid && kok && vok
	}
	return n, valid
}

// wireLen is at most how long s is on the wire, and whether s is valid UTF-8: a key or header that is
// not is sent with U+FFFD (3 bytes) for each run of bad bytes (see validKeys), so up to three times as
// long.
func wireLen(s string) (int, bool) {
	if utf8.ValidString(s) {
		return len(s), true
	}
	return 3 * len(s), false
}

// admit gives back the reservation (n, bytes) and turns the received messages into buffered records.
// A redelivery of a message already held only refreshes its handle and lease. Messages over
// maxMessage become committing records for the caller to dead-letter, together with (OrderedKeys)
// the later messages of their key in this batch. Messages that no longer fit the budget, and
// everything once the ledger is closed, come back as surplus for the caller to release.
func (l *ledger) admit(msgs []*Message, n int, bytes int64, now time.Time, lease time.Duration, maxMessage int,
	nackedDeliveries func(id string) int) admitted {
	var out admitted
	l.mu.Lock()
	defer l.mu.Unlock()
	l.reserved -= n
	l.resBytes -= bytes
	var batchBytes int64
	var sizedMsgs int64
	full := false
	var surplusMax int64
	for _, m := range msgs {
		if m == nil || m.ID == "" {
			out.rejected++
			continue
		}
		if r, ok := l.recs[m.ID]; ok {
			// The broker redelivered a message we still hold (its lease ran out, or a release raced
			// our own receive): keep the newest handle, do not hand it to numa a second time.
			r.msg.Handle = m.Handle
			r.gen++
			r.leaseUntil = now.Add(lease)
			if r.maxedOut { // its lease ran out and it came back to us: a fresh extension window
				r.maxedOut, r.received, r.handOuts = false, now, l.handOuts
			}
			if r.state != committing || !r.releasing {
				// Held (its lease lapsed, say in a network cut): this delivery never reaches numa, which
				// has the message or will get it from the buffer once. Only a message being released is
				// handed out again from this delivery (takeBack), and there the broker's count is right.
				l.unseen.add(m.ID)
			}
			r.deliveries = max(r.deliveries, l.deliveriesOf(m))
			if r.msg.Payload == nil {
				r.msg.Payload = m.Payload // dropped when its release began: kept again, see takeBack
			}
			out.dups++
			continue
		}
		size, valid := wireSize(m)
		batchBytes += size
		sizedMsgs++
		if l.closed || full {
			out.surplus = append(out.surplus, m)
			l.unseen.add(m.ID)
			continue
		}
		if l.ordered && len(m.Keys) > 0 && l.away[m.Keys[0]] > 0 {
			// An earlier message of its key is away from numa (being released or dead-lettered, or
			// delayed; it may be in this very batch, redelivered after its lease ran out): this one must
			// not overtake it, so it goes back to the broker too.
			out.surplus = append(out.surplus, m)
			l.unseen.add(m.ID)
			continue
		}
		held := l.pools[receivePool].n + l.reserved
		heldBytes := l.pools[receivePool].bytes + l.resBytes
		if held >= l.prefetch || (held > 0 && heldBytes+size > l.prefetchBytes) {
			// Bigger than estimated: the rest of this batch goes back to the broker, in order, and
			// the estimate rises to this message, so the next receive waits for room for it.
			full = true
			surplusMax = max(surplusMax, size)
			out.surplus = append(out.surplus, m)
			l.unseen.add(m.ID)
			continue
		}
		tooLarge := size > int64(maxMessage)
		if m.EventTime.IsZero() {
			m.EventTime = now
		}
		l.seq++
		r := &record{msg: m, size: size, received: now, leaseUntil: now.Add(lease), heapIndex: -1, seq: l.seq, repair: !valid,
			handOuts: l.handOuts}
		r.deliveries = max(l.deliveriesOf(m), nackedDeliveries(m.ID)+1)
		l.recs[m.ID] = r
		if tooLarge {
			r.state = committing
			r.keepBody = true
			l.counts[committing]++
			l.enter(r, receivePool) // its body counts until the dead letter is done, as a held one does
			l.setAway(r, true)
			out.tooLarge = append(out.tooLarge, r) // away now: later messages of its key go back too
			continue
		}
		r.state = buffered
		l.counts[buffered]++
		l.enter(r, receivePool)
		l.buffer.push(r)
		out.added++
	}
	if sizedMsgs > 0 {
		avg := batchBytes / sizedMsgs
		if !l.sized {
			l.sizeEst, l.sized = avg, true
		} else {
			l.sizeEst += (avg - l.sizeEst) / 4
		}
	}
	l.sizeEst = max(l.sizeEst, surplusMax)
	l.changed(out.added > 0)
	return out
}

// setState moves a held record to st. Caller holds mu.
func (l *ledger) setState(r *record, st state) {
	l.counts[r.state]--
	r.state = st
	l.counts[st]++
}

// setAway marks r as taken away from numa, or back. Caller holds mu.
func (l *ledger) setAway(r *record, away bool) {
	if r.away == away || !l.ordered || len(r.msg.Keys) == 0 {
		return
	}
	r.away = away
	key := r.msg.Keys[0]
	if away {
		l.away[key]++
	} else if l.away[key]--; l.away[key] <= 0 {
		delete(l.away, key)
	}
}

// enter moves r from the pool it counts against to p. Caller holds mu.
func (l *ledger) enter(r *record, p pool) {
	if r.pool != noPool {
		l.pools[r.pool].n--
		l.pools[r.pool].bytes -= r.size
	}
	r.pool = p
	if p != noPool {
		l.pools[p].n++
		l.pools[p].bytes += r.size
	}
}

// close stops admitting: what receives still bring is surplus from now on.
func (l *ledger) close() {
	l.mu.Lock()
	l.closed = true
	l.changed(true)
	l.mu.Unlock()
}

// count returns how many records are in state st.
func (l *ledger) count(st state) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.counts[st]
}

// size returns how many records are held in any state.
func (l *ledger) size() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.recs)
}

// room returns the channel closed at the next change that may free receive room.
func (l *ledger) room() <-chan struct{} {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.roomCh == nil {
		l.roomCh = make(chan struct{})
	}
	return l.roomCh
}

// waitData returns the channel closed at the next change that may make a record readable. Caller
// holds mu.
func (l *ledger) waitData() chan struct{} {
	if l.dataCh == nil {
		l.dataCh = make(chan struct{})
	}
	return l.dataCh
}

// changed wakes the waiters: room waiters always, readers when readable is true. Caller holds mu.
func (l *ledger) changed(readable bool) {
	if l.roomCh != nil {
		close(l.roomCh)
		l.roomCh = nil
	}
	if readable && l.dataCh != nil {
		close(l.dataCh)
		l.dataCh = nil
	}
	l.notifyGauges()
}

func (l *ledger) notifyGauges() {
	if l.onChange != nil {
		l.onChange(l.counts, l.pools)
	}
}
