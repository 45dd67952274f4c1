package mqttsource

import (
	"context"
	"errors"
	"fmt"

	"github.com/eclipse/paho.golang/autopaho"
	"github.com/gorilla/websocket"

	"github.com/numaflow-connectors/sources/common/source"
)

// ReasonError is a refusal by the broker: a SUBACK or PUBACK reason code of 0x80 or more, or a
// dead letter's PUBACK 0x10 (no matching subscribers: the broker discarded it).
type ReasonError struct {
	Op     string // what was refused, as a gerund phrase: "subscribing to a/#"
	Code   byte
	Reason string // the broker's reason string, when it sent one
}

func (e *ReasonError) Error() string {
	msg := fmt.Sprintf("%s: refused by the broker with reason code 0x%02X", e.Op, e.Code)
	if e.Reason != "" {
		msg += ": " + e.Reason
	}
	return msg
}

// noMatchingSubscribers is PUBACK's reason code 0x10: accepted, but no subscription matched, so
// nobody will ever receive the message.
const noMatchingSubscribers = 0x10

// reasonCodes classifies MQTT 5 reason codes of CONNACK, SUBACK and PUBACK (section 2.4).
var reasonCodes = map[byte]source.Code{
	0x10: source.FailedPrecondition, // no matching subscribers (a dead letter: see deadLetter)
	0x80: source.Unknown,            // unspecified error
	0x81: source.InvalidArgument,    // malformed packet
	0x82: source.InvalidArgument,    // protocol error
	0x83: source.FailedPrecondition, // implementation specific error
	0x84: source.FailedPrecondition, // unsupported protocol version
	0x85: source.InvalidArgument,    // client identifier not valid
	0x86: source.PermissionDenied,   // bad user name or password
	0x87: source.PermissionDenied,   // not authorized
	0x88: source.Unavailable,        // server unavailable
	0x89: source.Unavailable,        // server busy
	0x8A: source.PermissionDenied,   // banned
	0x8C: source.PermissionDenied,   // bad authentication method
	0x8F: source.InvalidArgument,    // topic filter invalid
	0x90: source.InvalidArgument,    // topic name invalid
	0x95: source.FailedPrecondition, // packet too large
	0x97: source.Throttled,          // quota exceeded
	0x99: source.InvalidArgument,    // payload format invalid
	0x9A: source.FailedPrecondition, // retain not supported
	0x9B: source.FailedPrecondition, // QoS not supported
	0x9C: source.Unavailable,        // use another server
	0x9D: source.Unavailable,        // server moved
	0x9E: source.FailedPrecondition, // shared subscriptions not supported
	0x9F: source.Throttled,          // connection rate exceeded
	0xA1: source.FailedPrecondition, // subscription identifiers not supported
	0xA2: source.FailedPrecondition, // wildcard subscriptions not supported
}

// errorCode classifies err: broker reason codes by table, then the driver's and paho's own errors.
// Transport failures (TLS, network) are left Unknown: the adapter classifies those with
// source.NetworkCode.
func errorCode(err error) source.Code {
	var (
		reason  *ReasonError
		connack *autopaho.ConnackError
		wsClose *websocket.CloseError
	)
	switch {
	case err == nil:
		return source.Unknown
	case errors.As(err, &reason):
		return reasonCodes[reason.Code]
	case errors.As(err, &connack):
		return reasonCodes[connack.ReasonCode]
	case errors.Is(err, errClosed), errors.Is(err, context.Canceled):
		return source.Canceled
	case errors.Is(err, errDown), errors.Is(err, autopaho.ConnectionDownError),
		errors.As(err, &wsClose): // a WebSocket closed by the peer or the network (ws://, wss://)
		return source.Unavailable
	}
	if c, ok := source.NetworkCode(err); ok {
		return c
	}
	if errors.Is(err, errConnLost) { // e.g. the pinger's "no packet from the broker" on a silent network
		return source.Unavailable
	}
	return source.Unknown
}
