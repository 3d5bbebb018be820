package websocket

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

// ErrProxy is returned by Dial when the HTTP proxy refuses the CONNECT.
var ErrProxy = errors.New("websocket: proxy refused the connection")

// ProxyFromEnvironment returns the proxy for a target as HTTPS_PROXY (wss),
// HTTP_PROXY (ws) and NO_PROXY (and their lower-case forms) say, read once
// now. For DialerConfig.Proxy.
func ProxyFromEnvironment() func(*url.URL) (*url.URL, error) {
	proxyFor := httpproxy.FromEnvironment().ProxyFunc()
	return func(target *url.URL) (*url.URL, error) {
		u := *target
		u.Scheme = "http"
		if target.Scheme == "wss" {
			u.Scheme = "https"
		}
		return proxyFor(&u)
	}
}

// dialTCP connects to u's host, directly or through the HTTP proxy that
// proxy names for it (a CONNECT tunnel).
func dialTCP(ctx context.Context, u *url.URL, proxy func(*url.URL) (*url.URL, error)) (net.Conn, error) {
	var d net.Dialer
	var via *url.URL
	if proxy != nil {
		var err error
		if via, err = proxy(u); err != nil {
			return nil, fmt.Errorf("websocket: proxy for %s: %w", u.Host, err)
		}
	}
	if via == nil {
		return d.DialContext(ctx, "tcp", u.Host)
	}
	if via.Scheme != "http" {
		return nil, fmt.Errorf("websocket: proxy %s: only http:// proxies are supported", via.Redacted())
	}
	proxyAddr := via.Host
	if via.Port() == "" {
		proxyAddr = net.JoinHostPort(via.Hostname(), "80")
	}
	c, err := d.DialContext(ctx, "tcp", proxyAddr)
	if err != nil {
		return nil, fmt.Errorf("websocket: proxy %s: %w", via.Redacted(), err)
	}
	if err := connect(ctx, c, u.Host, via); err != nil {
		_ = c.Close()
		return nil, err
	}
	return c, nil
}

// connect asks the proxy on c for a tunnel to hostport.
func connect(ctx context.Context, c net.Conn, hostport string, via *url.URL) error {
	stop := context.AfterFunc(ctx, func() { _ = c.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	req := &http.Request{
		Method: http.MethodConnect,
		URL:    &url.URL{Opaque: hostport},
		Host:   hostport,
		Header: http.Header{},
	}
	if via.User != nil {
		pw, _ := via.User.Password()
		req.Header.Set("Proxy-Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte(via.User.Username()+":"+pw)))
	}
	if err := req.Write(c); err != nil {
		return fmt.Errorf("websocket: proxy %s: %w", via.Redacted(), err)
	}
	// The answer is read byte by byte: what follows it is the tunnel's.
	resp, err := http.ReadResponse(bufio.NewReaderSize(oneByteReader{c}, 1), req)
	if err != nil {
		return fmt.Errorf("websocket: proxy %s: %w", via.Redacted(), err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%w: %s: HTTP %s", ErrProxy, via.Redacted(), resp.Status)
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
