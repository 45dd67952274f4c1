package demo

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/numaflow-connectors/sources/common/server"
	"github.com/numaflow-connectors/sources/common/source"
)

// The feeder publishes every message once, in order, while keeping at most its window in the
// queue, and Backlog counts what it has not published yet.
func TestFeederPublishesAsMessagesAreConsumed(t *testing.T) {
	for _, tc := range []struct {
		name            string
		messages, bytes int
		window          int
	}{
		{name: "small messages", messages: 20_000, bytes: 1024, window: feedBytes / 1024},
		{name: "big messages", messages: 40, bytes: 4 << 20, window: minFeed},
		{name: "none", messages: 0, bytes: 64, window: feedBytes / 64},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			cfg := &Config{Messages: tc.messages, PayloadBytes: tc.bytes, Lease: 30 * time.Second}
			d, err := Open(ctx, cfg, &server.Env{Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
			if err != nil {
				t.Fatal(err)
			}
			f := d.(*feeder)
			if got := f.b.Len("demo"); got != min(tc.window, tc.messages) {
				t.Fatalf("queue holds %d after Open, want %d", got, min(tc.window, tc.messages))
			}
			if n, err := d.Backlog(ctx); err != nil || n != int64(tc.messages) {
				t.Fatalf("Backlog = %d, %v; want %d", n, err, tc.messages)
			}
			seen := 0
			for seen < tc.messages {
				msgs, err := d.Receive(ctx, 500)
				if err != nil || len(msgs) == 0 {
					t.Fatalf("Receive after %d messages: %d, %v", seen, len(msgs), err)
				}
				handles := make([]source.Handle, len(msgs))
				for i, m := range msgs {
					want := fmt.Sprintf("message %d ", seen%tc.window)
					if len(m.Payload) != tc.bytes || !strings.HasPrefix(string(m.Payload), want) ||
						strings.Trim(string(m.Payload[len(want):]), ".") != "" {
						t.Fatalf("message %d: payload %.40q (%d bytes)", seen, m.Payload, len(m.Payload))
					}
					if m.Headers["x-mem-id"] != m.ID || m.Keys[0] != fmt.Sprintf("k%d", seen%8) {
						t.Fatalf("message %d: id %s, headers %v, keys %v", seen, m.ID, m.Headers, m.Keys)
					}
					handles[i] = m.Handle
					seen++
				}
				if got := f.b.Len("demo"); got > tc.window {
					t.Fatalf("queue holds %d, over the window of %d", got, tc.window)
				}
				if err := d.Ack(ctx, handles); err != nil {
					t.Fatal(err)
				}
				if n, err := d.Backlog(ctx); err != nil || n != int64(tc.messages-seen) {
					t.Fatalf("Backlog after %d acked = %d, %v; want %d", seen, n, err, tc.messages-seen)
				}
			}
		})
	}
}
