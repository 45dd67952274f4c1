package redisstreams

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"

	"github.com/numaflow-connectors/sources/common/server"
	"github.com/numaflow-connectors/sources/common/source"
)

// readTimeoutMargin is added to REDIS_BLOCK for the socket read deadline of every command, so a
// blocking XREADGROUP (sent through Do, which go-redis gives no per-command timeout) is never cut short.
const readTimeoutMargin = 3 * time.Second

// clusterReload is how old the cluster client's slot map may get before it is read again (CLUSTER
// SLOTS, one call). go-redis reloads it at once only on MOVED, ASK or READONLY: after a failover the
// dead master refuses connections, which triggers none of them, and with go-redis's default (60 s) the
// source kept calling the dead node for up to a minute after its replica had taken over.
const clusterReload = 2 * time.Second

// Open builds the Redis client and the driver. It makes no network call: a Redis that is down or a
// missing group shows in Receive's errors (the adapter retries) and in Check's start-up message.
func Open(ctx context.Context, cfg *Config, env *server.Env) (source.Driver, error) {
	client, err := newClient(cfg)
	if err != nil {
		return nil, err
	}
	consumer := consumerName(cfg, env)
	log := env.Log.With("group", cfg.Group, "consumer", consumer)
	if sharedConsumer(cfg, env) {
		log.Warn("REDIS_CONSUMER is one name for every replica of the vertex: replicas would replay each other's pending entries and deliver them twice; add <replica> to it, or leave it unset")
	}
	// go-redis reports failed dials on its own logger, once per call: the adapter already counts and
	// logs (rate-limited) every failed call, so go-redis's lines go to debug.
	redis.SetLogger(debugLogger{log})
	log.Info("redis streams source configured", "mode", cfg.Mode, "streams", cfg.streams(), "tls", cfg.tlsWanted(),
		"claim_min_idle", cfg.ClaimMinIdle.String(), "payload_field", cfg.PayloadField, "dead_letter_stream", cfg.DeadLetterStream)
	return newDriver(cfg, consumer, client, log), nil
}

// newDriver wires a driver over api; it makes no call.
func newDriver(cfg *Config, consumer string, api redisAPI, log *slog.Logger) *driver {
	return &driver{
		api:       api,
		log:       log,
		streams:   cfg.streams(),
		group:     cfg.Group,
		consumer:  consumer,
		startID:   cfg.startID(),
		create:    cfg.CreateGroup,
		claimIdle: cfg.ClaimMinIdle,
		maxExt:    cfg.MaxExtension,
		block:     cfg.BlockOrDefault(),
		readCount: cfg.ReadCount,
		delOnAck:  cfg.DeleteOnAck,
		dlq:       cfg.DeadLetterStream,
		dlqMaxLen: cfg.DeadLetterMaxLen,
		mapper:    mapper{payloadField: cfg.PayloadField, keyField: cfg.KeyField},
		now:       time.Now,
		replay:    map[string]string{},
	}
}

// sharedConsumer says REDIS_CONSUMER gives every replica of a vertex one consumer name: set inside
// Numaflow (NUMAFLOW_POD) without <replica>. Replicas sharing a name replay each other's pending
// entries as their own and no claim protects a held entry from another replica.
func sharedConsumer(cfg *Config, env *server.Env) bool {
	return cfg.Consumer != "" && env.Platform.Pod != "" && !strings.Contains(cfg.Consumer, "<replica>")
}

// consumerName is REDIS_CONSUMER (<replica> replaced by NUMAFLOW_REPLICA), or <namespace>-<pipeline>-<vertex>-<replica> (a MonoVertex:
// <namespace>-<name>-<replica>): stable across restarts of a replica, so a restarted replica finds its
// own pending list, and distinct for sources that share a group, so none replays another's entries.
func consumerName(cfg *Config, env *server.Env) string {
	if cfg.Consumer != "" {
		return strings.ReplaceAll(cfg.Consumer, "<replica>", strconv.Itoa(env.Platform.Replica))
	}
	parts := env.Platform.NameParts()
	if len(parts) == 0 {
		parts = []string{"redis-streams-source"}
	}
	return strings.Join(append(parts, strconv.Itoa(env.Platform.Replica)), "-")
}

