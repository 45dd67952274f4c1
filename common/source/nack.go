package source

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/numaproj/numaflow-go/pkg/sourcer"
)

// Nack makes the offsets readable again, honouring NackOptions: Delay (ms) postpones the redelivery,
// MaxDeliveries sends a message that has been delivered that many times to the dead-letter target
// (or the configured fallback) with Reason recorded.
//
// Where it goes: with LocalRedelivery the message waits in the ledger's delayed pool and is read
// again when due; when that pool is full (or without LocalRedelivery) it is released to the broker
// with the delay. Delayed messages never take receive room from new ones.
//
// Key order (OrderedKeys): on every path that takes a message away from numa (a nack, MaxDeliveries,
// an oversize message, a failed dead letter, shutdown), the later buffered messages of its key go
// with it, so none of them reaches numa before it.
func (s *Source) Nack(_ context.Context, req sourcer.NackRequest) {
	now := time.Now()
	type release struct {
		rs    []*record
		delay time.Duration
	}
	var releases []release
	type overLimit struct {
		r      *record
		mates  []*record
		reason string
		delay  time.Duration
	}
	var toDLQ []overLimit
	readable := false
	s.led.mu.Lock()
	for _, no := range req.Offsets() {
		r, ok := s.led.lookup(string(no.Offset.Value()))
		if !ok || r.state != inFlight {
			continue
		}
		s.m.Nacked.Inc()
		delay, maxDeliveries, reason := nackOptions(no.NackOptions)
		var mates []*record
		if s.caps.OrderedKeys {
			mates = s.led.laterOfKey(r)
		}
		if maxDeliveries > 0 && r.deliveries >= maxDeliveries {
			s.led.toCommitting(r, forDeadLetter)
			for _, x := range mates {
				s.led.toCommitting(x, forRelease)
			}
			toDLQ = append(toDLQ, overLimit{r, mates, fmt.Sprintf("max deliveries (%d) reached after %d deliveries; last nack reason: %s",
				maxDeliveries, r.deliveries, reasonOr(reason)), delay})
			continue
		}
		rs := append([]*record{r}, mates...)
		if s.caps.LocalRedelivery && s.led.delay(rs, now.Add(delay)) {
			readable = true
			continue
		}
		for _, x := range rs {
			s.led.toCommitting(x, forRelease)
		}
		releases = append(releases, release{rs, delay})
	}
	s.led.changed(readable)
	s.led.mu.Unlock()
	for _, rel := range releases {
		s.release(rel.rs, rel.delay)
	}
	for _, o := range toDLQ {
		if len(o.mates) > 0 {
			s.release(o.mates, 0) // behind it at the broker: a FIFO broker keeps them after it
		}
		s.deadLetter(o.r, "max_deliveries", o.reason, o.delay)
	}
}

func nackOptions(o *sourcer.NackOptions) (delay time.Duration, maxDeliveries int, reason string) {
	if o == nil {
		return 0, 0, ""
	}
	if o.Delay != nil {
		delay = time.Duration(min(*o.Delay, uint64(time.Duration(1<<62)/time.Millisecond))) * time.Millisecond
	}
	if o.MaxDeliveries != nil {
		maxDeliveries = int(*o.MaxDeliveries)
	}
	if o.Reason != nil {
		reason = *o.Reason
	}
	return delay, maxDeliveries, reason
}

func reasonOr(r string) string {
	if r == "" {
		return "none given"
	}
	return r
}

// release hands records in the commit pool back to the broker, readable again after delay, and
// remembers how often they were delivered (for brokers that do not count deliveries).
func (s *Source) release(rs []*record, delay time.Duration) {
	s.commit(rs, s.releaseOp("nack", delay), s.rememberDeliveries)
}

func (s *Source) rememberDeliveries(released []*record) {
	s.led.mu.Lock()
	defer s.led.mu.Unlock()
	for _, r := range released {
		seen := r.deliveries
		if r.emitted == 0 {
			seen-- // released unread (a key-mate of a nacked message): numa did not see this delivery
		}
		s.nacks.put(r.msg.ID, seen)
	}
}

// deadLetter moves r (in the commit pool, its payload kept) to the driver's dead-letter target, or
// applies the fallback when there is none: drop (ack), or nack it back with a growing delay.
func (s *Source) deadLetter(r *record, kind, reason string, delay time.Duration) {
	if !s.jobs.run(func() { s.deadLetterNow(r, kind, reason, delay) }) {
		s.led.forget([]*record{r}, nil)
	}
}

