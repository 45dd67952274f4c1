package drivertest

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/numaproj/numaflow-go/pkg/sourcer"

	"github.com/numaflow-connectors/sources/common/numatest"
	"github.com/numaflow-connectors/sources/common/server"
	"github.com/numaflow-connectors/sources/common/source"
)

// ---- the two ways numa reaches a source ----

type inProcess struct{ src *source.Source }

func (p inProcess) read(ctx context.Context, n int, timeout time.Duration) ([]numatest.Message, error) {
	msgs := numatest.ReadFrom(ctx, p.src, n, timeout)
	out := make([]numatest.Message, len(msgs))
	for i, m := range msgs {
		out[i] = numatest.Message{
			Payload: m.Value(), EventTime: m.EventTime(), Keys: m.Keys(), Headers: m.Headers(),
			Offset: numatest.Offset{Value: m.Offset().Value(), Partition: m.Offset().PartitionId()},
		}
	}
	return out, nil
}

func (p inProcess) ack(ctx context.Context, offsets []numatest.Offset) error {
	req := make([]sourcer.Offset, len(offsets))
	for i, o := range offsets {
		req[i] = sourcer.NewOffset(o.Value, o.Partition)
	}
	p.src.Ack(ctx, numatest.AckRequest(req...))
	return nil
}

func (p inProcess) nack(ctx context.Context, items []numatest.NackItem) error {
	req := make([]sourcer.NackOffset, len(items))
	for i, it := range items {
		req[i] = sourcer.NackOffset{Offset: sourcer.NewOffset(it.Offset.Value, it.Offset.Partition)}
		if o := it.Options; o != nil {
			req[i].NackOptions = &sourcer.NackOptions{Delay: o.Delay, MaxDeliveries: o.MaxDeliveries, Reason: o.Reason}
		}
	}
	p.src.Nack(ctx, numatest.NackRequest(req...))
	return nil
}

func (p inProcess) pending(ctx context.Context) (int64, error) { return p.src.Pending(ctx), nil }

func (p inProcess) partitions(ctx context.Context) ([]int32, error) {
	return p.src.ActivePartitions(ctx), nil
}

type overSocket struct{ c *numatest.Client }

func (o overSocket) read(ctx context.Context, n int, timeout time.Duration) ([]numatest.Message, error) {
	return o.c.Read(ctx, uint64(n), timeout)
}
func (o overSocket) ack(ctx context.Context, offsets []numatest.Offset) error {
	return o.c.Ack(ctx, offsets)
}
func (o overSocket) nack(ctx context.Context, items []numatest.NackItem) error {
	return o.c.Nack(ctx, items)
}
func (o overSocket) pending(ctx context.Context) (int64, error) { return o.c.Pending(ctx) }
func (o overSocket) partitions(ctx context.Context) ([]int32, error) {
	p, _, err := o.c.Partitions(ctx)
	return p, err
}

// serve runs the connectors' real gRPC server (server.ServeSource) for src on a fresh unix socket and dials it with numatest.
func serve(t *testing.T, src *source.Source) (numaClient, func()) {
	t.Helper()
	dir, err := os.MkdirTemp("", "dt") // short: unix socket paths are limited to 108 bytes
	if err != nil {
		t.Fatalf("creating socket dir: %v", err)
	}
	sock, infoFile := filepath.Join(dir, "source.sock"), filepath.Join(dir, "server-info")
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() {
		served <- server.ServeSource(ctx, src, server.Listen{Socket: sock, ServerInfoFile: infoFile})
	}()
	dctx, dcancel := context.WithTimeout(ctx, 20*time.Second)
	defer dcancel()
	c, err := numatest.Dial(dctx, numatest.Options{Socket: sock, ServerInfoFile: infoFile})
	if err != nil {
		cancel()
		t.Fatalf("dialing the source socket: %v", err)
	}
	if !c.NackSupported() {
		// Test binaries carry no dependency versions in their build info, so numaflow-go reports
		// none; numa would then send no nacks. Release binaries are checked by the server's tests.
		t.Logf("server info version %q: numa would not send nacks to this binary", c.ServerInfo().Version)
	}
	stop := func() {
		_ = c.Close()
		cancel()
		select {
		case err := <-served:
			if err != nil && !errors.Is(err, context.Canceled) {
				t.Errorf("source server: %v", err)
			}
		case <-time.After(20 * time.Second):
			t.Errorf("source server did not stop within 20 s")
		}
		_ = os.RemoveAll(dir)
	}
	return overSocket{c}, stop
}
