package memsource

import (
	"context"
	"fmt"
	"time"
)

// Fault makes the broker misbehave on one operation, for tests. Latency is applied first (the call
// waits, returning early only when its context ends); then Err, if set, is returned instead of doing
// the operation. With LoseResponse (receive only) the broker does the receive (the messages are
// leased: they come back only when their lease ends) and the driver returns ErrUnavailable instead of
// the messages, as when a response is lost on the way back.
type Fault struct {
	Err          error
	Latency      time.Duration
	LoseResponse bool
	// Times is how many calls the fault applies to before it clears itself; 0 means until cleared.
	Times int
}

// NewBroker returns an empty broker.
func NewBroker() *Broker {
	return &Broker{queues: make(map[string]*queue), wake: make(chan struct{}), calls: make(map[string]int),
		faults: make(map[string]*Fault)}
}

// SetFault makes every later call of op (OpReceive, OpAck, ...) misbehave as f says, on every queue
// of the broker, until ClearFault (or f.Times calls). A zero Fault clears it.
func (b *Broker) SetFault(op string, f Fault) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if f == (Fault{}) {
		delete(b.faults, op)
		return
	}
	b.faults[op] = &f
}

// ClearFault removes the fault of op; ClearFaults removes every fault.
func (b *Broker) ClearFault(op string) { b.SetFault(op, Fault{}) }

// ClearFaults removes every fault set with SetFault.
func (b *Broker) ClearFaults() {
	b.mu.Lock()
	defer b.mu.Unlock()
	clear(b.faults)
}

// faultLocked returns the fault to apply to one call of op (zero when none) and counts the call down.
func (b *Broker) faultLocked(op string) Fault {
	f := b.faults[op]
	if f == nil {
		return Fault{}
	}
	out := *f
	if f.Times > 0 {
		f.Times--
		if f.Times == 0 {
			delete(b.faults, op)
		}
	}
	return out
}

// injectFault applies the latency of op's fault (if any) and returns the fault. It must be called
// without b.mu held.
func (b *Broker) injectFault(ctx context.Context, op string) Fault {
	b.mu.Lock()
	f := b.faultLocked(op)
	b.mu.Unlock()
	if f.Latency > 0 {
		t := time.NewTimer(f.Latency)
		select {
		case <-t.C:
		case <-ctx.Done():
		}
		t.Stop()
	}
	return f
}

// fault applies op's injected fault: it waits its latency and returns its error, counting the call.
func (d *Driver) fault(ctx context.Context, op string) error {
	f := d.b.injectFault(ctx, op)
	if f.Err == nil {
		return nil
	}
	d.b.mu.Lock()
	d.b.calls[op]++
	d.b.mu.Unlock()
	return fmt.Errorf("%s on %s: %w", op, d.opts.Queue, f.Err)
}
