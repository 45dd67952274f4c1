// Command sqs-source is a Numaflow user-defined source reading an AWS SQS queue (standard or FIFO).
package main

import (
	"github.com/numaflow-connectors/sources/common/server"
	"github.com/numaflow-connectors/sources/sqs-source/internal/sqssource"
)

func main() {
	server.Main(server.App[sqssource.Config]{
		Name:        "sqs-source",
		Description: "Numaflow source for AWS SQS standard and FIFO queues.",
		Open:        sqssource.Open,
	})
}
