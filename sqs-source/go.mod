module github.com/numaflow-connectors/sources/sqs-source

go 1.26
