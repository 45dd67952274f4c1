package rabbitmq

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// A session is one connection and one consuming channel. Its delivery tags are valid on it alone:
// when it is lost the broker requeues every unanswered delivery, and an answer that arrives later is
// dropped (ack.go). The supervisor (run) reconnects with backoff, since amqp091-go does not (its
// experimental recovery is left off: it would reuse tags across channels).
type session struct {
	gen    uint64
	conn   amqpConn
	ch     amqpChannel
	done   chan struct{} // closed when the session is lost
	data   chan struct{} // a delivery was queued (capacity 1)
	window int           // the current consumer's prefetch
	target int           // the window wanted for the whole channel when the consumer started
	ctag   string        // the current consumer's tag
	seq    int           // consumers started on this channel
	fwd    chan struct{} // closed when the current consumer's forwarder has ended; nil: no consumer
	// stopped is closed once serve has cancelled the consumer for StopReceiving and handed back the
	// queue (stop.go).
	stopped chan struct{}

	connClosed, chClosed chan *amqp.Error // amqp091-go's close notifications
	cancels              chan string      // consumer tags the broker cancelled (basic.cancel)

	// Under driver.mu:
	queue   []amqp.Delivery      // received, not yet taken by Receive
	live    map[uint64]liveEntry // unanswered deliveries: queued or handed to the adapter
	byID    map[string][]uint64  // live tags by message-id (two when a publisher sent a message twice)
	expired map[uint64]bool      // handed back at the hold limit; their answers are dropped
	later   map[uint64]time.Time // live deliveries nacked with a delay: nacked (requeue) when due (ack.go)
}

type liveEntry struct {
	at   time.Time // received
	size int64
	id   string // the message-id property ("" when none)
}

// holdLocked registers a delivery as live. Caller holds mu.
func (s *session) holdLocked(tag uint64, e liveEntry) {
	s.live[tag] = e
	if e.id != "" {
		s.byID[e.id] = append(s.byID[e.id], tag)
	}
}

// unholdLocked takes tag out of live and reports whether it was live. Caller holds mu.
func (s *session) unholdLocked(tag uint64) (liveEntry, bool) {
	e, ok := s.live[tag]
	if !ok {
		return e, false
	}
	delete(s.live, tag)
	delete(s.later, tag)
	if e.id != "" {
		tags := slices.DeleteFunc(s.byID[e.id], func(t uint64) bool { return t == tag })
		if len(tags) == 0 {
			delete(s.byID, e.id)
		} else {
			s.byID[e.id] = tags
		}
	}
	return e, true
}

// twinsLocked takes out of live (and out of the queue, for those Receive has not taken yet) the
// deliveries of message-id id the channel still holds, and returns their tags. The offset is the
// message-id, so they are the same message as one just answered: a publisher that retried a publish
// after a lost confirm leaves two copies, and the adapter answers only the newest handle it has.
// Caller holds mu.
func (s *session) twinsLocked(id string) []uint64 {
	if id == "" || len(s.byID[id]) == 0 {
		return nil
	}
	tags := s.byID[id]
	delete(s.byID, id)
	for _, t := range tags {
		delete(s.live, t)
		delete(s.later, t)
	}
	s.queue = slices.DeleteFunc(s.queue, func(dl amqp.Delivery) bool { return slices.Contains(tags, dl.DeliveryTag) })
	return tags
}

// initialWindow is the most the prefetch is before any message size has been seen: small, in case
// messages are big (the adapter's first receive is as small).
const initialWindow = 10

// windowFor is the prefetch for payloads of about est bytes (0: unknown): the adapter's receive budget
// plus its delayed-redelivery budget, in count and in bytes, so a burst of delayed nacks as large as
// the receive budget leaves the receive budget free and the bytes received stay within what the
// adapter may hold. Before a size is seen it also holds no more messages of MAX_MESSAGE_BYTES than
// PREFETCH_BYTES does (at least one), as the adapter's first receives: the broker pushes the whole
// window before the first delivery shows how big messages are, and a restart with a backlog of 50 MiB
// messages must not take ten of them into a 64 MiB budget. Caller holds mu.
func (d *driver) windowFor(est int64) int {
	if est <= 0 {
		n := min(initialWindow, 2*d.prefetch)
		if d.maxMessage > 0 {
			n = int(min(int64(n), d.prefetchBytes/d.maxMessage))
		}
		return max(1, n)
	}
	n := min(int64(2*d.prefetch), 2*d.prefetchBytes/est)
	return int(max(1, min(n, 65535)))
}

