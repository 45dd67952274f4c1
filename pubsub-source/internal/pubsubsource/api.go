package pubsubsource

import (
	"context"

	"cloud.google.com/go/iam/apiv1/iampb"
	vkit "cloud.google.com/go/pubsub/v2/apiv1"
	pb "cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	"github.com/googleapis/gax-go/v2"
)

// subscriberAPI is the part of the generated subscription client the driver uses: the unary data
// plane (Pull, Acknowledge, ModifyAckDeadline) and GetSubscription for the subscription's settings.
// Fakes embed it and override what a test needs.
type subscriberAPI interface {
	Pull(ctx context.Context, req *pb.PullRequest, opts ...gax.CallOption) (*pb.PullResponse, error)
	Acknowledge(ctx context.Context, req *pb.AcknowledgeRequest, opts ...gax.CallOption) error
	ModifyAckDeadline(ctx context.Context, req *pb.ModifyAckDeadlineRequest, opts ...gax.CallOption) error
	GetSubscription(ctx context.Context, req *pb.GetSubscriptionRequest, opts ...gax.CallOption) (*pb.Subscription, error)
}

// publisherAPI is the part of the generated topic client the driver uses to dead-letter: one unary
// Publish per message, so the driver knows the message is stored before it acks the original.
type publisherAPI interface {
	Publish(ctx context.Context, req *pb.PublishRequest, opts ...gax.CallOption) (*pb.PublishResponse, error)
}

// iamAPI asks which of some permissions the caller holds on a subscription or topic; only the
// pre-flight checks call it (preflight.go). It grants nothing and changes nothing.
type iamAPI interface {
	TestIamPermissions(ctx context.Context, req *iampb.TestIamPermissionsRequest, opts ...gax.CallOption) (*iampb.TestIamPermissionsResponse, error)
}

// topicIAMAPI is iamAPI on the dead-letter topic, plus GetTopic: an emulator has no IAM, so there the
// pre-flight checks read the topic to tell whether it exists.
type topicIAMAPI interface {
	iamAPI
	GetTopic(ctx context.Context, req *pb.GetTopicRequest, opts ...gax.CallOption) (*pb.Topic, error)
}

var (
	_ subscriberAPI = (*vkit.SubscriptionAdminClient)(nil)
	_ publisherAPI  = (*vkit.TopicAdminClient)(nil)
	_ iamAPI        = (*vkit.SubscriptionAdminClient)(nil)
	_ topicIAMAPI   = (*vkit.TopicAdminClient)(nil)
)

// noRetry turns off the generated client's own retries: the adapter retries with backoff and decides
// what is transient (the Driver contract).
var noRetry = gax.WithRetry(func() gax.Retryer { return nil })
