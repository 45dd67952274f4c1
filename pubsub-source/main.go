// Command pubsub-source is a Numaflow user-defined source that reads a Google Cloud Pub/Sub
// subscription. It is configured with environment variables only: run it with --help for the list.
package main

import (
	"github.com/numaflow-connectors/sources/common/server"

	"github.com/numaflow-connectors/sources/pubsub-source/internal/pubsubsource"
)

func main() {
	server.Main(server.App[pubsubsource.Config]{
		Name:        "pubsub-source",
		Description: "Numaflow source that reads a Google Cloud Pub/Sub subscription.",
		Open:        pubsubsource.Open,
	})
}