// start starts the supervisor once, from the first Receive's context without its cancellation: the
// supervisor outlives that call and is stopped by Close.
func (d *driver) start(ctx context.Context) {
	d.startOnce.Do(func() {
		d.runCtx, d.stopRun = context.WithCancel(context.WithoutCancel(ctx))
		d.runWG.Add(1)
		go d.run()
	})
}

// run connects, serves a session until it is lost, and reconnects with backoff, until Close or, once
// no session is left to serve, StopReceiving.
func (d *driver) run() {
	defer d.runWG.Done()
	wait := minReconnect
	var lastLogged string
	for d.runCtx.Err() == nil && !d.receivingStopped() {
		s, err := d.connect(d.runCtx)
		if err != nil {
			if d.runCtx.Err() != nil || d.receivingStopped() {
				return
			}
			d.setErr(err)
			if msg := err.Error(); msg != lastLogged {
				d.log.Warn("connecting to rabbitmq failed; retrying", "error", err, "retry_in", wait.String())
				lastLogged = msg
			}
			select {
			case <-d.runCtx.Done():
				return
			case <-d.stopRecv:
				return
			case <-time.After(wait):
			case <-d.retry: // the broker answered a check: try now
			}
			wait = min(2*wait, d.reconnect)
			continue
		}
		if lastLogged != "" || s.gen > 1 {
			d.log.Info("connected to rabbitmq", "session", s.gen, "prefetch", s.window)
		}
		lastLogged = ""
		began := time.Now()
		reason := d.serve(s)
		d.lose(s, reason)
		if time.Since(began) >= flapping {
			wait = minReconnect
			continue // a session that ran a while: reconnect at once
		}
		// Lost right after it was made (a channel the broker keeps closing): back off as after a
		// failed attempt, so a flapping session never becomes a reconnect loop.
		select {
		case <-d.runCtx.Done():
			return
		case <-d.stopRecv:
			return
		case <-time.After(wait):
		case <-d.retry:
		}
		wait = min(2*wait, d.reconnect)
	}
}

// flapping: a session lost sooner than this after it was made is retried with backoff.
const flapping = 2 * time.Second

// connect dials, opens the channel and starts consuming.
func (d *driver) connect(ctx context.Context) (*session, error) {
	conn, err := d.dialer()(ctx)
	if err != nil {
		return nil, fmt.Errorf("connecting for queue %s: %w", d.queue, err)
	}
	ch, err := conn.Channel()
	if err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("opening a channel for queue %s: %w", d.queue, err)
	}
	d.mu.Lock()
	d.gen++
	s := &session{gen: d.gen, conn: conn, ch: ch, done: make(chan struct{}), data: make(chan struct{}, 1), stopped: make(chan struct{}),
		live: make(map[uint64]liveEntry), byID: make(map[string][]uint64), expired: make(map[uint64]bool), later: make(map[uint64]time.Time),
		connClosed: conn.NotifyClose(make(chan *amqp.Error, 1)), chClosed: ch.NotifyClose(make(chan *amqp.Error, 1)),
		cancels: ch.NotifyCancel(make(chan string, 1))}
	window := d.windowFor(d.sizeEst)
	d.mu.Unlock()
	if err := d.consume(s, window, window); err != nil {
		_ = conn.Close()
		return nil, err
	}
	d.mu.Lock()
	d.sess, d.lastErr = s, nil
	d.notifyLocked()
	d.mu.Unlock()
	return s, nil
}

// consume starts a consumer on s with prefetch window, for a channel-wide target. basic.qos
// (global=false) applies to consumers started after it, so a new window takes a new consumer. After
// StopReceiving it starts none (errStopped); one it starts as StopReceiving comes is cancelled by serve.
func (d *driver) consume(s *session, window, target int) error {
	if d.receivingStopped() {
		return errStopped
	}
	if err := s.ch.Qos(window, 0, false); err != nil {
		return fmt.Errorf("setting the prefetch of queue %s: %w", d.queue, err)
	}
	s.seq++
	tag := d.tag + "-" + strconv.FormatUint(s.gen, 10) + "-" + strconv.Itoa(s.seq)
	deliveries, err := s.ch.Consume(d.queue, tag, false, false, false, false, nil)
	if err != nil {
		return fmt.Errorf("consuming from queue %s: %w", d.queue, err)
	}
	d.mu.Lock()
	s.window, s.target, s.ctag, s.fwd = window, target, tag, make(chan struct{})
	d.mu.Unlock()
	d.runWG.Add(1)
	go d.forward(s, deliveries, s.fwd)
	return nil
}

