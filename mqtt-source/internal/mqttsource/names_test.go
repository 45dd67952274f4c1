package mqttsource

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/numaflow-connectors/sources/common/config"
	"github.com/numaflow-connectors/sources/common/config/configtest"
	"github.com/numaflow-connectors/sources/common/server"
	"github.com/numaflow-connectors/sources/common/source"
	"github.com/numaflow-connectors/sources/mqtt-source/mqtttest"
)

// The default client id and share group name the namespace and the pipeline vertex, or the MonoVertex,
// so that no two sources on one broker share a session or a group.
func TestDefaultNamesAreDistinct(t *testing.T) {
	c := validConfig() // the defaults
	for _, tt := range []struct {
		name      string
		p         config.Platform
		id, group string
	}{
		{"pipeline vertex", config.Platform{Namespace: "prod", Pod: "x", Pipeline: "orders", Vertex: "in", Replica: 3}, "prod-orders-in-3", "prod-orders-in"},
		{"same pipeline, other namespace", config.Platform{Namespace: "test", Pod: "x", Pipeline: "orders", Vertex: "in", Replica: 3}, "test-orders-in-3", "test-orders-in"},
		{"MonoVertex", config.Platform{Namespace: "prod", Pod: "x", MonoVertex: "alarms", Replica: 1}, "prod-alarms-source-1", "prod-alarms-source"},
		{"other MonoVertex", config.Platform{Namespace: "prod", Pod: "x", MonoVertex: "telemetry", Replica: 1}, "prod-telemetry-source-1", "prod-telemetry-source"},
		{"outside Numaflow", config.Platform{}, "mqtt-source-0", "mqtt-source"},
		{"outside Numaflow, a namespace", config.Platform{Namespace: "dev", Replica: 2}, "dev-mqtt-source-2", "dev-mqtt-source"},
		{"outside Numaflow, a pipeline only", config.Platform{Pipeline: "orders"}, "orders-source-0", "orders-source"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if id, group := fill(c.ClientID, tt.p), fill(c.ShareGroup, tt.p); id != tt.id || group != tt.group {
				t.Errorf("client id %q, group %q; want %q, %q", id, group, tt.id, tt.group)
			}
			// Valid with the same variables.
			if err := c.ValidatePlatform(tt.p); err != nil {
				t.Errorf("ValidatePlatform: %v", err)
			}
		})
	}
	if got := fill("<pipeline>-<namespace>", config.Platform{}); got != "mqtt" {
		t.Errorf("an empty namespace at the end: %q, want %q", got, "mqtt")
	}
}

