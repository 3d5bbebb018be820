package testutil

import (
	"net"
	"sync"
	"testing"

	"github.com/anyconn/kitex-anyconn/internal/connectproxy"
)

// ConnectProxy is an HTTP forward proxy that serves CONNECT only (the way
// WebSocket clients use HTTPS_PROXY), with Basic authentication.
type ConnectProxy struct {
	ln       net.Listener
	mu       sync.Mutex
	connects []string
	wg       sync.WaitGroup
}

// StartConnectProxy runs a CONNECT proxy on loopback until the test ends;
// with user set, it requires those credentials (407 otherwise).
func StartConnectProxy(t testing.TB, user, pass string) *ConnectProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &ConnectProxy{ln: ln}
	var conns sync.Map
	cp := connectproxy.Proxy{User: user, Pass: pass,
		OnConnect: func(target, _ string) {
			p.mu.Lock()
			p.connects = append(p.connects, target)
			p.mu.Unlock()
		},
		Track: func(up net.Conn, open bool) {
			if open {
				conns.Store(up, true)
			} else {
				conns.Delete(up)
			}
		},
	}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns.Store(c, true)
			p.wg.Add(1)
			go func() {
				defer p.wg.Done()
				defer conns.Delete(c)
				cp.ServeConn(c)
			}()
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		conns.Range(func(c, _ any) bool { _ = c.(net.Conn).Close(); return true })
		p.wg.Wait()
	})
	return p
}

// Addr returns the proxy's address.
func (p *ConnectProxy) Addr() string { return p.ln.Addr().String() }

// Connects returns the targets of the tunnels it opened.
func (p *ConnectProxy) Connects() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.connects...)
}
