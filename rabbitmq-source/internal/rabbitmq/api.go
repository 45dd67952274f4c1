package rabbitmq

import (
	"context"
	"net"

	amqp "github.com/rabbitmq/amqp091-go"
)

// amqpConn lists the connection calls the driver makes; *amqp.Connection satisfies it through
// realConn. Unit tests use fakes.
type amqpConn interface {
	Channel() (amqpChannel, error)
	NotifyClose(receiver chan *amqp.Error) chan *amqp.Error
	// NotifyBlocked reports connection.blocked and connection.unblocked: during a resource alarm the
	// broker stops reading a connection that publishes, so nothing sent on it is answered (not even
	// connection.close) until the alarm clears.
	NotifyBlocked(receiver chan amqp.Blocking) chan amqp.Blocking
	// Close sends connection.close and waits for close-ok, without a deadline.
	Close() error
	// Abort closes the connection's socket at once: every call waiting on the connection returns, and
	// the broker requeues what the connection held. For a connection that does not answer.
	Abort()
}

// amqpChannel lists the channel calls the driver makes. *amqp.Channel satisfies it.
type amqpChannel interface {
	Qos(prefetchCount, prefetchSize int, global bool) error
	Consume(queue, consumer string, autoAck, exclusive, noLocal, noWait bool, args amqp.Table) (<-chan amqp.Delivery, error)
	Cancel(consumer string, noWait bool) error
	Ack(tag uint64, multiple bool) error
	Nack(tag uint64, multiple, requeue bool) error
	QueueDeclarePassive(name string, durable, autoDelete, exclusive, noWait bool, args amqp.Table) (amqp.Queue, error)
	ExchangeDeclarePassive(name, kind string, durable, autoDelete, internal, noWait bool, args amqp.Table) error
	Confirm(noWait bool) error
	PublishWithDeferredConfirmWithContext(ctx context.Context, exchange, key string, mandatory, immediate bool, msg amqp.Publishing) (*amqp.DeferredConfirmation, error)
	NotifyClose(receiver chan *amqp.Error) chan *amqp.Error
	NotifyCancel(c chan string) chan string
	NotifyReturn(c chan amqp.Return) chan amqp.Return
	Close() error
}

var _ amqpChannel = (*amqp.Channel)(nil)

// dialFunc opens a connection; the real one is dialer.dial.
type dialFunc func(ctx context.Context) (amqpConn, error)

// realConn adapts *amqp.Connection (whose Channel returns the concrete type) to amqpConn, with the
// socket it was dialled on (raw) for Abort.
type realConn struct {
	*amqp.Connection
	raw net.Conn
}

var _ amqpConn = realConn{}

func (c realConn) Abort() {
	if c.raw != nil {
		_ = c.raw.Close()
	}
}

func (c realConn) Channel() (amqpChannel, error) {
	ch, err := c.Connection.Channel()
	if err != nil {
		return nil, err
	}
	return ch, nil
}