// Inside Numaflow (NUMAFLOW_POD set), a placeholder that no variable fills is a configuration error
// naming the variables; a value without that placeholder needs nothing.
func TestValidateUnfilledPlaceholders(t *testing.T) {
	pod := config.Platform{Pod: "p-0", Namespace: "prod"}
	for _, tt := range []struct {
		name   string
		mutate func(c *Config, p *config.Platform)
		want   []string
	}{
		{"no names at all", func(c *Config, p *config.Platform) { *p = config.Platform{Pod: "p-0"} }, []string{
			"MQTT_SHARE_GROUP: \"<namespace>-<pipeline>-<vertex>\" has <namespace> and <pipeline> and <vertex>, but inside Numaflow (NUMAFLOW_POD is set) NUMAFLOW_NAMESPACE and NUMAFLOW_PIPELINE_NAME and NUMAFLOW_VERTEX_NAME (a MonoVertex: NUMAFLOW_MONO_VERTEX_NAME) are not set",
			"MQTT_CLIENT_ID: \"<namespace>-<pipeline>-<vertex>-<replica>\" has <namespace> and <pipeline> and <vertex>",
		}},
		{"a namespace only", func(c *Config, p *config.Platform) { *p = pod }, []string{
			"MQTT_SHARE_GROUP: \"<namespace>-<pipeline>-<vertex>\" has <pipeline> and <vertex>, but inside Numaflow (NUMAFLOW_POD is set) NUMAFLOW_PIPELINE_NAME and NUMAFLOW_VERTEX_NAME (a MonoVertex: NUMAFLOW_MONO_VERTEX_NAME) are not set",
			"MQTT_CLIENT_ID: \"<namespace>-<pipeline>-<vertex>-<replica>\" has <pipeline> and <vertex>",
		}},
		{"no vertex", func(c *Config, p *config.Platform) { *p = pod; p.Pipeline = "orders"; c.ShareGroup = "g" }, []string{
			"MQTT_CLIENT_ID: \"<namespace>-<pipeline>-<vertex>-<replica>\" has <vertex>, but inside Numaflow (NUMAFLOW_POD is set) NUMAFLOW_VERTEX_NAME (a MonoVertex: NUMAFLOW_MONO_VERTEX_NAME) is not set: set it",
		}},
		{"names set explicitly", func(c *Config, p *config.Platform) {
			*p = config.Platform{Pod: "p-0"}
			c.ShareGroup, c.ClientID = "g", "orders-<replica>"
		}, nil},
		{"no sharing", func(c *Config, p *config.Platform) {
			*p = config.Platform{Pod: "p-0"}
			c.ShareGroup, c.ClientID = "", "orders-<replica>"
		}, nil},
		{"a MonoVertex", func(c *Config, p *config.Platform) { *p = pod; p.MonoVertex = "alarms" }, nil},
		{"a pipeline vertex", func(c *Config, p *config.Platform) { *p = pod; p.Pipeline, p.Vertex = "orders", "in" }, nil},
		{"outside Numaflow", func(c *Config, p *config.Platform) { *p = config.Platform{} }, nil},
		// The rules apply to the filled values.
		{"a filled group with a slash", func(c *Config, p *config.Platform) { *p = config.Platform{Pipeline: "a/b"} }, []string{
			"MQTT_SHARE_GROUP: must not contain /, + or #, got \"a/b-source\" (from \"<namespace>-<pipeline>-<vertex>\")",
		}},
		{"a group left empty", func(c *Config, p *config.Platform) { c.ShareGroup = "<namespace>" }, []string{"MQTT_SHARE_GROUP: \"<namespace>\" is empty once"}},
		{"a client id left empty", func(c *Config, p *config.Platform) { c.ClientID = "<namespace>" }, []string{"MQTT_CLIENT_ID: must not be empty"}},
		{"a client id too long", func(c *Config, p *config.Platform) { *p = config.Platform{Pipeline: strings.Repeat("p", 65530)} }, []string{
			"MQTT_CLIENT_ID: must be at most 65535 bytes with its placeholders filled, got 65543",
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c, p := validConfig(), config.Platform{}
			tt.mutate(&c, &p)
			configtest.Problems(t, errors.Join(c.Validate(), c.ValidatePlatform(p)), tt.want)
		})
	}
}

