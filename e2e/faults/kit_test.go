package faults

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	pb "cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"github.com/numaflow-connectors/sources/pubsub-source/pubsubtest"
	"github.com/numaflow-connectors/sources/sqs-source/sqstest"
)

// kit is what the fault tests need to know about one connector.
type kit struct {
	name string // connector directory, e.g. "sqs-source"
	// lease is the connector's lease in these tests (visibility timeout, ack deadline, claim idle):
	// short, so crash recovery is quick.
	lease time.Duration
	// newResource creates a fresh queue, subscription or stream+group (and a broker when the kit
	// needs one per test).
	newResource func(t *testing.T, o resOptions) resource
	// noRestart, when set, says why the broker cannot be restarted without losing its data.
	noRestart string
	// handOff, when set, says why another replica never gets what one replica holds (MQTT: a message
	// belongs to one replica's session). The SIGTERM test then restarts the same replica instead of
	// starting another, and the tests of a survivor taking over are skipped.
	handOff string
	// releaseWithin is how soon after SIGTERM another replica must have the messages the stopped one
	// held, for a lease (default lease/3: at once, not after the lease).
	releaseWithin func(lease time.Duration) time.Duration
	// known lists checks this connector is known to fail, by check name, with the reason (a reported
	// bug). A known failure is logged as KNOWN ISSUE instead of failing the test, unless FAULTS_STRICT=1.
	known map[string]string
}

// knownIssues merges the adapter's known issues with a connector's own.
func knownIssues(own map[string]string) map[string]string {
	m := map[string]string{}
	for k, v := range own {
		m[k] = v
	}
	return m
}

// strict makes known issues fail like any other check (FAULTS_STRICT=1).
var strict = os.Getenv("FAULTS_STRICT") == "1"

// check reports a failed check: an error, or a KNOWN ISSUE log line when the kit lists the check.
func (k *kit) check(t *testing.T, name string, ok bool, format string, args ...any) {
	t.Helper()
	if ok {
		return
	}
	msg := fmt.Sprintf(format, args...)
	if why, known := k.known[name]; known && !strict {
		t.Logf("KNOWN ISSUE (%s, check %q): %s\n    %s", k.name, name, msg, why)
		return
	}
	t.Error(msg)
}

// resOptions tune one resource.
type resOptions struct {
	lease      time.Duration // 0: the kit's lease
	persistent bool          // the broker must survive a restart with its data (Redis AOF)
}

// resource is one queue, subscription or stream+group that a test drains.
type resource interface {
	// upstream is the broker's host:port (what a proxy forwards to).
	upstream() string
	// env configures the connector to read this resource through addr (the broker's host:port, or a
	// proxy's).
	env(addr string) []string
	// publish adds the payloads to the resource.
	publish(t *testing.T, payloads [][]byte)
	// restartBroker kills the broker (kill -9; RabbitMQ is stopped cleanly, see its kit) and starts it
	// again on the same port; down is called while it is down. Only for kits without noRestart.
	restartBroker(t *testing.T, down func())
}

// kits returns every connector whose binary was built.
func kits() []*kit {
	all := []*kit{sqsKit(), pubsubKit(), rabbitKit(), mqttKit()}
	if k := redisKit(); k != nil {
		all = append(all, k)
	}
	var out []*kit
	for _, k := range all {
		if binaries[k.name] != "" {
			out = append(out, k)
		}
	}
	return out
}

// forEachKit runs f as one parallel subtest per connector.
func forEachKit(t *testing.T, f func(t *testing.T, k *kit)) {
	t.Helper()
	ks := kits()
	if len(ks) == 0 {
		t.Fatal("no connector binary was built")
	}
	for _, k := range ks {
		t.Run(k.name, func(t *testing.T) {
			t.Parallel()
			f(t, k)
		})
	}
}

func (k *kit) resource(t *testing.T, o resOptions) resource {
	t.Helper()
	if o.lease == 0 {
		o.lease = k.lease
	}
	return k.newResource(t, o)
}

// ---- SQS (fauxqs, one per test: its single Node.js event loop is the bottleneck) ----

