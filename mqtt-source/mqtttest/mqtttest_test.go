package mqtttest

import (
	"context"
	"testing"
	"time"
)

func TestMain(m *testing.M) { Main(m) }

// The shared broker accepts the test user, refuses a wrong password, and delivers what is published.
func TestSharedBroker(t *testing.T) {
	srv := Shared(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	sub := srv.Connect(t, "")
	topic := Name(t)
	if err := sub.Subscribe(ctx, topic); err != nil {
		t.Fatal(err)
	}
	pub := srv.Connect(t, "")
	if err := pub.Publish(ctx, topic, 1, []string{"k", "v"}, []byte("a"), []byte("b")); err != nil {
		t.Fatal(err)
	}
	if got := sub.WaitReceived(ctx, 2); len(got) != 2 || string(got[0].Payload) != "a" || got[0].Properties.User.Get("k") != "v" {
		t.Fatalf("received %d messages, want a and b with the user property", len(got))
	}
	bad := &Server{Port: srv.Port, Password: "wrong"}
	if c, err := bad.connect("bad", true); err == nil {
		c.Close()
		t.Fatal("a wrong password was accepted")
	}
}

// A persistent session survives a graceful broker restart with what was queued for it.
func TestRestartKeepsSessions(t *testing.T) {
	srv := Start(t, Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	topic := Name(t)
	srv.Session(t, "keeper", time.Hour, 1, topic)
	pub := srv.Connect(t, "")
	if err := pub.Publish(ctx, topic, 1, nil, []byte("kept")); err != nil {
		t.Fatal(err)
	}
	pub.Close()
	srv.Stop(t)
	srv.Restart(t)
	c := srv.Resume(t, "keeper")
	if got := c.WaitReceived(ctx, 1); len(got) != 1 || string(got[0].Payload) != "kept" {
		t.Fatalf("after a restart the session got %d messages, want the one queued", len(got))
	}
}

// What the mqtt-source README says of broker restarts: a session's own subscriptions survive a graceful
// restart of Mosquitto 2.0, its shared subscriptions do not (the messages queued for them do), so what
// is published between the restart and the connector's new SUBSCRIBE reaches nobody in the share group.
// If a Mosquitto version restores shared subscriptions, this fails: change the README with it.
func TestRestartKeepsSubscriptionsButNotSharedOnes(t *testing.T) {
	for _, tc := range []struct {
		name, filter string
		kept         bool
	}{{"plain", "", true}, {"shared", "$share/g/", false}} {
		t.Run(tc.name, func(t *testing.T) {
			srv := Start(t, Options{})
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			topic := Name(t)
			srv.Session(t, "keeper", time.Hour, 1, tc.filter+topic)
			srv.Stop(t)
			srv.Restart(t)
			c := srv.Resume(t, "keeper") // and no SUBSCRIBE
			if err := srv.Connect(t, "").Publish(ctx, topic, 1, nil, []byte("after")); err != nil {
				t.Fatal(err)
			}
			wctx, wcancel := context.WithTimeout(ctx, 2*time.Second)
			defer wcancel()
			if got := len(c.WaitReceived(wctx, 1)); (got == 1) != tc.kept {
				t.Fatalf("after a restart the resumed session received %d messages published to %s, want the subscription kept: %v", got, tc.filter+topic, tc.kept)
			}
		})
	}
}

// What the mqtt-source README says of Mosquitto's queue limit: with its default max_queued_messages
// (1000), a persistent session that is offline or behind gets the first 1000 QoS 1 messages queued and
// the rest are dropped without a word to anyone (the publisher's PUBACK is a success). A connector that
// stops acknowledging (a replica down, numa backpressured) therefore loses messages unless the broker is
// configured with max_queued_messages 0 or a limit above any backlog it must survive. If a Mosquitto
// version changes this, the test fails: change the README with it.
func TestDefaultQueueLimitDropsMessages(t *testing.T) {
	const limit, published = 1000, 1200 // 1000 is Mosquitto's default
	srv := Start(t, Options{Config: "max_queued_messages 1000"})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	topic := Name(t)
	srv.Session(t, "offline", time.Hour, 1, topic)
	pub := srv.Connect(t, "")
	payloads := make([][]byte, published)
	for i := range payloads {
		payloads[i] = []byte("m")
	}
	if err := pub.Publish(ctx, topic, 1, nil, payloads...); err != nil {
		t.Fatalf("publishing: every PUBACK should be a success, got %v", err)
	}
	c := srv.Resume(t, "offline")
	c.WaitReceived(ctx, limit)
	wctx, wcancel := context.WithTimeout(ctx, 2*time.Second)
	defer wcancel()
	if got := len(c.WaitReceived(wctx, published)); got != limit {
		t.Fatalf("the offline session received %d of %d messages published at QoS 1, want the %d the queue holds", got, published, limit)
	}
}
