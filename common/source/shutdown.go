package source

import (
	"context"
	"time"
)

// Shutdown stops receiving (and the broker's deliveries: ReceiveStopper), releases buffered and
// delayed messages at once, waits up to Options.ReleaseWait for numa to answer what is in flight,
// releases the rest and flushes pending commits. Reads after it return no messages. Idempotent; ctx bounds the whole of it.
//
// Receive calls still running are not cancelled (a cancelled long poll can leave messages hidden
// behind it at the broker): what they bring is released as it arrives, and Close waits for them a
// bounded time.
func (s *Source) Shutdown(ctx context.Context) {
	s.shutOnce.Do(func() {
		s.shutting.Store(true)
		s.recv.stop()
		s.led.close()
		if st, ok := s.d.(ReceiveStopper); ok {
			stop, cancel := context.WithTimeout(ctx, callTimeout)
			if err := st.StopReceiving(stop); err != nil {
				s.log.Warn("stopping the broker's deliveries failed; released messages may come back here until the connection closes", "error", err)
			}
			cancel()
		}
		s.releaseHeld(func(r *record) bool { return r.state == buffered || r.state == delayed })
		wait, cancel := context.WithTimeout(ctx, s.opts.ReleaseWait)
		for wait.Err() == nil && s.led.count(inFlight) > 0 {
			sleepCtx(wait, 20*time.Millisecond)
		}
		cancel()
		// Whatever numa did not answer goes back to the broker now.
		s.releaseHeld(func(*record) bool { return true })
		s.jobs.wait(ctx)
		s.log.Info("source drained", "still_held", s.led.size())
	})
}

// releaseHeld hands the selected records back to the broker, readable at once.
func (s *Source) releaseHeld(sel func(*record) bool) {
	rs := s.led.selectRecords(sel)
	if len(rs) > 0 {
		s.log.Info("releasing held messages", "count", len(rs))
		s.commit(rs, s.releaseOp("release", 0), nil)
	}
}

// receiveDrain is how long Close waits for Receive calls that still run before it cancels them. What
// they return meanwhile is released. A poll that takes the messages Shutdown just released does so at
// once; waiting out a long poll on an empty queue would only delay the exit.
const receiveDrain = time.Second

// Close calls Shutdown, waits up to receiveDrain for running Receive calls (what they bring is
// released) and for every background goroutine, and closes the driver. Idempotent; ctx bounds the
// waits.
func (s *Source) Close(ctx context.Context) error {
	s.closeOnce.Do(func() {
		s.Shutdown(ctx)
		drain, cancel := context.WithTimeout(ctx, receiveDrain)
		s.recv.wait(drain)
		cancel()
		s.jobs.wait(ctx) // releases of what late receives brought
		s.stopBackground(ctx)
	})
	return s.closeErr
}

// Kill stops all background work and closes the driver without releasing or committing anything, as
// if the process had died (kill -9): held messages come back only when their leases end. For tests.
func (s *Source) Kill(ctx context.Context) {
	s.closeOnce.Do(func() {
		s.shutting.Store(true)
		s.jobs.close()
		s.recv.stop()
		s.recv.cancel()
		s.recv.wait(ctx)
		s.stopBackground(ctx)
	})
}

func (s *Source) stopBackground(ctx context.Context) {
	s.jobs.close()
	s.jobs.wait(ctx)
	s.bg.close()
	s.bgCancel()
	s.bg.wait(ctx)
	s.closeErr = s.d.Close(ctx)
}
