package pubsubsource

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/numaflow-connectors/sources/common/config"
	"github.com/numaflow-connectors/sources/common/config/configtest"
)

func validConfig() Config {
	return Config{
		Project: "my-project", Subscription: "orders",
		AckDeadline: 30 * time.Second, MaxExtension: time.Hour, Pending: PendingOff,
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name   string
		change func(*Config)
		want   []string
	}{
		{"valid", func(*Config) {}, nil},
		{"full subscription name needs no project", func(c *Config) {
			c.Project, c.Subscription = "", "projects/other-project/subscriptions/orders"
		}, nil},
		{"GOOGLE_CLOUD_PROJECT as fallback", func(c *Config) { c.Project, c.GoogleCloudProject = "", "fallback-project" }, nil},
		{"project number and domain-scoped project", func(c *Config) { c.Project = "example.com:my-project" }, nil},
		{"numeric project", func(c *Config) { c.Project = "123456789012" }, nil},
		{"no project at all", func(c *Config) { c.Project = "" }, []string{"PUBSUB_PROJECT"}},
		{"projects differ", func(c *Config) { c.Subscription = "projects/other-project/subscriptions/orders" }, []string{"PUBSUB_PROJECT"}},
		{"bad project", func(c *Config) { c.Project = "My_Project" }, []string{"PUBSUB_PROJECT"}},
		{"bad fallback project", func(c *Config) { c.Project, c.GoogleCloudProject = "", "X" }, []string{"GOOGLE_CLOUD_PROJECT"}},
		{"malformed full name", func(c *Config) { c.Subscription = "projects/p/topics/t" }, []string{"PUBSUB_SUBSCRIPTION"}},
		{"short subscription ID", func(c *Config) { c.Subscription = "ab" }, []string{"PUBSUB_SUBSCRIPTION"}},
		{"goog prefix", func(c *Config) { c.Subscription = "google-sub" }, []string{"PUBSUB_SUBSCRIPTION"}},
		{"ID starting with a digit", func(c *Config) { c.Subscription = "1orders" }, []string{"PUBSUB_SUBSCRIPTION"}},
		{"bad project in full name", func(c *Config) {
			c.Project, c.Subscription = "", "projects/P!/subscriptions/orders"
		}, []string{"PUBSUB_SUBSCRIPTION"}},
		{"dead-letter topic ID", func(c *Config) { c.DeadLetterTopic = "orders-dlq" }, nil},
		{"dead-letter topic full name", func(c *Config) { c.DeadLetterTopic = "projects/other-project/topics/dlq" }, nil},
		{"bad dead-letter topic", func(c *Config) { c.DeadLetterTopic = "projects/x/subscriptions/y" }, []string{"PUBSUB_DEAD_LETTER_TOPIC"}},
		{"deleted-topic sentinel", func(c *Config) { c.DeadLetterTopic = "_deleted-topic_" }, []string{"PUBSUB_DEAD_LETTER_TOPIC"}},
		{"ack deadline too short", func(c *Config) { c.AckDeadline = 9 * time.Second }, []string{"PUBSUB_ACK_DEADLINE"}},
		{"ack deadline too long", func(c *Config) { c.AckDeadline = 601 * time.Second }, []string{"PUBSUB_ACK_DEADLINE"}},
		{"ack deadline not whole seconds", func(c *Config) { c.AckDeadline = 10500 * time.Millisecond }, []string{"PUBSUB_ACK_DEADLINE"}},
		{"ack deadline bounds", func(c *Config) { c.AckDeadline, c.MaxExtension = 600*time.Second, 600*time.Second }, nil},
		{"max extension zero", func(c *Config) { c.MaxExtension = 0 }, []string{"PUBSUB_MAX_EXTENSION"}},
		{"max extension below ack deadline", func(c *Config) { c.MaxExtension = 20 * time.Second }, []string{"PUBSUB_MAX_EXTENSION"}},
		{"pending monitoring", func(c *Config) { c.Pending = PendingMonitoring }, nil},
		{"pending unknown", func(c *Config) { c.Pending = "stackdriver" }, []string{"PUBSUB_PENDING"}},
		{"every problem at once", func(c *Config) {
			*c = Config{Subscription: "x", DeadLetterTopic: "goog",
				AckDeadline: time.Second, MaxExtension: -1, Pending: "yes"}
		}, []string{"PUBSUB_ACK_DEADLINE", "PUBSUB_DEAD_LETTER_TOPIC", "PUBSUB_MAX_EXTENSION",
			"PUBSUB_PENDING", "PUBSUB_PROJECT", "PUBSUB_SUBSCRIPTION"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := validConfig()
			tt.change(&c)
			err := c.Validate()
			got := configtest.Vars(t, err)
			if strings.Join(got, ",") != strings.Join(tt.want, ",") {
				t.Fatalf("problems %v, want %v (error: %v)", got, tt.want, err)
			}
		})
	}
}

