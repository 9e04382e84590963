package testenv

import (
	"context"
	"fmt"
	"strings"
	"testing"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
)

// Proxy is an in-process TCP proxy (toxiproxy) in front of a local server,
// so a test can cut or stall the connections of the code under test.
type Proxy struct {
	t     testing.TB
	proxy *toxiproxy.Proxy
	Addr  string // host:port to connect to instead of the upstream
}

// NewProxy starts a proxy on a free loopback port that forwards to
// upstream (host:port on 127.0.0.1); cleanup stops it.
func NewProxy(t testing.TB, upstream string) *Proxy {
	t.Helper()

	server := toxiproxy.NewServer(toxiproxy.NewMetricsContainer(prometheus.NewRegistry()), zerolog.Nop())
	p := toxiproxy.NewProxy(server, Name("proxy"), "127.0.0.1:0", upstream)
	if err := p.Start(); err != nil {
		t.Fatalf("start proxy to %s: %v", upstream, err)
	}
	t.Cleanup(p.Stop)

	return &Proxy{t: t, proxy: p, Addr: p.Listen}
}

// Cut closes every proxied connection and refuses new ones until Restore.
func (p *Proxy) Cut() {
	p.proxy.Stop()
}

// Restore accepts connections again after Cut, on the same port.
func (p *Proxy) Restore() {
	p.t.Helper()
	if err := p.proxy.Start(); err != nil {
		p.t.Fatalf("restart proxy: %v", err)
	}
}

// Stall stops forwarding data in both directions without closing the
// connections, as a dead network path does, until Unstall.
func (p *Proxy) Stall() {
	p.t.Helper()
	p.StallDirection("upstream")
	p.StallDirection("downstream")
}

// StallDirection stops forwarding data in one direction only: "upstream"
// (client to server) or "downstream" (server to client), until Unstall.
func (p *Proxy) StallDirection(stream string) {
	p.t.Helper()
	body := fmt.Sprintf(`{"name":"stall_%s","type":"timeout","stream":"%s","attributes":{"timeout":0}}`, stream, stream)
	if _, err := p.proxy.Toxics.AddToxicJson(strings.NewReader(body)); err != nil {
		p.t.Fatalf("stall proxy %s: %v", stream, err)
	}
}

// Unstall removes the toxics that Stall and StallDirection added.
func (p *Proxy) Unstall() {
	p.t.Helper()
	for _, stream := range []string{"upstream", "downstream"} {
		if p.proxy.Toxics.GetToxic("stall_"+stream) == nil {
			continue
		}
		if err := p.proxy.Toxics.RemoveToxic(context.Background(), "stall_"+stream); err != nil {
			p.t.Fatalf("unstall proxy: %v", err)
		}
	}
}

// ThroughProxy returns url with the host and port of the local server
// replaced by addr.
func ThroughProxy(url, server, addr string) string {
	return strings.Replace(url, server, addr, 1)
}
