package pubsubsource

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"time"

	monitoring "cloud.google.com/go/monitoring/apiv3/v2"
	"cloud.google.com/go/pubsub/v2"
	"google.golang.org/api/option"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"

	"github.com/numaflow-connectors/sources/common/server"
	"github.com/numaflow-connectors/sources/common/source"
)

// apis are the clients a driver calls; pub, backlog and topicIAM may be nil (subIAM too, in tests
// that run no pre-flight checks).
type apis struct {
	sub      subscriberAPI
	pub      publisherAPI
	backlog  backlogReader
	subIAM   iamAPI      // pre-flight checks, and health checks after pulls refused for permission
	topicIAM topicIAMAPI // pre-flight checks only, with PUBSUB_DEAD_LETTER_TOPIC
}

// Open builds the Pub/Sub clients (Application Default Credentials, or PUBSUB_EMULATOR_HOST as the
// client library defines it) and reads the subscription's settings, then keeps reading them in the
// background (settings.go). It does not fail when the service is unreachable or the subscription is
// missing: Check and Receive report that. Nor does it fail when no Cloud Monitoring client can be
// built: the backlog is then unknown.
func Open(ctx context.Context, cfg *Config, env *server.Env) (source.Driver, error) {
	log := slog.New(slog.DiscardHandler)
	if env != nil && env.Log != nil {
		log = env.Log
	}
	return open(ctx, cfg, log, clientOptions{emulatorHost: os.Getenv("PUBSUB_EMULATOR_HOST")})
}

// clientOptions are what open builds its clients with besides the configuration: the
// PUBSUB_EMULATOR_HOST it saw (which decides PUBSUB_PENDING=auto) and, for tests, extra options of
// the Pub/Sub and Cloud Monitoring clients.
type clientOptions struct {
	emulatorHost string
	pubsub       []option.ClientOption
	monitoring   []option.ClientOption
}

func open(ctx context.Context, cfg *Config, log *slog.Logger, co clientOptions) (*driver, error) {
	// gRPC's default reconnect backoff grows to 120 s; after an outage the source must be back within
	// seconds, so reconnect attempts are capped at 2 s apart (a few cheap dials, no hot spin).
	reconnect := option.WithGRPCDialOption(grpc.WithConnectParams(grpc.ConnectParams{
		Backoff:           backoff.Config{BaseDelay: 250 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 2 * time.Second},
		MinConnectTimeout: 5 * time.Second,
	}))
	// Pull replies (a hundred messages or more) read into a pool without grpc-go's 1 MiB cleared
	// buffers (server.ProtoCodec).
	codec := option.WithGRPCDialOption(grpc.WithDefaultCallOptions(grpc.ForceCodecV2(server.ProtoCodec())))
	c, err := pubsub.NewClient(ctx, cfg.projectID(), append([]option.ClientOption{reconnect, codec}, co.pubsub...)...)
	if err != nil {
		// Made before any network call, so it is about credentials: say where they come from.
		return nil, fmt.Errorf("creating Pub/Sub client for project %s (credentials: the file named by GOOGLE_APPLICATION_CREDENTIALS "+
			"when set, else the workload identity or other application default credentials): %w", cfg.projectID(), err)
	}
	a := apis{sub: c.SubscriptionAdminClient, subIAM: c.SubscriptionAdminClient}
	closers := []func() error{c.Close}
	if cfg.DeadLetterTopic != "" {
		a.pub, a.topicIAM = c.TopicAdminClient, c.TopicAdminClient
	}
	pre := preflightEnv{emulator: co.emulatorHost != "", pending: cfg.pendingMode(co.emulatorHost)}
	switch mode := pre.pending; {
	case mode != PendingMonitoring:
		log.Info("backlog not reported (pending -1: no autoscaling on backlog)", "pubsub_pending", cfg.Pending,
			"emulator", co.emulatorHost != "")
	default:
		mc, err := monitoring.NewMetricClient(ctx, co.monitoring...)
		if err != nil {
			pre.monitoringErr = err
			log.Warn("no Cloud Monitoring client, so the backlog is unknown (pending -1); set PUBSUB_PENDING=off to silence this",
				"subscription", cfg.subscriptionName(), "error", err)
			break
		}
		a.backlog = newMonitoringReader(mc, cfg.projectID(), cfg.subscriptionID(), log)
		closers = append(closers, mc.Close)
	}
	d := newDriver(cfg, a, log)
	d.closers = closers
	d.pre = pre
	if err := d.readSettings(ctx); err != nil {
		log.Info("subscription settings unknown for now; pulling one batch at a time until they are read (retried in the background)",
			"subscription", d.name, "error", err)
	}
	d.startSettings()
	return d, nil
}

// newDriver wires a driver over the given clients; it makes no call.
func newDriver(cfg *Config, a apis, log *slog.Logger) *driver {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &driver{
		sub: a.sub, pub: a.pub, backlog: a.backlog, log: log,
		subIAM: a.subIAM, topicIAM: a.topicIAM,
		pre:           preflightEnv{pending: PendingOff},
		project:       cfg.projectID(),
		name:          cfg.subscriptionName(),
		dlTopic:       cfg.deadLetterTopicName(),
		lease:         cfg.ackDeadline(),
		maxExtend:     cfg.MaxExtension,
		pullWait:      pullWait,
		published:     make(map[string]time.Time),
		settingsEvery: settingsEvery,
		settingsRetry: settingsRetry,
		gate:          newPullGate(),
	}
}
