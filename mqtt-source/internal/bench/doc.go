// Package bench holds the mqtt-source benchmarks (`make bench`): the real connector binary, driven over
// its unix socket by numatest as numa would, against a raw paho manual-ack loop on the same mosquitto in
// the same run; and the connector's peak memory while a backpressured numa drains 1 MiB messages.
package bench
