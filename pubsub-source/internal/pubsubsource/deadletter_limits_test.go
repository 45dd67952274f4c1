package pubsubsource

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	pb "cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	"github.com/googleapis/gax-go/v2"
	"github.com/numaproj/numaflow-go/pkg/sourcer"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/numaflow-connectors/sources/common/source"
)

// limitsError is what Pub/Sub answers a publish over its limits with (InvalidArgument, not retried),
// or nil when req is within them. The emulators do not check them.
func limitsError(req *pb.PublishRequest) error {
	if n := proto.Size(req); n > maxPublishRequest {
		return status.Errorf(codes.InvalidArgument, "Request payload size exceeds the limit: %d bytes.", int(maxPublishRequest))
	}
	for _, m := range req.GetMessages() {
		if n := len(m.GetAttributes()); n > maxAttrs {
			return status.Errorf(codes.InvalidArgument, "The message has %d attributes; the maximum is %d.", n, maxAttrs)
		}
		for k, v := range m.GetAttributes() {
			if len(k) > maxAttrKey || len(v) > maxAttrValue {
				return status.Errorf(codes.InvalidArgument, "An attribute key or value is too long: %q.", truncate(k, 40))
			}
		}
	}
	return nil
}

// strictPub is a publisherAPI that refuses what the service refuses (limitsError) and records what it
// stored.
type strictPub struct {
	//lint:ignore U1000 embedded so the fake satisfies publisherAPI
	publisherAPI
	mu      sync.Mutex
	stored  []*pb.PublishRequest
	refused int
}

func (p *strictPub) Publish(_ context.Context, req *pb.PublishRequest, _ ...gax.CallOption) (*pb.PublishResponse, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := limitsError(req); err != nil {
		p.refused++
		return nil, err
	}
	p.stored = append(p.stored, req)
	return &pb.PublishResponse{MessageIds: []string{"dl-1"}}, nil
}

func (p *strictPub) counts() (stored, refused int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.stored), p.refused
}

// manyAttrs returns n attributes attr-000 ... with values of size bytes.
func manyAttrs(n, size int) map[string]string {
	out := make(map[string]string, n)
	for i := range n {
		out[fmt.Sprintf("attr-%03d", i)] = strings.Repeat("v", size)
	}
	return out
}

// accounted checks that every original attribute of the dead letter is in it, as an attribute or in
// AttrDeadLetterAttributes with its value, or reported dropped; and that what fit reports is so.
func accounted(t *testing.T, orig map[string]string, dl *pb.PubsubMessage, fit dlFit) {
	t.Helper()
	folded := map[string]string{}
	if f, ok := dl.GetAttributes()[AttrDeadLetterAttributes]; ok {
		if err := json.Unmarshal([]byte(f), &folded); err != nil {
			t.Fatalf("%s is not a JSON object of strings: %v", AttrDeadLetterAttributes, err)
		}
	}
	dropped := map[string]bool{}
	for _, k := range fit.dropped {
		dropped[k] = true
	}
	for k, v := range orig {
		got, direct := dl.GetAttributes()[k]
		inFold, isFolded := folded[k]
		switch {
		case dropped[k]:
			if isFolded || (direct && !strings.HasPrefix(k, "x-dead-letter-")) {
				t.Errorf("attribute %s reported dropped, yet in the dead letter", k)
			}
		case isFolded:
			if inFold != v {
				t.Errorf("folded attribute %s = %q, want %q", k, inFold, v)
			}
		case direct && got == v && !strings.HasPrefix(k, "x-dead-letter-"):
		default:
			t.Errorf("original attribute %s is neither in the dead letter nor reported dropped", k)
		}
	}
	if len(folded) != len(fit.folded) {
		t.Errorf("%d attributes folded, %d reported folded", len(folded), len(fit.folded))
	}
}

