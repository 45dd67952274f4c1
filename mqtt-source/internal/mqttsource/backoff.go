package mqttsource

import (
	"time"

	"github.com/eclipse/paho.golang/autopaho"
)

// Reconnection backoff. autopaho waits ReconnectBackoff(attempt) before each connection attempt and
// starts again from attempt 0, which is meant to be no wait, after every connection that came up. A
// broker that accepts the CONNECT and drops the connection at once (a session taken over by another
// client with the same id, a broker that is busy or refuses a SUBSCRIBE by disconnecting) would get
// a new connection every millisecond. So the driver's backoff waits at least reconnectMin before any
// reconnection, and keeps growing while connections are lost within stableConnection of coming up.
const (
	// reconnectMin is the least wait before a reconnection attempt.
	reconnectMin = 100 * time.Millisecond
	// stableConnection is how long a connection must have been up for the backoff to start again
	// from reconnectMin.
	stableConnection = 5 * time.Second
	// maxBackoffSteps caps the steps counted (the wait reaches MQTT_RECONNECT_MAX_BACKOFF long before).
	maxBackoffSteps = 64
)

// reconnectBackoff is autopaho's ReconnectBackoff: no wait before the first connection of the process;
// otherwise exponential from reconnectMin up to maxWait, randomised (autopaho's exponential backoff),
// one step further for every attempt and for every connection in a row that was lost within
// stableConnection.
func (d *driver) reconnectBackoff(maxWait time.Duration) autopaho.Backoff {
	base := autopaho.NewExponentialBackoff(reconnectMin, max(maxWait, 2*reconnectMin), 2*reconnectMin, 2)
	return func(attempt int) time.Duration {
		d.mu.Lock()
		ever, short := d.everConnected, d.shortLived
		d.mu.Unlock()
		if !ever {
			return base(attempt) // attempt 0: at once
		}
		return base(min(attempt+1+short, maxBackoffSteps))
	}
}

// countLifetimeLocked records how long the connection just lost was up. d.mu is held.
func (d *driver) countLifetimeLocked(up time.Duration) {
	if up >= stableConnection {
		d.shortLived = 0
		return
	}
	d.shortLived = min(d.shortLived+1, maxBackoffSteps)
}
