package main

import (
	"context"
	"flag"
	"testing"
	"time"

	"github.com/numaflow-connectors/sources/common/benchkit"
)

var (
	benchMessages = flag.Int("mem.messages", 200_000, "messages per run")
	benchPayload  = flag.Int("mem.payload", 1024, "payload bytes per message")
)

// BenchmarkSocket is the protocol ceiling: the memsource connector (an in-memory broker, no network)
// drained over the real socket by numatest playing numa. What it costs per message is the adapter plus
// the gRPC path every connector pays.
func BenchmarkSocket(b *testing.B) {
	for i := 0; i < b.N; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		r := benchkit.Ceiling(ctx, b, *benchMessages, *benchPayload)
		cancel()
		r.Report(b, "source_")
		b.Logf("memsource over the socket, %d-byte payloads: %s", *benchPayload, r)
	}
}
