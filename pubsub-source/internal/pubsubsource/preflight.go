package pubsubsource

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"cloud.google.com/go/iam/apiv1/iampb"
	"cloud.google.com/go/monitoring/apiv3/v2/monitoringpb"
	pb "cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	"google.golang.org/api/iterator"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/numaflow-connectors/sources/common/source"
)

// Pre-flight checks (`pubsub-source --check`). Pub/Sub has a call that asks "may I?":
// TestIamPermissions on a subscription or a topic answers which of the named permissions the caller
// holds, and needs none itself. So the checks are: GetSubscription (the subscription exists and its
// settings can be read: pubsub.subscriptions.get), TestIamPermissions on the subscription
// (pubsub.subscriptions.consume: Pull, Acknowledge, ModifyAckDeadline), on PUBSUB_DEAD_LETTER_TOPIC
// (pubsub.topics.publish) and, when Pending reads Cloud Monitoring, one ListTimeSeries of the
// backlog metric. None of them pulls, acks, modifies or publishes a message.
//
// The emulators have no IAM: TestIamPermissions is Unimplemented there. With PUBSUB_EMULATOR_HOST set
// that answer passes (the check's name says the emulator grants everything), and the dead-letter
// topic is read with GetTopic instead, so a missing one still fails. Without PUBSUB_EMULATOR_HOST,
// Unimplemented fails.

var _ source.Preflighter = (*driver)(nil)

// preflightEnv is what the pre-flight checks need to know of how the driver was opened.
type preflightEnv struct {
	emulator      bool   // PUBSUB_EMULATOR_HOST was set
	pending       string // PUBSUB_PENDING resolved: PendingMonitoring or PendingOff
	monitoringErr error  // why no Cloud Monitoring client could be built, if so
}

// Permissions the connector needs.
const (
	permConsume = "pubsub.subscriptions.consume"
	permGet     = "pubsub.subscriptions.get"
	permPublish = "pubsub.topics.publish"
)

const (
	// preflightCallTimeout bounds each call of the checks, so a silent endpoint fails its check
	// well inside the 30 s the whole run may take.
	preflightCallTimeout = 10 * time.Second
	// preflightMetricWindow is how far back the Cloud Monitoring check reads: any short recent
	// interval shows whether the read is allowed.
	preflightMetricWindow = 5 * time.Minute
)

// Fixes for missing permissions.
const (
	fixConsume = "grant roles/pubsub.subscriber on the subscription (or its project) to the source's service account: " +
		permConsume + " is what Pull, Acknowledge and ModifyAckDeadline need"
	fixGet = "grant roles/pubsub.viewer on the subscription (or a role with " + permGet + "; roles/pubsub.subscriber lacks it) " +
		"to the source's service account: without it the source cannot read the subscription's settings and pulls one batch at a time"
	fixCredentials = "check the credentials the pod gets (Workload Identity annotation, GOOGLE_APPLICATION_CREDENTIALS)"
	fixNetwork     = "check the network path from the pod to Pub/Sub (firewall, proxy, private access), or PUBSUB_EMULATOR_HOST"
	fixDetached    = "a detached subscription cannot be attached again: create a new subscription on the topic and point " +
		"PUBSUB_SUBSCRIPTION at it (and delete this one)"
)

