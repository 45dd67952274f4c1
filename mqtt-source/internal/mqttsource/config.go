// Package mqttsource is the MQTT 5 driver behind the mqtt-source connector: one persistent session per
// replica (clean start off, a session expiry), topic filters subscribed as shared subscriptions so the
// replicas split the load, manual acknowledgements sent in arrival order only when numa acks, the
// client's Receive Maximum set to the adapter's receive budget, and an optional dead-letter topic. The
// portable adapter in common/source does batching, retries, local redelivery of nacks and shutdown.
package mqttsource

import (
	"crypto/tls"
	"errors"
	"fmt"
	"math"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/numaflow-connectors/sources/common/config"
	"github.com/numaflow-connectors/sources/common/server"
)

// Limits the configuration is checked against.
const (
	maxSessionExpiry = time.Duration(math.MaxUint32) * time.Second
	maxKeepAlive     = time.Duration(math.MaxUint16) * time.Second
	maxReceiveMax    = math.MaxUint16
	maxMQTTString    = math.MaxUint16 // bytes of an MQTT UTF-8 string (a client id, a topic filter)
)

// Config is the mqtt-source configuration, read from environment variables.
type Config struct {
	URL            string        `env:"MQTT_URL,required" desc:"Broker URL: mqtt://host:1883, mqtts://host:8883 (TLS), ws://host/path or wss://host/path (WebSockets). Credentials go in MQTT_USERNAME and MQTT_PASSWORD, not in the URL."`
	Topics         string        `env:"MQTT_TOPICS,required" desc:"Comma-separated topic filters to subscribe to; + and # wildcards work (e.g. factory/+/temperature,alarms/#). A filter that another one covers is refused (the broker would send its messages once per filter); filters that overlap only in part (a/+ and +/b) are warned about at start."`
	ShareGroup     string        `env:"MQTT_SHARE_GROUP" envDefault:"<namespace>-<pipeline>-<vertex>" envKeepEmpty:"true" desc:"Shared subscription group: every filter is subscribed as $share/<group>/<filter>, so the replicas of the vertex split the messages. <namespace>, <pipeline>, <vertex> and <replica> are replaced from the NUMAFLOW_* variables; in a MonoVertex <pipeline> is its name and <vertex> is source. Outside Numaflow (no NUMAFLOW_POD) mqtt and source stand in for missing names, and an empty <namespace> is left out with its dash; inside Numaflow a placeholder without its variable is refused. No /, + or #. Set it empty to subscribe without sharing (every replica then gets every message)."`
	ClientID       string        `env:"MQTT_CLIENT_ID" envDefault:"<namespace>-<pipeline>-<vertex>-<replica>" desc:"Client identifier, which names the persistent session: it must be stable per replica and unique across replicas and across every source of the broker, so a restarted replica resumes its session. Placeholders as in MQTT_SHARE_GROUP. MQTT guarantees only 23 bytes: set a shorter one for a broker that limits the length."`
	QoS            int           `env:"MQTT_QOS" envDefault:"1" desc:"Maximum QoS of the subscriptions: 1 (at least once) or 2 (exactly once between broker and source). Messages published with a lower QoS arrive with it; QoS 0 messages cannot be redelivered."`
	SessionExpiry  time.Duration `env:"MQTT_SESSION_EXPIRY" envDefault:"1h" desc:"How long the broker keeps this replica's session (subscriptions and unacknowledged messages) while it is disconnected. A replica that does not come back within it loses its session's messages (see the README). Whole seconds, at least 1s."`
	KeepAlive      time.Duration `env:"MQTT_KEEP_ALIVE" envDefault:"30s" desc:"Keep-alive interval: a dead connection is noticed within about twice this. Whole seconds, 1s to 18h."`
	ReceiveMax     int           `env:"MQTT_RECEIVE_MAXIMUM" envDefault:"0" desc:"Receive Maximum sent to the broker: the most unacknowledged QoS 1 and 2 messages it sends this client. 0: the adapter's receive budget (PREFETCH), at most 65535."`
	ConnectTimeout time.Duration `env:"MQTT_CONNECT_TIMEOUT" envDefault:"10s" desc:"Longest wait for one connection attempt (TCP, TLS, CONNECT/CONNACK)."`
	ReconnectMax   time.Duration `env:"MQTT_RECONNECT_MAX_BACKOFF" envDefault:"10s" desc:"Longest wait between reconnection attempts; attempts start after 100ms and back off exponentially to it."`
	Username       string        `env:"MQTT_USERNAME" desc:"User name sent in CONNECT."`
	Password       config.Secret `env:"MQTT_PASSWORD" desc:"Password sent in CONNECT (needs MQTT_USERNAME)."`

	TLSCAFile     string `env:"MQTT_TLS_CA_FILE" desc:"PEM file of the CA(s) that sign the broker's certificate, instead of the system's pool (mqtts:// and wss://)."`
	TLSCertFile   string `env:"MQTT_TLS_CERT_FILE" desc:"PEM client certificate for mutual TLS (with MQTT_TLS_KEY_FILE). Read again for each new connection when the files have changed (a rotated secret); the CA file is read once."`
	TLSKeyFile    string `env:"MQTT_TLS_KEY_FILE" desc:"PEM private key of MQTT_TLS_CERT_FILE."`
	TLSServerName string `env:"MQTT_TLS_SERVER_NAME" desc:"Name the broker's certificate must carry, when it differs from the host in MQTT_URL."`
	TLSInsecure   bool   `env:"MQTT_TLS_INSECURE_SKIP_VERIFY" envDefault:"false" desc:"Accept any broker certificate (testing only: it allows a man in the middle)."`

	DeadLetterTopic   string `env:"MQTT_DEAD_LETTER_TOPIC" desc:"Topic that receives a copy (QoS 1, same payload and properties, plus the user properties dead-letter-reason, dead-letter-topic and dead-letter-deliveries) of a message nacked more often than numa's max deliveries; then the original is acknowledged. An MQTT topic keeps nothing by itself: subscribe a persistent session to it (a broker that answers no matching subscribers has discarded the copy, and DEAD_LETTER_FALLBACK applies). Empty: DEAD_LETTER_FALLBACK applies."`
	IDProperty        string `env:"MQTT_ID_PROPERTY" desc:"User property carrying a message id set by publishers: it becomes the offset, stable across redeliveries, so numa drops a redelivered copy. Empty, or a message without it: an id unique to the delivery (a message redelivered after a reconnect then reaches numa twice)."`
	EventTimeProperty string `env:"MQTT_EVENT_TIME_PROPERTY" desc:"User property carrying the event time, RFC 3339 or unix milliseconds. Empty, missing or invalid: the time the message was received."`
	SkipRetained      bool   `env:"MQTT_SKIP_RETAINED" envDefault:"false" desc:"Do not deliver retained messages (the broker's last message of a topic, sent when a subscription is made); they are acknowledged and dropped."`
}

