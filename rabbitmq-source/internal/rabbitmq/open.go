package rabbitmq

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/numaflow-connectors/sources/common/server"
	"github.com/numaflow-connectors/sources/common/source"
)

// dialTimeout bounds the TCP, TLS and AMQP handshakes of one connection attempt.
const dialTimeout = 10 * time.Second

// Open builds the driver. It makes no network call: the first Receive connects (and reconnects after
// every loss), and Check reports a missing queue or refused access at start.
func Open(_ context.Context, cfg *Config, env *server.Env) (source.Driver, error) {
	tc, err := cfg.tlsConfig()
	if err != nil {
		return nil, fmt.Errorf("loading TLS settings: %w", err)
	}
	tag := consumerTag(cfg, env)
	log := env.Log.With("queue", cfg.Queue, "consumer_tag", tag)
	log.Info("rabbitmq source configured", "hold_limit", cfg.HoldLimit().String(),
		"dead_letter_exchange", cfg.DeadLetterExchange, "dead_letter_reject", cfg.DeadLetterReject, "tls", tc != nil)
	dial := func(ctx context.Context) (amqpConn, error) {
		var raw net.Conn // the socket, kept for Abort (amqp091-go closes it only after a close-ok)
		c, err := amqp.DialConfig(cfg.URL.Reveal(), amqp.Config{
			Heartbeat: cfg.Heartbeat,
			// A copy per dial: amqp091-go writes the URL's host into ServerName when it is empty, and
			// the session, probe and dead-letter connections dial concurrently (a data race on one
			// shared config). Clone of nil is nil.
			TLSClientConfig: tc.Clone(),
			Properties:      amqp.Table{"connection_name": tag, "product": "numaflow rabbitmq-source"},
			Dial: func(network, addr string) (net.Conn, error) {
				dctx, cancel := context.WithTimeout(ctx, dialTimeout)
				defer cancel()
				conn, err := (&net.Dialer{}).DialContext(dctx, network, addr)
				if err != nil {
					return nil, err
				}
				raw = conn
				// The handshakes must finish in time; amqp091-go clears the deadline afterwards.
				return conn, conn.SetDeadline(time.Now().Add(dialTimeout))
			},
		})
		if err != nil {
			return nil, err
		}
		return realConn{Connection: c, raw: raw}, nil
	}
	return newDriver(cfg, tag, env.Budget, dial, log), nil
}

// newDriver wires a driver over dial, its prefetch window sized from the adapter's budget b; it makes
// no call.
func newDriver(cfg *Config, tag string, b server.Budget, dial dialFunc, log *slog.Logger) *driver {
	var r [6]byte
	_, _ = rand.Read(r[:])
	return &driver{
		queue:         cfg.Queue,
		tag:           tag,
		holdLimit:     cfg.HoldLimit(),
		reconnect:     cfg.ReconnectMax,
		dlx:           cfg.DeadLetterExchange,
		dlxKey:        cfg.DeadLetterRoutingKey,
		dlReject:      cfg.DeadLetterReject,
		dial:          dial,
		log:           log,
		now:           time.Now,
		idPrefix:      "rmq-" + hex.EncodeToString(r[:]),
		prefetch:      max(b.Messages, 1),
		prefetchBytes: max(b.Bytes, 1),
		maxMessage:    max(b.MaxMessageBytes, 0),
		resize:        make(chan struct{}, 1),
		retry:         make(chan struct{}, 1),
		stopRecv:      make(chan struct{}),
		changed:       make(chan struct{}),
		logged:        map[uint64]bool{},
		ackedIDs:      newIDMemory[bool](),
		unread:        newIDMemory[int](),
		probe:         newLink(false),
		pub:           newLink(true),
	}
}

// consumerTag is RABBITMQ_CONSUMER_TAG, else the pod name, else rabbitmq-source-<replica>.
func consumerTag(cfg *Config, env *server.Env) string {
	switch {
	case cfg.ConsumerTag != "":
		return cfg.ConsumerTag
	case env.Platform.Pod != "":
		return env.Platform.Pod
	}
	return "rabbitmq-source-" + strconv.Itoa(env.Platform.Replica)
}