// forward moves one consumer's deliveries into the session's queue, registering each as live at once
// (so the hold limit covers deliveries the adapter has not taken yet). It ends when amqp091-go closes
// the consumer's channel (cancel or channel loss).
func (d *driver) forward(s *session, deliveries <-chan amqp.Delivery, done chan struct{}) {
	defer d.runWG.Done()
	defer close(done)
	for dl := range deliveries {
		size := int64(len(dl.Body)) + tableSize(dl.Headers)
		d.mu.Lock()
		select {
		case <-s.done: // lost: the broker requeued it
			d.addUnreadLocked(dl.MessageId)
			d.mu.Unlock()
			continue
		default:
		}
		s.holdLocked(dl.DeliveryTag, liveEntry{at: d.now(), size: size, id: dl.MessageId})
		if d.ackedBeforeLocked(dl.MessageId) {
			// numa acked it on a lost channel: ack the redelivery instead of handing it out again.
			d.mu.Unlock()
			if d.ackNow(s, dl.DeliveryTag) {
				d.reacked.Add(1)
			}
			continue
		}
		s.queue = append(s.queue, dl)
		resize := d.observeLocked(s, size)
		d.mu.Unlock()
		select {
		case s.data <- struct{}{}:
		default:
		}
		if resize {
			select {
			case d.resize <- struct{}{}:
			default:
			}
		}
	}
}

// tableSize is about how many bytes an AMQP table takes: its keys, the text of strings and byte
// arrays, 8 bytes for other values, nested tables and arrays counted the same way. The window and
// PREFETCH_BYTES count headers too: a small body under large headers (up to a frame, 128 KiB) must
// not open a window sized for the body alone.
func tableSize(t amqp.Table) int64 {
	var n int64
	for k, v := range t {
		n += int64(len(k)) + valueSize(v)
	}
	return n
}

func valueSize(v any) int64 {
	switch x := v.(type) {
	case string:
		return int64(len(x))
	case []byte:
		return int64(len(x))
	case amqp.Table:
		return tableSize(x)
	case []any:
		var n int64
		for _, e := range x {
			n += valueSize(e)
		}
		return n
	}
	return 8
}

// ackNow acks one live delivery of s on s's channel (s may not be the driver's session yet: this runs
// from forward, which starts before connect publishes the session). It reports whether the ack went
// out.
func (d *driver) ackNow(s *session, tag uint64) bool {
	d.sendMu.Lock()
	defer d.sendMu.Unlock()
	d.mu.Lock()
	_, live := s.unholdLocked(tag) // a hand-back may have taken it meanwhile
	d.mu.Unlock()
	return live && s.ch.Ack(tag, false) == nil
}

// observeLocked updates the size estimate with one payload and reports whether the window should
// change: it jumps up with a bigger payload (the byte budget must hold) and decays slowly. The window
// is rebuilt when the target should shrink by a quarter or grow to twice its size, or grow at all
// from the initial window.
func (d *driver) observeLocked(s *session, size int64) bool {
	size = max(size, 1)
	switch {
	case size >= d.sizeEst:
		d.sizeEst = size
	default:
		d.sizeEst -= (d.sizeEst - size) / 16
	}
	want := d.windowFor(d.sizeEst)
	return want < s.target*3/4 || want >= 2*s.target || (want > s.target && s.target <= initialWindow)
}

