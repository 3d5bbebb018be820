package websocket

import (
	"context"
	"fmt"
	"net"
	"net/url"

	"github.com/anyconn/kitex-anyconn/transport/internal/proxy"
)

// ErrProxy is returned by Dial when the HTTP proxy refuses the CONNECT.
var ErrProxy = proxy.ErrRefused

// ProxyFromEnvironment returns the proxy for a target as HTTPS_PROXY (wss),
// HTTP_PROXY (ws) and NO_PROXY (and their lower-case forms) say, read once
// now. For DialerConfig.Proxy.
func ProxyFromEnvironment() func(*url.URL) (*url.URL, error) {
	return proxy.FromEnvironment()
}

// dialTCP connects to u's host, directly or through the HTTP proxy that
// via names for it (a CONNECT tunnel).
func dialTCP(ctx context.Context, u *url.URL, via func(*url.URL) (*url.URL, error)) (net.Conn, error) {
	c, err := proxy.Dial(ctx, u, via)
	if err != nil && via != nil {
		return nil, fmt.Errorf("websocket: %w", err)
	}
	return c, err
}
