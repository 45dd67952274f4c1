module github.com/numaflow-connectors/sources

go 1.26
