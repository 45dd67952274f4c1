package pubsubsource

import (
	"context"
	"log/slog"
	"testing"
	"time"

	vkit "cloud.google.com/go/pubsub/v2/apiv1"
	pb "cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	"cloud.google.com/go/pubsub/v2/pstest"
	"google.golang.org/api/option"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/numaflow-connectors/sources/common/source"
)

// The driver over real gRPC to an in-process pstest server: the unary data plane end to end, fast.
func TestDriverOnPstest(t *testing.T) {
	srv := pstest.NewServerWithAddress("127.0.0.1:0")
	t.Cleanup(func() { _ = srv.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	opts := []option.ClientOption{option.WithEndpoint(srv.Addr), option.WithoutAuthentication(),
		option.WithGRPCDialOption(grpc.WithTransportCredentials(insecure.NewCredentials()))}
	sc, err := vkit.NewSubscriptionAdminClient(ctx, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sc.Close() })
	tc, err := vkit.NewTopicAdminClient(ctx, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tc.Close() })

	topic, sub := "projects/test-project/topics/t1", "projects/test-project/subscriptions/orders"
	if _, err := tc.CreateTopic(ctx, &pb.Topic{Name: topic}); err != nil {
		t.Fatal(err)
	}
	if _, err := sc.CreateSubscription(ctx, &pb.Subscription{Name: sub, Topic: topic, AckDeadlineSeconds: 10,
		EnableMessageOrdering: true, EnableExactlyOnceDelivery: true}); err != nil {
		t.Fatal(err)
	}
	id := srv.PublishOrdered(topic, []byte("hello"), map[string]string{"a": "1"}, "key-1")

	c := validConfig()
	c.Project, c.Subscription = "test-project", "orders"
	d := newDriver(&c, apis{sub: sc}, slog.New(slog.DiscardHandler))
	s, err := sc.GetSubscription(ctx, &pb.GetSubscriptionRequest{Subscription: sub})
	if err != nil {
		t.Fatal(err)
	}
	d.applySettings(s)
	if !d.Capabilities().OrderedKeys {
		t.Errorf("ordered subscription without OrderedKeys")
	}
	msgs, err := d.Receive(ctx, 10)
	if err != nil || len(msgs) != 1 {
		t.Fatalf("receive: %d, %v", len(msgs), err)
	}
	m := msgs[0]
	if m.ID != id || string(m.Payload) != "hello" || len(m.Keys) != 1 || m.Keys[0] != "key-1" ||
		m.Headers["a"] != "1" || m.Headers[HeaderOrderingKey] != "key-1" || m.EventTime.IsZero() {
		t.Errorf("message %+v", m)
	}
	if got := srv.Message(id).Modacks; len(got) == 0 || got[len(got)-1].AckDeadline != 30 {
		t.Errorf("modacks %+v, want the pulled message set to PUBSUB_ACK_DEADLINE (30 s)", got)
	}
	// Nack at once: redelivered with the same ID.
	if err := d.Nack(ctx, []source.Handle{m.Handle}, 0); err != nil {
		t.Fatal(err)
	}
	again, err := d.Receive(ctx, 10)
	if err != nil || len(again) != 1 || again[0].ID != id {
		t.Fatalf("after a nack: %v, %v", again, err)
	}
	if err := d.Extend(ctx, []source.Handle{again[0].Handle}, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := d.Ack(ctx, []source.Handle{again[0].Handle}); err != nil {
		t.Fatal(err)
	}
	if srv.Message(id).Acks != 1 {
		t.Errorf("acks %d, want 1", srv.Message(id).Acks)
	}
	// A double ack is harmless.
	if err := d.Ack(ctx, []source.Handle{again[0].Handle}); err != nil {
		t.Errorf("double ack: %v", err)
	}
}
