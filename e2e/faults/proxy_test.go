package faults

import (
	"context"
	"strings"
	"testing"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
)

// Ways to cut the network between a connector and its broker.
const (
	// cutRefuse stops the proxy: every open connection is closed and new ones are refused, as when the
	// broker's host is down or a firewall rejects.
	cutRefuse = "refuse"
	// cutSilent keeps connections open but drops every byte both ways (toxiproxy's timeout toxic
	// with timeout 0), as a partition or a dead NAT path does: calls fail only by their own deadlines.
	// Removing the toxic closes the blackholed connections.
	cutSilent = "silent"
)

// netProxy is an in-process toxiproxy TCP proxy on 127.0.0.1 in front of a broker.
type netProxy struct {
	p    *toxiproxy.Proxy
	Addr string
}

func newProxy(t *testing.T, upstream string) *netProxy {
	t.Helper()
	srv := toxiproxy.NewServer(toxiproxy.NewMetricsContainer(prometheus.NewRegistry()), zerolog.Nop())
	p := toxiproxy.NewProxy(srv, strings.ReplaceAll(t.Name(), "/", "_"), "127.0.0.1:0", upstream)
	if err := p.Start(); err != nil {
		t.Fatalf("starting a proxy to %s: %v", upstream, err)
	}
	t.Cleanup(p.Stop)
	return &netProxy{p: p, Addr: p.Listen}
}

func (x *netProxy) cut(t *testing.T, mode string) {
	t.Helper()
	switch mode {
	case cutRefuse:
		x.p.Stop()
	case cutSilent:
		for _, dir := range []string{"upstream", "downstream"} {
			js := `{"name":"cut-` + dir + `","type":"timeout","stream":"` + dir + `","toxicity":1,"attributes":{"timeout":0}}`
			if _, err := x.p.Toxics.AddToxicJson(strings.NewReader(js)); err != nil {
				t.Fatalf("adding a timeout toxic: %v", err)
			}
		}
	default:
		t.Fatalf("unknown cut %q", mode)
	}
}

func (x *netProxy) heal(t *testing.T, mode string) {
	t.Helper()
	switch mode {
	case cutRefuse:
		if err := x.p.Start(); err != nil { // listens on the same address again
			t.Fatalf("restarting the proxy on %s: %v", x.Addr, err)
		}
	case cutSilent:
		for _, dir := range []string{"upstream", "downstream"} {
			if err := x.p.Toxics.RemoveToxic(context.Background(), "cut-"+dir); err != nil {
				t.Fatalf("removing the timeout toxic: %v", err)
			}
		}
	}
}