// A dead letter must fit Pub/Sub's limits whatever the message carried, or the service refuses it for
// good (InvalidArgument) and the message is nacked back forever.
func TestDeadLetterRequestWithinPubSubLimits(t *testing.T) {
	pub := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	ours := []string{AttrDeadLetterReason, AttrDeadLetterSubscription, AttrDeadLetterMessageID, AttrDeadLetterDeliveries,
		AttrDeadLetterOrderingKey, AttrDeadLetterPublishTime}
	tests := []struct {
		name       string
		attrs      map[string]string
		data       int
		wantFolded int
		wantDrop   int
		wantShed   []string // x-dead-letter-* attributes left out or cut
	}{
		{name: "100 attributes: the x-dead-letter-* six first, 93 as attributes, 7 folded into one",
			attrs: manyAttrs(100, 1), wantFolded: 7},
		{name: "94 attributes fit beside the six", attrs: manyAttrs(94, 1)},
		{name: "95 attributes: 93 and 2 folded", attrs: manyAttrs(95, 1), wantFolded: 2},
		{name: "100 attributes too long to fold: 94 kept, 6 dropped", attrs: manyAttrs(100, 1020), wantDrop: 6},
		{name: "an attribute named like ours is folded, not overwritten",
			attrs: map[string]string{AttrDeadLetterReason: "an earlier dead letter", "tenant": "t1"}, wantFolded: 1},
		{name: "data at the request limit: originals left out, then ours by importance",
			attrs: manyAttrs(10, 10), data: maxPublishRequest - 200, wantDrop: 10,
			wantShed: []string{AttrDeadLetterPublishTime, AttrDeadLetterOrderingKey, AttrDeadLetterDeliveries, AttrDeadLetterSubscription, AttrDeadLetterReason}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			msg := toMessage(&pb.ReceivedMessage{AckId: "a", DeliveryAttempt: 5, Message: &pb.PubsubMessage{
				MessageId: "m-1", Data: make([]byte, tt.data), OrderingKey: "k1", PublishTime: timestamppb.New(pub),
				Attributes: tt.attrs,
			}})
			reason := strings.Repeat("r", 3000)
			req, fit, err := deadLetterRequest(msg, "projects/p/topics/dead-letters", "projects/p/subscriptions/s", reason)
			if err != nil {
				t.Fatal(err)
			}
			if err := limitsError(req); err != nil {
				t.Fatalf("Pub/Sub would refuse the dead letter: %v (%d attributes, %d bytes)", err,
					len(req.GetMessages()[0].GetAttributes()), proto.Size(req))
			}
			dl := req.GetMessages()[0]
			if len(dl.GetData()) != tt.data {
				t.Errorf("data of %d bytes, want the message's %d", len(dl.GetData()), tt.data)
			}
			shed := map[string]bool{}
			for _, k := range fit.shed {
				shed[k] = true
			}
			for _, k := range ours {
				if _, ok := dl.GetAttributes()[k]; !ok && !shed[k] {
					t.Errorf("%s missing and not reported cut", k)
				}
			}
			if dl.GetAttributes()[AttrDeadLetterMessageID] != "m-1" {
				t.Errorf("%s = %q: the message ID is the last thing to go", AttrDeadLetterMessageID, dl.GetAttributes()[AttrDeadLetterMessageID])
			}
			if r := dl.GetAttributes()[AttrDeadLetterReason]; !shed[AttrDeadLetterReason] && len(r) != maxAttrValue {
				t.Errorf("reason of %d bytes, want it cut to %d", len(r), maxAttrValue)
			}
			if len(fit.folded) != tt.wantFolded || len(fit.dropped) != tt.wantDrop || !equalSet(fit.shed, tt.wantShed) {
				t.Errorf("folded %d, dropped %d, cut %v; want %d, %d, %v", len(fit.folded), len(fit.dropped), fit.shed,
					tt.wantFolded, tt.wantDrop, tt.wantShed)
			}
			accounted(t, tt.attrs, dl, fit)
		})
	}
}

func equalSet(a, b []string) bool {
	m := map[string]bool{}
	for _, k := range a {
		m[k] = true
	}
	n := map[string]bool{}
	for _, k := range b {
		n[k] = true
	}
	return maps.Equal(m, n)
}

