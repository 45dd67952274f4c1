package mqttsource

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/eclipse/paho.golang/paho"

	"github.com/numaflow-connectors/sources/common/proctest"
	"github.com/numaflow-connectors/sources/common/server"
)

// fakeConn is one connection: it records the packet ids acknowledged, in call order.
type fakeConn struct {
	mu    sync.Mutex
	acked []uint16
}

func (c *fakeConn) Ack(p *paho.Publish) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.acked = append(c.acked, p.PacketID)
	return nil
}

func (c *fakeConn) acks() []uint16 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]uint16(nil), c.acked...)
}

// fakeAPI stands in for the connection manager.
type fakeAPI struct {
	mqttAPI   // nil: a call the test did not expect panics
	mu        sync.Mutex
	suback    *paho.Suback
	subErr    error
	subs      []*paho.Subscribe
	published []*paho.Publish
	pubErr    error
	pubResp   *paho.PublishResponse // with pubErr: a refusal in the PUBACK
	disc      atomic.Int32
}

func (f *fakeAPI) Subscribe(_ context.Context, s *paho.Subscribe) (*paho.Suback, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.subs = append(f.subs, s)
	return f.suback, f.subErr
}

func (f *fakeAPI) Publish(_ context.Context, p *paho.Publish) (*paho.PublishResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.pubErr != nil {
		return f.pubResp, f.pubErr
	}
	f.published = append(f.published, p)
	return &paho.PublishResponse{}, nil
}

func (f *fakeAPI) Disconnect(context.Context) error { f.disc.Add(1); return nil }

func testLogger(t testing.TB) *slog.Logger { return proctest.Logger(t) }

// newFakeDriver is a driver over a fakeAPI, connected and subscribed.
func newFakeDriver(t *testing.T, mutate func(c *Config)) (*driver, *fakeAPI) {
	t.Helper()
	c := validConfig()
	if mutate != nil {
		mutate(&c)
	}
	if err := c.Validate(); err != nil {
		t.Fatalf("invalid test config: %v", err)
	}
	filters, _ := parseTopics(c.Topics)
	d := newDriver(&c, "client-0", "g", filters, server.Budget{Messages: 100, Bytes: 1 << 20}, testLogger(t))
	api := &fakeAPI{suback: &paho.Suback{Reasons: make([]byte, len(filters))}}
	d.api = api
	d.connectionUp(false)
	d.subscribe(t.Context(), d.api)
	t.Cleanup(func() { _ = d.Close(context.Background()) })
	return d, api
}

// pub is a QoS 1 message with packet id id on topic t, with user properties kv.
func pub(id uint16, topic, payload string, kv ...string) *paho.Publish {
	p := &paho.Publish{PacketID: id, QoS: 1, Topic: topic, Payload: []byte(payload), Properties: &paho.PublishProperties{}}
	for i := 0; i+1 < len(kv); i += 2 {
		p.Properties.User = append(p.Properties.User, paho.UserProperty{Key: kv[i], Value: kv[i+1]})
	}
	return p
}

func serverBudget() server.Budget { return server.Budget{Messages: 100, Bytes: 1 << 20} }
