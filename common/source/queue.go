package source

import (
	"container/heap"
	"time"
)

// queue is the FIFO of buffered records. Removal from the middle is linear: it only happens for
// ordered-key nacks, expired leases and at shutdown, and the queue holds at most Options.Prefetch
// records. A record knows whether it is in the queue (record.queued), so removing one that was
// already popped or taken out costs nothing.
type queue struct {
	items []*record
	head  int
}

func (q *queue) push(r *record) {
	r.queued = true
	q.items = append(q.items, r)
}

func (q *queue) pushFront(r *record) {
	r.queued = true
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
	r.queued = false
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
			r.queued = false
			out = append(out, r)
		} else {
			kept = append(kept, r)
		}
	}
	clear(q.items[len(kept):])
	q.items = kept
	return out
}

func (q *queue) remove(r *record) {
	if r.queued {
		q.removeIf(func(x *record) bool { return x == r })
	}
}

// delayQueue holds locally nacked records ordered by due time.
type delayQueue []*record

func (d delayQueue) Len() int { return len(d) }
func (d delayQueue) Less(i, j int) bool {
	if d[i].due.Equal(d[j].due) {
		return d[i].seq < d[j].seq // same due (a nacked message and the later ones of its key): in order
	}
	return d[i].due.Before(d[j].due)
}
func (d delayQueue) Swap(i, j int) {
	d[i], d[j] = d[j], d[i]
	d[i].heapIndex, d[j].heapIndex = int32(i), int32(j)
}
func (d *delayQueue) Push(x any) {
	r := x.(*record)
	r.heapIndex = int32(len(*d))
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

func (d *delayQueue) nextDue() time.Time {
	if len(*d) == 0 {
		return time.Time{}
	}
	return (*d)[0].due
}

func (d *delayQueue) remove(r *record) {
	if i := int(r.heapIndex); i >= 0 && i < len(*d) && (*d)[i] == r {
		heap.Remove(d, i)
	}
}
