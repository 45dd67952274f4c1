package mqttsource

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/numaflow-connectors/sources/common/config"
	"github.com/numaflow-connectors/sources/common/server"
	"github.com/numaflow-connectors/sources/common/source/drivertest"
	"github.com/numaflow-connectors/sources/mqtt-source/mqtttest"
)

// The pre-flight check against mosquitto with an ACL: an allowed filter passes, a denied one fails
// naming the ACL line to add, a wrong password fails the connection and skips the rest, a stopped
// broker fails in bounded time; and a replica running with the same configuration keeps its
// connection and gets every message published while the check runs (the check uses a client id and
// a share group of its own, and leaves no session behind).
func TestPreflight(t *testing.T) {
	dir := t.TempDir()
	acl := filepath.Join(dir, "acl")
	if err := os.WriteFile(acl, []byte("user "+mqtttest.User+"\ntopic readwrite allowed/#\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	srv := mqtttest.Start(t, mqtttest.Options{Config: "acl_file " + acl})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	env := &server.Env{Log: testLogger(t), Platform: config.Platform{Pipeline: "p", Vertex: "in"}}

	// mosquitto 2.0 grants a SUBSCRIBE its ACL denies (it applies the read ACL when it delivers), so
	// the denied filter passes here; brokers that refuse it (SUBACK 0x87) fail the check, see
	// TestPreflightFix.
	cfg := testConfig(srv, "allowed/a,denied/b", "p-in-0", "")
	got := drivertest.Outcomes(Preflight(ctx, &cfg, env))
	want := map[string]string{
		"broker reachable, credentials accepted (CONNECT as a throwaway client)": "pass",
		"SUBSCRIBE allowed/a": "pass",
		"SUBSCRIBE denied/b":  "pass",
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("checks:\n%v\nwant\n%v", got, want)
	}

	bad := testConfig(srv, "allowed/a", "p-in-0", "p-in")
	bad.Password = config.Secret("wrong")
	got = drivertest.Outcomes(Preflight(ctx, &bad, env))
	if c := got["broker reachable, credentials accepted (CONNECT as a throwaway client)"]; !strings.HasPrefix(c, "fail: check MQTT_USERNAME") || got["SUBSCRIBE allowed/a (shared)"] != "skipped" {
		t.Errorf("wrong password: %v", got)
	}

	// A replica running with the same configuration is not disturbed.
	run := testConfig(srv, "allowed/r", "p-in-0", "p-in")
	d := openReady(ctx, t, run, harnessBudget)
	pub := srv.Connect(t, "publisher")
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range 3 {
			Preflight(ctx, &run, env)
		}
	}()
	if err := pub.Publish(ctx, "allowed/r", 1, nil, numbered("r", 20)...); err != nil {
		t.Fatal(err)
	}
	<-done
	msgs, err := receiveUntil(t, d, 20, 10*time.Second)
	if len(msgs) != 20 {
		t.Fatalf("the running replica got %d of 20 messages published while the checks ran (%v)", len(msgs), err)
	}
	if err := d.Check(ctx); err != nil {
		t.Fatalf("the running replica lost its connection to the checks: %v", err)
	}

	down := mqtttest.Start(t, mqtttest.Options{})
	gone := testConfig(down, "allowed/a", "p-in-0", "p-in")
	down.Kill()
	start := time.Now()
	got = drivertest.Outcomes(Preflight(ctx, &gone, env))
	if took := time.Since(start); took > 30*time.Second {
		t.Errorf("checks against a stopped broker took %s", took)
	}
	if c := got["broker reachable, credentials accepted (CONNECT as a throwaway client)"]; !strings.HasPrefix(c, "fail: check MQTT_URL") {
		t.Errorf("stopped broker: %v", got)
	}
}

// A refused SUBSCRIBE (SUBACK 0x87) fails its check with the ACL line to add; a refused CONNECT names
// the credentials; a network failure the URL.
func TestPreflightFix(t *testing.T) {
	denied := subscribeResult([]string{"orders/#"}, &paho.Suback{Reasons: []byte{0x87}}, nil)
	if fix := preflightFix(denied, "allow it"); fix != "allow it" {
		t.Errorf("SUBACK 0x87: fix %q", fix)
	}
	if fix := preflightFix(&ReasonError{Op: "connecting", Code: 0x86}, "check the credentials"); fix != "check the credentials" {
		t.Errorf("CONNACK 0x86: fix %q", fix)
	}
	if fix := preflightFix(&net.OpError{Op: "dial", Err: syscall.ECONNREFUSED}, "x"); !strings.HasPrefix(fix, "check MQTT_URL") {
		t.Errorf("connection refused: fix %q", fix)
	}
}
