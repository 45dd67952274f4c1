package mqttsource

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/url"

	"github.com/eclipse/paho.golang/paho"

	"github.com/numaflow-connectors/sources/common/server"
	"github.com/numaflow-connectors/sources/common/source"
)

// Preflight is `mqtt-source --check` (server.App.Preflight). Opening the driver would connect with the
// replica's client id (taking its connection over, if it runs) and leave a persistent session in the
// share group, into which the broker keeps routing messages that nobody reads until the session
// expires. So the check makes its own throwaway connection instead: a client id of its own, clean
// start, no session expiry, and subscriptions in a share group of its own at QoS 0 with retained
// messages off, dropped at once. Nothing reaches the connector's session or share group, nothing is
// acknowledged. Publishing to MQTT_DEAD_LETTER_TOPIC cannot be checked without publishing, so it is
// not (the README says so).
func Preflight(ctx context.Context, cfg *Config, env *server.Env) []source.Check {
	filters, _ := parseTopics(cfg.Topics)
	group := fill(cfg.ShareGroup, env.Platform)
	subName := func(f string) string {
		if group != "" {
			return "SUBSCRIBE " + f + " (shared)"
		}
		return "SUBSCRIBE " + f
	}
	u, err := url.Parse(cfg.URL)
	connect := source.Check{Name: "broker reachable, credentials accepted (CONNECT as a throwaway client)"}
	skip := func(why string) []source.Check {
		out := []source.Check{connect}
		for _, f := range filters {
			out = append(out, source.Check{Name: subName(f), Skipped: why})
		}
		return out
	}
	if err != nil {
		connect.Err, connect.Fix = errors.New("MQTT_URL is not a valid URL"), "fix MQTT_URL"
		return skip("no connection")
	}
	if u.Scheme == "ws" || u.Scheme == "wss" {
		connect.Skipped = "--check does not dial WebSocket URLs; the connector reports a refusal as not ready"
		return skip("no connection")
	}
	tc, err := cfg.tlsConfig()
	if err != nil {
		connect.Err, connect.Fix = err, "fix the MQTT_TLS_* files"
		return skip("no connection")
	}
	conn, err := preflightDial(ctx, cfg, u, tc)
	if err != nil {
		connect.Err, connect.Fix = err, preflightFix(err, "")
		return skip("the broker is not reachable")
	}
	id := fill(cfg.ClientID, env.Platform) + "-check-" + nonce()
	c := paho.NewClient(paho.ClientConfig{Conn: conn, ClientID: id})
	zero := uint32(0)
	ca, err := c.Connect(ctx, &paho.Connect{
		ClientID: id, CleanStart: true, KeepAlive: 30,
		Username: cfg.Username, UsernameFlag: cfg.Username != "",
		Password: []byte(cfg.Password.Reveal()), PasswordFlag: cfg.Password.Reveal() != "",
		Properties: &paho.ConnectProperties{SessionExpiryInterval: &zero},
	})
	if ca != nil && ca.ReasonCode >= 0x80 {
		reason := ""
		if ca.Properties != nil {
			reason = ca.Properties.ReasonString
		}
		err = &ReasonError{Op: "connecting", Code: ca.ReasonCode, Reason: reason}
	}
	if err != nil {
		_ = conn.Close()
		connect.Err, connect.Fix = err, preflightFix(err, "check MQTT_USERNAME and MQTT_PASSWORD, and the broker's listener settings")
		return skip("the connection was refused")
	}
	defer func() { _ = c.Disconnect(&paho.Disconnect{ReasonCode: 0}) }()
	checks := []source.Check{connect}

	own := ""
	if group != "" {
		own = group + "-check-" + nonce()
	}
	for _, f := range filters {
		topic := f
		if own != "" {
			topic = "$share/" + own + "/" + f
		}
		sa, err := c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: topic, QoS: 0, RetainHandling: 2}}})
		err = subscribeResult([]string{f}, sa, err)
		if err == nil {
			_, _ = c.Unsubscribe(ctx, &paho.Unsubscribe{Topics: []string{topic}})
		}
		checks = append(checks, source.Check{Name: subName(f), Err: err,
			Fix: preflightFix(err, fmt.Sprintf("allow the connector's user to subscribe to %s (mosquitto: `topic read %s` in its acl_file)", f, f))})
	}
	return checks
}

// preflightDial connects to the broker's TCP or TLS listener.
func preflightDial(ctx context.Context, cfg *Config, u *url.URL, tc *tls.Config) (net.Conn, error) {
	host := u.Host
	if u.Port() == "" {
		port := "1883"
		if u.Scheme == "mqtts" {
			port = "8883"
		}
		host = net.JoinHostPort(u.Hostname(), port)
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.ConnectTimeout)
	defer cancel()
	if u.Scheme == "mqtts" {
		d := tls.Dialer{Config: tc}
		return d.DialContext(ctx, "tcp", host)
	}
	var d net.Dialer
	return d.DialContext(ctx, "tcp", host)
}

// preflightFix is what to do about a failed check.
func preflightFix(err error, denied string) string {
	if err == nil {
		return ""
	}
	code := errorCode(err)
	if c, ok := source.NetworkCode(err); ok && code == source.Unknown {
		code = c
	}
	switch code {
	case source.PermissionDenied:
		if denied != "" {
			return denied
		}
		return "check the TLS settings (MQTT_TLS_*) and the broker's certificate"
	case source.Unavailable, source.DeadlineExceeded:
		return "check MQTT_URL and the network path from the pod"
	default:
		return "see the error"
	}
}
