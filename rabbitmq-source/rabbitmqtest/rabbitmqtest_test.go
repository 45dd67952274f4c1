package rabbitmqtest

import (
	"context"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

func TestMain(m *testing.M) { Main(m) }

// The shared node takes a publish and a get, lists and closes connections by name.
func TestSharedNode(t *testing.T) {
	n := Shared(t)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	q := Name(t)
	n.DeclareQueue(t, q, Quorum, nil)
	if err := n.Publish(ctx, q, amqp.Publishing{Body: []byte("hello")}); err != nil {
		t.Fatal(err)
	}
	c, err := amqp.DialConfig(n.URL(), amqp.Config{Properties: amqp.Table{"connection_name": "probe-" + q}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ch, err := c.Channel()
	if err != nil {
		t.Fatal(err)
	}
	m, ok, err := ch.Get(q, true)
	if err != nil || !ok || string(m.Body) != "hello" {
		t.Fatalf("get = %q, %v, %v", m.Body, ok, err)
	}
	closed := c.NotifyClose(make(chan *amqp.Error, 1))
	if k, err := n.CloseConnections(ctx, "probe-"+q, "test"); err != nil || k != 1 {
		t.Fatalf("CloseConnections = %d, %v", k, err)
	}
	select {
	case e := <-closed:
		if e == nil || !strings.Contains(e.Reason, "test") {
			t.Errorf("closed with %v", e)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("connection not closed by the broker")
	}
}
