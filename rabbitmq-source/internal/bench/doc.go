// Package bench holds the rabbitmq-source benchmarks (`make bench`): the real connector binary, driven
// over its unix socket by numatest as numa would, against a raw amqp091-go consume loop on the same
// node in the same run, and the connector's peak memory with big messages and a slow numa.
package bench
