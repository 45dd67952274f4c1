package source

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// receivers is the receive scheduler. Up to target workers each run Receive in a loop, as long as the
// ledger has room; a loop of its own starts workers whenever fewer than target run and there is room,
// and it re-decides whenever room frees up, a worker stops, a backoff ends or the broker is back. So a
// source with room always has a receive running: there is no wake-up to lose.
//
// target follows the broker: it doubles on each full batch (there is more: see full), falls back to one
// when a receive comes back empty and no full batch came for shrinkIdle (an idle source makes one
// broker call at a time), and falls to one on an error (with a backoff before the next call). It
// does not fall while the ledger is full, so a refill after numa acks runs as many receives at once
// as the fill before it.
//
// A Receive in flight is not cancelled at shutdown: the scheduler stops starting calls, Close waits for
// the running ones (up to receiveDrain), and what late calls bring is released to the broker at once,
// so messages a poll takes as the source stops are not hidden behind it for a lease.
type receivers struct {
	s      *Source
	ctx    context.Context // for Receive calls: cancelled only by Kill, or by Close after its wait
	cancel context.CancelFunc
	wg     sync.WaitGroup // the loop and every worker
	kick   chan struct{}  // a worker stopped or target grew: the loop re-decides
	stopCh chan struct{}  // closed by stop: start no more calls
	stopMu sync.Once

	mu       sync.Mutex
	target   int       // receives wanted at once
	running  int       // workers
	lastFull time.Time // when a receive last returned a full batch
	retryAt  time.Time // no call before this (after an error)
	bo       backoff
}

// shrinkIdle is how long no receive must have returned a full batch before an empty receive drops
// the target to one.
const shrinkIdle = time.Second

// maxReceiveBackoff bounds the wait after a failed receive. Receiving starts again at once when the
// prober finds the broker back, so a long backoff costs no recovery time.
const maxReceiveBackoff = 5 * time.Second

func startReceivers(s *Source) *receivers {
	r := &receivers{s: s, kick: make(chan struct{}, 1), stopCh: make(chan struct{}), target: 1,
		bo: backoff{max: maxReceiveBackoff}}
	r.ctx, r.cancel = context.WithCancel(s.bgCtx)
	r.wg.Add(1)
	go r.loop()
	return r
}

func (r *receivers) loop() {
	defer r.wg.Done()
	s := r.s
	for {
		room := s.led.room() // taken before reserving: a change after the check closes it
		r.launch()
		r.mu.Lock()
		stopped, running, wait := r.stopped(), r.running, time.Until(r.retryAt)
		r.mu.Unlock()
		if stopped && running == 0 {
			return
		}
		stopCh := r.stopCh
		if stopped {
			stopCh = nil // closed: waiting on it would spin; wait for the workers instead
		}
		var timer *time.Timer
		var timeout <-chan time.Time
		var readyAgain <-chan struct{}
		if wait > 0 && !stopped {
			timer = time.NewTimer(wait)
			timeout = timer.C
			if !s.ready.get() {
				readyAgain = s.ready.whenReady() // closed when the prober sees the broker back
			}
		}
		select {
		case <-r.kick:
		case <-room:
		case <-timeout:
		case <-readyAgain:
			r.mu.Lock()
			r.retryAt = time.Time{}
			r.mu.Unlock()
		case <-stopCh:
		case <-r.ctx.Done():
			return
		}
		if timer != nil {
			timer.Stop()
		}
	}
}

// launch starts workers while fewer than target run and the ledger has room.
func (r *receivers) launch() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for r.running < r.target && !r.stopped() && !time.Now().Before(r.retryAt) {
		n, bytes, whole := r.s.led.reserve(r.s.caps.MaxReceive)
		if n == 0 {
			return
		}
		r.running++
		r.wg.Add(1)
		go r.work(n, bytes, whole)
	}
}

// work runs Receive for n messages (bytes reserved; whole: see ledger.reserve), and again for as long
// as it may: while no more workers run than target, there is no backoff, and the ledger has room.
func (r *receivers) work(n int, bytes int64, whole bool) {
	defer r.wg.Done()
	for n > 0 {
		got, err := r.receive(n, bytes)
		r.mu.Lock()
		r.adjust(n, got, whole, err)
		n, bytes, whole = 0, 0, false
		if r.running <= r.target && !r.stopped() && !time.Now().Before(r.retryAt) {
			n, bytes, whole = r.s.led.reserve(r.s.caps.MaxReceive)
		}
		if n == 0 {
			r.running--
		}
		r.mu.Unlock()
	}
	select { // the loop re-decides (more room, a grown target, a backoff to wait out)
	case r.kick <- struct{}{}:
	default:
	}
}