// newClient builds the go-redis client for the configured mode, with TLS applied in every mode.
func newClient(cfg *Config) (redis.UniversalClient, error) {
	tc, err := cfg.tlsConfig()
	if err != nil {
		return nil, fmt.Errorf("loading TLS settings: %w", err)
	}
	readTimeout := cfg.BlockOrDefault() + readTimeoutMargin
	maint := func() *maintnotifications.Config {
		return &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}
	}
	// credentials lets REDIS_USERNAME and REDIS_PASSWORD override what REDIS_URL carries.
	credentials := func(user, pass *string) {
		if cfg.Username != "" {
			*user = cfg.Username
		}
		if cfg.Password != "" {
			*pass = cfg.Password.Reveal()
		}
	}
	if u := cfg.URL.Reveal(); u != "" {
		if cfg.Mode == ModeCluster {
			o, err := redis.ParseClusterURL(u)
			if err != nil {
				return nil, fmt.Errorf("parsing REDIS_URL: %s", redactURLError(err, u))
			}
			credentials(&o.Username, &o.Password)
			o.TLSConfig = mergeTLS(tc, o.TLSConfig, false)
			o.Protocol, o.ReadTimeout, o.ContextTimeoutEnabled, o.DisableIdentity = 2, readTimeout, true, true
			o.DialerRetries = 1 // one dial per call: the adapter retries, with its own backoff
			o.MaintNotificationsConfig = maint()
			o.ClusterStateReloadInterval = clusterReload
			return redis.NewClusterClient(o), nil
		}
		o, err := redis.ParseURL(u)
		if err != nil {
			return nil, fmt.Errorf("parsing REDIS_URL: %s", redactURLError(err, u))
		}
		credentials(&o.Username, &o.Password)
		o.TLSConfig = mergeTLS(tc, o.TLSConfig, true)
		o.Protocol, o.ReadTimeout, o.ContextTimeoutEnabled, o.DisableIdentity = 2, readTimeout, true, true
		o.DialerRetries = 1 // one dial per call: the adapter retries, with its own backoff
		o.MaxRetries = -1   // the adapter retries
		o.MaintNotificationsConfig = maint()
		return redis.NewClient(o), nil
	}
	uo := &redis.UniversalOptions{
		Addrs:                    cfg.addrs(),
		Username:                 cfg.Username,
		Password:                 cfg.Password.Reveal(),
		DB:                       cfg.DB,
		TLSConfig:                tc,
		Protocol:                 2,
		ReadTimeout:              readTimeout,
		ContextTimeoutEnabled:    true,
		DisableIdentity:          true,
		MaxRetries:               -1,
		DialerRetries:            1,
		MaintNotificationsConfig: maint(),
	}
	switch cfg.Mode {
	case ModeCluster:
		o := uo.Cluster()
		o.ClusterStateReloadInterval = clusterReload
		return redis.NewClusterClient(o), nil
	case ModeSentinel:
		uo.MasterName = cfg.SentinelMaster
		uo.SentinelUsername = cfg.SentinelUsername
		uo.SentinelPassword = cfg.SentinelPassword.Reveal()
		return redis.NewFailoverClient(uo.Failover()), nil
	}
	return redis.NewClient(uo.Simple()), nil
}

// mergeTLS combines the REDIS_TLS_* configuration (ours) with what a rediss:// URL set (fromURL):
// ours wins; the URL's server name is kept when none is configured (standalone only: in a cluster each
// node is verified against its own address), and so is the URL's skip_verify=true, which asks for no
// verification as REDIS_TLS_INSECURE_SKIP_VERIFY does (it was dropped, and the source never became
// ready against the certificate it was told not to check).
func mergeTLS(ours, fromURL *tls.Config, keepServerName bool) *tls.Config {
	switch {
	case ours == nil:
		return fromURL
	case fromURL == nil:
		return ours
	}
	if ours.ServerName == "" && keepServerName {
		ours.ServerName = fromURL.ServerName
	}
	if fromURL.InsecureSkipVerify {
		ours.InsecureSkipVerify = true
	}
	return ours
}

// debugLogger routes go-redis's internal log lines to slog at debug level.
type debugLogger struct{ log *slog.Logger }

func (l debugLogger) Printf(ctx context.Context, format string, v ...any) {
	l.log.DebugContext(ctx, "redis client", "message", fmt.Sprintf(format, v...))
}
