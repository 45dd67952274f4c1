package source

import (
	"context"
	"sync"
	"time"
)

// pendingCache answers numa's Pending calls from a cached backlog reading: the driver's Backlog is
// read at most every Options.PendingRefresh, in the background, and Pending answers within about half
// a second. Between readings it answers the last reading as it was, never less than what this replica
// holds. -1 (unknown) when the driver cannot tell, the call failed, or the reading is too old to steer
// an autoscaler.
//
// A cached reading is not corrected for what happened since: acks that landed are known here, but
// arrivals are not, and subtracting the one without adding the other made a steady pipeline (as many
// arriving as acked) report a backlog shrinking by a refresh period's throughput, down to what the
// replica holds, on every other call of numa's (it asks every 5 s, the default refresh period). The
// reading errs high only while a backlog drains, by at most PendingRefresh of it, which an autoscaler's
// scale-down cooldown absorbs; an answer that errs low would scale a growing backlog down.
type pendingCache struct {
	s *Source

	mu      sync.Mutex
	val     int64     // last reading; -1 unknown
	at      time.Time // when the reading was taken; zero: never
	running chan struct{}
}

func newPendingCache(s *Source) *pendingCache { return &pendingCache{s: s, val: -1} }

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

// now is the reading, and at least what this replica holds (those are at the broker until their
// commit lands). Caller holds mu.
func (p *pendingCache) now() int64 {
	if p.val < 0 {
		return -1
	}
	return max(p.val, int64(p.s.led.size()), 0)
}

func (p *pendingCache) refresh(done chan struct{}) {
	ctx, cancel := context.WithTimeout(p.s.bgCtx, 10*time.Second)
	defer cancel()
	v, err := p.s.d.Backlog(ctx)
	if err != nil {
		p.s.errs.report("backlog", Classify(p.s.d, err), err)
		v = -1
	}
	v = max(v, -1)
	p.s.m.Pending.Set(float64(v))
	p.mu.Lock()
	p.val, p.at, p.running = v, time.Now(), nil
	p.mu.Unlock()
	close(done)
}