// Validate reports every problem in the configuration at once, each naming its variable. It reads the
// TLS files but makes no network call.
func (c *Config) Validate() error {
	var errs []error
	add := func(name, format string, args ...any) { errs = append(errs, config.Problem(name, format, args...)) }

	if u := c.URL; u != "" {
		if p := checkURL(u); p != "" {
			add("MQTT_URL", "%s", p)
		}
	}
	filters, problems := parseTopics(c.Topics)
	for _, p := range problems {
		add("MQTT_TOPICS", "%s", p)
	}
	if c.Topics != "" && len(filters) == 0 && len(problems) == 0 {
		add("MQTT_TOPICS", "has no topic filter")
	}
	if strings.ContainsAny(c.ShareGroup, "/+#") { // with its placeholders filled: ValidatePlatform
		add("MQTT_SHARE_GROUP", "must not contain /, + or #, got %q", c.ShareGroup)
	}
	if strings.TrimSpace(c.ClientID) == "" {
		add("MQTT_CLIENT_ID", "must not be empty: it names the persistent session")
	}
	if c.QoS != 1 && c.QoS != 2 {
		add("MQTT_QOS", "must be 1 or 2, got %d", c.QoS)
	}
	wholeSeconds := func(name string, d, lo, hi time.Duration) {
		switch {
		case d < lo || d > hi:
			add(name, "must be between %s and %s, got %s", lo, hi, d)
		case d%time.Second != 0:
			add(name, "must be whole seconds, got %s", d)
		}
	}
	wholeSeconds("MQTT_SESSION_EXPIRY", c.SessionExpiry, time.Second, maxSessionExpiry)
	wholeSeconds("MQTT_KEEP_ALIVE", c.KeepAlive, time.Second, maxKeepAlive)
	if c.ReceiveMax < 0 || c.ReceiveMax > maxReceiveMax {
		add("MQTT_RECEIVE_MAXIMUM", "must be between 0 (the adapter's PREFETCH) and %d, got %d", maxReceiveMax, c.ReceiveMax)
	}
	if c.ConnectTimeout <= 0 {
		add("MQTT_CONNECT_TIMEOUT", "must be more than 0s, got %s", c.ConnectTimeout)
	}
	if c.ReconnectMax < 100*time.Millisecond {
		add("MQTT_RECONNECT_MAX_BACKOFF", "must be at least 100ms, got %s", c.ReconnectMax)
	}
	if c.Password != "" && c.Username == "" {
		add("MQTT_USERNAME", "must be set with MQTT_PASSWORD")
	}
	switch {
	case c.TLSCertFile != "" && c.TLSKeyFile == "":
		add("MQTT_TLS_KEY_FILE", "must be set with MQTT_TLS_CERT_FILE")
	case c.TLSCertFile == "" && c.TLSKeyFile != "":
		add("MQTT_TLS_CERT_FILE", "must be set with MQTT_TLS_KEY_FILE")
	}
	if _, err := c.tlsConfig(); err != nil {
		errs = append(errs, err) // problems naming MQTT_TLS_* variables
	}
	if c.tlsSettings() && c.URL != "" && !c.tlsWanted() {
		add("MQTT_URL", "uses no TLS (mqtt:// or ws://) but MQTT_TLS_* settings are given: use mqtts:// or wss://")
	}
	if t := c.DeadLetterTopic; t != "" {
		switch {
		case strings.ContainsAny(t, "+#"):
			add("MQTT_DEAD_LETTER_TOPIC", "must be a topic name without wildcards, got %q", t)
		case strings.HasPrefix(t, "$"):
			add("MQTT_DEAD_LETTER_TOPIC", "must not start with $, got %q", t)
		}
		for _, f := range filters {
			if topicMatches(f, t) {
				add("MQTT_DEAD_LETTER_TOPIC", "is matched by the topic filter %q: dead letters would be read again", f)
				break
			}
		}
	}
	return errors.Join(errs...)
}

