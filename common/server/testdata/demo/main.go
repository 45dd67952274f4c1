// Command demo is a connector on an in-memory broker, built by the server tests to check Main as a
// process: exit statuses, SIGTERM.
package main

import (
	"context"

	"github.com/numaflow-connectors/sources/common/server"
	"github.com/numaflow-connectors/sources/common/source"
	"github.com/numaflow-connectors/sources/common/source/memsource"
)

type config struct {
	Queue    string `env:"DEMO_QUEUE,required" desc:"Queue name."`
	Messages int    `env:"DEMO_MESSAGES" envDefault:"10" desc:"Messages published at start."`
}

func main() {
	server.Main(server.App[config]{
		Name:        "demo-source",
		Description: "Test connector.",
		Open: func(_ context.Context, cfg *config, _ *server.Env) (source.Driver, error) {
			b := memsource.NewBroker()
			b.CreateQueue(cfg.Queue)
			for i := 0; i < cfg.Messages; i++ {
				if err := b.Publish(cfg.Queue, memsource.Publication{Payload: []byte("m")}); err != nil {
					return nil, err
				}
			}
			return memsource.NewDriver(b, memsource.Options{Queue: cfg.Queue}), nil
		},
	})
}