// Preflight checks the subscription, each permission the connector needs on it, on the dead-letter
// topic and on Cloud Monitoring. When the subscription cannot be read for a reason other than a
// missing permission (missing, unreachable), the other checks are skipped.
func (d *driver) Preflight(ctx context.Context) []source.Check {
	var checks []source.Check
	getName := fmt.Sprintf("subscription %s exists and its settings are readable (GetSubscription, %s)", d.name, permGet)
	getErr := d.preflightGet(ctx)
	consume := fmt.Sprintf("%s on %s (Pull, Acknowledge, ModifyAckDeadline)", permConsume, d.name)
	var rest []string // the names of the checks that follow, to skip them
	rest = append(rest, consume)
	if d.topicIAM != nil {
		rest = append(rest, d.publishName())
	}
	if d.pre.pending == PendingMonitoring {
		rest = append(rest, d.monitoringName())
	}
	if getErr != nil && errorCode(getErr) != source.PermissionDenied {
		why := "the subscription could not be read"
		switch {
		case errors.Is(getErr, errDetached):
			why = "the subscription is detached from its topic"
		case errorCode(getErr) == source.NotFound:
			why = "the subscription does not exist"
		}
		checks = append(checks, source.Check{Name: getName, Err: getErr, Fix: d.subscriptionFix(getErr, fixGet)})
		for _, name := range rest {
			checks = append(checks, source.Check{Name: name, Skipped: why})
		}
		return checks
	}

	// The subscription is there (or its reading is denied): ask for both permissions at once.
	granted, iamErr := d.subscriptionPermissions(ctx)
	get := source.Check{Name: getName, Err: getErr}
	if getErr != nil {
		get.Fix = d.subscriptionFix(getErr, fixGet)
		if errorCode(getErr) == source.PermissionDenied && iamErr == nil && granted[permGet] {
			get.Fix = "the subscription's IAM policy grants " + permGet + ", yet the call is refused: look for an IAM deny policy " +
				"or a VPC Service Controls perimeter around the project"
		}
	}
	checks = append(checks, get)
	switch {
	case iamErr != nil && d.emulatorIAM(iamErr):
		checks = append(checks, source.Check{Name: consume + ": emulator, no IAM, grants everything"})
	case iamErr != nil:
		checks = append(checks, source.Check{Name: consume, Err: iamErr, Fix: d.subscriptionFix(iamErr, fixConsume)})
	case !granted[permConsume]:
		checks = append(checks, source.Check{Name: consume, Err: missing(permConsume, d.name), Fix: fixConsume})
	default:
		checks = append(checks, source.Check{Name: consume})
	}

	if d.topicIAM != nil {
		checks = append(checks, d.preflightPublish(ctx))
	}
	if d.pre.pending == PendingMonitoring {
		checks = append(checks, d.preflightMonitoring(ctx))
	}
	return checks
}

// preflightGet reads the subscription (and takes its settings, as the start-up check does); a
// detached subscription fails with errDetached.
func (d *driver) preflightGet(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, preflightCallTimeout)
	defer cancel()
	s, err := d.sub.GetSubscription(ctx, &pb.GetSubscriptionRequest{Subscription: d.name}, noRetry)
	if err != nil {
		return fmt.Errorf("getting subscription %s: %w", d.name, err)
	}
	d.applySettings(s)
	if s.GetDetached() {
		return fmt.Errorf("getting subscription %s: %w", d.name, errDetached)
	}
	return nil
}

// subscriptionPermissions asks which of the connector's permissions the caller holds on the
// subscription.
func (d *driver) subscriptionPermissions(ctx context.Context) (map[string]bool, error) {
	if d.subIAM == nil {
		return nil, errors.New("no IAM client")
	}
	return testPermissions(ctx, d.subIAM, d.name, permConsume, permGet)
}

func testPermissions(ctx context.Context, api iamAPI, resource string, perms ...string) (map[string]bool, error) {
	ctx, cancel := context.WithTimeout(ctx, preflightCallTimeout)
	defer cancel()
	resp, err := api.TestIamPermissions(ctx, &iampb.TestIamPermissionsRequest{Resource: resource, Permissions: perms}, noRetry)
	if err != nil {
		return nil, fmt.Errorf("testing IAM permissions on %s: %w", resource, err)
	}
	granted := make(map[string]bool, len(perms))
	for _, p := range resp.GetPermissions() {
		if slices.Contains(perms, p) {
			granted[p] = true
		}
	}
	return granted, nil
}

// publishName is the name of the dead-letter topic's check.
func (d *driver) publishName() string {
	return fmt.Sprintf("%s on %s (PUBSUB_DEAD_LETTER_TOPIC)", permPublish, d.dlTopic)
}

// preflightPublish checks pubsub.topics.publish on the dead-letter topic; on an emulator, whose
// TestIamPermissions is Unimplemented, it reads the topic instead.
func (d *driver) preflightPublish(ctx context.Context) source.Check {
	name := d.publishName()
	fixGrant := "grant roles/pubsub.publisher on topic " + d.dlTopic + " to the source's service account"
	granted, err := testPermissions(ctx, d.topicIAM, d.dlTopic, permPublish)
	if err != nil && d.emulatorIAM(err) {
		name += ": emulator, no IAM, grants everything"
		gctx, cancel := context.WithTimeout(ctx, preflightCallTimeout)
		defer cancel()
		if _, err = d.topicIAM.GetTopic(gctx, &pb.GetTopicRequest{Topic: d.dlTopic}, noRetry); err != nil {
			err = fmt.Errorf("getting topic %s: %w", d.dlTopic, err)
		}
	}
	switch {
	case err != nil:
		fix := d.subscriptionFix(err, fixGrant)
		if errorCode(err) == source.NotFound {
			fix = "create topic " + d.dlTopic + ", or fix PUBSUB_DEAD_LETTER_TOPIC"
		}
		return source.Check{Name: name, Err: err, Fix: fix}
	case granted != nil && !granted[permPublish]:
		return source.Check{Name: name, Err: missing(permPublish, d.dlTopic), Fix: fixGrant}
	}
	return source.Check{Name: name}
}

