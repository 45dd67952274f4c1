package pubsubsource

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	pb "cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	"github.com/numaproj/numaflow-go/pkg/sourcer"

	"github.com/numaflow-connectors/sources/common/numatest"
	"github.com/numaflow-connectors/sources/common/source"
)

// oneMessageBroker is a subscription holding one message, without a dead-letter policy (no
// DeliveryAttempt), shared by several replicas; the test says which replica's pull gets it next.
type oneMessageBroker struct {
	mu         sync.Mutex
	available  bool
	turn       string // the replica whose pull gets the message
	deliveries int
	modacks    []int32 // deadlines set by nacks and releases (not the post-pull lease)
}

func (b *oneMessageBroker) replica(t *testing.T, name string, pub *fakePub) *source.Source {
	t.Helper()
	f := &fakeSub{
		pull: func(ctx context.Context, _ *pb.PullRequest) (*pb.PullResponse, error) {
			until := time.Now().Add(200 * time.Millisecond)
			for time.Now().Before(until) && ctx.Err() == nil {
				b.mu.Lock()
				if b.available && b.turn == name {
					b.available = false
					b.deliveries++
					n := b.deliveries
					b.mu.Unlock()
					return &pb.PullResponse{ReceivedMessages: []*pb.ReceivedMessage{{AckId: fmt.Sprintf("%s-%d", name, n),
						Message: &pb.PubsubMessage{MessageId: "poison", Data: []byte("x")}}}}, nil
				}
				b.mu.Unlock()
				time.Sleep(10 * time.Millisecond)
			}
			return &pb.PullResponse{}, nil
		},
		get: okGet(&pb.Subscription{AckDeadlineSeconds: 30}),
	}
	f.modack = func(_ []string, secs int32) error {
		b.mu.Lock()
		defer b.mu.Unlock()
		b.modacks = append(b.modacks, secs)
		if secs == 0 {
			b.available = true
		}
		return nil
	}
	d := testDriver(t, f, func(c *Config) { c.DeadLetterTopic = "dlq" })
	d.pub = pub
	if err := d.readSettings(context.Background()); err != nil {
		t.Fatal(err)
	}
	return startSource(t, d, source.Options{Prefetch: 10}, nil, nil)
}

func (b *oneMessageBroker) give(name string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.turn = name
}

// readAndNack reads the message on s and nacks it with opts.
func readAndNack(t *testing.T, s *source.Source, stream context.Context, opts *sourcer.NackOptions) {
	t.Helper()
	msgs := numatest.ReadFrom(stream, s, 1, 5*time.Second)
	if len(msgs) != 1 {
		t.Fatalf("read %d messages, want the one", len(msgs))
	}
	s.Nack(stream, numatest.NackRequest(sourcer.NackOffset{Offset: msgs[0].Offset(), NackOptions: opts}))
}

// The figures the README gives for NackOptions: a delay over 600 s is cut to 600 s, and without a
// subscription dead-letter policy MaxDeliveries is counted per replica, so N replicas can deliver a
// failing message N x (MaxDeliveries - 1) + 1 times before it is dead-lettered.
func TestNackOptionsAsDocumented(t *testing.T) {
	stream, cancel := context.WithCancel(context.Background())
	defer cancel()

	t.Run("delay over 600 s", func(t *testing.T) {
		b := &oneMessageBroker{available: true, turn: "a"}
		s := b.replica(t, "a", &fakePub{})
		hour := uint64(time.Hour / time.Millisecond)
		readAndNack(t, s, stream, &sourcer.NackOptions{Delay: &hour})
		waitFor(t, 5*time.Second, "the nack reached the broker", func() bool {
			b.mu.Lock()
			defer b.mu.Unlock()
			return len(b.modacks) > 0
		})
		b.mu.Lock()
		defer b.mu.Unlock()
		if got := b.modacks[len(b.modacks)-1]; got != 600 {
			t.Errorf("nack delay 1 h: ack deadline set to %d s, want 600", got)
		}
	})

	t.Run("MaxDeliveries per replica", func(t *testing.T) {
		const maxDeliveries = 2
		b := &oneMessageBroker{available: true, turn: "a"}
		pub := &fakePub{}
		replicas := map[string]*source.Source{"a": b.replica(t, "a", pub), "b": b.replica(t, "b", pub)}
		limit := uint32(maxDeliveries)
		opts := &sourcer.NackOptions{MaxDeliveries: &limit}
		// The message alternates between the replicas, as Pub/Sub may hand a redelivery to either.
		for _, r := range []string{"a", "b", "a"} {
			b.give(r)
			readAndNack(t, replicas[r], stream, opts)
		}
		waitFor(t, 5*time.Second, "the message dead-lettered", func() bool {
			pub.mu.Lock()
			defer pub.mu.Unlock()
			return len(pub.msgs) == 1
		})
		b.mu.Lock()
		deliveries := b.deliveries
		b.mu.Unlock()
		if want := 2*(maxDeliveries-1) + 1; deliveries != want {
			t.Errorf("2 replicas, MaxDeliveries %d: dead-lettered after %d deliveries, want %d (the README's N x (MaxDeliveries - 1) + 1)",
				maxDeliveries, deliveries, want)
		}
		pub.mu.Lock()
		defer pub.mu.Unlock()
		// Without a dead-letter policy Pub/Sub gives no count: no x-dead-letter-deliveries; the reason
		// carries the count of the replica that gave up, not the total.
		attrs := pub.msgs[0].GetMessages()[0].GetAttributes()
		if got, ok := attrs[AttrDeadLetterDeliveries]; ok {
			t.Errorf("x-dead-letter-deliveries %q without a dead-letter policy, want none", got)
		}
		if want := fmt.Sprintf("after %d deliveries", maxDeliveries); !strings.Contains(attrs[AttrDeadLetterReason], want) {
			t.Errorf("x-dead-letter-reason %q, want it to say %q", attrs[AttrDeadLetterReason], want)
		}
	})
}
