package rabbitmq

import (
	"errors"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/numaflow-connectors/sources/common/source"
)

// Errors of the driver's own.
var (
	// errStaleTag: an answer for a delivery the channel no longer holds (dropped, see ack.go).
	errStaleTag = errors.New("stale delivery tag")
	// errNotConfirmed: the broker nacked a dead-letter publish.
	errNotConfirmed = errors.New("publish not confirmed by the broker")
	// errReturned: a dead-letter publish was unroutable (basic.return).
	errReturned = errors.New("publish returned as unroutable")
	// errBlocked: the broker blocks the dead-letter connection (a resource alarm); retry later.
	errBlocked = errors.New("connection blocked by the broker (resource alarm)")
	// errCancelled: the broker cancelled the consumer (its queue was deleted, or a cluster node that
	// hosted it is gone).
	errCancelled = errors.New("cancelled by the broker")
)

// replyCodes classifies AMQP reply codes (connection.close and channel.close).
var replyCodes = map[int]source.Code{
	amqp.NotFound:           source.NotFound,
	amqp.AccessRefused:      source.PermissionDenied,
	amqp.NotAllowed:         source.PermissionDenied,
	amqp.ResourceLocked:     source.FailedPrecondition, // an exclusive consumer holds the queue
	amqp.PreconditionFailed: source.FailedPrecondition,
	amqp.ContentTooLarge:    source.FailedPrecondition,
	amqp.NoRoute:            source.FailedPrecondition,
	amqp.NoConsumers:        source.FailedPrecondition,
	amqp.ConnectionForced:   source.Unavailable, // rabbitmqctl close_connection, a node stopping
	amqp.ResourceError:      source.Throttled,
	amqp.ChannelError:       source.Unavailable,
	amqp.InternalError:      source.Unavailable,
	amqp.FrameError:         source.Unavailable,
	amqp.SyntaxError:        source.InvalidArgument,
	amqp.CommandInvalid:     source.InvalidArgument,
	amqp.UnexpectedFrame:    source.Unavailable,
	amqp.NotImplemented:     source.InvalidArgument,
	amqp.InvalidPath:        source.NotFound, // the virtual host does not exist
}

// errorCode classifies an error of the driver; Unknown leaves it to source.NetworkCode.
func errorCode(err error) source.Code {
	var ae *amqp.Error
	switch {
	case errors.Is(err, errStaleTag):
		return source.InvalidArgument
	case errors.Is(err, errNotConfirmed), errors.Is(err, errLost), errors.Is(err, errCancelled), errors.Is(err, amqp.ErrClosed):
		return source.Unavailable
	case errors.Is(err, errBlocked):
		return source.Throttled
	case errors.Is(err, errReturned):
		return source.FailedPrecondition
	case errors.As(err, &ae):
		if c, ok := replyCodes[ae.Code]; ok {
			return c
		}
		return source.Unavailable
	}
	return source.Unknown
}

// isClosed reports an error of closing what is already closed.
func isClosed(err error) bool { return errors.Is(err, amqp.ErrClosed) }
