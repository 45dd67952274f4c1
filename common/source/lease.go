package source

import (
	"context"
	"time"
)

// The lease keeper extends the lease of every held message (buffered, in flight, delayed, or waiting
// for its commit) before it runs out, for at most Capabilities.MaxExtension in total. It runs every
// Options.ExtendEvery (a tenth of the lease by default) and extends what has less than half its lease
// left, so a failed extension is tried again several times before the lease ends. It does not look at
// readiness or at what the receivers are doing: as long as extension calls succeed, leases hold.
func (s *Source) leaseKeeper(ctx context.Context) {
	t := time.NewTicker(s.opts.ExtendEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.extendDue(ctx)
		}
	}
}

// extendDue extends every held record with less than half its lease left.
func (s *Source) extendDue(ctx context.Context) {
	now := time.Now()
	half := s.caps.Lease / 2
	var rs []*record
	var handles []Handle
	var gens []int
	s.led.mu.Lock()
	for _, r := range s.led.recs {
		if r.maxedOut || r.leaseUntil.Sub(now) > half {
			continue
		}
		if s.caps.MaxExtension > 0 && now.Sub(r.received)+s.caps.Lease > s.caps.MaxExtension {
			r.maxedOut = true
			s.m.LeaseExpired.Inc()
			s.log.Warn("maximum lease extension reached; the broker will redeliver the message", "id", r.msg.ID,
				"held", now.Sub(r.received).Round(time.Second).String())
			continue
		}
		rs = append(rs, r)
		handles = append(handles, r.msg.Handle)
		gens = append(gens, r.gen)
	}
	s.led.mu.Unlock()
	if len(rs) == 0 {
		return
	}
	// Retries end by the next tick: the next run picks up what is still due.
	c, cancel := context.WithTimeout(ctx, max(s.opts.ExtendEvery, time.Second))
	defer cancel()
	failed := s.commits.call(c, batchOp{name: "extend", eager: true, call: func(c context.Context, h []Handle) error {
		return s.d.Extend(c, h, s.caps.Lease)
	}}, handles)
	s.led.mu.Lock()
	n := 0
	for i, r := range rs {
		if _, bad := failed[i]; bad || r.gen != gens[i] {
			continue
		}
		r.leaseUntil = now.Add(s.caps.Lease)
		n++
	}
	s.led.mu.Unlock()
	s.m.Extensions.Add(float64(n))
}
