package source

import (
	"context"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/numaproj/numaflow-go/pkg/sourcer"
)

// Read hands numa at most req.Count() messages. It waits for the first one until req.TimeOut() (an
// instant empty answer would make numa spin), then keeps filling the batch while messages keep coming
// (Options.Linger), and never returns after the deadline.
//
// Reads may overlap earlier unanswered batches (numa's read-ahead) and answers may come in any order
// and any subset (numa's streaming mode): a record is in flight from its read to its answer, and a
// message is never handed out again while it is in flight.
func (s *Source) Read(ctx context.Context, req sourcer.ReadRequest, ch chan<- sourcer.Message) {
	_ = s.ReadEach(ctx, req.Count(), req.TimeOut(), func(m *WireMessage) error {
		msg := sourcer.NewMessage(m.Payload, sourcer.NewOffset([]byte(m.ID), m.Partition), m.EventTime)
		if len(m.Keys) > 0 {
			msg = msg.WithKeys(m.Keys)
		}
		if len(m.Headers) > 0 {
			msg = msg.WithHeaders(m.Headers)
		}
		select {
		case ch <- msg:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	})
}

// WireMessage is one message as numa gets it. Keys and headers are valid UTF-8. It is valid only
// during the emit call it is passed to, and must not be changed.
type WireMessage struct {
	ID        string
	Partition int32
	Payload   []byte
	EventTime time.Time
	Keys      []string
	Headers   map[string]string
}

// ReadEach is Read for a server of numa's protocol: it calls emit with each message, in order, on the
// caller's goroutine, with the same waiting and lingering rules. ctx identifies numa's read stream
// (see watchStream). When emit fails, that message and the rest of its batch are readable again and
// ReadEach returns emit's error.
func (s *Source) ReadEach(ctx context.Context, count uint64, timeout time.Duration, emit func(*WireMessage) error) error {
	start := time.Now()
	defer func() { s.m.ReadLatency.Observe(time.Since(start).Seconds()) }()
	stream := s.watchStream(ctx)
	streamCtx := ctx
	defer func() {
		// The stream ended while this Read ran: numaGone may have made its messages readable before
		// a later take handed them to it again (a send can still succeed on a stream that is ending),
		// and no numa will answer for those. This is the stream's last Read, so nothing is taken for
		// it after this.
		if streamCtx.Err() != nil {
			s.numaGone(stream)
		}
	}()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	want := int(min(count, uint64(1<<30)))
	if s.shutting.Load() {
		<-ctx.Done() // hand out nothing, but do not make numa spin either
		return nil
	}
	sent := 0
	defer func() { s.m.Read.Add(float64(sent)) }()
	var wm WireMessage
	for sent < want {
		tk := s.led.take(want-sent, time.Now(), stream)
		batch, more, next := tk.recs, tk.more, tk.next
		var err error
		for i, r := range batch {
			s.toWire(&wm, r, tk.payloads[i])
			if err = emit(&wm); err != nil {
				s.led.untake(batch[i:])
				break
			}
			sent++
		}
		if tk.redelivered > 0 { // counted by take, under the ledger's lock (a broker redelivery may raise it)
			s.m.Redelivered.Add(float64(tk.redelivered))
		}
		if len(tk.expired) > 0 {
			s.m.ExpiredUnread.Add(float64(len(tk.expired)))
			s.log.Warn("leases ran out before numa read these messages; releasing them to the broker",
				"count", len(tk.expired), "id", tk.expired[0].msg.ID)
			s.commit(tk.expired, s.releaseOp("release", 0), nil)
		}
		if err != nil {
			return err
		}
		if sent >= want {
			return nil
		}
		if len(batch) > 0 {
			continue // the ledger may hold more already
		}
		wait := time.Hour
		if !next.IsZero() {
			wait = min(wait, max(time.Until(next), 0)) // the next delayed record is due
		}
		lingering := sent > 0
		if lingering {
			wait = min(wait, s.opts.Linger)
		}
		t := time.NewTimer(wait)
		select {
		case <-more:
			t.Stop()
		case <-t.C:
			if lingering && (next.IsZero() || time.Now().Before(next)) {
				return nil // lingered long enough with no new message
			}
		case <-ctx.Done():
			t.Stop()
			return nil
		}
	}
	return nil
}

// watchStream notices a new read stream from numa. numaflow-go passes the stream's context to Read,
// so when that context ends numa has gone away (restarted or shutting down): it will never ack or nack
// what it was handed, so those messages are made readable again at once instead of being held until
// their leases end (or, worse, swallowed as duplicates when the broker redelivers them to us).
// Only what was handed to that stream is read again: a newer stream may already be reading.
func (s *Source) watchStream(ctx context.Context) uint64 {
	s.streamMu.Lock()
	defer s.streamMu.Unlock()
	if s.stream != any(ctx) {
		s.stream = ctx
		s.streamID++
		id := s.streamID
		context.AfterFunc(ctx, func() { s.numaGone(id) })
	}
	return s.streamID
}

func (s *Source) numaGone(stream uint64) {
	if s.shutting.Load() {
		return // Shutdown releases whatever is in flight
	}
	if n := s.led.requeueInFlight(stream); n > 0 {
		s.log.Warn("numa's read stream ended; its unanswered messages will be read again", "count", n)
	}
}

// toWire fills w with numa's message for a record (its ID, event time, keys and headers never change
// once received; its payload is the one take read).
func (s *Source) toWire(w *WireMessage, r *record, payload []byte) {
	m := r.msg
	*w = WireMessage{ID: m.ID, Partition: s.opts.Partition, Payload: payload, EventTime: m.EventTime}
	w.Keys, w.Headers = m.Keys, m.Headers
	if r.repair { // found at admit (wireSize): most messages need no second look
		w.Keys, w.Headers = validKeys(m.Keys), validHeaders(m.Headers)
	}
}

// Keys and headers travel as protobuf strings, which must be valid UTF-8: one bad byte from a broker
// would make numaflow-go fail to send the batch and stop its server (and the same message would stop
// it again after every restart). Invalid bytes become U+FFFD; valid strings are passed as they are.
// Payloads are bytes and always pass untouched.
func validKeys(keys []string) []string {
	for i, k := range keys {
		if !utf8.ValidString(k) {
			out := slices.Clone(keys)
			for j := i; j < len(out); j++ {
				out[j] = strings.ToValidUTF8(out[j], "\uFFFD")
			}
			return out
		}
	}
	return keys
}

func validHeaders(h map[string]string) map[string]string {
	for k, v := range h {
		if !utf8.ValidString(k) || !utf8.ValidString(v) {
			out := make(map[string]string, len(h))
			for k, v := range h {
				out[strings.ToValidUTF8(k, "\uFFFD")] = strings.ToValidUTF8(v, "\uFFFD")
			}
			return out
		}
	}
	return h
}
