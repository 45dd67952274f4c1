// Package demo configures the memsource demo connector.
package demo

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/numaflow-connectors/sources/common/config"
	"github.com/numaflow-connectors/sources/common/server"
	"github.com/numaflow-connectors/sources/common/source"
	"github.com/numaflow-connectors/sources/common/source/memsource"
)

// Config is the demo's own configuration.
type Config struct {
	Messages     int           `env:"MEM_MESSAGES" envDefault:"100000" desc:"Messages published to the in-memory queue at start."`
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

// Open seeds a fresh in-memory broker and returns a driver on it.
func Open(_ context.Context, cfg *Config, env *server.Env) (source.Driver, error) {
	b := memsource.NewBroker()
	b.CreateQueue("demo")
	const chunk = 10_000
	for start := 0; start < cfg.Messages; start += chunk {
		n := min(chunk, cfg.Messages-start)
		pubs := make([]memsource.Publication, n)
		for i := range pubs {
			p := make([]byte, cfg.PayloadBytes)
			copy(p, fmt.Sprintf("message %d ", start+i))
			for j := len(fmt.Sprintf("message %d ", start+i)); j < len(p); j++ {
				p[j] = '.'
			}
			pubs[i] = memsource.Publication{Payload: p, Key: fmt.Sprintf("k%d", (start+i)%8),
				Headers: map[string]string{"seq": fmt.Sprint(start + i)}}
		}
		if err := b.Publish("demo", pubs...); err != nil {
			return nil, err
		}
	}
	env.Log.Info("in-memory queue seeded", "messages", cfg.Messages, "payload_bytes", cfg.PayloadBytes)
	return memsource.NewDriver(b, memsource.Options{Queue: "demo", Lease: cfg.Lease, DeadLetter: cfg.DeadLetter, MaxReceive: 500}), nil
}