// checkURL returns what is wrong with a broker URL without echoing it (it may hold credentials).
func checkURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "is not a valid URL"
	}
	switch u.Scheme {
	case "mqtt", "mqtts", "ws", "wss":
	default:
		return fmt.Sprintf("must start with mqtt://, mqtts://, ws:// or wss://, got scheme %q", u.Scheme)
	}
	if u.Hostname() == "" {
		return "has no host"
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n <= 0 || n > 65535 {
			return fmt.Sprintf("has an invalid port %q", p)
		}
	}
	if u.User != nil {
		return "must not carry credentials: use MQTT_USERNAME and MQTT_PASSWORD"
	}
	return ""
}

// parseTopics splits MQTT_TOPICS into filters and reports each malformed one.
func parseTopics(s string) (filters, problems []string) {
	seen := map[string]bool{}
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		if p := checkFilter(f); p != "" {
			problems = append(problems, p)
			continue
		}
		if seen[f] {
			problems = append(problems, fmt.Sprintf("names the filter %q twice", f))
			continue
		}
		seen[f] = true
		// The broker delivers a message once for each matching subscription (MQTT 5, section 3.3.4;
		// Mosquitto does, shared or not): numa would get it twice, with two offsets. A filter another
		// one covers adds nothing but those copies, so it is refused; filters that only partly
		// overlap (a/+ and +/b) cannot be written any other way, and Open warns about them.
		for _, g := range filters {
			wide, narrow := g, f
			if filterCovers(f, g) {
				wide, narrow = f, g
			}
			if filterCovers(wide, narrow) {
				problems = append(problems, fmt.Sprintf("filter %q covers %q: remove %q (a message both match would be read twice)", wide, narrow, narrow))
			}
		}
		filters = append(filters, f)
	}
	return filters, problems
}

