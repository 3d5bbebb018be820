package testutil

import (
	"bufio"
	"encoding/base64"
	"io"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"
)

// ConnectProxy is an HTTP forward proxy that serves CONNECT only (the way
// WebSocket clients use HTTPS_PROXY), with Basic authentication.
type ConnectProxy struct {
	ln         net.Listener
	user, pass string
	mu         sync.Mutex
	connects   []string
	wg         sync.WaitGroup
}

// StartConnectProxy runs a CONNECT proxy on loopback until the test ends;
// with user set, it requires those credentials (407 otherwise).
func StartConnectProxy(t testing.TB, user, pass string) *ConnectProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &ConnectProxy{ln: ln, user: user, pass: pass}
	var conns sync.Map
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
				p.serve(c, &conns)
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

func (p *ConnectProxy) serve(c net.Conn, conns *sync.Map) {
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	br := bufio.NewReader(c)
	req, err := http.ReadRequest(br)
	if err != nil {
		return
	}
	_ = c.SetReadDeadline(time.Time{})
	if req.Method != http.MethodConnect {
		_, _ = io.WriteString(c, "HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
		return
	}
	want := "Basic " + base64.StdEncoding.EncodeToString([]byte(p.user+":"+p.pass))
	if p.user != "" && req.Header.Get("Proxy-Authorization") != want {
		_, _ = io.WriteString(c, "HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic\r\nContent-Length: 0\r\n\r\n")
		return
	}
	up, err := net.DialTimeout("tcp", req.Host, 5*time.Second)
	if err != nil {
		_, _ = io.WriteString(c, "HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
		return
	}
	conns.Store(up, true)
	defer conns.Delete(up)
	defer up.Close()
	p.mu.Lock()
	p.connects = append(p.connects, req.Host)
	p.mu.Unlock()
	_, _ = io.WriteString(c, "HTTP/1.1 200 Connection established\r\n\r\n")
	done := make(chan struct{})
	go func() {
		_, _ = io.Copy(up, br) // br holds nothing past the request: the client waits for the 200
		_ = up.Close()
		close(done)
	}()
	_, _ = io.Copy(c, up)
	_ = c.Close()
	<-done
}
