package redisstreams

import (
	"context"

	"github.com/redis/go-redis/v9"
)

// redisAPI lists the go-redis calls the driver makes. Every client kind (*redis.Client,
// *redis.ClusterClient, the sentinel failover client) implements it through redis.UniversalClient;
// unit tests use fakes that embed it and override only the calls they exercise.
//
// XREADGROUP, XAUTOCLAIM, XCLAIM and XRANGE go through Do because go-redis's typed replies keep an
// entry's fields in a map, which loses their order (the JSON payload keeps stream order), and its
// XClaimArgs has no IDLE option.
type redisAPI interface {
	Do(ctx context.Context, args ...any) *redis.Cmd
	XAck(ctx context.Context, stream, group string, ids ...string) *redis.IntCmd
	XDel(ctx context.Context, stream string, ids ...string) *redis.IntCmd
	XAdd(ctx context.Context, a *redis.XAddArgs) *redis.StringCmd
	XGroupCreateMkStream(ctx context.Context, stream, group, start string) *redis.StatusCmd
	XGroupCreate(ctx context.Context, stream, group, start string) *redis.StatusCmd
	XInfoGroups(ctx context.Context, key string) *redis.XInfoGroupsCmd
	XInfoStream(ctx context.Context, key string) *redis.XInfoStreamCmd
	XInfoConsumers(ctx context.Context, key, group string) *redis.XInfoConsumersCmd
	XPendingExt(ctx context.Context, a *redis.XPendingExtArgs) *redis.XPendingExtCmd
	Pipeline() redis.Pipeliner
	Ping(ctx context.Context) *redis.StatusCmd
	Close() error
}

var _ redisAPI = redis.UniversalClient(nil)