func TestNames(t *testing.T) {
	tests := []struct {
		cfg                          Config
		project, sub, subID, deadLtr string
	}{
		{Config{Project: "p-123456", Subscription: "s1x", DeadLetterTopic: "dlq"},
			"p-123456", "projects/p-123456/subscriptions/s1x", "s1x", "projects/p-123456/topics/dlq"},
		{Config{GoogleCloudProject: "g-123456", Subscription: "s1x"},
			"g-123456", "projects/g-123456/subscriptions/s1x", "s1x", ""},
		{Config{Project: "p-123456", GoogleCloudProject: "g-123456", Subscription: "s1x"},
			"p-123456", "projects/p-123456/subscriptions/s1x", "s1x", ""},
		{Config{GoogleCloudProject: "g-123456", Subscription: "projects/f-123456/subscriptions/s2x", DeadLetterTopic: "projects/d-123456/topics/t"},
			"f-123456", "projects/f-123456/subscriptions/s2x", "s2x", "projects/d-123456/topics/t"},
	}
	for _, tt := range tests {
		c := tt.cfg
		if got := c.projectID(); got != tt.project {
			t.Errorf("%+v: project %q, want %q", c, got, tt.project)
		}
		if got := c.subscriptionName(); got != tt.sub {
			t.Errorf("%+v: subscription %q, want %q", c, got, tt.sub)
		}
		if got := c.subscriptionID(); got != tt.subID {
			t.Errorf("%+v: subscription ID %q, want %q", c, got, tt.subID)
		}
		if got := c.deadLetterTopicName(); got != tt.deadLtr {
			t.Errorf("%+v: dead-letter topic %q, want %q", c, got, tt.deadLtr)
		}
	}
}

// Every field is documented and has an env tag; secrets or credentials are not redeclared.
func TestConfigTags(t *testing.T) {
	typ := reflectType()
	for i := 0; i < typ.NumField(); i++ {
		f := typ.Field(i)
		env, desc := f.Tag.Get("env"), f.Tag.Get("desc")
		if env == "" || desc == "" {
			t.Errorf("field %s: env %q desc %q: both are required", f.Name, env, desc)
		}
		name := strings.Split(env, ",")[0]
		if name == "PUBSUB_EMULATOR_HOST" || name == "GOOGLE_APPLICATION_CREDENTIALS" {
			t.Errorf("field %s redeclares %s, which the client library reads itself", f.Name, name)
		}
	}
}

func reflectType() reflect.Type { return reflect.TypeOf(Config{}) }

// A documented value set alone is never refused because of a default that depends on it:
// PUBSUB_ACK_DEADLINE's default follows PUBSUB_MAX_EXTENSION (a fixed 30s default made any
// PUBSUB_MAX_EXTENSION under 30s invalid, though its documented minimum is 10s).
func TestEachBoundAlone(t *testing.T) {
	for _, tc := range []struct {
		env     string
		wantAck time.Duration
		wantExt time.Duration
	}{
		{"PUBSUB_ACK_DEADLINE=10s", 10 * time.Second, time.Hour},         // documented minimum
		{"PUBSUB_ACK_DEADLINE=600s", 600 * time.Second, time.Hour},       // documented maximum
		{"PUBSUB_MAX_EXTENSION=10s", 10 * time.Second, 10 * time.Second}, // documented minimum
		{"PUBSUB_MAX_EXTENSION=15500ms", 15 * time.Second, 15500 * time.Millisecond},
		{"PUBSUB_MAX_EXTENSION=30s", 30 * time.Second, 30 * time.Second},
		{"PUBSUB_MAX_EXTENSION=24h", 30 * time.Second, 24 * time.Hour},
		{"PUBSUB_PENDING=off", 30 * time.Second, time.Hour},
	} {
		var c Config
		err := config.Load(&c, []string{"PUBSUB_PROJECT=my-project", "PUBSUB_SUBSCRIPTION=orders", tc.env})
		if err == nil {
			err = c.Validate()
		}
		if err != nil {
			t.Errorf("%s alone: %v", tc.env, err)
			continue
		}
		if got := c.ackDeadline(); got != tc.wantAck || c.MaxExtension != tc.wantExt {
			t.Errorf("%s alone: ack deadline %s, max extension %s; want %s, %s", tc.env, got, c.MaxExtension, tc.wantAck, tc.wantExt)
		}
	}
	// Explicit values must still fit together, and the bounds hold.
	for _, tc := range []struct {
		env  []string
		want string
	}{
		{[]string{"PUBSUB_ACK_DEADLINE=60s", "PUBSUB_MAX_EXTENSION=30s"}, "PUBSUB_MAX_EXTENSION: must be at least PUBSUB_ACK_DEADLINE"},
		{[]string{"PUBSUB_MAX_EXTENSION=9s"}, "PUBSUB_MAX_EXTENSION: must be at least 10s"},
		{[]string{"PUBSUB_ACK_DEADLINE=9s"}, "PUBSUB_ACK_DEADLINE: must be between 10s and 600s"},
		{[]string{"PUBSUB_ACK_DEADLINE=601s"}, "PUBSUB_ACK_DEADLINE: must be between 10s and 600s"},
	} {
		var c Config
		err := config.Load(&c, append([]string{"PUBSUB_PROJECT=my-project", "PUBSUB_SUBSCRIPTION=orders"}, tc.env...))
		if err == nil {
			err = c.Validate()
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: got %v, want %q", tc.env, err, tc.want)
		}
	}
}
