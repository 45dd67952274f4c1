// Package demo configures the memsource demo connector.
package demo

import (
	"bytes"
	"context"
	"errors"
	"strconv"
	"sync"
	"time"

	"github.com/numaflow-connectors/sources/common/config"
	"github.com/numaflow-connectors/sources/common/server"
	"github.com/numaflow-connectors/sources/common/source"
	"github.com/numaflow-connectors/sources/common/source/memsource"
)

// Config is the demo's own configuration.
type Config struct {
	Messages     int           `env:"MEM_MESSAGES" envDefault:"100000" desc:"Messages the in-memory queue gets in all, published as they are consumed (at most 8 MiB of payloads, and at least 16 messages, queued at once)."`
	PayloadBytes int           `env:"MEM_PAYLOAD_BYTES" envDefault:"64" desc:"Size of each payload in bytes (at least 16)."`
	Lease        time.Duration `env:"MEM_LEASE" envDefault:"30s" desc:"How long a received message stays invisible before it is redelivered."`
	DeadLetter   bool          `env:"MEM_DEAD_LETTER" envDefault:"true" desc:"Keep messages over NackOptions.MaxDeliveries in an in-memory dead-letter list."`
}

// Validate implements config.Validator.
func (c *Config) Validate() error {
	var errs []error
	if c.Messages < 0 {
		errs = append(errs, config.Problem("MEM_MESSAGES", "must be 0 or more, got %d", c.Messages))
	}
	if c.PayloadBytes < 16 || c.PayloadBytes > 4<<20 {
		errs = append(errs, config.Problem("MEM_PAYLOAD_BYTES", "must be between 16 and 4194304, got %d", c.PayloadBytes))
	}
	if c.Lease < time.Second {
		errs = append(errs, config.Problem("MEM_LEASE", "must be at least 1s, got %s", c.Lease))
	}
	return errors.Join(errs...)
}

// Open returns a driver on a fresh in-memory broker that publishes cfg.Messages messages as they
// are consumed (see feeder).
func Open(_ context.Context, cfg *Config, env *server.Env) (source.Driver, error) {
	b := memsource.NewBroker()
	b.CreateQueue("demo")
	window := max(feedBytes/cfg.PayloadBytes, minFeed)
	f := &feeder{
		Driver: memsource.NewDriver(b, memsource.Options{Queue: "demo", Lease: cfg.Lease, DeadLetter: cfg.DeadLetter, MaxReceive: 500}),
		b:      b,
		total:  cfg.Messages,
		window: window,
	}
	f.payloads = newPayloads(min(window, cfg.Messages), cfg.PayloadBytes)
	if err := f.topUp(); err != nil {
		return nil, err
	}
	env.Log.Info("in-memory queue ready", "messages", cfg.Messages, "payload_bytes", cfg.PayloadBytes)
	return f, nil
}

// feeder publishes the demo's messages while they are consumed, keeping at most window of them in
// the queue, instead of all of them at start: a connector of a real broker holds a few MiB, and the
// ceiling benchmark (200,000 messages of 1 KiB) measured a 550 MiB heap, whose cost varied from one
// machine to the next, more than the protocol. The payloads are built once, window of them, and
// published in turn (nothing writes to a payload, so messages in flight may share one): publishing
// then costs what memsource's own Publish does, and the ceiling measures the adapter and the gRPC
// path, as it did when everything was built before the first read. Every other method is the
// memsource driver's.
type feeder struct {
	*memsource.Driver
	b      *memsource.Broker
	total  int // messages to publish in all
	window int // messages in the queue (not acked) the feeder tops up to

	mu       sync.Mutex
	next     int      // messages published so far
	payloads [][]byte // window payloads, "message <i> ....", published in turn
}

// feedBytes and minFeed size the window: 8 MiB of payloads, and at least minFeed messages.
const (
	feedBytes = 8 << 20
	minFeed   = 16
)

// newPayloads builds n payloads of size bytes: "message <i> " and dots.
func newPayloads(n, size int) [][]byte {
	block := bytes.Repeat([]byte{'.'}, n*size)
	out := make([][]byte, n)
	for i := range out {
		p := block[i*size : (i+1)*size : (i+1)*size]
		var text [32]byte
		copy(p, append(strconv.AppendInt(append(text[:0], "message "...), int64(i), 10), ' '))
		out[i] = p
	}
	return out
}

// topUp publishes the next messages while fewer than window are in the queue.
func (f *feeder) topUp() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	for f.next < f.total {
		n := min(f.window-f.b.Len("demo"), f.total-f.next, 1000)
		if n <= 0 {
			return nil
		}
		pubs := make([]memsource.Publication, n)
		for i := range pubs {
			seq := f.next + i
			pubs[i] = memsource.Publication{Payload: f.payloads[seq%len(f.payloads)], Key: keys[seq%len(keys)]}
		}
		if err := f.b.Publish("demo", pubs...); err != nil {
			return err
		}
		f.next += n
	}
	return nil
}

// keys are the demo's message keys, k0 to k7 in turn.
var keys = []string{"k0", "k1", "k2", "k3", "k4", "k5", "k6", "k7"}

// Receive tops the queue up first.
func (f *feeder) Receive(ctx context.Context, max int) ([]*source.Message, error) {
	if err := f.topUp(); err != nil {
		return nil, err
	}
	return f.Driver.Receive(ctx, max)
}

// Ack tops the queue up after: a Receive waiting on an empty queue is woken by the publish.
func (f *feeder) Ack(ctx context.Context, handles []source.Handle) error {
	err := f.Driver.Ack(ctx, handles)
	if terr := f.topUp(); err == nil {
		err = terr
	}
	return err
}

// Backlog counts the messages not yet published too.
func (f *feeder) Backlog(ctx context.Context) (int64, error) {
	n, err := f.Driver.Backlog(ctx)
	if err != nil {
		return n, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return n + int64(f.total-f.next), nil
}
