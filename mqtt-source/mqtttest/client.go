package mqtttest

import (
	"context"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
)

// Client is a plain paho client of the broker for tests: it publishes, and collects what its
// subscriptions receive (acknowledged at once).
type Client struct {
	*paho.Client
	mu       sync.Mutex
	received []*paho.Publish
	arrived  chan struct{}
}

// Connect connects a clean-session client with clientID (Name(t) when empty) as User, closed when t ends.
func (s *Server) Connect(t testing.TB, clientID string) *Client {
	t.Helper()
	if clientID == "" {
		clientID = Name(t)
	}
	c, err := s.connect(clientID, true)
	if err != nil {
		t.Fatalf("connecting to mosquitto: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// Resume connects clientID without clean start, resuming its persistent session (see Session): the
// broker sends what it queued for it. Closed when t ends.
func (s *Server) Resume(t testing.TB, clientID string) *Client {
	t.Helper()
	c, err := s.connect(clientID, false)
	if err != nil {
		t.Fatalf("connecting to mosquitto: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func (s *Server) connect(clientID string, clean bool) (*Client, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", s.Addr())
	if err != nil {
		return nil, err
	}
	c := &Client{arrived: make(chan struct{}, 1)}
	c.Client = paho.NewClient(paho.ClientConfig{
		Conn:     conn,
		ClientID: clientID,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			c.mu.Lock()
			c.received = append(c.received, pr.Packet)
			c.mu.Unlock()
			select {
			case c.arrived <- struct{}{}:
			default:
			}
			return true, nil
		}},
	})
	cp := &paho.Connect{
		ClientID: clientID, CleanStart: clean, KeepAlive: 30,
		UsernameFlag: true, Username: User, PasswordFlag: true, Password: []byte(s.Password),
	}
	if !clean {
		exp := uint32(3600)
		cp.Properties = &paho.ConnectProperties{SessionExpiryInterval: &exp}
	}
	ca, err := c.Client.Connect(ctx, cp)
	if err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("connecting %s: %w", clientID, err)
	}
	if ca.ReasonCode != 0 {
		_ = conn.Close()
		return nil, fmt.Errorf("connecting %s: reason code 0x%02X", clientID, ca.ReasonCode)
	}
	return c, nil
}

// Close disconnects the client.
func (c *Client) Close() {
	_ = c.Client.Disconnect(&paho.Disconnect{ReasonCode: 0})
}

// Publish sends each payload to topic with qos, with the user properties props (key, value, ...), and
// waits for the broker's acknowledgement of each.
func (c *Client) Publish(ctx context.Context, topic string, qos byte, props []string, payloads ...[]byte) error {
	var user paho.UserProperties
	for i := 0; i+1 < len(props); i += 2 {
		user = append(user, paho.UserProperty{Key: props[i], Value: props[i+1]})
	}
	for _, p := range payloads {
		if _, err := c.Client.Publish(ctx, &paho.Publish{Topic: topic, QoS: qos, Payload: p,
			Properties: &paho.PublishProperties{User: user}}); err != nil {
			return fmt.Errorf("publishing to %s: %w", topic, err)
		}
	}
	return nil
}

// Subscribe subscribes to filter at QoS 1; what arrives is collected (Received).
func (c *Client) Subscribe(ctx context.Context, filter string) error {
	_, err := c.Client.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: filter, QoS: 1}}})
	if err != nil {
		return fmt.Errorf("subscribing to %s: %w", filter, err)
	}
	return nil
}

// Received returns what the client's subscriptions received so far.
func (c *Client) Received() []*paho.Publish {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]*paho.Publish(nil), c.received...)
}

// WaitReceived waits until at least n messages arrived or ctx ends, and returns what arrived.
func (c *Client) WaitReceived(ctx context.Context, n int) []*paho.Publish {
	for {
		if got := c.Received(); len(got) >= n {
			return got
		}
		select {
		case <-ctx.Done():
			return c.Received()
		case <-c.arrived:
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Session connects clientID with a persistent session (no clean start: Mosquitto does not persist a
// session created with clean start across a restart), subscribes filters and
// disconnects, so the broker queues what is published for clientID from now on.
func (s *Server) Session(t testing.TB, clientID string, expiry time.Duration, qos byte, filters ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", s.Addr())
	if err != nil {
		t.Fatalf("connecting to mosquitto: %v", err)
	}
	cli := paho.NewClient(paho.ClientConfig{Conn: conn, ClientID: clientID})
	exp := uint32(expiry / time.Second)
	if _, err := cli.Connect(ctx, &paho.Connect{ClientID: clientID, CleanStart: false, KeepAlive: 30,
		UsernameFlag: true, Username: User, PasswordFlag: true, Password: []byte(s.Password),
		Properties: &paho.ConnectProperties{SessionExpiryInterval: &exp}}); err != nil {
		t.Fatalf("connecting %s: %v", clientID, err)
	}
	sub := &paho.Subscribe{}
	for _, f := range filters {
		sub.Subscriptions = append(sub.Subscriptions, paho.SubscribeOptions{Topic: f, QoS: qos})
	}
	if _, err := cli.Subscribe(ctx, sub); err != nil {
		t.Fatalf("subscribing %s: %v", clientID, err)
	}
	if err := cli.Disconnect(&paho.Disconnect{ReasonCode: 0}); err != nil {
		t.Fatalf("disconnecting %s: %v", clientID, err)
	}
}
