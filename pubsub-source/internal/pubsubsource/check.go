package pubsubsource

import (
	"context"
	"fmt"

	pb "cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"

	"github.com/numaflow-connectors/sources/common/source"
)

// check reads the subscription (and takes its settings), so a missing or detached subscription or a
// missing permission is logged at start with its name, and the prober keeps the source not ready
// meanwhile. A detached subscription fails with errDetached (not_found): its pulls can never succeed.
// Reading it needs pubsub.subscriptions.get, which roles/pubsub.subscriber lacks: when only that is
// denied and the last pull succeeded, the subscription is fine for this source.
func (d *driver) check(ctx context.Context) error {
	s, err := d.sub.GetSubscription(ctx, &pb.GetSubscriptionRequest{Subscription: d.name}, noRetry)
	if err != nil {
		if errorCode(err) == source.PermissionDenied && d.pullOK.Load() {
			return nil
		}
		hint := ""
		switch errorCode(err) {
		case source.NotFound:
			hint = " (create it, or fix PUBSUB_SUBSCRIPTION / PUBSUB_PROJECT)"
		case source.PermissionDenied:
			hint = " (reading it needs pubsub.subscriptions.get, e.g. roles/pubsub.viewer; receiving needs roles/pubsub.subscriber)"
		}
		return fmt.Errorf("getting subscription %s%s: %w", d.name, hint, err)
	}
	d.applySettings(s)
	if s.GetDetached() {
		return fmt.Errorf("getting subscription %s (%s): %w", d.name, fixDetached, errDetached)
	}
	return d.checkConsume(ctx)
}

// checkConsume, after pulls were refused for permission, asks IAM whether the caller may consume
// from the subscription: one that may read it but not pull from it would otherwise pass every health
// check while every pull fails, and readiness would flip back and forth. Without an answer (an
// emulator has no IAM, or testing permissions is itself denied) the check passes, as before.
func (d *driver) checkConsume(ctx context.Context) error {
	if !d.pullDenied.Load() || d.subIAM == nil {
		return nil
	}
	granted, err := testPermissions(ctx, d.subIAM, d.name, permConsume)
	if err != nil || granted[permConsume] {
		return nil
	}
	return fmt.Errorf("checking permissions on subscription %s: %w", d.name, errNoConsume)
}
