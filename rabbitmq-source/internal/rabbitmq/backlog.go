package rabbitmq

import (
	"context"
	"fmt"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/numaflow-connectors/sources/common/source"
)

// queueDepth declares the queue passively on a channel of its own (a missing queue closes it) and
// returns its ready messages. It runs on the probe link, which never publishes: a resource alarm
// blocks publishing connections only, so Pending and Check keep working through one.
func (d *driver) queueDepth(ctx context.Context) (int64, error) {
	conn, err := d.take(ctx, d.probe)
	if err != nil {
		return 0, err
	}
	defer d.probe.release()
	var q amqp.Queue
	aborted, err := guarded(ctx, conn, func() error {
		ch, err := conn.Channel()
		if err != nil {
			return fmt.Errorf("opening a channel for queue %s: %w", d.queue, err)
		}
		defer ch.Close()
		q, err = ch.QueueDeclarePassive(d.queue, false, false, false, false, nil)
		if err != nil {
			return fmt.Errorf("declaring queue %s passively: %w", d.queue, err)
		}
		return nil
	})
	if err != nil {
		if aborted || errorCode(err) != source.NotFound { // a missing queue closes the channel only
			d.drop(ctx, d.probe, conn)
		}
		return 0, err
	}
	return int64(q.Messages), nil
}

// backlog is the queue's ready messages plus this replica's unanswered deliveries.
func (d *driver) backlog(ctx context.Context) (int64, error) {
	n, err := d.queueDepth(ctx)
	if err != nil {
		return -1, err
	}
	d.mu.Lock()
	if d.sess != nil {
		n += int64(len(d.sess.live))
	}
	d.mu.Unlock()
	return n, nil
}
