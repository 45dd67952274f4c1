module github.com/numaflow-connectors/sources/redis-streams-source

go 1.26
