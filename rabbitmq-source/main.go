// Command rabbitmq-source is a Numaflow user-defined source consuming a RabbitMQ classic or quorum
// queue with manual acks.
package main

import (
	"github.com/numaflow-connectors/sources/common/server"
	"github.com/numaflow-connectors/sources/rabbitmq-source/internal/rabbitmq"
)

func main() {
	server.Main(server.App[rabbitmq.Config]{
		Name:        "rabbitmq-source",
		Description: "Numaflow source for RabbitMQ classic and quorum queues (AMQP 0-9-1, manual acks; TLS).",
		Open:        rabbitmq.Open,
	})
}