// partlyOverlapping returns the pairs of filters that some topic matches both of, neither covering
// the other (parseTopics refuses those): the broker delivers such a topic's messages twice.
func partlyOverlapping(filters []string) [][2]string {
	var pairs [][2]string
	for i, a := range filters {
		for _, b := range filters[i+1:] {
			if filtersOverlap(a, b) && !filterCovers(a, b) && !filterCovers(b, a) {
				pairs = append(pairs, [2]string{a, b})
			}
		}
	}
	return pairs
}

// filterCovers reports whether every topic name f matches also matches g (MQTT 5, section 4.7).
func filterCovers(g, f string) bool {
	if gl, _, _ := strings.Cut(g, "/"); strings.HasPrefix(f, "$") && (gl == "+" || gl == "#") {
		return false // a wildcard never matches a first level starting with $ (section 4.7.2)
	}
	for {
		gl, grest, gmore := strings.Cut(g, "/")
		fl, frest, fmore := strings.Cut(f, "/")
		switch {
		case gl == "#":
			return true
		case fl == "#":
			return false // f matches any depth from here, g does not
		case gl != "+" && gl != fl:
			return false // a level g names that f does not (or f's + is wider)
		}
		switch {
		case gmore && fmore:
			g, f = grest, frest
		case gmore:
			return grest == "#" // f ended: g/# matches g's parent level too
		default:
			return !fmore
		}
	}
}

// filtersOverlap reports whether some topic name matches both filters (MQTT 5, section 4.7).
func filtersOverlap(a, b string) bool {
	if strings.HasPrefix(a, "$") != strings.HasPrefix(b, "$") {
		return false // a wildcard never matches a first level starting with $ (section 4.7.2)
	}
	for {
		al, arest, amore := strings.Cut(a, "/")
		bl, brest, bmore := strings.Cut(b, "/")
		switch {
		case al == "#" || bl == "#":
			return true
		case al != "+" && bl != "+" && al != bl:
			return false
		case amore && bmore:
			a, b = arest, brest
		case amore:
			return arest == "#" // b ended here: a matches it only through a/# matching a
		case bmore:
			return brest == "#"
		default:
			return true
		}
	}
}

// checkFilter returns what is wrong with one topic filter (MQTT 5, section 4.7).
func checkFilter(f string) string {
	if strings.HasPrefix(f, "$share/") {
		return fmt.Sprintf("filter %q: give the plain filter and the group in MQTT_SHARE_GROUP", f)
	}
	levels := strings.Split(f, "/")
	for i, l := range levels {
		switch {
		case l == "#" && i != len(levels)-1:
			return fmt.Sprintf("filter %q: # must be the last level", f)
		case l != "#" && l != "+" && strings.ContainsAny(l, "#+"):
			return fmt.Sprintf("filter %q: + and # must fill a whole level", f)
		}
	}
	if strings.ContainsRune(f, 0) {
		return fmt.Sprintf("filter %q holds a NUL character", f)
	}
	return ""
}

