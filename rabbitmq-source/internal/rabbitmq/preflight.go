package rabbitmq

import (
	"context"
	"errors"
	"fmt"

	"github.com/numaflow-connectors/sources/common/source"
)

// Preflight checks, without receiving or changing a message, what the source will need: a connection
// (address, TLS, credentials, virtual host), the queue, and the dead-letter exchange when one is set.
// AMQP 0-9-1 cannot tell whether the user may read the queue without consuming from it, so that
// permission shows at the first receive (access_refused).
func (d *driver) Preflight(ctx context.Context) []source.Check {
	connect := source.Check{Name: "amqp: connect (address, TLS, credentials, virtual host)"}
	queue := source.Check{Name: "amqp: queue " + d.queue + " exists (passive queue.declare)"}
	checks := []*source.Check{&connect, &queue}
	var dlx *source.Check
	if d.dlx != "" {
		dlx = &source.Check{Name: "amqp: dead-letter exchange " + d.dlx + " exists (passive exchange.declare)"}
		checks = append(checks, dlx)
	}
	out := func() []source.Check {
		res := make([]source.Check, len(checks))
		for i, c := range checks {
			res[i] = *c
		}
		return res
	}
	skipAll := func(why string, cs ...*source.Check) {
		for _, c := range cs {
			if c != nil {
				c.Skipped = why
			}
		}
	}

	conn, err := d.dialer()(ctx)
	if err != nil {
		connect.Err = fmt.Errorf("connecting for queue %s: %w", d.queue, err)
		connect.Fix = "check RABBITMQ_URL (host, port, user, password, virtual host; amqps:// for TLS) and RABBITMQ_TLS_*, and that the broker is reachable from the pod"
		skipAll("no connection", &queue, dlx)
		return out()
	}
	defer conn.Close()

	// Each passive declare on a channel of its own: a missing resource closes the channel (404).
	passive := func(c *source.Check, declare func(amqpChannel) error, fix string) {
		ch, err := conn.Channel()
		if err == nil {
			err = declare(ch)
			_ = ch.Close()
		}
		if err != nil {
			c.Err, c.Fix = err, fix
			if errors.Is(err, errLost) || errorCode(err) == source.Unavailable {
				c.Fix = "the connection failed during the check: retry, and check the broker's health"
			}
		}
	}
	passive(&queue, func(ch amqpChannel) error {
		_, err := ch.QueueDeclarePassive(d.queue, false, false, false, false, nil)
		if err != nil {
			return fmt.Errorf("declaring queue %s passively: %w", d.queue, err)
		}
		return nil
	}, "declare the queue "+d.queue+" (classic or quorum) in RABBITMQ_URL's virtual host, or fix RABBITMQ_QUEUE: the source never declares it")
	if dlx != nil {
		passive(dlx, func(ch amqpChannel) error {
			if err := ch.ExchangeDeclarePassive(d.dlx, "", false, false, false, false, nil); err != nil {
				return fmt.Errorf("declaring exchange %s passively: %w", d.dlx, err)
			}
			return nil
		}, "declare the exchange "+d.dlx+" and bind a queue to it, or fix RABBITMQ_DEAD_LETTER_EXCHANGE")
	}
	return out()
}
