// Command redis-streams-source is a Numaflow user-defined source reading Redis Streams with a consumer
// group (standalone, cluster or sentinel, with TLS).
package main

import (
	"github.com/numaflow-connectors/sources/common/server"
	"github.com/numaflow-connectors/sources/redis-streams-source/internal/redisstreams"
)

func main() {
	server.Main(server.App[redisstreams.Config]{
		Name:        "redis-streams-source",
		Description: "Numaflow source for Redis Streams consumer groups (standalone, cluster, sentinel; TLS).",
		Open:        redisstreams.Open,
	})
}
