package source

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// pendingCache answers numa's Pending calls from a cached backlog reading: the driver's Backlog is
// read at most every Options.PendingRefresh, in the background, and Pending answers within about half
// a second. Between readings it subtracts the acks that landed at the broker after the reading, and it
// never reports less than what this replica holds. -1 (unknown) when the driver cannot tell, the call
// failed, or the reading is too old to steer an autoscaler.
type pendingCache struct {
	s         *Source
	committed atomic.Int64 // acks that landed at the broker, ever

	mu      sync.Mutex
	val     int64     // last reading; -1 unknown
	base    int64     // committed, sampled after the reading returned
	at      time.Time // when the reading was taken; zero: never
	running chan struct{}
}

func newPendingCache(s *Source) *pendingCache { return &pendingCache{s: s, val: -1} }

// committedAcks records n acks that landed at the broker.
func (p *pendingCache) committedAcks(n int) { p.committed.Add(int64(n)) }

func (p *pendingCache) get(ctx context.Context) int64 {
	p.mu.Lock()
	if !p.at.IsZero() && time.Since(p.at) < p.s.opts.PendingRefresh {
		v := p.now()
		p.mu.Unlock()
		return v
	}
	done := p.running
	if done == nil {
		done = make(chan struct{})
		if p.s.bg.run(func() { p.refresh(done) }) {
			p.running = done
		} else {
			close(done) // closed: answer from what we have
		}
	}
	p.mu.Unlock()
	t := time.NewTimer(500 * time.Millisecond)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
	case <-ctx.Done():
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.at.IsZero() || time.Since(p.at) > 3*p.s.opts.PendingRefresh {
		return -1
	}
	return p.now()
}

// now is the reading less the acks that landed since, and at least what this replica holds (those
// are at the broker until their commit lands). Caller holds mu.
func (p *pendingCache) now() int64 {
	if p.val < 0 {
		return -1
	}
	v := p.val - (p.committed.Load() - p.base)
	return max(v, int64(p.s.led.size()), 0)
}

func (p *pendingCache) refresh(done chan struct{}) {
	ctx, cancel := context.WithTimeout(p.s.bgCtx, 10*time.Second)
	defer cancel()
	v, err := p.s.d.Backlog(ctx)
	// Sampled after the call: acks that landed during it may or may not show in the reading, and are
	// not subtracted, so the answer errs high, never low.
	base := p.committed.Load()
	if err != nil {
		p.s.errs.report("backlog", Classify(p.s.d, err), err)
		v = -1
	}
	v = max(v, -1)
	p.s.m.Pending.Set(float64(v))
	p.mu.Lock()
	p.val, p.base, p.at, p.running = v, base, time.Now(), nil
	p.mu.Unlock()
	close(done)
}