func (s *Source) deadLetterNow(r *record, kind, reason string, delay time.Duration) {
	err := ErrNoDeadLetter
	var gens []int32
	if s.dl != nil {
		gens, err = s.dlRetry(r, reason)
		if err != nil && !errors.Is(err, ErrNoDeadLetter) && s.caps.OrderedAcks && !Classify(s.d, err).Transient() {
			// Refused for good (no permission to publish there, a message it cannot take): kept here,
			// the message would hold back every later acknowledgement, so the fallback applies, as if
			// there were no target.
			s.log.Error("dead-lettering failed for good; the broker acknowledges in order, so DEAD_LETTER_FALLBACK applies",
				"id", r.msg.ID, "reason", reason, "fallback", string(s.opts.Fallback), "error", err)
			err = ErrNoDeadLetter
		}
	}
	switch {
	case err == nil:
		s.m.DeadLettered.WithLabelValues(kind).Inc()
		s.log.Warn("message dead-lettered", "id", r.msg.ID, "reason", reason)
		if again := s.led.forget([]*record{r}, gens); len(again) > 0 {
			s.commitNow(again, s.ackOp(), nil) // redelivered to us meanwhile: ack that delivery too
		}
	case errors.Is(err, ErrNoDeadLetter) && s.opts.Fallback == FallbackDrop:
		s.log.Warn("message dropped: no dead-letter target, and DEAD_LETTER_FALLBACK is drop", "id", r.msg.ID, "reason", reason)
		s.commitNow([]*record{r}, s.ackOp(), func(ok []*record) {
			s.m.Dropped.WithLabelValues(kind).Add(float64(len(ok)))
		})
	default:
		if !errors.Is(err, ErrNoDeadLetter) {
			s.log.Error("dead-lettering failed; nacking the message instead", "id", r.msg.ID, "reason", reason, "error", err)
		} else {
			s.log.Warn("message over its limit nacked: no dead-letter target (DEAD_LETTER_FALLBACK=nack)", "id", r.msg.ID, "reason", reason)
		}
		// It will come back and fail the same way: space its returns out by its delivery count
		// (1 s, 2 s, 4 s ... up to 5 min) so it never turns into a hot loop.
		s.led.mu.Lock()
		r.msg.Payload = nil
		r.keepBody, r.releasing = false, true
		s.led.enter(r, noPool) // its body no longer counts
		s.led.mu.Unlock()
		s.commitNow([]*record{r}, s.releaseOp("nack", max(delay, fallbackDelay(r.deliveries))), s.rememberDeliveries)
	}
}

// fallbackDelay is the nack delay for a message that could not be dead-lettered, by delivery count.
func fallbackDelay(deliveries int) time.Duration {
	return min(time.Second<<min(max(deliveries-1, 0), 9), 5*time.Minute)
}

// dlRetry calls DeadLetter with transient errors retried for Options.AckRetry. It passes a copy of the
// message with its newest handle and returns the generation that handle had.
func (s *Source) dlRetry(r *record, reason string) ([]int32, error) {
	var err error
	var gens []int32
	bo := backoff{}
	retryLoop(s.bgCtx, time.Now().Add(s.opts.AckRetry), &bo, func() bool {
		s.led.mu.Lock()
		m := *r.msg
		if s.caps.LocalRedelivery { // the redeliveries were ours: the broker's count misses them
			m.Deliveries = max(m.Deliveries, r.deliveries)
		}
		gens = []int32{r.gen}
		s.led.mu.Unlock()
		err = s.commits.attempt(s.bgCtx, nil, func(ctx context.Context, _ []Handle) error {
			return s.dl.DeadLetter(ctx, &m, reason)
		})
		if err == nil || errors.Is(err, ErrNoDeadLetter) {
			return true
		}
		code := Classify(s.d, err)
		s.errs.report("dead_letter", code, err)
		return !code.Transient()
	})
	return gens, err
}

// idCounts is a bounded map of counts by message ID. When full it starts over, which only makes the
// counts it kept start from the broker's figure again. Guarded by the ledger's lock.
type idCounts struct {
	m map[string]int
}

const maxIDCounts = 100_000

func (c *idCounts) put(id string, n int) {
	if c.m == nil || len(c.m) >= maxIDCounts {
		c.m = make(map[string]int)
	}
	c.m[id] = n
}

func (c *idCounts) add(id string) { c.put(id, c.m[id]+1) }

func (c *idCounts) get(id string) int { return c.m[id] }

func (c *idCounts) del(id string) { delete(c.m, id) }

func (c *idCounts) take(id string) int {
	v := c.m[id]
	delete(c.m, id)
	return v
}
