package mqttsource

import (
	"context"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"
)

// The pinger sends PINGREQs, does not count the time the driver stops reading as silence, and
// reports a dead connection after twice the keep-alive interval of silence while reading.
func TestPingerIgnoresDeliberateStalls(t *testing.T) {
	t.Parallel()
	d, _ := newFakeDriver(t, nil)
	client, server := net.Pipe()
	defer client.Close()
	defer server.Close()
	var pings atomic.Int32
	go func() {
		buf := make([]byte, 2)
		for {
			if _, err := io.ReadFull(server, buf); err != nil {
				return
			}
			if buf[0] == 0xC0 && buf[1] == 0 { // PINGREQ
				pings.Add(1)
			}
		}
	}()
	d.mu.Lock()
	d.gated = true // the reader waits for room: no PINGRESP can be read
	d.mu.Unlock()
	p := &pinger{d: d}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx, client, 1) }()
	select {
	case err := <-done:
		t.Fatalf("the pinger gave up while the driver deliberately stopped reading: %v", err)
	case <-time.After(3500 * time.Millisecond):
	}
	if pings.Load() < 2 {
		t.Fatalf("%d PINGREQs in 3.5s with a 1s keep-alive", pings.Load())
	}
	d.mu.Lock()
	d.gated, d.gateOpened = false, time.Now()
	d.mu.Unlock()
	start := time.Now()
	select {
	case err := <-done:
		if took := time.Since(start); took < 1500*time.Millisecond || err == nil {
			t.Fatalf("gave up after %s with %v; want an error after about 2s of silence while reading", took, err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a silent connection was never declared dead")
	}
}
