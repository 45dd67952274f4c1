package mqttsource

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"sync/atomic"
	"time"

	"github.com/eclipse/paho.golang/autopaho"
	"github.com/eclipse/paho.golang/paho"

	"github.com/numaflow-connectors/sources/common/config"
	"github.com/numaflow-connectors/sources/common/server"
	"github.com/numaflow-connectors/sources/common/source"
)

// Timing of the connection the driver keeps.
const (
	// ackFlushInterval is how often paho sends the acknowledgements released in order.
	ackFlushInterval = 10 * time.Millisecond
	// readAheadShare: the driver reads ahead of the adapter at most this share of PREFETCH_BYTES
	// (and at least minReadAhead).
	readAheadShare = 4
	minReadAhead   = 1 << 20
)

// Open builds the driver and starts connecting in the background. It makes no network call itself
// that can fail: a broker that is down shows in Receive's errors (the adapter retries) and in Check.
func Open(ctx context.Context, cfg *Config, env *server.Env) (source.Driver, error) {
	filters, _ := parseTopics(cfg.Topics)
	u, err := url.Parse(cfg.URL)
	if err != nil {
		return nil, fmt.Errorf("parsing MQTT_URL: the URL is not valid")
	}
	tc, err := cfg.tlsConfig()
	if err != nil {
		return nil, fmt.Errorf("loading TLS settings: %w", err)
	}
	// ValidatePlatform checked the same names, unless the caller skipped it.
	names := numaflowNames(env.Platform)
	for _, f := range []struct{ name, value string }{{"MQTT_SHARE_GROUP", cfg.ShareGroup}, {"MQTT_CLIENT_ID", cfg.ClientID}} {
		if p := names.unfilled(f.value); p != "" {
			return nil, config.Problem(f.name, "%s", p)
		}
	}
	clientID := names.fill(cfg.ClientID, env.Platform.Replica)
	group := names.fill(cfg.ShareGroup, env.Platform.Replica)
	log := env.Log.With("client_id", clientID)
	for _, p := range partlyOverlapping(filters) {
		log.Warn("topic filters overlap: the broker delivers a message that matches both twice, and numa reads it twice (two offsets)",
			"filters", p[0]+","+p[1])
	}
	d := newDriver(cfg, clientID, group, filters, env.Budget, log)
	rm := cfg.receiveMaximum(env.Budget)
	expiry := uint32(cfg.SessionExpiry / time.Second)

	// The connection manager lives until Close; it must not end with Open's ctx.
	life, stop := context.WithCancel(context.WithoutCancel(ctx))
	pc := autopaho.ClientConfig{
		ServerUrls:                    []*url.URL{u},
		TlsCfg:                        tc,
		KeepAlive:                     uint16(cfg.KeepAlive / time.Second),
		CleanStartOnInitialConnection: false, // resume the session: the broker sends what we did not acknowledge
		SessionExpiryInterval:         expiry,
		ReconnectBackoff:              d.reconnectBackoff(cfg.ReconnectMax),
		ConnectTimeout:                cfg.ConnectTimeout,
		ConnectUsername:               cfg.Username,
		ConnectPassword:               []byte(cfg.Password.Reveal()),
		ConnectPacketBuilder: func(cp *paho.Connect, _ *url.URL) (*paho.Connect, error) {
			if cp.Properties == nil {
				cp.Properties = &paho.ConnectProperties{}
			}
			cp.Properties.ReceiveMaximum = &rm
			cp.Properties.SessionExpiryInterval = &expiry
			return cp, nil
		},
		OnConnectionUp: func(cm *autopaho.ConnectionManager, ca *paho.Connack) {
			d.connectionUp(ca.SessionPresent)
			if got, capped := grantedExpiry(ca, expiry); capped {
				log.Warn("the broker keeps this replica's session for less than MQTT_SESSION_EXPIRY: the messages of a replica away longer than that are lost",
					"broker_session_expiry", (time.Duration(got) * time.Second).String(), "session_expiry", cfg.SessionExpiry.String())
			}
			d.goLocked(func() { d.subscribe(life, cm) }) // d.api may not be set yet
		},
		OnConnectionDown: func() bool { return d.connectionDown() },
		OnConnectError:   d.connectError,
		AttemptConnection: func(ctx context.Context, c autopaho.ClientConfig, u *url.URL) (net.Conn, error) {
			return d.dial(ctx, c, u)
		},
		ClientConfig: paho.ClientConfig{
			ClientID:                   clientID,
			EnableManualAcknowledgment: true,
			SendAcksInterval:           ackFlushInterval,
			OnPublishReceived:          []func(paho.PublishReceived) (bool, error){d.onPublish},
			OnClientError:              d.clientError,
			PingHandler:                &pinger{d: d},
		},
	}
	if u.Scheme == "ws" || u.Scheme == "wss" {
		pc.AttemptConnection = nil // autopaho's WebSocket dialer: bounded by Receive Maximum only (README)
	}
	cm, err := autopaho.NewConnection(life, pc)
	if err != nil {
		stop()
		return nil, fmt.Errorf("starting the connection to %s: %w", u.Redacted(), err)
	}
	d.api, d.stop = cm, stop
	log.Info("mqtt source configured", "broker", u.Redacted(), "filters", filters, "share_group", group,
		"qos", cfg.QoS, "receive_maximum", rm, "session_expiry", cfg.SessionExpiry.String(), "tls", tc != nil,
		"dead_letter_topic", cfg.DeadLetterTopic, "id_property", cfg.IDProperty)
	switch {
	case cfg.DeadLetterTopic != "":
	case env.Fallback == source.FallbackNack:
		// Measured by e2e/badinput TestMQTTPoisonAndOversize: one oversize message stopped the source
		// after about 2,000 more.
		log.Warn("no MQTT_DEAD_LETTER_TOPIC and DEAD_LETTER_FALLBACK=nack: a message over MAX_MESSAGE_BYTES or "+
			"past numa's max deliveries is kept and redelivered here, and since MQTT acknowledges in order it "+
			"holds back every later acknowledgement: the source stops receiving once the broker's window of "+
			"unacknowledged messages is full. Set MQTT_DEAD_LETTER_TOPIC, or leave DEAD_LETTER_FALLBACK "+
			"unset (drop) to acknowledge such messages and lose them",
			"receive_maximum", rm)
	default:
		log.Info("no MQTT_DEAD_LETTER_TOPIC: a message over MAX_MESSAGE_BYTES or past numa's max deliveries is " +
			"acknowledged and dropped (logged, counted in dropped_total); set MQTT_DEAD_LETTER_TOPIC to keep a copy")
	}
	return d, nil
}

