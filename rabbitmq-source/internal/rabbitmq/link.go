package rabbitmq

import (
	"context"
	"fmt"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// A link is one of the driver's connections besides the consuming one: probe (passive declares for
// Backlog and Check; it never publishes, so a resource alarm never blocks it) and pub (dead-letter
// publishes). It is dialled when first needed and used by one call at a time. A call takes it with
// its context and aborts the connection when that context ends during a broker call, so nothing waits
// on a link without a deadline; a connection that failed is dropped and closed in the background (no
// lock held), and the next call dials again.
type link struct {
	sem     chan struct{} // capacity 1: held by the call using the link
	publish bool          // the link publishes: follow connection.blocked

	mu     sync.Mutex // guards conn, block and closed; never held across a broker call
	conn   amqpConn
	block  *blockState // with publish: connection.blocked of conn, as the broker last reported it
	closed bool

	// With publish, valid with conn, under sem:
	pubs amqpChannel      // confirm-mode channel; nil until needed or after a failure
	rets chan amqp.Return // its basic.returns
}

func newLink(publish bool) *link { return &link{sem: make(chan struct{}, 1), publish: publish} }

// take acquires the link, dialling a connection when it has none. release gives it back.
func (d *driver) take(ctx context.Context, l *link) (amqpConn, error) {
	select {
	case l.sem <- struct{}{}:
	case <-ctx.Done():
		return nil, fmt.Errorf("waiting for the connection to queue %s: %w", d.queue, ctx.Err())
	}
	l.mu.Lock()
	conn, closed := l.conn, l.closed
	l.mu.Unlock()
	if closed {
		l.release()
		return nil, fmt.Errorf("using the connection to queue %s: %w", d.queue, amqp.ErrClosed)
	}
	if conn != nil {
		return conn, nil
	}
	conn, err := d.dialer()(ctx)
	if err != nil {
		l.release()
		return nil, fmt.Errorf("connecting for queue %s: %w", d.queue, err)
	}
	var block *blockState
	if l.publish {
		block = d.watchBlocked(conn)
	}
	l.mu.Lock()
	if l.closed { // Close ran meanwhile
		l.mu.Unlock()
		conn.Abort()
		_ = conn.Close()
		l.release()
		return nil, fmt.Errorf("using the connection to queue %s: %w", d.queue, amqp.ErrClosed)
	}
	l.conn, l.block = conn, block
	l.mu.Unlock()
	l.pubs, l.rets = nil, nil
	return conn, nil
}

// blocked reports whether the broker blocks the link's connection (a resource alarm), why, and a
// channel closed while it does.
func (l *link) blocked() (bool, string, <-chan struct{}) {
	l.mu.Lock()
	b := l.block
	l.mu.Unlock()
	if b == nil {
		return false, "", nil
	}
	return b.state()
}

func (l *link) release() { <-l.sem }

// drop forgets conn after a failure and closes it in the background. Caller holds the link.
func (d *driver) drop(ctx context.Context, l *link, conn amqpConn) {
	l.mu.Lock()
	if l.conn == conn {
		l.conn, l.block = nil, nil
	}
	l.mu.Unlock()
	l.pubs, l.rets = nil, nil
	d.closeLater(ctx, conn)
}

// shut closes the link for good (Close): its connection is closed while ctx lasts, then aborted. A
// call using it meanwhile returns with an error.
func (d *driver) shut(ctx context.Context, l *link) {
	blocked, _, _ := l.blocked()
	l.mu.Lock()
	conn := l.conn
	l.conn, l.block, l.closed = nil, nil, true
	l.mu.Unlock()
	if conn == nil {
		return
	}
	if blocked {
		conn.Abort() // the broker reads nothing from it until the alarm clears: no close-ok would come
	}
	cctx, cancel := context.WithTimeout(ctx, closeWait)
	defer cancel()
	_ = closeConn(cctx, conn)
}

// closeWait bounds the close handshake of a connection the driver gives up (then its socket is closed).
const closeWait = 2 * time.Second

// closeLater closes conn in a goroutine of the driver's (Close waits for it), within closeWait.
func (d *driver) closeLater(ctx context.Context, conn amqpConn) {
	d.bg.Add(1)
	go func() {
		defer d.bg.Done()
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), closeWait)
		defer cancel()
		_ = closeConn(cctx, conn)
	}()
}

// closeConn closes conn with connection.close while ctx lasts, then closes its socket: a connection
// the broker blocked (resource alarm) or a silent network never answers the close.
func closeConn(ctx context.Context, conn amqpConn) error {
	done := make(chan error, 1)
	go func() { done <- conn.Close() }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		conn.Abort() // the pending Close returns once the socket is closed
		<-done
		return fmt.Errorf("closing the connection: %w", ctx.Err())
	}
}

// guarded runs call, which makes broker calls on conn (amqp091-go's calls take no context). When ctx
// ends first, conn is aborted so the call returns at once; aborted then says the connection is gone,
// and the error wraps ctx's.
func guarded(ctx context.Context, conn amqpConn, call func() error) (aborted bool, err error) {
	stop := context.AfterFunc(ctx, conn.Abort)
	err = call()
	if !stop() {
		if err == nil {
			err = amqp.ErrClosed
		}
		return true, fmt.Errorf("%w (the connection was closed: %w)", ctx.Err(), err)
	}
	return false, err
}

// blockState follows connection.blocked on one connection.
type blockState struct {
	mu      sync.Mutex
	blocked bool
	reason  string
	ch      chan struct{} // closed while blocked; replaced when unblocked
}

// watchBlocked follows conn's connection.blocked notifications until the connection closes.
func (d *driver) watchBlocked(conn amqpConn) *blockState {
	b := &blockState{ch: make(chan struct{})}
	events := conn.NotifyBlocked(make(chan amqp.Blocking, 1))
	d.bg.Add(1)
	go func() {
		defer d.bg.Done()
		for e := range events { // closed by amqp091-go when the connection closes
			b.mu.Lock()
			changed := b.blocked != e.Active
			if changed && e.Active {
				b.blocked, b.reason = true, e.Reason
				close(b.ch)
			} else if changed {
				b.blocked, b.reason = false, ""
				b.ch = make(chan struct{})
			}
			b.mu.Unlock()
			switch {
			case changed && e.Active:
				d.log.Warn("rabbitmq blocked the dead-letter connection (resource alarm); dead letters fail until it clears",
					"reason", e.Reason)
			case changed:
				d.log.Info("rabbitmq unblocked the dead-letter connection")
			}
		}
	}()
	return b
}

// state reports whether the connection is blocked, why, and a channel closed while it is.
func (b *blockState) state() (blocked bool, reason string, ch <-chan struct{}) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.blocked, b.reason, b.ch
}