// monitoringName is the name of the Cloud Monitoring check.
func (d *driver) monitoringName() string {
	return fmt.Sprintf("Cloud Monitoring read of %s for %s (PUBSUB_PENDING=%s, monitoring.timeSeries.list)",
		undeliveredMetric, d.name, PendingMonitoring)
}

// preflightMonitoring reads the backlog metric over a short recent interval, as Pending does.
func (d *driver) preflightMonitoring(ctx context.Context) source.Check {
	name := d.monitoringName()
	r, ok := d.backlog.(*monitoringReader)
	if !ok {
		err := d.pre.monitoringErr
		if err == nil {
			err = errors.New("no Cloud Monitoring client")
		}
		return source.Check{Name: name, Err: fmt.Errorf("creating the Cloud Monitoring client: %w", err),
			Fix: fixCredentials + ", or set PUBSUB_PENDING=off (the backlog is then unknown: no autoscaling on it)"}
	}
	err := r.probe(ctx)
	if err == nil {
		return source.Check{Name: name}
	}
	fix := ""
	switch errorCode(err) {
	case source.PermissionDenied:
		fix = "grant roles/monitoring.viewer on project " + r.project + " to the source's service account, or set PUBSUB_PENDING=off " +
			"(without it Pending is -1: no autoscaling on the backlog)"
		if s, ok := status.FromError(err); ok && s.Code() == codes.Unauthenticated {
			fix = fixCredentials
		}
	case source.Unavailable, source.DeadlineExceeded:
		fix = "check the network path from the pod to Cloud Monitoring, or set PUBSUB_PENDING=off"
	default:
		fix = "see the error, or set PUBSUB_PENDING=off"
	}
	return source.Check{Name: name, Err: err, Fix: fix}
}

// probe reads the backlog metric of the last few minutes once, to tell whether the read is allowed;
// the answer is not used (nor cached).
func (r *monitoringReader) probe(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, preflightCallTimeout)
	defer cancel()
	now := r.now()
	req := &monitoringpb.ListTimeSeriesRequest{
		Name:     "projects/" + r.project,
		Filter:   r.filter(),
		Interval: &monitoringpb.TimeInterval{StartTime: timestamppb.New(now.Add(-preflightMetricWindow)), EndTime: timestamppb.New(now)},
		View:     monitoringpb.ListTimeSeriesRequest_HEADERS,
	}
	if _, err := r.api.ListTimeSeries(ctx, req, noRetry).Next(); err != nil && !errors.Is(err, iterator.Done) {
		return fmt.Errorf("reading %s of subscription %s from Cloud Monitoring: %w", undeliveredMetric, r.subscriptionID, err)
	}
	return nil
}

// emulatorIAM reports whether err is an emulator's answer to TestIamPermissions: it has no IAM.
func (d *driver) emulatorIAM(err error) bool {
	return d.pre.emulator && status.Code(err) == codes.Unimplemented
}

// missing is the error of a permission TestIamPermissions did not return.
func missing(perm, resource string) error {
	return status.Errorf(codes.PermissionDenied, "the caller lacks %s on %s (TestIamPermissions)", perm, resource)
}

// subscriptionFix is what to do about a failed call: grant when a permission is missing, else by the
// kind of failure.
func (d *driver) subscriptionFix(err error, grant string) string {
	if errors.Is(err, errDetached) {
		return fixDetached
	}
	if s, ok := status.FromError(err); ok && s.Code() == codes.Unauthenticated {
		return fixCredentials
	}
	switch errorCode(err) {
	case source.PermissionDenied:
		return grant
	case source.NotFound:
		return "create subscription " + d.name + ", or fix PUBSUB_SUBSCRIPTION / PUBSUB_PROJECT"
	case source.Unavailable, source.DeadlineExceeded:
		return fixNetwork
	default:
		return "see the error"
	}
}
