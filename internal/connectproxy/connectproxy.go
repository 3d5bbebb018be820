// Package connectproxy is an HTTP forward proxy that serves CONNECT only,
// the way HTTPS passes through corporate proxies: the tests' proxy
// (internal/testutil) and the kind e2e's egress proxy.
package connectproxy

import (
	"bufio"
	"encoding/base64"
	"io"
	"net"
	"net/http"
	"sync/atomic"
	"time"
)

// Proxy serves CONNECT requests. The zero value serves anyone.
type Proxy struct {
	// User and Pass, with User set, are the Basic credentials required
	// (407 otherwise).
	User, Pass string
	// OnConnect, if set, is called when a tunnel opens.
	OnConnect func(target, peer string)
	// OnClose, if set, is called when a tunnel ends, with the bytes it
	// carried each way.
	OnClose func(target, peer string, out, in int64, took time.Duration)
	// OnRefuse, if set, is called for a request refused.
	OnRefuse func(peer, reason string)
	// Track, if set, is told of each upstream connection as it opens
	// (open) and closes, so that its owner can close them all.
	Track func(c net.Conn, open bool)
}

// ServeConn serves one client connection and closes it.
func (p *Proxy) ServeConn(c net.Conn) {
	defer c.Close()
	peer := c.RemoteAddr().String()
	refuse := func(status, reason string) {
		_, _ = io.WriteString(c, "HTTP/1.1 "+status+"\r\nContent-Length: 0\r\n\r\n")
		if p.OnRefuse != nil {
			p.OnRefuse(peer, reason)
		}
	}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(c)
	req, err := http.ReadRequest(br)
	if err != nil {
		return
	}
	_ = c.SetReadDeadline(time.Time{})
	if req.Method != http.MethodConnect {
		refuse("405 Method Not Allowed\r\nAllow: CONNECT", "method "+req.Method)
		return
	}
	want := "Basic " + base64.StdEncoding.EncodeToString([]byte(p.User+":"+p.Pass))
	if p.User != "" && req.Header.Get("Proxy-Authorization") != want {
		refuse("407 Proxy Authentication Required\r\nProxy-Authenticate: Basic", "credentials")
		return
	}
	began := time.Now()
	up, err := net.DialTimeout("tcp", req.Host, 10*time.Second)
	if err != nil {
		refuse("502 Bad Gateway", err.Error())
		return
	}
	if p.Track != nil {
		p.Track(up, true)
		defer p.Track(up, false)
	}
	defer up.Close()
	if p.OnConnect != nil {
		p.OnConnect(req.Host, peer)
	}
	_, _ = io.WriteString(c, "HTTP/1.1 200 Connection established\r\n\r\n")
	var out atomic.Int64
	done := make(chan struct{})
	go func() {
		n, _ := io.Copy(up, br) // br holds nothing past the request: the client waits for the 200
		out.Store(n)
		_ = up.Close()
		close(done)
	}()
	in, _ := io.Copy(c, up)
	_ = c.Close()
	<-done
	if p.OnClose != nil {
		p.OnClose(req.Host, peer, out.Load(), in, time.Since(began))
	}
}
