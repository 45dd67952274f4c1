package redisstreams

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/redis/go-redis/v9"
)

// check pings Redis and checks that every stream has the group (or that the source may create it).
func (d *driver) check(ctx context.Context) error {
	if err := d.api.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("connecting to redis: %w", err)
	}
	for _, s := range d.streams {
		gs, err := d.api.XInfoGroups(ctx, s).Result()
		if err != nil {
			if d.create && strings.Contains(strings.ToLower(err.Error()), "no such key") {
				continue // created at the first read
			}
			return fmt.Errorf("checking stream %s: %w", s, err)
		}
		if !d.create && !slices.ContainsFunc(gs, func(g redis.XInfoGroup) bool { return g.Name == d.group }) {
			return fmt.Errorf("checking group %s on stream %s (REDIS_CREATE_GROUP is false): %w", d.group, s, errGroupMissing)
		}
	}
	return nil
}
