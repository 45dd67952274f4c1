package rabbitmq

import "time"

// What the driver remembers by message-id (dropped acks, deliveries returned unread) is bounded by
// count and age.
const (
	idMemoryMax = 100_000
	idMemoryTTL = 10 * time.Minute
)

// idMemory remembers a value by message-id for idMemoryTTL, for at most idMemoryMax ids: when full,
// the stale ones go first, then any. Guarded by the driver's mu.
type idMemory[V any] struct {
	m map[string]idMemo[V]
}

type idMemo[V any] struct {
	v  V
	at time.Time
}

func newIDMemory[V any]() idMemory[V] { return idMemory[V]{m: map[string]idMemo[V]{}} }

// put remembers v for id, from now.
func (r *idMemory[V]) put(id string, v V, now time.Time) {
	if len(r.m) >= idMemoryMax {
		for k, e := range r.m {
			if now.Sub(e.at) > idMemoryTTL || len(r.m) >= idMemoryMax {
				delete(r.m, k)
			}
		}
	}
	r.m[id] = idMemo[V]{v: v, at: now}
}

// update remembers f of id's value (the zero value when none is remembered), from now.
func (r *idMemory[V]) update(id string, now time.Time, f func(V) V) {
	r.put(id, f(r.m[id].v), now)
}

// take returns and forgets id's value; ok is false when none was remembered within idMemoryTTL.
func (r *idMemory[V]) take(id string, now time.Time) (v V, ok bool) {
	e, found := r.m[id]
	if !found {
		return v, false
	}
	delete(r.m, id)
	if now.Sub(e.at) > idMemoryTTL {
		return v, false
	}
	return e.v, true
}

func (r *idMemory[V]) len() int { return len(r.m) }
