package source

import (
	"cmp"
	"container/heap"
	"context"
	"math/rand/v2"
	"sync"
	"time"
)

// queue is the FIFO of buffered records. Removal from the middle is linear: it only happens for
// ordered-key nacks and at shutdown, and the queue holds at most Options.Prefetch records.
type queue struct {
	items []*record
	head  int
}

func (q *queue) len() int { return len(q.items) - q.head }

func (q *queue) push(r *record) { q.items = append(q.items, r) }

func (q *queue) pushFront(r *record) {
	if q.head > 0 {
		q.head--
		q.items[q.head] = r
		return
	}
	q.items = append([]*record{r}, q.items...)
}

func (q *queue) pop() *record {
	if q.head >= len(q.items) {
		return nil
	}
	r := q.items[q.head]
	q.items[q.head] = nil
	q.head++
	if q.head == len(q.items) {
		q.items, q.head = q.items[:0], 0
	} else if q.head > 1024 && q.head*2 > len(q.items) {
		q.items = append([]*record(nil), q.items[q.head:]...)
		q.head = 0
	}
	return r
}

// removeIf takes out every record for which f is true and returns them in queue order.
func (q *queue) removeIf(f func(*record) bool) []*record {
	var out []*record
	kept := q.items[:q.head]
	for _, r := range q.items[q.head:] {
		if f(r) {
			out = append(out, r)
		} else {
			kept = append(kept, r)
		}
	}
	clear(q.items[len(kept):])
	q.items = kept
	return out
}

func (q *queue) remove(r *record) { q.removeIf(func(x *record) bool { return x == r }) }

func (q *queue) removeKey(key string) []*record {
	return q.removeIf(func(r *record) bool { return len(r.msg.Keys) > 0 && r.msg.Keys[0] == key })
}

// delayQueue holds locally nacked records ordered by due time.
type delayQueue []*record

func (d delayQueue) Len() int           { return len(d) }
func (d delayQueue) Less(i, j int) bool { return d[i].due.Before(d[j].due) }
func (d delayQueue) Swap(i, j int) {
	d[i], d[j] = d[j], d[i]
	d[i].heapIndex, d[j].heapIndex = i, j
}
func (d *delayQueue) Push(x any) {
	r := x.(*record)
	r.heapIndex = len(*d)
	*d = append(*d, r)
}
func (d *delayQueue) Pop() any {
	old := *d
	r := old[len(old)-1]
	old[len(old)-1] = nil
	*d = old[:len(old)-1]
	r.heapIndex = -1
	return r
}

func (d *delayQueue) push(r *record) { heap.Push(d, r) }

func (d *delayQueue) popDue(now time.Time) *record {
	if len(*d) == 0 || (*d)[0].due.After(now) {
		return nil
	}
	return heap.Pop(d).(*record)
}

func (d *delayQueue) dueBy(now time.Time) bool { return len(*d) > 0 && !(*d)[0].due.After(now) }

func (d *delayQueue) nextDue() time.Time {
	if len(*d) == 0 {
		return time.Time{}
	}
	return (*d)[0].due
}

func (d *delayQueue) remove(r *record) {
	if r.heapIndex >= 0 && r.heapIndex < len(*d) && (*d)[r.heapIndex] == r {
		heap.Remove(d, r.heapIndex)
	}
}

// nackCounts remembers how often messages nacked back to the broker were delivered, so the count
// survives a broker that does not report deliveries itself. Bounded: when full it starts over, which
// only makes MaxDeliveries count from the broker's figure again.
type nackCounts struct {
	m map[string]int
}

const maxNackCounts = 100_000

func (n *nackCounts) put(id string, deliveries int) {
	if len(n.m) >= maxNackCounts {
		clear(n.m)
	}
	n.m[id] = deliveries
}

func (n *nackCounts) take(id string) int {
	v, ok := n.m[id]
	if ok {
		delete(n.m, id)
	}
	return v
}

// backoff is exponential with jitter, from 100 ms up to max (default 5 s).
type backoff struct {
	n   int
	max time.Duration
}

func (b *backoff) next() time.Duration {
	ceil := 100 * time.Millisecond << min(b.n, 9) // 100ms .. 51.2s, capped below
	ceil = min(ceil, cmp.Or(b.max, 5*time.Second))
	b.n++
	return ceil/2 + rand.N(ceil/2+1)
}

func (b *backoff) reset() { b.n = 0 }

// tracker counts outstanding background work. Unlike a WaitGroup it may be added to while someone
// waits, and it refuses new work once closed (after Close no driver method may run).
type tracker struct {
	mu     sync.Mutex
	n      int
	zero   chan struct{} // closed while n == 0
	closed bool
}

func newTracker() *tracker {
	z := make(chan struct{})
	close(z)
	return &tracker{zero: z}
}

// add registers one unit of work; false when the tracker is closed.
func (t *tracker) add() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return false
	}
	if t.n == 0 {
		t.zero = make(chan struct{})
	}
	t.n++
	return true
}

func (t *tracker) done() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.n--
	if t.n == 0 {
		close(t.zero)
	}
}

// wait blocks until no work is outstanding or ctx ends.
func (t *tracker) wait(ctx context.Context) {
	t.mu.Lock()
	z := t.zero
	t.mu.Unlock()
	select {
	case <-z:
	case <-ctx.Done():
	}
}

func (t *tracker) close() {
	t.mu.Lock()
	t.closed = true
	t.mu.Unlock()
}

// run starts f in a goroutine tracked by t; false (and f not run) when t is closed.
func (t *tracker) run(f func()) bool {
	if !t.add() {
		return false
	}
	go func() {
		defer t.done()
		f()
	}()
	return true
}