// serve watches s until it is lost or the driver closes, resizing the window and handing back
// deliveries that reach the hold limit. It returns why the session ended. A consumer that ends
// without a cancel of ours (basic.cancel from the broker: its queue was deleted, or in a cluster the
// node of a classic queue went down) ends the session too: the supervisor reconnects with backoff,
// Receive reports why a new consumer cannot start (a missing queue is not_found) and readiness goes
// false until the queue is back.
//
// After StopReceiving it cancels the consumer (stopConsuming) and serves on without one, so the
// deliveries the adapter holds stay answerable until the session ends.
func (d *driver) serve(s *session) error {
	tick := time.NewTicker(min(max(d.holdLimit/20, 100*time.Millisecond), time.Second))
	defer tick.Stop()
	stop := d.stopRecv
	for {
		select {
		case <-d.runCtx.Done():
			return nil
		case <-stop:
			stop = nil
			if err := d.stopConsuming(s); err != nil {
				return err
			}
		case e, ok := <-s.connClosed:
			return lossError("connection", e, ok)
		case e, ok := <-s.chClosed:
			return lossError("channel", e, ok)
		case tag := <-s.cancels:
			if tag == s.ctag {
				return fmt.Errorf("consumer %s of queue %s %w", tag, d.queue, errCancelled)
			}
			// A consumer this driver had already replaced.
		case <-s.fwd:
			return d.consumerEnded(s)
		case <-d.resize:
			if err := d.rewindow(s); err != nil {
				return err
			}
		case <-tick.C:
			d.handBack(s)
			d.nackDue(s)
			if err := d.widen(s); err != nil {
				return err
			}
		}
	}
}

// consumerEnded says why the current consumer's deliveries stopped outside a rewindow: the channel's
// or connection's close, or the broker's cancel, when amqp091-go reports it soon after.
func (d *driver) consumerEnded(s *session) error {
	t := time.NewTimer(100 * time.Millisecond)
	defer t.Stop()
	select {
	case e, ok := <-s.connClosed:
		return lossError("connection", e, ok)
	case e, ok := <-s.chClosed:
		return lossError("channel", e, ok)
	case <-t.C:
	case <-d.runCtx.Done():
		return nil
	}
	return fmt.Errorf("consumer %s of queue %s %w", s.ctag, d.queue, errCancelled)
}

// errLost is the reason of a session closed without an AMQP error.
var errLost = errors.New("connection closed")

// lossError says why a session ended; it is always unavailable (errLost), whatever the broker's
// reply code (a consumer_timeout closes with 406).
func lossError(what string, e *amqp.Error, ok bool) error {
	if !ok || e == nil {
		return fmt.Errorf("%s closed: %w", what, errLost)
	}
	return fmt.Errorf("%s %w by the broker: %w", what, errLost, e)
}

// rewindow replaces the consumer with one whose prefetch fits the current size estimate. A prefetch
// counts the deliveries of its own consumer only, and those of the cancelled one stay unanswered on the
// channel (their tags remain valid), so the new consumer starts once most of them are answered (at
// most rewindowWait) and its prefetch leaves room for the rest: the channel never holds more than the
// target. widen raises that prefetch to the target once they are answered.
func (d *driver) rewindow(s *session) error {
	d.mu.Lock()
	want := d.windowFor(d.sizeEst)
	d.mu.Unlock()
	if want == s.target || s.fwd == nil {
		return nil
	}
	if err := d.cancelConsumer(s); err != nil || d.runCtx.Err() != nil {
		return err
	}
	deadline := time.NewTimer(rewindowWait)
	defer deadline.Stop()
	held := d.liveCount(s)
	for held > want/4 {
		select {
		case <-deadline.C:
		case <-d.stopRecv: // no new consumer: serve hands back what the old one delivered
		case <-d.runCtx.Done():
			return nil
		case <-time.After(10 * time.Millisecond):
			held = d.liveCount(s)
			continue
		}
		break
	}
	d.log.Debug("prefetch window changed", "from", s.target, "to", want, "unanswered", held)
	return d.reconsume(s, max(1, want-held), want)
}

// widen replaces a consumer whose prefetch was cut below the target (rewindow left room for
// deliveries still unanswered) once enough of those are answered: when nothing is held, or when the
// room grew by a quarter of the target. Without it a narrowed replica could keep a prefetch of 1.
func (d *driver) widen(s *session) error {
	d.mu.Lock()
	held, window, target := len(s.live), s.window, s.target
	d.mu.Unlock()
	room := target - held
	if s.fwd == nil || window >= target || room <= window || (held > 0 && room-window < max(1, target/4)) {
		return nil
	}
	if err := d.cancelConsumer(s); err != nil || d.runCtx.Err() != nil {
		return err
	}
	held = d.liveCount(s) // with what the cancelled consumer received meanwhile
	d.log.Debug("prefetch window widened", "from", window, "to", max(1, target-held), "target", target)
	return d.reconsume(s, max(1, target-held), target)
}

