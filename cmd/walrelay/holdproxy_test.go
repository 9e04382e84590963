package main

import (
	"net"
	"sync"
	"sync/atomic"
	"testing"
)

// holdProxy forwards TCP connections to a local server until hold is
// called. From then on it forwards nothing and keeps the server side of
// every connection open even after the client is gone, which is how a
// client that vanished without closing its sockets looks to the server.
type holdProxy struct {
	listener net.Listener
	upstream string
	held     atomic.Bool

	mu    sync.Mutex
	conns []net.Conn
}

// newHoldProxy listens on a free loopback port; cleanup closes every
// connection.
func newHoldProxy(t *testing.T, upstream string) *holdProxy {
	t.Helper()

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	p := &holdProxy{listener: l, upstream: upstream}
	go p.accept()

	t.Cleanup(func() {
		l.Close()
		p.mu.Lock()
		defer p.mu.Unlock()
		for _, c := range p.conns {
			c.Close()
		}
	})

	return p
}

func (p *holdProxy) addr() string { return p.listener.Addr().String() }

// hold stops forwarding and closing.
func (p *holdProxy) hold() { p.held.Store(true) }

func (p *holdProxy) accept() {
	for {
		client, err := p.listener.Accept()
		if err != nil {
			return // closed by cleanup
		}
		server, err := net.Dial("tcp", p.upstream)
		if err != nil {
			client.Close()
			continue
		}

		p.mu.Lock()
		p.conns = append(p.conns, client, server)
		p.mu.Unlock()

		go p.forward(server, client)
		go p.forward(client, server)
	}
}

// forward copies src to dst, dropping the data once held, and closes dst
// when src ends unless held.
func (p *holdProxy) forward(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 && !p.held.Load() {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				err = werr
			}
		}
		if err != nil {
			break
		}
	}
	if !p.held.Load() {
		dst.Close()
	}
}
