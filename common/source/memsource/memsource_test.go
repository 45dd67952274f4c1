package memsource_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/numaflow-connectors/sources/common/source"
	"github.com/numaflow-connectors/sources/common/source/drivertest"
	"github.com/numaflow-connectors/sources/common/source/memsource"
)

var queues atomic.Int64

type harness struct {
	b     *memsource.Broker
	queue string
}

func newHarness(_ context.Context, _ *testing.T) (drivertest.Harness, error) {
	h := &harness{b: memsource.NewBroker(), queue: fmt.Sprintf("q%d", queues.Add(1))}
	h.b.CreateQueue(h.queue)
	return h, nil
}

func (h *harness) opts(queue string) memsource.Options {
	return memsource.Options{Queue: queue, Lease: time.Second, DeadLetter: true, Wait: time.Second}
}

func (h *harness) MakeDriver(context.Context) (source.Driver, error) {
	return memsource.NewDriver(h.b, h.opts(h.queue)), nil
}

func (h *harness) MakeMissingDriver(context.Context) (source.Driver, error) {
	return memsource.NewDriver(h.b, h.opts("missing-"+h.queue)), nil
}

func (h *harness) Publish(_ context.Context, msgs []drivertest.Publication) error {
	pubs := make([]memsource.Publication, len(msgs))
	for i, m := range msgs {
		pubs[i] = memsource.Publication{Payload: m.Payload, Key: m.Key, Headers: m.Headers}
	}
	return h.b.Publish(h.queue, pubs...)
}

func (h *harness) DeadLettered(context.Context) ([]drivertest.DeadLetter, error) {
	var out []drivertest.DeadLetter
	for _, d := range h.b.DeadLetters(h.queue) {
		out = append(out, drivertest.DeadLetter{Payload: d.Payload, Reason: d.Reason})
	}
	return out, nil
}

func (h *harness) Capabilities() drivertest.Capabilities {
	return drivertest.Capabilities{Keys: true, Headers: true, DeadLetter: true, Redelivery: 3 * time.Second,
		Binary: true, Backlog: true}
}

func (h *harness) Close() { h.b.DeleteQueue(h.queue) }

func TestConformance(t *testing.T) { drivertest.Run(t, newHarness) }
