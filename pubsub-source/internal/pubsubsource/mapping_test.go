package pubsubsource

import (
	"reflect"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	pb "cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/numaflow-connectors/sources/common/source"
)

func TestToMessage(t *testing.T) {
	pub := time.Date(2026, 11, 23, 10, 0, 0, 123456789, time.UTC)
	tests := []struct {
		name string
		rm   *pb.ReceivedMessage
		want *source.Message
	}{
		{
			name: "all fields",
			rm: &pb.ReceivedMessage{AckId: "ack-1", DeliveryAttempt: 3, Message: &pb.PubsubMessage{
				MessageId: "m-1", Data: []byte("body"), PublishTime: timestamppb.New(pub), OrderingKey: "k",
				Attributes: map[string]string{"a": "1"},
			}},
			want: &source.Message{ID: "m-1", Handle: "ack-1", Payload: []byte("body"), EventTime: pub, Keys: []string{"k"},
				Deliveries: 3, Headers: map[string]string{"a": "1", HeaderMessageID: "m-1", HeaderOrderingKey: "k",
					HeaderDeliveryAttempt: "3", HeaderPublishTime: "2026-11-23T10:00:00.123456789Z"}},
		},
		{
			name: "no ordering key, no dead-letter policy",
			rm: &pb.ReceivedMessage{AckId: "ack-2", Message: &pb.PubsubMessage{
				MessageId: "m-2", Data: []byte{0, 1, 2}, PublishTime: timestamppb.New(pub),
			}},
			want: &source.Message{ID: "m-2", Handle: "ack-2", Payload: []byte{0, 1, 2}, EventTime: pub,
				Headers: map[string]string{HeaderMessageID: "m-2", HeaderPublishTime: "2026-11-23T10:00:00.123456789Z"}},
		},
		{
			name: "no publish time: left zero for the adapter to fill",
			rm:   &pb.ReceivedMessage{AckId: "ack-3", Message: &pb.PubsubMessage{MessageId: "m-3"}},
			want: &source.Message{ID: "m-3", Handle: "ack-3", Headers: map[string]string{HeaderMessageID: "m-3"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := toMessage(tt.rm)
			if !got.EventTime.Equal(tt.want.EventTime) {
				t.Errorf("event time %v, want %v", got.EventTime, tt.want.EventTime)
			}
			got.EventTime, tt.want.EventTime = time.Time{}, time.Time{}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got  %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestDeadLetterMessage(t *testing.T) {
	pub := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	msg := toMessage(&pb.ReceivedMessage{AckId: "a", DeliveryAttempt: 5, Message: &pb.PubsubMessage{
		MessageId: "m-9", Data: []byte("poison"), PublishTime: timestamppb.New(pub), OrderingKey: "k1",
		Attributes: map[string]string{"tenant": "t1"},
	}})
	long := strings.Repeat("é", 600) // 1200 bytes
	req, fit, err := deadLetterRequest(msg, "projects/p/topics/dl", "projects/p/subscriptions/s", long)
	if err != nil || len(req.GetMessages()) != 1 || req.GetTopic() != "projects/p/topics/dl" {
		t.Fatalf("request %v, error %v", req, err)
	}
	if len(fit.folded)+len(fit.dropped)+len(fit.shed) > 0 {
		t.Errorf("a message well inside the limits was fitted: %+v", fit)
	}
	got := req.GetMessages()[0]
	if string(got.GetData()) != "poison" {
		t.Errorf("data %q", got.GetData())
	}
	want := map[string]string{
		"tenant": "t1", AttrDeadLetterSubscription: "projects/p/subscriptions/s", AttrDeadLetterMessageID: "m-9",
		AttrDeadLetterDeliveries: "5", AttrDeadLetterOrderingKey: "k1", AttrDeadLetterPublishTime: "2026-11-23T10:00:00Z",
	}
	reason := got.GetAttributes()[AttrDeadLetterReason]
	if len(reason) > maxAttrValue || !utf8.ValidString(reason) || !strings.HasPrefix(long, reason) || len(reason) < maxAttrValue-1 {
		t.Errorf("reason cut to %d bytes (valid UTF-8 %v), want at most %d without splitting a rune", len(reason), utf8.ValidString(reason), maxAttrValue)
	}
	delete(got.Attributes, AttrDeadLetterReason)
	if !reflect.DeepEqual(got.GetAttributes(), want) {
		t.Errorf("attributes %v, want %v (x-pubsub-* headers must not be copied)", got.GetAttributes(), want)
	}
	if got.GetOrderingKey() != "" {
		t.Errorf("dead letters are published without an ordering key (the topic may not allow one), got %q", got.GetOrderingKey())
	}
}
