package pubsubsource

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	monitoring "cloud.google.com/go/monitoring/apiv3/v2"
	"cloud.google.com/go/pubsub/v2"
	pb "cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	"google.golang.org/api/option"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"

	"github.com/numaflow-connectors/sources/common/server"
	"github.com/numaflow-connectors/sources/common/source"
)

// apis are the clients a driver calls; pub and backlog may be nil.
type apis struct {
	sub     subscriberAPI
	pub     publisherAPI
	backlog backlogReader
}

// Open builds the Pub/Sub clients (Application Default Credentials, or PUBSUB_EMULATOR_HOST as the
// client library defines it) and reads the subscription's settings. It does not fail when the service
// is unreachable or the subscription is missing: Check and Receive report that.
func Open(ctx context.Context, cfg *Config, env *server.Env) (source.Driver, error) {
	log := slog.New(slog.DiscardHandler)
	if env != nil && env.Log != nil {
		log = env.Log
	}
	// gRPC's default reconnect backoff grows to 120 s; after an outage the source must be back within
	// seconds, so reconnect attempts are capped at 2 s apart (a few cheap dials, no hot spin).
	reconnect := option.WithGRPCDialOption(grpc.WithConnectParams(grpc.ConnectParams{
		Backoff:           backoff.Config{BaseDelay: 250 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 2 * time.Second},
		MinConnectTimeout: 5 * time.Second,
	}))
	c, err := pubsub.NewClient(ctx, cfg.projectID(), reconnect)
	if err != nil {
		return nil, fmt.Errorf("creating Pub/Sub client for project %s: %w", cfg.projectID(), err)
	}
	a := apis{sub: c.SubscriptionAdminClient}
	closers := []func() error{c.Close}
	if cfg.DeadLetterTopic != "" {
		a.pub = c.TopicAdminClient
	}
	if cfg.Pending == PendingMonitoring {
		mc, err := monitoring.NewMetricClient(ctx)
		if err != nil {
			_ = c.Close()
			return nil, fmt.Errorf("creating Cloud Monitoring client: %w", err)
		}
		a.backlog = newMonitoringReader(mc, cfg.projectID(), cfg.subscriptionID())
		closers = append(closers, mc.Close)
	}
	d := newDriver(cfg, a, log)
	d.closers = closers
	sctx, cancel := context.WithTimeout(ctx, settingsTimeout)
	defer cancel()
	s, err := d.sub.GetSubscription(sctx, &pb.GetSubscriptionRequest{Subscription: d.name}, noRetry)
	if err != nil {
		log.Info("subscription settings unknown; assuming message ordering and pulling one batch at a time",
			"subscription", d.name, "error", err)
	} else {
		d.applySettings(s)
	}
	return d, nil
}

// newDriver wires a driver over the given clients; it makes no call.
func newDriver(cfg *Config, a apis, log *slog.Logger) *driver {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &driver{
		sub: a.sub, pub: a.pub, backlog: a.backlog, log: log,
		name:      cfg.subscriptionName(),
		dlTopic:   cfg.deadLetterTopicName(),
		lease:     cfg.AckDeadline,
		maxExtend: cfg.MaxExtension,
		pullWait:  pullWait,
		published: make(map[string]bool),
	}
}

// applySettings takes what the driver needs from the subscription's settings.
func (d *driver) applySettings(s *pb.Subscription) {
	d.settingsKnown = true
	d.ordered = s.GetEnableMessageOrdering()
	d.subDeadline = time.Duration(s.GetAckDeadlineSeconds()) * time.Second
	d.log.Info("subscription settings", "subscription", d.name, "message_ordering", d.ordered,
		"ack_deadline", d.subDeadline.String(), "exactly_once", s.GetEnableExactlyOnceDelivery(),
		"dead_letter_topic", s.GetDeadLetterPolicy().GetDeadLetterTopic(),
		"max_delivery_attempts", s.GetDeadLetterPolicy().GetMaxDeliveryAttempts())
}
