package memsource

import (
	"sort"
	"strconv"
	"strings"
	"time"
)

// queue keeps its messages in publish order. A handle points at its entry, so acks and the other
// handle operations find it without a lookup (a map of every message cost the ceiling benchmark a
// fifth of its CPU).
type queue struct {
	order []*entry // in publish order, so by seq (gone ones are dropped lazily, from the front)
	live  int      // entries not gone
	dead  []DeadLetter

	// order[:skip] are gone, or invisible until skipUntil at least (zero: none of them is invisible):
	// a scan without ordered keys starts after them while that holds. Without it every Receive walked
	// past every leased message again, which cost the ceiling benchmark a tenth of its CPU. Anything
	// that makes an entry visible sooner (nack, a shorter lease) resets it.
	skip      int
	skipUntil time.Time
}

type entry struct {
	q          *queue // the queue it was published to (a handle outlives a deleted queue)
	seq        uint64 // the number in id, increasing in publish order
	id         string
	pub        Publication
	headers    map[string]string // pub.Headers and x-mem-id, shared by every delivery (read-only)
	keys       []string          // pub.Key as message keys (nil without one), shared likewise
	published  time.Time
	visibleAt  time.Time
	receipt    uint64 // current delivery's handle; 0 when not leased
	deliveries int
	gone       bool // acked or dead-lettered: no longer counted in live
}

// find returns the entry of message id while it is in the queue (nil when q is nil, the message gone
// or never published to q).
func (q *queue) find(id string) *entry {
	seq, err := strconv.ParseUint(strings.TrimPrefix(id, "m-"), 10, 64)
	if q == nil || err != nil {
		return nil
	}
	i := sort.Search(len(q.order), func(i int) bool { return q.order[i].seq >= seq })
	if i == len(q.order) || q.order[i].seq != seq || q.order[i].gone {
		return nil
	}
	return q.order[i]
}

// entry returns the entry a handle of q points at, nil when it is gone or not q's.
func (q *queue) entry(hd handle) *entry {
	if hd.e == nil || hd.e.q != q || hd.e.gone {
		return nil
	}
	return hd.e
}

// remove takes e out of the queue for good (acked or dead-lettered).
func (q *queue) remove(e *entry) {
	e.gone = true
	q.live--
}

// scan calls f for every entry readable at now, in publish order, until f returns false. With ordered
// keys, an entry is not readable while an earlier entry of its key is invisible (leased or delayed), as
// in an SQS FIFO message group. It returns the earliest time an invisible entry becomes visible.
func (q *queue) scan(now time.Time, ordered bool, f func(*entry) bool) (next time.Time) {
	// Drop the acked prefix, then scan in publish order.
	for len(q.order) > 0 && q.order[0].gone {
		q.order[0] = nil
		q.order = q.order[1:]
		q.skip = max(q.skip-1, 0)
	}
	start := 0
	if !ordered && q.skip > 0 && (q.skipUntil.IsZero() || now.Before(q.skipUntil)) {
		start, next = q.skip, q.skipUntil
	} else {
		q.skip, q.skipUntil = 0, time.Time{}
	}
	prefix := !ordered // order[:i] is still gone or invisible, so skip may grow
	var blocked map[string]bool
	for i := start; i < len(q.order); i++ {
		e := q.order[i]
		if e.gone {
			if prefix {
				q.skip = i + 1
			}
			continue
		}
		key := e.pub.Key
		if ordered && key != "" && blocked[key] {
			continue
		}
		if e.visibleAt.After(now) {
			if next.IsZero() || e.visibleAt.Before(next) {
				next = e.visibleAt
			}
			if ordered && key != "" {
				if blocked == nil {
					blocked = make(map[string]bool)
				}
				blocked[key] = true
			}
			if prefix {
				q.skipPast(i, e)
			}
			continue
		}
		more := f(e)
		if prefix && e.visibleAt.After(now) { // f leased it
			q.skipPast(i, e)
		} else {
			prefix = false
		}
		if !more {
			break
		}
	}
	return next
}

// skipPast extends the scan's skip past order[i], e, which is invisible.
func (q *queue) skipPast(i int, e *entry) {
	q.skip = i + 1
	if q.skipUntil.IsZero() || e.visibleAt.Before(q.skipUntil) {
		q.skipUntil = e.visibleAt
	}
}

// setVisible makes e visible at at, keeping the scan's skip true.
func (q *queue) setVisible(e *entry, at time.Time) {
	if at.Before(e.visibleAt) {
		q.skip, q.skipUntil = 0, time.Time{}
	}
	e.visibleAt = at
}
