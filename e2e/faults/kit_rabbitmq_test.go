package faults

import (
	"context"
	"strconv"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/numaflow-connectors/sources/rabbitmq-source/rabbitmqtest"
)

// rabbitKit: one RabbitMQ node shared by the package (a node takes 5-7 s to start), a fresh durable
// classic queue per resource; a node of its own for a restart. RabbitMQ has no lease: a dead consumer's
// connection closes (at once after kill -9, after two missed heartbeats of 1 s on a silent network) and
// the broker requeues what it held.
func rabbitKit() *kit {
	return &kit{
		name:  "rabbitmq-source",
		lease: 4 * time.Second,
		newResource: func(t *testing.T, o resOptions) resource {
			node := rabbitmqtest.Shared(t)
			if o.persistent {
				node = rabbitmqtest.Start(t, rabbitmqtest.Options{})
			}
			q := rabbitmqtest.Name(t)
			node.DeclareQueue(t, q, rabbitmqtest.Classic, nil)
			return &rabbitResource{node: node, queue: q}
		},
		releaseWithin: func(time.Duration) time.Duration { return 3 * time.Second },
		known:         knownIssues(nil),
	}
}

type rabbitResource struct {
	node  *rabbitmqtest.Node
	queue string
}

func (r *rabbitResource) upstream() string { return "127.0.0.1:" + strconv.Itoa(r.node.Port) }

func (r *rabbitResource) env(addr string) []string {
	return []string{"RABBITMQ_URL=amqp://" + rabbitmqtest.User + ":" + rabbitmqtest.Password + "@" + addr + "/",
		"RABBITMQ_QUEUE=" + r.queue, "RABBITMQ_HEARTBEAT=1s", "RABBITMQ_RECONNECT_MAX=1s"}
}

func (r *rabbitResource) publish(t *testing.T, payloads [][]byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := amqp.Dial(r.node.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for lo := 0; lo < len(payloads); lo += 1000 {
		msgs := make([]amqp.Publishing, 0, 1000)
		for i, p := range payloads[lo:min(lo+1000, len(payloads))] {
			msgs = append(msgs, amqp.Publishing{Body: p, MessageId: r.queue + "-" + strconv.Itoa(lo+i)})
		}
		if err := rabbitmqtest.PublishOn(ctx, c, "", r.queue, msgs...); err != nil {
			t.Fatalf("publishing to %s: %v", r.queue, err)
		}
	}
}

// restartBroker stops the node and starts it again on the same ports and directories after down has
// run. It stops it cleanly, not with kill -9: RabbitMQ 3.10 did not always recover from kill -9 here (a
// classic queue answered NOT_FOUND for minutes; a single-node quorum queue had no leader), and what the
// connector meets is the same either way: its connection closes, the broker is unreachable, then back
// with every unacked message requeued. It returns once the queue can be declared again.
func (r *rabbitResource) restartBroker(t *testing.T, down func()) {
	t.Helper()
	r.node.Shutdown(t)
	down()
	r.node.Restart(t)
	t.Logf("rabbitmq recovered queue %s %s after it accepted connections again", r.queue,
		secs(r.node.WaitForQueue(t, r.queue, 2*time.Minute)))
}
