package numatest

import (
	"context"
	"time"

	"github.com/numaproj/numaflow-go/pkg/sourcer"
)

// In process, numa's calls are method calls on a sourcer.Sourcer. These build the request values
// numaflow-go's server passes to it, for tests and benchmarks that skip the socket.

type readRequest struct {
	n       uint64
	timeout time.Duration
}

func (r readRequest) Count() uint64          { return r.n }
func (r readRequest) TimeOut() time.Duration { return r.timeout }

type ackRequest []sourcer.Offset

func (a ackRequest) Offsets() []sourcer.Offset { return a }

type nackRequest []sourcer.NackOffset

func (n nackRequest) Offsets() []sourcer.NackOffset { return n }

// ReadRequest asks for up to n messages within timeout.
func ReadRequest(n uint64, timeout time.Duration) sourcer.ReadRequest { return readRequest{n, timeout} }

// AckRequest acknowledges offsets.
func AckRequest(offsets ...sourcer.Offset) sourcer.AckRequest { return ackRequest(offsets) }

// NackRequest negatively acknowledges items.
func NackRequest(items ...sourcer.NackOffset) sourcer.NackRequest { return nackRequest(items) }

// ReadFrom calls s.Read for up to n messages within timeout and returns what it sent.
func ReadFrom(ctx context.Context, s sourcer.Sourcer, n int, timeout time.Duration) []sourcer.Message {
	ch := make(chan sourcer.Message)
	done := make(chan []sourcer.Message)
	go func() {
		var out []sourcer.Message
		for m := range ch {
			out = append(out, m)
		}
		done <- out
	}()
	s.Read(ctx, ReadRequest(uint64(n), timeout), ch)
	close(ch)
	return <-done
}

// OffsetsOf returns the offsets of msgs, in order.
func OffsetsOf(msgs []sourcer.Message) []sourcer.Offset {
	out := make([]sourcer.Offset, len(msgs))
	for i, m := range msgs {
		out[i] = m.Offset()
	}
	return out
}
