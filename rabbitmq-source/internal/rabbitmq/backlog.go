package rabbitmq

import (
	"context"
	"fmt"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/numaflow-connectors/sources/common/source"
)

// admin is the driver's second connection, for passive declares (Backlog, Check) and dead-letter
// publishes, so neither ever closes the consuming channel.
type admin struct {
	conn amqpConn
	pubs amqpChannel // confirm-mode channel for dead letters; nil until needed or after a failure
	rets chan amqp.Return
}

// adminConn returns the admin connection, dialling it when there is none. Caller holds dlMu.
func (d *driver) adminConn(ctx context.Context) (*admin, error) {
	if d.pub != nil {
		return d.pub, nil
	}
	conn, err := d.dialer()(ctx)
	if err != nil {
		return nil, fmt.Errorf("connecting for queue %s: %w", d.queue, err)
	}
	d.pub = &admin{conn: conn}
	return d.pub, nil
}

// dropAdmin closes the admin connection after a failure; the next call dials again. Caller holds dlMu.
func (d *driver) dropAdmin() {
	if d.pub != nil {
		_ = d.pub.conn.Close()
		d.pub = nil
	}
}

// queueDepth declares the queue passively on a channel of its own (a missing queue closes it) and
// returns its ready messages.
func (d *driver) queueDepth(ctx context.Context) (int64, error) {
	d.dlMu.Lock()
	defer d.dlMu.Unlock()
	a, err := d.adminConn(ctx)
	if err != nil {
		return 0, err
	}
	ch, err := a.conn.Channel()
	if err != nil {
		d.dropAdmin()
		return 0, fmt.Errorf("opening a channel for queue %s: %w", d.queue, err)
	}
	defer ch.Close()
	q, err := ch.QueueDeclarePassive(d.queue, false, false, false, false, nil)
	if err != nil {
		if errorCode(err) != source.NotFound {
			d.dropAdmin()
		}
		return 0, fmt.Errorf("declaring queue %s passively: %w", d.queue, err)
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
