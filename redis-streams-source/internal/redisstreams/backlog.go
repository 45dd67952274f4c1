package redisstreams

import (
	"context"
	"fmt"
	"slices"

	"github.com/redis/go-redis/v9"
)

// backlog is the sum over the streams of the group's lag (entries not yet delivered to the group) and
// its pending count (delivered, not yet acked, by any consumer); -1 when Redis cannot tell the lag.
func (d *driver) backlog(ctx context.Context) (int64, error) {
	var total int64
	for _, s := range d.streams {
		gs, err := d.api.XInfoGroups(ctx, s).Result()
		if err != nil {
			return -1, fmt.Errorf("reading the backlog of stream %s: %w", s, err)
		}
		i := slices.IndexFunc(gs, func(g redis.XInfoGroup) bool { return g.Name == d.group })
		if i < 0 {
			return -1, fmt.Errorf("reading the backlog of group %s on stream %s: %w", d.group, s, errGroupMissing)
		}
		if gs[i].Lag < 0 {
			return -1, nil // Redis cannot tell (entries deleted past the group's position)
		}
		total += gs[i].Lag + gs[i].Pending
	}
	return total, nil
}
