package pubsubsource

import (
	"context"
	"errors"
	"fmt"
	"google.golang.org/api/option"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	monitoring "cloud.google.com/go/monitoring/apiv3/v2"
	"cloud.google.com/go/pubsub/v2"
	pb "cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	"github.com/googleapis/gax-go/v2/apierror"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/numaflow-connectors/sources/common/server"
	"github.com/numaflow-connectors/sources/common/source"
)

// Limits and tuning of the unary data plane.
const (
	// maxReceive is max_messages of one Pull.
	maxReceive = 500
	// receiveConcurrency is the most Pulls at once (the adapter adds them only while pulls come back
	// full); 1 when the subscription orders messages, so batches of one key cannot swap places.
	receiveConcurrency = 4
	// maxAckIDs is the most ack IDs per Acknowledge or ModifyAckDeadline call ...
	maxAckIDs = 1000
	// ... and maxAckBytes the most bytes of ack IDs per call, well under the 512 KiB request limit.
	maxAckBytes = 384 << 10
	// ackConcurrency is the most Acknowledge/ModifyAckDeadline calls at once.
	ackConcurrency = 4
	// pullWait is the deadline of one Pull: the service answers an empty pull by then.
	pullWait = 5 * time.Second
	// minEmptyPull is the shortest time an empty Receive takes, so a server that answers an empty
	// pull at once does not turn the receiver into a hot loop.
	minEmptyPull = 500 * time.Millisecond
	// settingsTimeout bounds the GetSubscription call Open makes to learn the subscription's settings.
	settingsTimeout = 5 * time.Second
)

// driver is the Pub/Sub source driver.
type driver struct {
	sub     subscriberAPI
	pub     publisherAPI  // nil without PUBSUB_DEAD_LETTER_TOPIC
	backlog backlogReader // nil with PUBSUB_PENDING=off
	log     *slog.Logger

	name       string // projects/P/subscriptions/S
	dlTopic    string // projects/P/topics/T, or ""
	lease      time.Duration
	maxExtend  time.Duration
	closers    []func() error
	pullWait   time.Duration // deadline of one Pull (pullWait; shorter in tests)
	pullOK     atomic.Bool   // the last Pull that ended succeeded (empty or not)
	closeOnce  sync.Once
	closeErr   error
	publishedM sync.Mutex
	published  map[string]bool // message IDs published to the dead-letter topic and not yet acked

	// Learnt from GetSubscription in Open; unknown (settingsKnown false) when it failed.
	settingsKnown bool
	ordered       bool
	subDeadline   time.Duration
}

