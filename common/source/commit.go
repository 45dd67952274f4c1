package source

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/numaproj/numaflow-go/pkg/sourcer"
)

// committer runs the adapter's broker calls on held messages: Ack, Nack (releases) and Extend, and
// bounds them: at most Capabilities.AckConcurrency calls at once, each with at most MaxAck handles and
// callTimeout long. Transient failures are retried per entry with backoff for Options.AckRetry; the
// entries that fail for good are reported, and the broker redelivers them after their lease
// (at-least-once).
type committer struct {
	s   *Source
	sem chan struct{}
}

// callTimeout bounds one Ack, Nack, Extend or DeadLetter attempt: on a silent network a call neither
// fails nor answers, and only a deadline turns that into an error (and readiness false).
const callTimeout = 5 * time.Second

// batchOp is one kind of batch call on handles.
type batchOp struct {
	name string // for logs and metrics: ack, nack, release, extend
	call func(ctx context.Context, handles []Handle) error
	// eager ops are tried while the broker is marked unreachable (lease extensions: a lease must not
	// run out because a receive failed); the others wait for the prober to see it back first.
	eager bool
	// readable ops make messages readable at once (a release with no delay): a message our own
	// receive got back while the call ran is kept and read again, not released once more.
	readable bool
	// setsLease ops (releases) set the lease themselves: they wait for extensions under way.
	setsLease bool
}

func newCommitter(s *Source) *committer {
	return &committer{s: s, sem: make(chan struct{}, s.caps.AckConcurrency)}
}

func (s *Source) ackOp() batchOp {
	return batchOp{name: "ack", call: func(ctx context.Context, h []Handle) error { return s.d.Ack(ctx, h) }}
}

func (s *Source) releaseOp(name string, delay time.Duration) batchOp {
	if s.caps.MaxNackDelay > 0 {
		delay = min(delay, s.caps.MaxNackDelay)
	}
	return batchOp{name: name, readable: delay == 0, setsLease: true, call: func(ctx context.Context, h []Handle) error { return s.d.Nack(ctx, h, delay) }}
}

// commit runs op on the records' handles in the background and then forgets them, records that
// failed for good too (the broker redelivers them after their lease, which is better than holding
// them forever). done gets the records whose call succeeded. A record the broker redelivered to us
// while the call ran gets the call again with its new handle (see ledger.forget). The records must be
// in the commit pool.
func (s *Source) commit(rs []*record, op batchOp, done func(ok []*record)) {
	if !s.jobs.run(func() { s.commitNow(rs, op, done) }) {
		// Closed: the driver may not be called any more; the broker redelivers after the lease.
		s.led.forget(rs, nil)
	}
}

func (s *Source) commitNow(rs []*record, op batchOp, done func(ok []*record)) {
	start := time.Now()
	if op.setsLease {
		s.led.awaitExtensions(s.bgCtx, rs)
	}
	for len(rs) > 0 {
		handles, gens := s.led.handles(rs)
		failed := s.commits.call(s.bgCtx, op, handles)
		ok := make([]*record, 0, len(rs))
		var firstID string
		var firstErr error
		for i, r := range rs {
			if err, bad := failed[i]; bad {
				if op.name == "ack" {
					s.m.AckFailed.Inc()
				}
				if firstErr == nil {
					firstID, firstErr = r.msg.ID, err
				}
				continue
			}
			ok = append(ok, r)
		}
		if firstErr != nil { // one line per call: a lost connection can fail a whole batch at once
			s.log.Warn(op.name+" failed; the broker may redeliver the messages", "count", len(rs)-len(ok), "id", firstID, "error", firstErr)
		}
		if op.name == "ack" {
			s.m.AckLatency.Observe(time.Since(start).Seconds())
		}
		if done != nil {
			done(ok)
		}
		rs = s.led.forget(rs, gens)
		if op.readable {
			// Released, and our own receive got them back meanwhile: they are ours again, readable
			// now. Releasing them once more could go back and forth with our receive.
			rs = s.led.takeBack(rs)
		}
		done = nil // counted once
	}
}

// call splits handles into chunks of MaxAck and runs them concurrently (bounded by AckConcurrency
// across the adapter), each retried by retryEntries. It returns the errors of the handles that
// failed for good, by index.
func (c *committer) call(ctx context.Context, op batchOp, handles []Handle) map[int]error {
	size := c.s.caps.MaxAck
	if size <= 0 {
		size = len(handles)
	}
	var (
		mu     sync.Mutex
		failed map[int]error
		wg     sync.WaitGroup
	)
	for lo := 0; lo < len(handles); lo += size {
		hi := min(lo+size, len(handles))
		wg.Add(1)
		go func() {
			defer wg.Done()
			f := c.retryEntries(ctx, op, handles[lo:hi])
			mu.Lock()
			defer mu.Unlock()
			for i, err := range f {
				if failed == nil {
					failed = make(map[int]error)
				}
				failed[lo+i] = err
			}
		}()
	}
	wg.Wait()
	return failed
}

