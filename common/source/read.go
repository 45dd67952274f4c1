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
	start := time.Now()
	defer func() { s.m.ReadLatency.Observe(time.Since(start).Seconds()) }()
	stream := s.watchStream(ctx)
	ctx, cancel := context.WithTimeout(ctx, req.TimeOut())
	defer cancel()
	want := int(min(req.Count(), uint64(1<<30)))
	if s.shutting.Load() {
		<-ctx.Done() // hand out nothing, but do not make numa spin either
		return
	}
	sent := 0
	defer func() { s.m.Read.Add(float64(sent)) }()
	for sent < want {
		batch, payloads, redelivered, more, next := s.led.take(want-sent, time.Now(), stream)
		s.m.Redelivered.Add(float64(redelivered))
		for i, r := range batch {
			select {
			case ch <- s.toNuma(r, payloads[i]):
				sent++
			case <-ctx.Done():
				s.led.untake(batch[i:])
				return
			}
		}
		if sent >= want {
			return
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
				return // lingered long enough with no new message
			}
		case <-ctx.Done():
			t.Stop()
			return
		}
	}
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

// toNuma builds numa's message for a record (its ID, event time, keys and headers never change once
// received; its payload is the one take read).
func (s *Source) toNuma(r *record, payload []byte) sourcer.Message {
	m := r.msg
	msg := sourcer.NewMessage(payload, sourcer.NewOffset([]byte(m.ID), s.opts.Partition), m.EventTime)
	if len(m.Keys) > 0 {
		msg = msg.WithKeys(validKeys(m.Keys))
	}
	if len(m.Headers) > 0 {
		msg = msg.WithHeaders(validHeaders(m.Headers))
	}
	return msg
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