// reconsume starts the consumer that replaces a cancelled one, unless StopReceiving came meanwhile:
// then s stays without one (serve hands back what the old one delivered).
func (d *driver) reconsume(s *session, window, target int) error {
	if err := d.consume(s, window, target); !errors.Is(err, errStopped) {
		return err
	}
	return nil
}

// cancelConsumer cancels the current consumer and waits until its last deliveries are registered:
// amqp091-go closes its channel after basic.cancel-ok, so this does not block. Until then a tag of it
// could be unknown to live, and a multiple ack of a newer tag would ack it unseen. s then has no
// consumer (fwd nil) until consume starts one.
func (d *driver) cancelConsumer(s *session) error {
	if err := s.ch.Cancel(s.ctag, false); err != nil {
		return fmt.Errorf("cancelling consumer %s on queue %s: %w", s.ctag, d.queue, err)
	}
	select {
	case <-s.fwd:
	case <-d.runCtx.Done():
	}
	d.mu.Lock()
	s.fwd = nil
	d.mu.Unlock()
	return nil
}

// rewindowWait bounds how long a new consumer waits for the old one's deliveries to be answered.
const rewindowWait = time.Second

func (d *driver) liveCount(s *session) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(s.live)
}

// handBack nacks (requeue) every delivery held for the hold limit, so consumer_timeout never closes
// the channel; an answer for it that comes later is dropped.
func (d *driver) handBack(s *session) {
	now := d.now()
	var tags []uint64
	d.sendMu.Lock()
	defer d.sendMu.Unlock()
	d.mu.Lock()
	for tag, l := range s.live {
		if now.Sub(l.at) >= d.holdLimit {
			tags = append(tags, tag)
			s.expired[tag] = true
		}
	}
	for _, tag := range tags {
		s.unholdLocked(tag)
	}
	if len(tags) > 0 {
		drop := make(map[uint64]bool, len(tags))
		for _, t := range tags {
			drop[t] = true
		}
		kept := s.queue[:0]
		for _, dl := range s.queue {
			if !drop[dl.DeliveryTag] {
				kept = append(kept, dl)
			} else {
				d.addUnreadLocked(dl.MessageId)
			}
		}
		clear(s.queue[len(kept):])
		s.queue = kept
	}
	d.mu.Unlock()
	if len(tags) == 0 {
		return
	}
	for _, t := range tags {
		if err := s.ch.Nack(t, false, true); err != nil {
			break // the channel is going: the broker requeues the rest
		}
	}
	d.expired.Add(int64(len(tags)))
	d.log.Warn("deliveries held for the hold limit handed back to the broker (RABBITMQ_CONSUMER_TIMEOUT)",
		"count", len(tags), "hold_limit", d.holdLimit.String())
}

// lose retires s: its unanswered deliveries were requeued by the broker, and answers for them will be
// dropped.
func (d *driver) lose(s *session, reason error) {
	d.mu.Lock()
	close(s.done)
	held := len(s.live)
	for _, dl := range s.queue {
		d.addUnreadLocked(dl.MessageId) // requeued by the broker before the adapter took it
	}
	s.queue, s.live, s.byID, s.later = nil, nil, nil, nil
	if d.sess == s {
		d.sess = nil
	}
	if reason != nil {
		d.lastErr = reason // Receive reports it (unavailable) until a reconnection succeeds
	}
	d.notifyLocked()
	d.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.WithoutCancel(d.runCtx), closeWait)
	_ = closeConn(ctx, s.conn)
	cancel()
	if reason == nil { // closing
		return
	}
	d.lost.Add(1)
	if d.receivingStopped() {
		d.log.Warn("rabbitmq session lost after receiving stopped; not reconnecting (the broker requeues unanswered deliveries)",
			"session", s.gen, "unanswered", held, "error", reason)
		return
	}
	d.log.Warn("rabbitmq session lost; reconnecting (the broker requeues unanswered deliveries)",
		"session", s.gen, "unanswered", held, "error", reason)
}

// dialer is the dial function (tests swap it under mu).
func (d *driver) dialer() dialFunc {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.dial
}

func (d *driver) setErr(err error) {
	d.mu.Lock()
	d.lastErr = err
	d.notifyLocked()
	d.mu.Unlock()
}

// notifyLocked wakes whoever waits for a session change. Caller holds mu.
func (d *driver) notifyLocked() {
	close(d.changed)
	d.changed = make(chan struct{})
}