// retryEntries runs call on handles and retries the entries that failed transiently (all of them
// when the call failed as a whole, only the failed ones of a *BatchError) until Options.AckRetry is
// spent. It returns the errors of the entries that failed for good, by index in handles.
func (c *committer) retryEntries(ctx context.Context, op batchOp, handles []Handle) map[int]error {
	s := c.s
	deadline := time.Now().Add(s.opts.AckRetry)
	var failed map[int]error
	fail := func(i int, err error) {
		if failed == nil {
			failed = make(map[int]error)
		}
		failed[i] = err
	}
	batch := handles // the handles still to do; idx maps them to handles (nil: the same)
	var idx []int
	at := func(j int) int {
		if idx == nil {
			return j
		}
		return idx[j]
	}
	var last error
	bo := backoff{}
	ok := retryLoop(ctx, deadline, &bo, func() bool {
		// While the broker is unreachable, wait for the prober to see it back rather than calling it
		// again and again (an outage must cost next to no CPU).
		if !op.eager && !s.shutting.Load() {
			s.ready.wait(ctx, time.Until(deadline))
		}
		err := c.attempt(ctx, batch, op.call)
		if err == nil {
			batch = nil
			return true
		}
		last = err
		var retry []int
		var be *BatchError
		switch {
		case errors.As(err, &be):
			for j, e := range be.Failed {
				switch {
				case j < 0 || j >= len(batch):
				case c.transient(op.name, e):
					retry = append(retry, at(j))
				default:
					fail(at(j), e)
				}
			}
		case c.transient(op.name, err):
			for j := range batch {
				retry = append(retry, at(j))
			}
		default:
			for j := range batch {
				fail(at(j), err)
			}
		}
		idx, batch = retry, make([]Handle, len(retry))
		for j, i := range retry {
			batch[j] = handles[i]
		}
		return len(batch) == 0
	})
	if !ok {
		for j := range batch {
			fail(at(j), fmt.Errorf("%s: gave up retrying: %w", op.name, last))
		}
	}
	return failed
}

// attempt makes one bounded call, holding one of the AckConcurrency slots.
func (c *committer) attempt(ctx context.Context, batch []Handle, call func(context.Context, []Handle) error) error {
	select {
	case c.sem <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-c.sem }()
	cctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	return call(cctx, batch)
}

// transient classifies and reports err; true when retrying may help.
func (c *committer) transient(name string, err error) bool {
	code := Classify(c.s.d, err)
	c.s.errs.report(name, code, err)
	if code.unreachable() {
		c.s.ready.set(false) // the prober brings it back
	}
	return code.Transient()
}

// Ack commits the offsets at the broker in the background (batched, retried on transient errors up to
// Options.AckRetry) and returns at once; leases stay extended until the commit lands. Any subset of
// what was read may be acked, in any order. Unknown offsets and repeated acks are fine: an offset this
// process never handed out (numa re-sends acks after a restart) is committed through the driver's
// OffsetDecoder when it has one.
func (s *Source) Ack(_ context.Context, req sourcer.AckRequest) {
	var rs []*record
	var orphans []Handle
	s.led.mu.Lock()
	for _, off := range req.Offsets() {
		id := string(off.Value())
		r, ok := s.led.lookup(id)
		if !ok {
			s.m.UnknownAcks.Inc()
			if s.dec != nil {
				if h, ok := s.dec.HandleFromID(id); ok {
					orphans = append(orphans, h)
				}
			}
			continue
		}
		// In flight; or buffered again after numa's stream ended and now acked by re-sent acks.
		if s.led.toCommitting(r, forAck) {
			rs = append(rs, r)
		}
	}
	s.led.changed(false)
	s.led.mu.Unlock()
	if len(rs) > 0 {
		s.commit(rs, s.ackOp(), func(ok []*record) {
			s.m.Acked.Add(float64(len(ok)))
		})
	}
	if len(orphans) > 0 {
		s.jobs.run(func() {
			failed := s.commits.call(s.bgCtx, s.ackOp(), orphans)
			s.m.Acked.Add(float64(len(orphans) - len(failed)))
		})
	}
}
