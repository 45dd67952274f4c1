package mqttsource

import (
	"bufio"
	"context"
	"crypto/tls"
	"net"
	"net/url"

	"github.com/eclipse/paho.golang/autopaho"
	"github.com/eclipse/paho.golang/packets"
)

// Byte flow control. Receive Maximum bounds the broker's unacknowledged messages by count only, and
// paho reads every PUBLISH into a channel of that many entries before the driver sees it: with 1 MiB
// messages and a Receive Maximum of 1000 that is a gigabyte. So the connection is read through
// flowConn, which counts the PUBLISH packets it reads (from their fixed headers) and stops reading
// while the packets read but not yet delivered to the driver, plus what waits for Receive (the queue
// and the deliveries the adapter handed back), hold the byte budget (one message always passes).

// mqttPublish is the PUBLISH control packet type (MQTT 5, section 2.1.2).
const mqttPublish = 3

// dial is autopaho's AttemptConnection for mqtt:// and mqtts://: TCP or TLS, read through flowConn.
func (d *driver) dial(ctx context.Context, cfg autopaho.ClientConfig, u *url.URL) (net.Conn, error) {
	host := u.Host
	if u.Port() == "" {
		port := "1883"
		if u.Scheme == "mqtts" {
			port = "8883"
		}
		host = net.JoinHostPort(u.Hostname(), port)
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.ConnectTimeout)
	defer cancel()
	var (
		conn net.Conn
		err  error
	)
	if u.Scheme == "mqtts" {
		td := tls.Dialer{Config: cfg.TlsCfg}
		conn, err = td.DialContext(ctx, "tcp", host)
	} else {
		var nd net.Dialer
		conn, err = nd.DialContext(ctx, "tcp", host)
	}
	if err != nil {
		return nil, err
	}
	return packets.NewThreadSafeConn(&flowConn{Conn: conn, d: d, r: bufio.NewReaderSize(conn, readBuffer)}), nil
}

// readBuffer is what flowConn reads from the socket at once: paho reads each packet in three or more
// small reads, a system call each without it. It is also the most read beyond the byte budget.
const readBuffer = 32 << 10

// flowConn reads the connection for paho (one reading goroutine), buffered, and tracks MQTT packet
// framing.
type flowConn struct {
	net.Conn
	d *driver
	r *bufio.Reader

	// framing state, touched by the reading goroutine only
	first   byte // the packet's first byte (type and flags)
	inHead  bool // reading the remaining-length varint
	mult    int
	remLen  int
	headLen int
	body    int // bytes of the current packet's body still to come
}

// Read waits, between packets, while the byte budget is used up; then it reads and accounts the
// PUBLISH packets it starts. Within a packet it never waits: paho must finish the packet to deliver it.
func (c *flowConn) Read(p []byte) (int, error) {
	if c.body == 0 && !c.inHead {
		c.d.waitForRoom()
	}
	n, err := c.r.Read(p)
	c.track(p[:n])
	return n, err
}

// track advances the framing over b: a packet's body is skipped at once, its fixed header read byte
// by byte.
func (c *flowConn) track(b []byte) {
	for len(b) > 0 {
		if c.body > 0 {
			k := min(c.body, len(b))
			c.body -= k
			b = b[k:]
			continue
		}
		c.scan(b[0])
		b = b[1:]
	}
}

// scan advances the framing by one byte of a fixed header.
func (c *flowConn) scan(b byte) {
	switch {
	case !c.inHead: // a packet starts
		c.first, c.inHead, c.mult, c.remLen, c.headLen = b, true, 1, 0, 1
	default: // a byte of the remaining length
		c.remLen += int(b&0x7f) * c.mult
		c.mult *= 128
		c.headLen++
		if b&0x80 != 0 && c.headLen < 5 {
			return
		}
		c.inHead, c.body = false, c.remLen
		qos, dup := (c.first>>1)&3, c.first&0x08 != 0
		// A QoS 2 duplicate that paho already received is acknowledged by paho's session without
		// reaching the driver: never counted (at worst a little more is read than the budget).
		if c.first>>4 == mqttPublish && !(qos == 2 && dup) {
			c.d.publishRead(int64(c.headLen + c.remLen))
		}
	}
}

// publishRead accounts a PUBLISH packet of size bytes read from the connection.
func (d *driver) publishRead(size int64) {
	d.mu.Lock()
	d.inPaho = append(d.inPaho, size)
	d.inPahoBytes += size
	d.mu.Unlock()
}

// publishDeliveredLocked accounts the oldest PUBLISH read as delivered to the driver. d.mu is held.
func (d *driver) publishDeliveredLocked() {
	if len(d.inPaho) == 0 {
		return
	}
	d.inPahoBytes -= d.inPaho[0]
	d.inPaho[0] = 0
	d.inPaho = d.inPaho[1:]
	if len(d.inPaho) == 0 {
		d.inPaho = nil // let the backing array go
	}
}

// waitForRoom blocks while what was read and not yet received (handed-back deliveries included) fills
// the byte budget or Receive Maximum (a broker that exceeds its window would otherwise fill paho's
// channel, where the reader blocks unseen by the pinger), until Receive makes room (it takes the
// queue, and the handed-back deliveries once they are due) or the driver is closed.
func (d *driver) waitForRoom() {
	d.mu.Lock()
	defer d.mu.Unlock()
	waited := false
	for !d.closed {
		n, bytes := d.waitingLocked()
		n, bytes = n+len(d.inPaho), bytes+d.inPahoBytes
		if n == 0 || (bytes < d.maxBytes && n < d.maxQueue) {
			break
		}
		waited, d.gated = true, true
		wake := d.wake
		d.mu.Unlock()
		<-wake
		d.mu.Lock()
	}
	if waited {
		d.gated, d.gateOpened = false, d.now() // the pinger does not count the wait as silence
	}
}
