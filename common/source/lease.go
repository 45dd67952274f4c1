package source

import (
	"context"
	"errors"
	"slices"
	"time"
)

// The lease keeper extends the lease of every held message (buffered, in flight, delayed, or waiting
// for its commit) before it runs out, for at most Capabilities.MaxExtension in total. It runs every
// Options.ExtendEvery (a tenth of the lease by default) and extends what has less than half its lease
// left, so a failed extension is tried again several times before the lease ends.
//
// It does not wait for readiness: as long as extension calls succeed, leases hold, whatever the
// receive side is doing. While the broker is marked unreachable it first probes with a few due
// leases, at most every probeEvery, and extends the rest only when the probe gets through, so an
// outage costs a handful of calls per lease.
func (s *Source) leaseKeeper(ctx context.Context) {
	t := time.NewTicker(s.opts.ExtendEvery)
	defer t.Stop()
	var lastProbe time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			now := time.Now()
			if !s.ready.get() {
				if now.Sub(lastProbe) < probeEvery(s.caps.Lease) {
					continue
				}
				lastProbe = now
				if !s.extendProbe(ctx, now) {
					continue
				}
			}
			s.extend(ctx, s.dueLeases(now, -1))
		}
	}
}

// probeHandles is how many due leases one probe extends while the broker is marked unreachable.
const probeHandles = 10

// probeEvery spaces the probes out: a due lease (half of it left) still gets two or three tries before
// it ends.
func probeEvery(lease time.Duration) time.Duration { return lease / 5 }

// dueLease is a held record whose lease needs extending, with the handle and generation it had.
type dueLease struct {
	r      *record
	handle Handle
	gen    int32
}

// dueLeases returns up to limit (-1: all) held records with less than half their lease left; those
// past MaxExtension are marked and left to expire.
func (s *Source) dueLeases(now time.Time, limit int) []dueLease {
	half := s.caps.Lease / 2
	var due []dueLease
	s.led.mu.Lock()
	defer s.led.mu.Unlock()
	for _, r := range s.led.recs {
		if len(due) == limit {
			break
		}
		if r.maxedOut || r.leaseUntil.Sub(now) > half || (r.state == committing && r.releasing) {
			continue // a release under way sets the lease itself (a nack's delay): an extension would undo it
		}
		if s.caps.MaxExtension > 0 && now.Sub(r.received)+s.caps.Lease > s.caps.MaxExtension {
			r.maxedOut = true
			s.m.LeaseExpired.Inc()
			s.log.Warn("maximum lease extension reached; the broker will redeliver the message", "id", r.msg.ID,
				"held", now.Sub(r.received).Round(time.Second).String())
			continue
		}
		r.extending = true
		due = append(due, dueLease{r, r.msg.Handle, r.gen})
	}
	return due
}

// extensionsDone clears the marks dueLeases set once the extension call for due has returned, and
// wakes releases waiting for it. Caller holds the ledger's lock.
func (l *ledger) extensionsDone(due []dueLease) {
	for _, d := range due {
		d.r.extending = false
	}
	if l.extCh != nil {
		close(l.extCh)
		l.extCh = nil
	}
}

// awaitExtensions waits until no lease extension call for rs is under way (or ctx ends). A release
// sets the lease itself (a nack's delay, or visibility now) with the same call an extension makes
// (SQS ChangeMessageVisibility, Pub/Sub ModifyAckDeadline): an extension sent before the release and
// landing after it would set the lease back to a full one, so the nack's delay is not honoured.
// Extensions are bounded by their own timeout, so the wait is short.
func (l *ledger) awaitExtensions(ctx context.Context, rs []*record) {
	for {
		l.mu.Lock()
		busy := slices.ContainsFunc(rs, func(r *record) bool { return r.extending })
		var ch chan struct{}
		if busy {
			if l.extCh == nil {
				l.extCh = make(chan struct{})
			}
			ch = l.extCh
		}
		l.mu.Unlock()
		if !busy {
			return
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return
		}
	}
}

func (s *Source) extendOp() batchOp {
	return batchOp{name: "extend", eager: true, call: func(c context.Context, h []Handle) error {
		return s.d.Extend(c, h, s.caps.Lease)
	}}
}

// extend extends the leases, retrying until the next tick (the next run picks up what is still due).
func (s *Source) extend(ctx context.Context, due []dueLease) {
	if len(due) == 0 {
		return
	}
	c, cancel := context.WithTimeout(ctx, max(s.opts.ExtendEvery, time.Second))
	defer cancel()
	handles := handlesOf(due)
	start := time.Now() // the broker's new lease runs from the call, at the earliest
	s.extended(start, due, s.commits.call(c, s.extendOp(), handles))
}

// extendProbe makes one extension call (no retry) for a few due leases and reports whether it got
// through: some leases were extended. No due lease: nothing to probe, and nothing to extend either.
func (s *Source) extendProbe(ctx context.Context, now time.Time) bool {
	due := s.dueLeases(now, probeHandles)
	if len(due) == 0 {
		return false
	}
	handles := handlesOf(due)
	c, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	start := time.Now()
	err := s.commits.attempt(c, handles, s.extendOp().call)
	var failed map[int]error
	var be *BatchError
	switch {
	case err == nil:
	case errors.As(err, &be) && len(be.Failed) < len(handles):
		failed = be.Failed
	default:
		s.errs.report("extend", Classify(s.d, err), err)
		s.led.mu.Lock()
		s.led.extensionsDone(due)
		s.led.mu.Unlock()
		return false
	}
	s.extended(start, due, failed)
	return true
}

// extended records the new lease of the records whose extension succeeded and whose handle did not
// change meanwhile.
func (s *Source) extended(at time.Time, due []dueLease, failed map[int]error) {
	n := 0
	s.led.mu.Lock()
	for i, d := range due {
		if _, bad := failed[i]; bad || d.r.gen != d.gen {
			continue
		}
		d.r.leaseUntil = at.Add(s.caps.Lease)
		n++
	}
	s.led.extensionsDone(due)
	s.led.mu.Unlock()
	s.m.Extensions.Add(float64(n))
}

func handlesOf(due []dueLease) []Handle {
	handles := make([]Handle, len(due))
	for i, d := range due {
		handles[i] = d.handle
	}
	return handles
}
