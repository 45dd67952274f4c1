package mqttsource

import (
	"context"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/eclipse/paho.golang/packets"
	"github.com/eclipse/paho.golang/paho"
	"github.com/eclipse/paho.golang/paho/log"
)

// pinger keeps the connection alive as paho's default pinger does (a PINGREQ every keep-alive
// interval), but it does not count the time the driver deliberately stops reading the connection
// (flow.go) as silence from the broker: a pipeline that holds the budget for a while must not cost a
// reconnection and a redelivery of everything unacknowledged. The connection is declared dead after
// twice the interval without a packet while reading.
type pinger struct {
	d *driver

	mu       sync.Mutex
	lastRecv time.Time
}

var _ paho.Pinger = (*pinger)(nil)

// Run sends PINGREQs and watches for silence until ctx ends or the connection is dead.
func (p *pinger) Run(ctx context.Context, conn net.Conn, keepAlive uint16) error {
	if keepAlive == 0 {
		return nil
	}
	interval := time.Duration(keepAlive) * time.Second
	p.received()
	check := time.NewTicker(interval / 4)
	defer check.Stop()
	errs := make(chan error, 1)
	lastPing := time.Time{}
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-errs:
			return err
		case now := <-check.C:
			if now.Sub(lastPing) >= interval {
				lastPing = now
				go func() {
					if _, err := packets.NewControlPacket(packets.PINGREQ).WriteTo(conn); err != nil {
						select {
						case errs <- fmt.Errorf("sending PINGREQ: %w", err):
						default:
						}
					}
				}()
			}
			if silent := p.silence(now); silent > 2*interval {
				return fmt.Errorf("no packet from the broker for %s", silent.Round(time.Second))
			}
		}
	}
}

// silence is how long the broker has been silent while the driver was reading: 0 while it is not.
func (p *pinger) silence(now time.Time) time.Duration {
	p.mu.Lock()
	last := p.lastRecv
	p.mu.Unlock()
	p.d.mu.Lock()
	gated, opened := p.d.gated, p.d.gateOpened
	p.d.mu.Unlock()
	if gated {
		return 0
	}
	if opened.After(last) {
		last = opened
	}
	return now.Sub(last)
}

func (p *pinger) received() {
	p.mu.Lock()
	p.lastRecv = time.Now()
	p.mu.Unlock()
}

// PacketReceived records a packet from the broker.
func (p *pinger) PacketReceived() { p.received() }

// PingResp records a PINGRESP.
func (p *pinger) PingResp() { p.received() }

// PacketSent is not needed: a PINGREQ goes out every interval anyway.
func (p *pinger) PacketSent() {}

// SetDebug is not needed.
func (p *pinger) SetDebug(log.Logger) {}
