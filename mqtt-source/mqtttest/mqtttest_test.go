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
