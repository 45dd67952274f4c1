package mqttsource

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/numaflow-connectors/sources/common/config"
	"github.com/numaflow-connectors/sources/common/config/configtest"
	"github.com/numaflow-connectors/sources/common/config/envdoc"
	"github.com/numaflow-connectors/sources/common/server"
	"github.com/numaflow-connectors/sources/mqtt-source/mqtttest"
)

func validConfig() Config {
	return Config{
		URL: "mqtt://127.0.0.1:1883", Topics: "factory/+/temperature", ShareGroup: "<namespace>-<pipeline>-<vertex>",
		ClientID: "<namespace>-<pipeline>-<vertex>-<replica>", QoS: 1, SessionExpiry: time.Hour, KeepAlive: 30 * time.Second,
		ConnectTimeout: 10 * time.Second, ReconnectMax: 10 * time.Second,
	}
}

func TestValidate(t *testing.T) {
	dir := t.TempDir()
	certs, err := mqtttest.NewCerts(dir)
	if err != nil {
		t.Fatal(err)
	}
	notPEM := filepath.Join(dir, "not.pem")
	if err := os.WriteFile(notPEM, []byte("hello"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		mutate func(c *Config)
		want   []string // "VAR: substring" of each problem, in any order
	}{
		{"defaults are valid", func(c *Config) {}, nil},
		{"tls with files", func(c *Config) {
			c.URL, c.TLSCAFile, c.TLSCertFile, c.TLSKeyFile, c.TLSServerName = "mqtts://b:8883", certs.CAFile, certs.ClientCertFile, certs.ClientKeyFile, "b"
		}, nil},
		{"websockets", func(c *Config) { c.URL = "wss://broker.example.com/mqtt" }, nil},
		{"several filters, no sharing, qos 2", func(c *Config) { c.Topics = "a/#, b/+/c ,c"; c.ShareGroup = ""; c.QoS = 2 }, nil},
		{"filters that share no topic", func(c *Config) { c.Topics = "a/+,a/+/b,a/b/c,$SYS/#,+/+/+/x,b" }, nil},
		{"dead letter topic outside the filters", func(c *Config) { c.DeadLetterTopic = "dlq/factory" }, nil},

		{"bad scheme", func(c *Config) { c.URL = "tcp://b:1883" }, []string{"MQTT_URL: must start with mqtt://"}},
		{"credentials in the url", func(c *Config) { c.URL = "mqtt://u:secret@b:1883" }, []string{"MQTT_URL: must not carry credentials"}},
		{"no host", func(c *Config) { c.URL = "mqtt://:1883" }, []string{"MQTT_URL: has no host"}},
		{"bad port", func(c *Config) { c.URL = "mqtt://b:99999" }, []string{"MQTT_URL: has an invalid port"}},
		{"hash not last", func(c *Config) { c.Topics = "a/#/b" }, []string{"MQTT_TOPICS: filter \"a/#/b\": # must be the last level"}},
		{"plus inside a level", func(c *Config) { c.Topics = "a/b+" }, []string{"MQTT_TOPICS: filter \"a/b+\": + and # must fill a whole level"}},
		{"share prefix given", func(c *Config) { c.Topics = "$share/g/a" }, []string{"MQTT_TOPICS: filter \"$share/g/a\": give the plain filter"}},
		{"duplicate filter", func(c *Config) { c.Topics = "a,a" }, []string{"MQTT_TOPICS: names the filter \"a\" twice"}},
		{"only commas", func(c *Config) { c.Topics = " , " }, []string{"MQTT_TOPICS: has no topic filter"}},
		// Mosquitto sends a message once per matching filter, shared or not (measured): twice to numa.
		{"a filter covering another", func(c *Config) { c.Topics = "factory/#,factory/+/alarm" },
			[]string{`MQTT_TOPICS: filter "factory/#" covers "factory/+/alarm": remove "factory/+/alarm"`}},
		{"a filter covered by a later one", func(c *Config) { c.Topics = "a/b,a/+" }, []string{`MQTT_TOPICS: filter "a/+" covers "a/b": remove "a/b"`}},
		{"a filter and its parent", func(c *Config) { c.Topics = "a,a/#" }, []string{`MQTT_TOPICS: filter "a/#" covers "a": remove "a"`}},
		{"bad group", func(c *Config) { c.ShareGroup = "a/b" }, []string{"MQTT_SHARE_GROUP: must not contain"}},
		{"empty client id", func(c *Config) { c.ClientID = " " }, []string{"MQTT_CLIENT_ID: must not be empty"}},
		{"qos 0", func(c *Config) { c.QoS = 0 }, []string{"MQTT_QOS: must be 1 or 2"}},
		{"expiry in ms", func(c *Config) { c.SessionExpiry = 1500 * time.Millisecond }, []string{"MQTT_SESSION_EXPIRY: must be whole seconds"}},
		{"no expiry", func(c *Config) { c.SessionExpiry = 0 }, []string{"MQTT_SESSION_EXPIRY: must be between 1s"}},
		{"keep alive too long", func(c *Config) { c.KeepAlive = 24 * time.Hour }, []string{"MQTT_KEEP_ALIVE: must be between"}},
		{"receive maximum too big", func(c *Config) { c.ReceiveMax = 70000 }, []string{"MQTT_RECEIVE_MAXIMUM: must be between"}},
		{"bad timeouts", func(c *Config) { c.ConnectTimeout, c.ReconnectMax = 0, time.Millisecond },
			[]string{"MQTT_CONNECT_TIMEOUT: must be more than 0s", "MQTT_RECONNECT_MAX_BACKOFF: must be at least 100ms"}},
		{"password without user", func(c *Config) { c.Password = "p" }, []string{"MQTT_USERNAME: must be set with MQTT_PASSWORD"}},
		{"cert without key", func(c *Config) { c.URL, c.TLSCertFile = "mqtts://b", certs.ClientCertFile },
			[]string{"MQTT_TLS_KEY_FILE: must be set with MQTT_TLS_CERT_FILE"}},
		{"ca not pem", func(c *Config) { c.URL, c.TLSCAFile = "mqtts://b", notPEM }, []string{"MQTT_TLS_CA_FILE: no PEM certificate"}},
		{"ca missing", func(c *Config) { c.URL, c.TLSCAFile = "mqtts://b", filepath.Join(dir, "none.pem") },
			[]string{"MQTT_TLS_CA_FILE: reading the CA file"}},
		{"tls settings on a plain url", func(c *Config) { c.TLSInsecure = true }, []string{"MQTT_URL: uses no TLS"}},
		{"dead letter topic with wildcard", func(c *Config) { c.DeadLetterTopic = "dlq/#" }, []string{"MQTT_DEAD_LETTER_TOPIC: must be a topic name"}},
		{"dead letter topic read again", func(c *Config) { c.DeadLetterTopic = "factory/dlq/temperature" },
			[]string{"MQTT_DEAD_LETTER_TOPIC: is matched by the topic filter"}},
		{"every problem at once", func(c *Config) { c.URL, c.Topics, c.QoS = "http://x", "a/#/b", 3 },
			[]string{"MQTT_URL: must start", "MQTT_TOPICS: filter", "MQTT_QOS: must be 1 or 2"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := validConfig()
			tc.mutate(&c)
			configtest.Problems(t, c.Validate(), tc.want, "secret")
		})
	}
}

func TestLoadDefaults(t *testing.T) {
	var c Config
	if err := config.Load(&c, []string{"MQTT_URL=mqtt://127.0.0.1:1883", "MQTT_TOPICS=factory/+/temperature"}); err != nil {
		t.Fatalf("loading: %v", err)
	}
	if want := validConfig(); c != want {
		t.Fatalf("loaded %+v, want %+v", c, want)
	}
	// MQTT_SHARE_GROUP set empty disables sharing (it does not fall back to the default).
	if err := config.Load(&c, []string{"MQTT_URL=mqtt://b", "MQTT_TOPICS=a", "MQTT_SHARE_GROUP="}); err != nil {
		t.Fatalf("loading: %v", err)
	}
	if c.ShareGroup != "" {
		t.Fatalf("MQTT_SHARE_GROUP= loaded as %q, want empty", c.ShareGroup)
	}
}

func TestLoadPasswordFile(t *testing.T) {
	f := filepath.Join(t.TempDir(), "password")
	if err := os.WriteFile(f, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var c Config
	if err := config.Load(&c, []string{"MQTT_URL=mqtt://b", "MQTT_TOPICS=a", "MQTT_USERNAME=u", "MQTT_PASSWORD_FILE=" + f}); err != nil {
		t.Fatalf("loading: %v", err)
	}
	if c.Password.Reveal() != "s3cret" {
		t.Fatalf("password %q, want it from MQTT_PASSWORD_FILE", c.Password.Reveal())
	}
}

func TestLoadReportsEveryProblem(t *testing.T) {
	var c Config
	err := config.Load(&c, []string{"MQTT_QOS=high", "MQTT_SESSION_EXPIRY=forever"})
	named := configtest.Vars(t, err)
	for _, v := range []string{"MQTT_URL", "MQTT_TOPICS", "MQTT_QOS", "MQTT_SESSION_EXPIRY"} {
		if !slices.Contains(named, v) {
			t.Errorf("no problem named %s in:\n%v", v, err)
		}
	}
}

func TestPlaceholders(t *testing.T) {
	for _, tt := range []struct {
		in, pipeline, vertex string
		replica              int
		want                 string
	}{
		{"<pipeline>-<vertex>-<replica>", "orders", "in", 3, "orders-in-3"},
		{"<pipeline>-<vertex>", "orders", "in", 3, "orders-in"},
		{"fixed", "orders", "in", 3, "fixed"},
		{"<pipeline>-<vertex>-<replica>", "", "", 0, "mqtt-source-0"},
	} {
		p := config.Platform{Pipeline: tt.pipeline, Vertex: tt.vertex, Replica: tt.replica}
		if got := fill(tt.in, p); got != tt.want {
			t.Errorf("fill(%q, %+v) = %q, want %q", tt.in, tt, got, tt.want)
		}
	}
}

func TestReceiveMaximum(t *testing.T) {
	for _, tt := range []struct {
		set, budget int
		want        uint16
	}{
		{0, 1000, 1000},
		{0, 200000, 65535},
		{0, 0, 1},
		{50, 1000, 50},
	} {
		c := Config{ReceiveMax: tt.set}
		if got := c.receiveMaximum(server.Budget{Messages: tt.budget}); got != tt.want {
			t.Errorf("receiveMaximum(set %d, budget %d) = %d, want %d", tt.set, tt.budget, got, tt.want)
		}
	}
}

func TestTopicMatches(t *testing.T) {
	for _, tt := range []struct {
		f, topic string
		want     bool
	}{
		{"a/b", "a/b", true}, {"a/+", "a/b", true}, {"a/+", "a/b/c", false}, {"a/#", "a", true},
		{"a/#", "a/b/c", true}, {"#", "x", true}, {"a/+/c", "a/b/d", false}, {"a/b", "a/b/c", false},
		{"a/+", "a", false}, {"a/+", "a/", true}, {"+", "/a", false}, {"/+", "/a", true}, {"a", "a/", false},
		{"+/+", "a/b", true}, {"a/b/#", "a/b", true}, {"a/b/#", "a/c", false}, {"", "", true}, {"a//b", "a//b", true},
	} {
		if got := topicMatches(tt.f, tt.topic); got != tt.want {
			t.Errorf("topicMatches(%q, %q) = %v", tt.f, tt.topic, got)
		}
	}
}

func TestFiltersOverlap(t *testing.T) {
	for _, tt := range []struct {
		a, b string
		want bool
	}{
		{"a/#", "a/b", true}, {"a", "a/#", true}, {"a", "a/+", false}, {"a/+", "+/b", true}, {"a/b", "a/c", false},
		{"a/+/c", "a/b", false}, {"a/+/#", "a", false}, {"a/+/#", "a/x", true}, {"#", "b/c", true}, {"#", "$SYS/x", false},
		{"+/x", "$SYS/x", false}, {"$SYS/+", "$SYS/x", true}, {"a/b/#", "a/b", true}, {"+", "/", false}, {"+/+", "/", true},
	} {
		if got, back := filtersOverlap(tt.a, tt.b), filtersOverlap(tt.b, tt.a); got != tt.want || back != tt.want {
			t.Errorf("filtersOverlap(%q, %q) = %v, reversed %v; want %v", tt.a, tt.b, got, back, tt.want)
		}
	}
}

func TestFilterCovers(t *testing.T) {
	for _, tt := range []struct {
		g, f string
		want bool
	}{
		{"a/#", "a/b", true}, {"a/b", "a/#", false}, {"a/#", "a", true}, {"a/+", "a/b", true}, {"a/b", "a/+", false},
		{"a/+", "+/b", false}, {"+/b", "a/+", false}, {"#", "$SYS/x", false}, {"$SYS/#", "$SYS/x", true}, {"+/x", "$SYS/x", false},
		{"a/+", "a/b/c", false}, {"a/+/#", "a/b/c", true}, {"a/+/#", "a", false}, {"a/b", "a/b", true}, {"+", "/", false},
		{"+/+", "/", true}, {"a/+", "a/#", false}, {"#", "a/#", true},
	} {
		if got := filterCovers(tt.g, tt.f); got != tt.want {
			t.Errorf("filterCovers(%q, %q) = %v; want %v", tt.g, tt.f, got, tt.want)
		}
	}
	if got := partlyOverlapping([]string{"a/+", "+/b", "c/d/#", "x"}); len(got) != 1 || got[0] != [2]string{"a/+", "+/b"} {
		t.Errorf("partlyOverlapping = %v, want [[a/+ +/b]]", got)
	}
}

func TestREADME(t *testing.T) {
	configtest.Documented(t, Config{})
	configtest.README(t, "../../README.md", envdoc.Groups("mqtt-source", Config{})...)
}
