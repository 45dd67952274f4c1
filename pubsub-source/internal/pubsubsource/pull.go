package pubsubsource

import (
	"context"
	"fmt"
	"time"

	pb "cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/numaflow-connectors/sources/common/source"
)

// receive makes one unary Pull of up to max messages and sets their ack deadline to
// PUBSUB_ACK_DEADLINE when the subscription's own differs.
func (d *driver) receive(ctx context.Context, max int) ([]*source.Message, error) {
	n := min(max, maxReceive)
	if n <= 0 {
		n = maxReceive
	}
	done, err := d.pullSlot(ctx)
	if err != nil {
		return nil, fmt.Errorf("pulling from subscription %s: %w", d.name, err)
	}
	start := time.Now()
	resp, err := d.pull(ctx, n)
	done()
	if err != nil {
		return nil, err
	}
	rms := resp.GetReceivedMessages()
	if len(rms) == 0 {
		if rest := minEmptyPull - time.Since(start); rest > 0 {
			t := time.NewTimer(rest)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
			}
		}
		return nil, nil
	}
	ids := make([]string, len(rms))
	out := make([]*source.Message, len(rms))
	for i, rm := range rms {
		ids[i] = rm.GetAckId()
		out[i] = toMessage(rm)
	}
	if d.modackAfterPull() {
		// The pull leased them for the subscription's ack deadline; the adapter counts on ours.
		if err := d.modify(ctx, ids, d.lease); err != nil {
			d.log.Warn("setting the ack deadline of pulled messages failed; they may be redelivered early",
				"subscription", d.name, "count", len(ids), "error", err)
		}
	}
	return out, nil
}

// pull runs one Pull on ctx, bounded by pullWait: the service answers an empty pull by then, and the
// wait running out is an empty result, not an error.
func (d *driver) pull(ctx context.Context, n int) (*pb.PullResponse, error) {
	pctx, cancel := context.WithTimeout(ctx, d.pullWait)
	defer cancel()
	resp, err := d.sub.Pull(pctx, &pb.PullRequest{Subscription: d.name, MaxMessages: int32(n)}, noRetry)
	waited := ctx.Err() == nil && pctx.Err() != nil && status.Code(err) == codes.DeadlineExceeded
	if ctx.Err() == nil {
		d.pullOK.Store(err == nil || waited)
		d.pullDenied.Store(err != nil && !waited && errorCode(err) == source.PermissionDenied)
	}
	switch {
	case waited:
		return &pb.PullResponse{}, nil // the wait ended with nothing
	case err != nil:
		return nil, fmt.Errorf("pulling from subscription %s: %w", d.name, err)
	}
	return resp, nil
}
