module github.com/numaflow-connectors/sources/pubsub-source

go 1.26
