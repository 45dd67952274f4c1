package source_test

import (
	"context"
	"testing"
	"time"

	"github.com/numaflow-connectors/sources/common/numatest"
	"github.com/numaflow-connectors/sources/common/source"
	"github.com/numaflow-connectors/sources/common/source/memsource"
)

// BenchmarkAdapterInProcess measures the adapter alone (no gRPC): numa's loop of Read(500) + Ack over
// memsource with 1 KiB payloads. It is the ceiling any connector can reach before the socket.
func BenchmarkAdapterInProcess(b *testing.B) {
	const total = 100_000
	payload := make([]byte, 1024)
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		br := memsource.NewBroker()
		br.CreateQueue("q")
		pubs := make([]memsource.Publication, total)
		for j := range pubs {
			pubs[j] = memsource.Publication{Payload: payload}
		}
		_ = br.Publish("q", pubs...)
		s, err := source.New(memsource.NewDriver(br, memsource.Options{Queue: "q", MaxReceive: 500}), source.Options{}, nil, nil)
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		start := time.Now()
		n := 0
		for n < total {
			offs := numatest.OffsetsOf(numatest.ReadFrom(context.Background(), s, 500, time.Second))
			s.Ack(context.Background(), numatest.AckRequest(offs...))
			n += len(offs)
		}
		b.ReportMetric(float64(total)/time.Since(start).Seconds(), "msg/s")
		b.StopTimer()
		_ = s.Close(context.Background())
	}
}