// adjust follows the broker after a receive that asked for asked messages (whole: see
// ledger.reserve). Caller holds mu.
func (r *receivers) adjust(asked, got int, whole bool, err error) {
	switch {
	case err != nil:
		r.target = 1
		r.retryAt = time.Now().Add(r.bo.next())
	case whole && r.full(asked, got):
		// A full batch: there is more, so twice the receives, up to ReceiveConcurrency (a busy SQS
		// source reaches its 50 in six full batches). Growing on any non-empty batch was tried on
		// SQS: it multiplies outstanding polls for little gain.
		r.bo.reset()
		r.lastFull = time.Now()
		if r.target < r.s.caps.ReceiveConcurrency {
			r.target = min(2*r.target, r.s.caps.ReceiveConcurrency)
			select { // the loop starts the new worker
			case r.kick <- struct{}{}:
			default:
			}
		}
	case got == 0 && time.Since(r.lastFull) >= shrinkIdle:
		// Empty, and no full batch for a while: one receive at a time. An empty answer while full
		// batches keep coming (a broker that wakes every waiting poll for each send and gives the
		// messages to one of them) is no reason to shrink.
		r.bo.reset()
		r.target = 1
	default:
		r.bo.reset()
	}
}

// full tells whether a whole receive (one the room left did not cut short, which says nothing) that
// asked for asked messages and got got shows the broker holds more: it got at least
// Capabilities.FullReceive (default: all it asked). A whole receive may ask for fewer than MaxReceive:
// with messages of 20 KiB an eighth of a 64 MiB budget is 409 of them, and counting only receives of
// MaxReceive (500) kept such a source at one receive at a time.
func (r *receivers) full(asked, got int) bool {
	caps := r.s.caps
	enough := asked
	if caps.FullReceive > 0 {
		enough = min(caps.FullReceive, asked)
	}
	return got > 0 && got >= enough
}

// receive runs one Receive call for n messages (bytes reserved) and hands the result to the ledger.
func (r *receivers) receive(n int, bytes int64) (int, error) {
	s := r.s
	msgs, err := s.d.Receive(r.ctx, n)
	if err != nil {
		s.led.unreserve(n, bytes)
		code := Classify(s.d, err)
		if code != Canceled || r.ctx.Err() == nil {
			s.errs.report("receive", code, err)
			// A receive refused for good (failed_precondition: the broker refuses this consumer in
			// its state) reads nothing either, until someone fixes it: not ready, as for an
			// unreachable broker. Only for receives: an ack or nack refused so is about one message.
			if code.unreachable() || code == FailedPrecondition {
				s.ready.set(false)
			}
		}
		return 0, err
	}
	if len(msgs) > 0 || !s.ready.hasCheck() {
		// An empty answer proves little (some waits end quietly on a silent network): with a health
		// check, only messages or the prober make the source ready again.
		s.ready.set(true)
	}
	s.m.ReceiveBatch.Observe(float64(len(msgs)))
	s.admit(msgs, n, bytes)
	return len(msgs), nil
}

func (r *receivers) stopped() bool {
	select {
	case <-r.stopCh:
		return true
	default:
		return false
	}
}

// stop starts no more Receive calls. Running ones go on; what they bring is released.
func (r *receivers) stop() { r.stopMu.Do(func() { close(r.stopCh) }) }

// wait waits for the loop and every running Receive until ctx ends, then cancels what still runs and
// waits for it to return.
func (r *receivers) wait(ctx context.Context) {
	waitCtx(ctx, r.wg.Wait)
	r.cancel()
	r.wg.Wait()
}

// admit turns received messages into records, dead-letters those over MaxMessageBytes, and releases
// what does not fit the budgets (or arrives after shutdown began) back to the broker at once.
func (s *Source) admit(msgs []*Message, n int, bytes int64) {
	now := time.Now()
	out := s.led.admit(msgs, n, bytes, now, s.caps.Lease, s.opts.MaxMessageBytes, s.nacks.take)
	if out.rejected > 0 {
		s.log.Error("driver returned messages without an id; dropped from their batch", "count", out.rejected)
	}
	s.m.Duplicates.Add(float64(out.dups))
	if len(out.surplus) > 0 {
		s.releaseMessages(out.surplus)
	}
	for _, r := range out.tooLarge {
		reason := fmt.Sprintf("message of %d bytes (payload, offset, keys and headers) exceeds MAX_MESSAGE_BYTES (%d)", r.size, s.opts.MaxMessageBytes)
		s.log.Warn("message too large", "id", r.msg.ID, "bytes", r.size, "limit", s.opts.MaxMessageBytes)
		s.deadLetter(r, "too_large", reason, 0)
	}
}

// releaseMessages hands messages the ledger did not take back to the broker, readable at once.
func (s *Source) releaseMessages(msgs []*Message) {
	handles := make([]Handle, len(msgs))
	for i, m := range msgs {
		handles[i] = m.Handle
	}
	if !s.jobs.run(func() {
		failed := s.commits.call(s.bgCtx, s.releaseOp("release", 0), handles)
		if len(failed) > 0 {
			s.log.Warn("release failed; the broker redelivers the messages after their lease", "count", len(failed))
		}
	}) {
		s.log.Warn("messages received after close; the broker redelivers them after their lease", "count", len(msgs))
	}
}

// waitCtx runs wait (a WaitGroup's Wait) but gives up when ctx ends.
func waitCtx(ctx context.Context, wait func()) {
	done := make(chan struct{})
	go func() { wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
	}
}