// topicMatches reports whether topic filter f matches topic name t. It allocates nothing: the driver
// checks every message with it.
func topicMatches(f, t string) bool {
	tDone := false // every level of t was matched
	for {
		fl, frest, fmore := strings.Cut(f, "/")
		if fl == "#" {
			return true // also the parent level: a/# matches a
		}
		if tDone {
			return false
		}
		tl, trest, tmore := strings.Cut(t, "/")
		if fl != "+" && fl != tl {
			return false
		}
		if !fmore {
			return !tmore
		}
		f, t, tDone = frest, trest, !tmore
	}
}

// tlsSettings reports whether any MQTT_TLS_* variable is set.
func (c *Config) tlsSettings() bool {
	return c.TLSCAFile != "" || c.TLSCertFile != "" || c.TLSKeyFile != "" || c.TLSServerName != "" || c.TLSInsecure
}

// tlsWanted reports whether the URL asks for TLS (mqtts:// or wss://).
func (c *Config) tlsWanted() bool {
	u := c.URL
	return strings.HasPrefix(u, "mqtts://") || strings.HasPrefix(u, "wss://")
}

// tlsConfig builds the TLS configuration from the MQTT_TLS_* settings; nil when TLS is off. Its errors
// are *config.FieldError naming the variable.
func (c *Config) tlsConfig() (*tls.Config, error) {
	if !c.tlsWanted() && !c.tlsSettings() {
		return nil, nil
	}
	return config.TLSFiles{Prefix: "MQTT_", CAFile: c.TLSCAFile, CertFile: c.TLSCertFile, KeyFile: c.TLSKeyFile,
		ServerName: c.TLSServerName, Insecure: c.TLSInsecure}.Config()
}

// ValidatePlatform checks MQTT_SHARE_GROUP and MQTT_CLIENT_ID with their placeholders filled from what
// Numaflow set (server.PlatformValidator: the server calls it after Validate, before any network
// call, and its problems exit 2): inside Numaflow every placeholder needs its variable, and the rules
// apply to the filled values.
func (c *Config) ValidatePlatform(p config.Platform) error {
	var errs []error
	add := func(name, format string, args ...any) { errs = append(errs, config.Problem(name, format, args...)) }
	n := numaflowNames(p)
	if u := n.unfilled(c.ShareGroup); u != "" {
		add("MQTT_SHARE_GROUP", "%s", u)
	} else if group := n.fill(c.ShareGroup, maxReplica); c.ShareGroup != "" {
		switch {
		case group == "":
			add("MQTT_SHARE_GROUP", "%q is empty once its placeholders are filled: set it empty to subscribe without sharing", c.ShareGroup)
		case strings.ContainsAny(group, "/+#"):
			add("MQTT_SHARE_GROUP", "must not contain /, + or #, got %q%s", group, from(c.ShareGroup, group))
		case len(group) > maxMQTTString-len("$share//"):
			add("MQTT_SHARE_GROUP", "must be at most %d bytes with its placeholders filled, got %d", maxMQTTString-len("$share//"), len(group))
		}
	}
	if u := n.unfilled(c.ClientID); u != "" {
		add("MQTT_CLIENT_ID", "%s", u)
	} else {
		id := n.fill(c.ClientID, maxReplica)
		switch {
		case strings.TrimSpace(id) == "":
			add("MQTT_CLIENT_ID", "must not be empty once its placeholders are filled: it names the persistent session")
		case len(id) > maxMQTTString:
			add("MQTT_CLIENT_ID", "must be at most %d bytes with its placeholders filled, got %d", maxMQTTString, len(id))
		}
	}
	return errors.Join(errs...)
}

// from says which value a filled one came from, when it differs.
func from(template, filled string) string {
	if template == filled {
		return ""
	}
	return fmt.Sprintf(" (from %q)", template)
}

// receiveMaximum is MQTT_RECEIVE_MAXIMUM, or the adapter's message budget within [1, 65535].
func (c *Config) receiveMaximum(b server.Budget) uint16 {
	n := c.ReceiveMax
	if n == 0 {
		n = b.Messages
	}
	return uint16(min(max(n, 1), maxReceiveMax))
}