// The same through the binary's start: inside Numaflow with no name for the defaults, --validate and a
// start exit 2, naming the variables, before any network call (the broker's address is not even
// listening); Open refuses the same when it is called without Validate.
func TestUnfilledPlaceholdersExitTwo(t *testing.T) {
	app := server.App[Config]{Name: "mqtt-source", Open: Open}
	environ := []string{"MQTT_URL=mqtt://127.0.0.1:1", "MQTT_TOPICS=a", "NUMAFLOW_POD=alarms-mv-0", "NUMAFLOW_NAMESPACE=prod",
		"SOURCE_SOCKET=" + t.TempDir() + "/s.sock", "METRICS_ADDR="}
	for _, args := range [][]string{{"--validate"}, nil} {
		var stdout, stderr bytes.Buffer
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		code := server.Run(ctx, app, args, environ, &stdout, &stderr)
		cancel()
		if code != server.ExitConfig {
			t.Fatalf("%v: exit %d, want %d\n%s", args, code, server.ExitConfig, stderr.String())
		}
		for _, v := range []string{"MQTT_CLIENT_ID", "MQTT_SHARE_GROUP", "NUMAFLOW_PIPELINE_NAME", "NUMAFLOW_VERTEX_NAME", "NUMAFLOW_MONO_VERTEX_NAME"} {
			if !strings.Contains(stderr.String(), v) {
				t.Errorf("%v: %s not named in:\n%s", args, v, stderr.String())
			}
		}
	}
	// In a MonoVertex it starts (and is stopped at once).
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	var stderr bytes.Buffer
	if code := server.Run(ctx, app, []string{"--validate"}, append(environ, "NUMAFLOW_MONO_VERTEX_NAME=alarms"), &bytes.Buffer{}, &stderr); code != server.ExitOK {
		t.Fatalf("a MonoVertex: exit %d\n%s", code, stderr.String())
	}

	c := validConfig()
	env := &server.Env{Log: testLogger(t), Platform: config.Platform{Namespace: "prod", Pod: "x"}, Budget: harnessBudget}
	if d, err := Open(t.Context(), &c, env); err == nil {
		_ = d.Close(t.Context())
		t.Fatal("Open named a session inside Numaflow without pipeline, vertex or MonoVertex name")
	} else if !strings.Contains(err.Error(), "NUMAFLOW_MONO_VERTEX_NAME") {
		t.Fatalf("Open: %v, want the variables named", err)
	}
}

// Two MonoVertices in one namespace, with the default client id and share group, reading different
// topics from one broker: each gets a session of its own and only its own topic's messages (with the
// same session they took it over from each other, and one received the other's messages).
func TestIntegrationMonoVerticesKeepTheirOwnSessions(t *testing.T) {
	srv := mqtttest.Shared(t)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	name := mqtttest.Name(t)
	open := func(mono, topic string) *driver {
		c := validConfig() // the defaults
		c.URL, c.Topics = srv.URL(), topic
		c.Username, c.Password = mqtttest.User, config.Secret(srv.Password)
		c.ReconnectMax, c.KeepAlive = 500*time.Millisecond, 5*time.Second
		p := config.Platform{Namespace: "ns", Pod: mono + "-mv-0", MonoVertex: mono, Replica: 0}
		if err := errors.Join(c.Validate(), c.ValidatePlatform(p)); err != nil {
			t.Fatal(err)
		}
		d, err := Open(ctx, &c, &server.Env{Log: testLogger(t), Platform: p, Budget: harnessBudget})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = d.Close(context.WithoutCancel(ctx)) })
		cctx, ccancel := context.WithTimeout(ctx, 10*time.Second)
		defer ccancel()
		if err := d.(source.Checker).Check(cctx); err != nil {
			t.Fatalf("%s not ready: %v", mono, err)
		}
		return d.(*driver)
	}
	a := open(name+"-telemetry", "telemetry/"+name)
	b := open(name+"-alarms", "alarms/"+name)
	if a.clientID == b.clientID || a.group == b.group {
		t.Fatalf("client ids %q and %q, groups %q and %q: shared", a.clientID, b.clientID, a.group, b.group)
	}
	if want := "ns-" + name + "-alarms-source-0"; b.clientID != want {
		t.Fatalf("client id %q, want %q", b.clientID, want)
	}
	time.Sleep(2 * time.Second) // a takeover, if any, happens now
	if err := srv.Connect(t, "").Publish(ctx, "alarms/"+name, 1, nil, numbered("alarm", 20)...); err != nil {
		t.Fatal(err)
	}
	gotB, _ := receiveUntil(t, b, 20, 10*time.Second)
	if len(gotB) != 20 {
		t.Errorf("the alarms MonoVertex received %d of its 20 messages", len(gotB))
	}
	if gotA, _ := receiveUntil(t, a, 1, time.Second); len(gotA) > 0 {
		t.Errorf("the telemetry MonoVertex received %d messages of alarms/", len(gotA))
	}
}
