// Package bench holds the redis-streams-source throughput benchmark (`make bench`): the real
// connector binary, driven over its unix socket by numatest as numa would, against a raw go-redis
// loop on the same server in the same run.
package bench
