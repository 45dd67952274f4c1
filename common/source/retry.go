package source

import (
	"cmp"
	"context"
	"math/rand/v2"
	"time"
)

// backoff is exponential with jitter, from min (default 100 ms) up to max (default 5 s).
type backoff struct {
	n        int
	min, max time.Duration
}

func (b *backoff) next() time.Duration {
	ceil := cmp.Or(b.min, 100*time.Millisecond) << min(b.n, 9) // doubling, capped below
	ceil = min(ceil, cmp.Or(b.max, 5*time.Second))
	b.n++
	return ceil/2 + rand.N(ceil/2+1)
}

func (b *backoff) reset() { b.n = 0 }

// retryLoop calls attempt until it reports that nothing is left to retry, waiting a backoff between
// attempts. It gives up (false) when the next wait would end after deadline, or when ctx ends.
func retryLoop(ctx context.Context, deadline time.Time, bo *backoff, attempt func() (done bool)) bool {
	for {
		if attempt() {
			return true
		}
		wait := bo.next()
		if time.Now().Add(wait).After(deadline) || !sleepCtx(ctx, wait) {
			return false
		}
	}
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