// newDriver wires a driver; it makes no call. api and stop are set by Open (or a test).
func newDriver(cfg *Config, clientID, group string, filters []string, b server.Budget, log *slog.Logger) *driver {
	rm := cfg.receiveMaximum(b)
	// What waits for Receive is read ahead of the adapter's own budget: a quarter of it keeps the
	// adapter fed without adding much to the memory the pod needs.
	maxBytes := b.Bytes / readAheadShare
	if maxBytes <= 0 {
		maxBytes = source.DefaultPrefetchBytes / readAheadShare
	}
	maxBytes = max(maxBytes, minReadAhead)
	return &driver{
		log:          log,
		clientID:     clientID,
		filters:      filters,
		group:        group,
		qos:          byte(cfg.QoS),
		skipRetained: cfg.SkipRetained,
		dlq:          cfg.DeadLetterTopic,
		mapper:       mapper{idProperty: cfg.IDProperty, timeProperty: cfg.EventTimeProperty, prefix: clientID + ":" + nonce() + ":", seq: new(atomic.Uint64)},
		maxQueue:     int(rm),
		maxBytes:     maxBytes,
		now:          time.Now,
		stop:         func() {},
		held:         map[string][]*delivery{},
		wake:         make(chan struct{}),
	}
}

// nonce is a random string that makes this process's delivery ids unique across restarts.
func nonce() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