func sqsKit() *kit {
	return &kit{
		name:  "sqs-source",
		lease: 4 * time.Second,
		newResource: func(t *testing.T, o resOptions) resource {
			srv := sqstest.Start(t)
			url := srv.CreateQueue(t, sqstest.QueueName(t), nil)
			return &sqsResource{srv: srv, url: url, lease: o.lease}
		},
		noRestart: "fauxqs keeps queues in memory only: a restarted broker has lost the queue and its messages",
	}
}

type sqsResource struct {
	srv   *sqstest.Server
	url   string
	lease time.Duration
}

func (r *sqsResource) upstream() string { return strings.TrimPrefix(r.srv.Endpoint, "http://") }

func (r *sqsResource) env(addr string) []string {
	var env []string
	for _, kv := range r.srv.Env() {
		if strings.HasPrefix(kv, "AWS_ENDPOINT_URL_SQS=") {
			kv = "AWS_ENDPOINT_URL_SQS=http://" + addr
		}
		env = append(env, kv)
	}
	return append(env, "SQS_QUEUE_URL="+r.url, "SQS_VISIBILITY_TIMEOUT="+r.lease.String())
}

func (r *sqsResource) publish(t *testing.T, payloads [][]byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := r.srv.Client()
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	next := make(chan int)
	for range 8 {
		wg.Go(func() {
			for lo := range next {
				hi := min(lo+10, len(payloads))
				entries := make([]types.SendMessageBatchRequestEntry, 0, hi-lo)
				for i := lo; i < hi; i++ {
					entries = append(entries, types.SendMessageBatchRequestEntry{Id: aws.String(strconv.Itoa(i)), MessageBody: aws.String(string(payloads[i]))})
				}
				out, err := c.SendMessageBatch(ctx, &sqs.SendMessageBatchInput{QueueUrl: &r.url, Entries: entries})
				if err == nil && len(out.Failed) > 0 {
					err = fmt.Errorf("%d entries failed, first: %s", len(out.Failed), aws.ToString(out.Failed[0].Message))
				}
				if err != nil {
					select {
					case errs <- err:
					default:
					}
					return
				}
			}
		})
	}
	for lo := 0; lo < len(payloads); lo += 10 {
		select {
		case next <- lo:
		case err := <-errs:
			close(next)
			wg.Wait()
			t.Fatalf("sending to %s: %v", r.url, err)
		}
	}
	close(next)
	wg.Wait()
	select {
	case err := <-errs:
		t.Fatalf("sending to %s: %v", r.url, err)
	default:
	}
}

func (r *sqsResource) restartBroker(t *testing.T, _ func()) { t.Fatal("fauxqs cannot be restarted") }

// ---- Pub/Sub (the Java emulator, shared by the package; pstest when it is not installed) ----

func pubsubKit() *kit {
	return &kit{
		name:  "pubsub-source",
		lease: 10 * time.Second, // Pub/Sub's minimum ack deadline
		newResource: func(t *testing.T, o resOptions) resource {
			emu := pubsubtest.Shared(t)
			topic := emu.CreateTopic(t, "faults")
			sub := emu.CreateSubscription(t, "faults", pubsubtest.Subscription{Topic: topic, AckDeadline: o.lease})
			return &pubsubResource{emu: emu, topic: topic, sub: sub, lease: o.lease}
		},
		noRestart: "the Pub/Sub emulator keeps topics and subscriptions in memory only: a restarted emulator has lost them",
		known:     knownIssues(nil),
	}
}

type pubsubResource struct {
	emu        *pubsubtest.Emulator
	topic, sub string
	lease      time.Duration
}

func (r *pubsubResource) upstream() string { return r.emu.Host }

func (r *pubsubResource) env(addr string) []string {
	return []string{"PUBSUB_EMULATOR_HOST=" + addr, "PUBSUB_SUBSCRIPTION=" + r.sub, "PUBSUB_ACK_DEADLINE=" + r.lease.String()}
}

func (r *pubsubResource) publish(t *testing.T, payloads [][]byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	msgs := make([]*pb.PubsubMessage, len(payloads))
	for i, p := range payloads {
		msgs[i] = &pb.PubsubMessage{Data: p}
	}
	if _, err := r.emu.Publish(ctx, r.topic, msgs...); err != nil {
		t.Fatal(err)
	}
}

func (r *pubsubResource) restartBroker(t *testing.T, _ func()) {
	t.Fatal("the Pub/Sub emulator cannot be restarted")
}
