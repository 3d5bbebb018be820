// Package proxy opens TCP connections through HTTP forward proxies with
// CONNECT, for the WebSocket dialer and the tunnel's agent.
package proxy

import (
	"bufio"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"time"

	"golang.org/x/net/http/httpproxy"
)

// ErrRefused is returned when the proxy answers the CONNECT with anything
// but 200.
var ErrRefused = errors.New("proxy refused the connection")

// Func returns the proxy to reach a target URL through, or nil for a
// direct connection.
type Func func(target *url.URL) (*url.URL, error)

// FromEnvironment returns the proxy for a target as HTTPS_PROXY (for
// schemes wss and https, and any other but ws and http), HTTP_PROXY (ws,
// http) and NO_PROXY (and their lower-case forms) say, read once now.
func FromEnvironment() Func {
	proxyFor := httpproxy.FromEnvironment().ProxyFunc()
	return func(target *url.URL) (*url.URL, error) {
		u := *target
		u.Scheme = "https"
		if target.Scheme == "ws" || target.Scheme == "http" {
			u.Scheme = "http"
		}
		return proxyFor(&u)
	}
}

// Dial connects to target's host, directly or through the HTTP proxy that
// via names for it (a CONNECT tunnel). via may be nil.
func Dial(ctx context.Context, target *url.URL, via Func) (net.Conn, error) {
	var d net.Dialer
	var p *url.URL
	if via != nil {
		var err error
		if p, err = via(target); err != nil {
			return nil, fmt.Errorf("proxy for %s: %w", target.Host, err)
		}
	}
	if p == nil {
		return d.DialContext(ctx, "tcp", target.Host)
	}
	if p.Scheme != "http" {
		return nil, fmt.Errorf("proxy %s: only http:// proxies are supported", p.Redacted())
	}
	proxyAddr := p.Host
	if p.Port() == "" {
		proxyAddr = net.JoinHostPort(p.Hostname(), "80")
	}
	c, err := d.DialContext(ctx, "tcp", proxyAddr)
	if err != nil {
		return nil, fmt.Errorf("proxy %s: %w", p.Redacted(), err)
	}
	if err := connect(ctx, c, target.Host, p); err != nil {
		_ = c.Close()
		return nil, err
	}
	return c, nil
}

// connect asks the proxy on c for a tunnel to hostport.
func connect(ctx context.Context, c net.Conn, hostport string, p *url.URL) error {
	stop := context.AfterFunc(ctx, func() { _ = c.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	req := &http.Request{
		Method: http.MethodConnect,
		URL:    &url.URL{Opaque: hostport},
		Host:   hostport,
		Header: http.Header{},
	}
	if p.User != nil {
		pw, _ := p.User.Password()
		req.Header.Set("Proxy-Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte(p.User.Username()+":"+pw)))
	}
	if err := req.Write(c); err != nil {
		return fmt.Errorf("proxy %s: %w", p.Redacted(), err)
	}
	// The answer is read byte by byte: what follows it is the tunnel's.
	resp, err := http.ReadResponse(bufio.NewReaderSize(oneByteReader{c}, 1), req)
	if err != nil {
		return fmt.Errorf("proxy %s: %w", p.Redacted(), err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%w: %s: HTTP %s", ErrRefused, p.Redacted(), resp.Status)
	}
	if !stop() {
		return fmt.Errorf("proxy %s: %w", p.Redacted(), ctx.Err())
	}
	return nil
}

// oneByteReader reads at most one byte at a time, so that a bufio.Reader
// over it never reads past what it is asked for.
type oneByteReader struct{ c net.Conn }

func (r oneByteReader) Read(p []byte) (int, error) {
	if len(p) > 1 {
		p = p[:1]
	}
	return r.c.Read(p)
}
