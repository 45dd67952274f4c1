package source

import (
	"context"
	"sync"
)

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