var (
	_ source.Driver       = (*driver)(nil)
	_ source.DeadLetterer = (*driver)(nil)
	_ source.Checker      = (*driver)(nil)
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

// Capabilities: see the README's semantics table.
func (d *driver) Capabilities() source.Capabilities {
	ordered := d.ordered || !d.settingsKnown
	conc := receiveConcurrency
	if ordered {
		conc = 1
	}
	return source.Capabilities{
		MaxReceive:         maxReceive,
		ReceiveConcurrency: conc,
		MaxAck:             maxAckIDs,
		AckConcurrency:     ackConcurrency,
		Lease:              d.lease,
		MaxExtension:       d.maxExtend,
		MaxNackDelay:       maxAckDeadline,
		OrderedKeys:        ordered,
	}
}

// Receive makes one unary Pull of up to max messages and sets their ack deadline to
// PUBSUB_ACK_DEADLINE when the subscription's own differs.
func (d *driver) Receive(ctx context.Context, max int) ([]*source.Message, error) {
	n := min(max, maxReceive)
	if n <= 0 {
		n = maxReceive
	}
	start := time.Now()
	resp, err := d.pull(ctx, n)
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
	if !d.settingsKnown || d.subDeadline != d.lease {
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
	}
	switch {
	case waited:
		return &pb.PullResponse{}, nil // the wait ended with nothing
	case err != nil:
		return nil, fmt.Errorf("pulling from subscription %s: %w", d.name, err)
	}
	return resp, nil
}

// Ack acknowledges the deliveries. With exactly-once delivery the service reports each ack ID it
// could not acknowledge; those come back in a *source.BatchError (transient ones classified
// Unavailable, expired or invalid ones InvalidArgument).
func (d *driver) Ack(ctx context.Context, handles []source.Handle) error {
	return d.batch(ctx, ackIDs(handles), "acknowledging", func(ctx context.Context, ids []string) error {
		return d.sub.Acknowledge(ctx, &pb.AcknowledgeRequest{Subscription: d.name, AckIds: ids}, noRetry)
	})
}

// Nack sets the deliveries' ack deadline to delay (rounded up to whole seconds, at most 600 s): 0
// makes them available at once, more makes them come back after the delay.
func (d *driver) Nack(ctx context.Context, handles []source.Handle, delay time.Duration) error {
	return d.modify(ctx, ackIDs(handles), delay)
}

// Extend sets the deliveries' ack deadline to lease from now.
func (d *driver) Extend(ctx context.Context, handles []source.Handle, lease time.Duration) error {
	return d.modify(ctx, ackIDs(handles), lease)
}

func (d *driver) modify(ctx context.Context, ids []string, deadline time.Duration) error {
	secs := int32(min(max((deadline+time.Second-1)/time.Second, 0), maxAckDeadline/time.Second))
	return d.batch(ctx, ids, "modifying ack deadline on", func(ctx context.Context, ids []string) error {
		return d.sub.ModifyAckDeadline(ctx, &pb.ModifyAckDeadlineRequest{Subscription: d.name, AckIds: ids, AckDeadlineSeconds: secs}, noRetry)
	})
}

// Backlog reads num_undelivered_messages from Cloud Monitoring with PUBSUB_PENDING=monitoring; -1
// (unknown) otherwise.
func (d *driver) Backlog(ctx context.Context) (int64, error) {
	if d.backlog == nil {
		return -1, nil
	}
	return d.backlog.Backlog(ctx)
}

// ErrorCode classifies by gRPC status (see errors.go).
func (d *driver) ErrorCode(err error) source.Code { return errorCode(err) }

// Check reads the subscription, so a missing subscription or a missing permission is logged at start
// with its name. Reading it needs pubsub.subscriptions.get, which roles/pubsub.subscriber lacks: when
// only that is denied and the last pull succeeded, the subscription is fine for this source.
func (d *driver) Check(ctx context.Context) error {
	if _, err := d.sub.GetSubscription(ctx, &pb.GetSubscriptionRequest{Subscription: d.name}, noRetry); err != nil {
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
	return nil
}

// DeadLetter publishes the message to PUBSUB_DEAD_LETTER_TOPIC (data, attributes and x-dead-letter-*
// attributes with the reason), waits until the service has stored it, then acks the original. Without
// a topic it returns source.ErrNoDeadLetter (the subscription's own dead-letter policy, if any, then
// applies to the nacked message).
func (d *driver) DeadLetter(ctx context.Context, msg *source.Message, reason string) error {
	if d.pub == nil {
		return source.ErrNoDeadLetter
	}
	d.publishedM.Lock()
	done := d.published[msg.ID]
	d.publishedM.Unlock()
	if !done { // a retry after a failed ack must not publish the message twice
		req := &pb.PublishRequest{Topic: d.dlTopic, Messages: []*pb.PubsubMessage{deadLetterMessage(msg, d.name, reason)}}
		if _, err := d.pub.Publish(ctx, req, noRetry); err != nil {
			return fmt.Errorf("publishing message %s to dead-letter topic %s: %w", msg.ID, d.dlTopic, err)
		}
		d.publishedM.Lock()
		d.published[msg.ID] = true
		d.publishedM.Unlock()
	}
	err := d.Ack(ctx, []source.Handle{msg.Handle})
	var be *source.BatchError
	if errors.As(err, &be) {
		for _, e := range be.Failed {
			err = e
		}
	}
	if err != nil {
		return err
	}
	d.publishedM.Lock()
	delete(d.published, msg.ID)
	d.publishedM.Unlock()
	return nil
}

// Close closes the clients. Idempotent.
func (d *driver) Close(context.Context) error {
	d.closeOnce.Do(func() {
		var errs []error
		for _, c := range d.closers {
			if err := c(); err != nil && !strings.Contains(err.Error(), "the client connection is closing") {
				errs = append(errs, err)
			}
		}
		if len(errs) > 0 {
			d.closeErr = fmt.Errorf("closing Pub/Sub clients: %w", errors.Join(errs...))
		}
	})
	return d.closeErr
}

// ---- batches of ack IDs ----

// batch runs call on ids in chunks of at most maxAckIDs IDs and maxAckBytes bytes and collapses the
// per-ID failures with source.BatchResult.
func (d *driver) batch(ctx context.Context, ids []string, op string, call func(context.Context, []string) error) error {
	var failed map[int]error
	for lo := 0; lo < len(ids); {
		hi, size := lo, 0
		for hi < len(ids) && hi-lo < maxAckIDs && (hi == lo || size+len(ids[hi]) <= maxAckBytes) {
			size += len(ids[hi])
			hi++
		}
		f, err := d.call(ctx, ids[lo:hi], op, call)
		if err != nil {
			f = make(map[int]error, hi-lo)
			for i := range hi - lo {
				f[i] = err
			}
		}
		for i, e := range f {
			if failed == nil {
				failed = make(map[int]error)
			}
			failed[lo+i] = e
		}
		lo = hi
	}
	return source.BatchResult(len(ids), failed)
}

// call runs one chunk. It returns the per-ID failures when the service reported them (exactly-once
// delivery) or when a refused chunk could be split to find the IDs it refused; otherwise the call's
// error, wrapped.
func (d *driver) call(ctx context.Context, ids []string, op string, call func(context.Context, []string) error) (map[int]error, error) {
	err := call(ctx, ids)
	if err == nil {
		return nil, nil
	}
	if f, ok := d.perAckID(ids, op, err); ok {
		return f, nil
	}
	if len(ids) > 1 && refusedAckID(err) && ctx.Err() == nil {
		// The service refused the whole request for some of its IDs (the emulator does this for an
		// unknown ack ID): split it to find them, so the good ones are not given up.
		mid := len(ids) / 2
		left, lerr := d.call(ctx, ids[:mid], op, call)
		right, rerr := d.call(ctx, ids[mid:], op, call)
		out := make(map[int]error, len(left)+len(right))
		for i, e := range left {
			out[i] = e
		}
		if lerr != nil {
			for i := range mid {
				out[i] = lerr
			}
		}
		for i, e := range right {
			out[mid+i] = e
		}
		if rerr != nil {
			for i := range len(ids) - mid {
				out[mid+i] = rerr
			}
		}
		return out, nil
	}
	if len(ids) == 1 && errorCode(err) == source.InvalidArgument {
		return nil, d.entryError(op, "ack ID refused (expired or invalid)", source.InvalidArgument, err)
	}
	return nil, fmt.Errorf("%s subscription %s: %w", op, d.name, err)
}

// perAckID reads exactly-once delivery's per-ack-ID results from the error's ErrorInfo metadata
// (ack ID -> reason). IDs it names failed: TRANSIENT_* ones may be retried, the others (e.g.
// PERMANENT_FAILURE_INVALID_ACK_ID: the ack ID expired) not. IDs it does not name were processed,
// unless the call's status is itself transient, in which case they are retried too (a repeated ack is
// harmless). ok is false when the error carries no per-ID results.
func (d *driver) perAckID(ids []string, op string, err error) (map[int]error, bool) {
	ae, isAPI := apierror.FromError(err)
	if !isAPI {
		return nil, false
	}
	md := ae.Metadata()
	named := false
	for _, id := range ids {
		if _, ok := md[id]; ok {
			named = true
			break
		}
	}
	if !named {
		return nil, false
	}
	whole := errorCode(err)
	failed := make(map[int]error)
	for i, id := range ids {
		reason, ok := md[id]
		switch {
		case ok && strings.HasPrefix(reason, "TRANSIENT_"):
			failed[i] = d.entryError(op, reason, source.Unavailable, nil)
		case ok && reason == "PERMANENT_FAILURE_INVALID_ACK_ID":
			failed[i] = d.entryError(op, reason, source.InvalidArgument, nil)
		case ok:
			failed[i] = d.entryError(op, reason, source.FailedPrecondition, nil)
		case whole.Transient():
			failed[i] = fmt.Errorf("%s subscription %s: %w", op, d.name, err)
		}
	}
	return failed, true
}

// refusedAckID reports whether err is the service refusing a request for an ack ID in it ("Invalid ack
// id (ack_id=...)" from the emulator, "You have passed an invalid ack ID to the service" from Pub/Sub),
// as opposed to a request that is wrong as a whole.
func refusedAckID(err error) bool {
	if errorCode(err) != source.InvalidArgument {
		return false
	}
	msg := strings.ToLower(status.Convert(err).Message())
	return strings.Contains(msg, "ack id") || strings.Contains(msg, "ack_id")
}

func ackIDs(handles []source.Handle) []string {
	out := make([]string, len(handles))
	for i, h := range handles {
		out[i], _ = h.(string)
	}
	return out
}