// A message whose data alone is over a publish request cannot be dead-lettered to a topic: the
// adapter's no-dead-letter error, so DEAD_LETTER_FALLBACK applies.
func TestDeadLetterRequestDataOverLimit(t *testing.T) {
	msg := &source.Message{ID: "m-big", Payload: make([]byte, maxPublishRequest-10)}
	req, _, err := deadLetterRequest(msg, "projects/p/topics/dead-letters", "projects/p/subscriptions/s", "r")
	if !errors.Is(err, source.ErrNoDeadLetter) || req != nil {
		t.Fatalf("got %v, %v; want no request and source.ErrNoDeadLetter", req, err)
	}
}

// syncBuffer is a log sink safe for the adapter's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Through the adapter: numa nacks a message with 100 attributes over its MaxDeliveries; the dead letter
// is published (to a publisher that refuses what Pub/Sub refuses) and the original acked.
func TestDeadLetterOfManyAttributesThroughAdapter(t *testing.T) {
	var given atomic.Bool
	f := &fakeSub{
		pull: func(ctx context.Context, _ *pb.PullRequest) (*pb.PullResponse, error) {
			if given.CompareAndSwap(false, true) {
				return &pb.PullResponse{ReceivedMessages: []*pb.ReceivedMessage{{AckId: "ack-poison",
					Message: &pb.PubsubMessage{MessageId: "poison", Data: []byte("x"), Attributes: manyAttrs(100, 8)}}}}, nil
			}
			select {
			case <-ctx.Done():
			case <-time.After(50 * time.Millisecond):
			}
			return &pb.PullResponse{}, nil
		},
		get: okGet(&pb.Subscription{Name: testSub, AckDeadlineSeconds: 30}),
	}
	logs := &syncBuffer{}
	d := testDriver(t, f, func(c *Config) { c.DeadLetterTopic = "dlq" })
	d.log = slog.New(slog.NewJSONHandler(logs, nil))
	pub := &strictPub{}
	d.pub = pub
	if err := d.readSettings(context.Background()); err != nil {
		t.Fatal(err)
	}
	s := startSource(t, d, source.Options{Prefetch: 10}, nil, nil)
	stream, cancel := context.WithCancel(context.Background())
	defer cancel()
	one := uint32(1)
	readAndNack(t, s, stream, &sourcer.NackOptions{MaxDeliveries: &one})
	waitFor(t, 5*time.Second, "the message dead-lettered and the original acked", func() bool {
		stored, _ := pub.counts()
		acks, _ := f.calls()
		return stored == 1 && len(acks) > 0
	})
	if _, refused := pub.counts(); refused > 0 {
		t.Errorf("Pub/Sub refused %d dead letters", refused)
	}
	if acks, _ := f.calls(); len(acks) != 1 || len(acks[0]) != 1 || acks[0][0] != "ack-poison" {
		t.Errorf("acks %v, want ack-poison once", acks)
	}
	if !strings.Contains(logs.String(), `"folded_attributes":["attr-09`) {
		t.Errorf("no log line naming the folded attributes: %s", logs.String())
	}
}

// The driver path of a message too large to dead-letter: the adapter's no-dead-letter error, nothing
// published or acked, and a log line saying why.
func TestDeadLetterDataOverLimit(t *testing.T) {
	f := &fakeSub{}
	logs := &syncBuffer{}
	d := testDriver(t, f, func(c *Config) { c.DeadLetterTopic = "dlq" })
	d.log = slog.New(slog.NewJSONHandler(logs, nil))
	pub := &strictPub{}
	d.pub = pub
	msg := &source.Message{ID: "m-big", Handle: "ack-big", Payload: make([]byte, maxPublishRequest)}
	err := d.DeadLetter(context.Background(), msg, "message over MAX_MESSAGE_BYTES")
	if !errors.Is(err, source.ErrNoDeadLetter) {
		t.Fatalf("got %v, want source.ErrNoDeadLetter (DEAD_LETTER_FALLBACK applies)", err)
	}
	if stored, refused := pub.counts(); stored+refused > 0 {
		t.Errorf("published %d (refused %d), want no publish", stored, refused)
	}
	if acks, _ := f.calls(); len(acks) > 0 {
		t.Errorf("acked %v", acks)
	}
	if l := logs.String(); !strings.Contains(l, "cannot be dead-lettered") || !strings.Contains(l, `"id":"m-big"`) {
		t.Errorf("no log line saying why: %s", l)
	}
}
