package websocket

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha1"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	xws "golang.org/x/net/websocket"

	"github.com/anyconn/kitex-anyconn/transport/connadapt"
)

// DialerConfig configures the client side. The zero value dials ws://<address>/kitex.
type DialerConfig struct {
	// Path is the HTTP path of the server's Listener; DefaultPath if empty.
	Path string
	// TLSConfig, when set, makes the dialer use wss:// (TLS) for host:port
	// addresses; for a URL the scheme decides, and TLSConfig (system roots
	// if nil) configures wss://. An empty ServerName is filled with the
	// host being dialed.
	TLSConfig *tls.Config
	// Origin, if set, is sent as the Origin header. By default none is sent:
	// Origin is what browsers send, for the server to refuse pages of other
	// sites, and a Listener accepts requests without one.
	Origin string
	// Header holds extra headers for the upgrade request, such as the
	// Authorization an authenticating ingress asks for. The handshake's
	// own (Host, Upgrade, Connection, Sec-WebSocket-*) cannot be replaced.
	Header http.Header
	// Proxy, if set, returns the HTTP proxy to reach a target URL through
	// (with CONNECT), or nil for a direct connection. ProxyFromEnvironment
	// is the usual one (HTTPS_PROXY, HTTP_PROXY, NO_PROXY).
	Proxy func(target *url.URL) (*url.URL, error)
	// PingInterval is how long a connection may stay idle before it sends
	// a ping; a pong must come within PongTimeout, else the connection is
	// dropped unused. Proxies and load balancers close idle WebSockets
	// (ingress-nginx and AWS ALB after 60 s, Google's after 30 s, counting
	// data frames only): the pings keep the others' timers from running out,
	// and find connections that died without a word.
	// DefaultPingInterval if zero; no pings if negative.
	PingInterval time.Duration
	// PongTimeout is how long a pong may take; DefaultPongTimeout if zero.
	PongTimeout time.Duration
	// MaxConnectionAge retires a connection this long (±10 %) after it was
	// opened, when no call uses it: never under a call. Connections then
	// spread again over the servers behind a load balancer after scale-out,
	// and stay under its lifetime caps. No limit if zero.
	MaxConnectionAge time.Duration
	// Stream makes Dial return a plain byte stream for a protocol that
	// frames itself and keeps itself alive (the tunnel's yamux session):
	// every Write is one message, and there are no pings, no maximum age,
	// no check before reuse and no dial again. For Kitex calls, leave it
	// off.
	Stream bool
	// xnetFraming makes the connections read and write frames with
	// golang.org/x/net/websocket's own code instead of this package's
	// leaner one: the wire is the same, and the tests and the framing
	// benchmark compare the two (export_test.go).
	xnetFraming bool
}

// Target returns the URL that Dial connects to for address: address
// itself if it is a ws:// or wss:// URL (a path of "" or "/" becomes
// cfg.Path), else ws://address/<cfg.Path>, wss:// with cfg.TLSConfig set.
// The port defaults to 80 for ws and 443 for wss.
func Target(address string, cfg DialerConfig) (*url.URL, error) {
	path := cfg.Path
	if path == "" {
		path = DefaultPath
	}
	if !strings.Contains(address, "://") {
		scheme := "ws"
		if cfg.TLSConfig != nil {
			scheme = "wss"
		}
		return &url.URL{Scheme: scheme, Host: address, Path: path}, nil
	}
	u, err := url.Parse(address)
	switch {
	case err != nil:
		return nil, fmt.Errorf("websocket: target %q: %w", address, err)
	case u.Scheme != "ws" && u.Scheme != "wss":
		return nil, fmt.Errorf("websocket: target %q: the scheme must be ws or wss", address)
	case u.Hostname() == "" || u.User != nil || u.Fragment != "":
		return nil, fmt.Errorf("websocket: target %q: must be ws[s]://host[:port][/path]", address)
	}
	if u.Port() == "" {
		port := "80"
		if u.Scheme == "wss" {
			port = "443"
		}
		u.Host = net.JoinHostPort(u.Hostname(), port)
	}
	if u.Path == "" || u.Path == "/" {
		u.Path = path
	}
	return u, nil
}

// NewDialer returns a Kitex dialer (for client.WithDialer) that opens one
// WebSocket connection per Kitex connection. It honours Kitex's connect
// timeout for the TCP dial, the TLS handshake and the WebSocket upgrade
// together, and reports the dialed address as the connection's remote
// address so that Kitex's connection pool reuses connections.
func NewDialer(cfg DialerConfig) connadapt.Dialer {
	return connadapt.Dialer{Dial: func(ctx context.Context, network, address string) (net.Conn, error) {
		return Dial(ctx, address, cfg)
	}}
}

// Dial opens a WebSocket connection to the Listener at address: host:port
// or a ws:// or wss:// URL (see Target). The whole handshake, through the
// proxy if any, is bounded by ctx. The connection pings the server
// while it is idle, and reports through IsActive whether it may carry
// a call (see DialerConfig).
func Dial(ctx context.Context, address string, cfg DialerConfig) (*Conn, error) {
	f, raw, err := dialFrames(ctx, address, cfg)
	if err != nil {
		return nil, err
	}
	c := newConn(f, raw.LocalAddr(), raw.RemoteAddr())
	c.stream = cfg.Stream
	if lean, ok := f.(*leanFrames); ok && !cfg.Stream {
		c.h = newHealth(c, lean, raw, cfg, func(ctx context.Context) (frames, net.Conn, error) {
			return dialFrames(ctx, address, cfg)
		})
	}
	return c, nil
}

// dialFrames dials address and upgrades the connection; it returns the
// framing and the TCP connection under it.
func dialFrames(ctx context.Context, address string, cfg DialerConfig) (frames, net.Conn, error) {
	u, err := Target(address, cfg)
	if err != nil {
		return nil, nil, err
	}
	tlsCfg := cfg.TLSConfig
	if u.Scheme == "wss" && tlsCfg == nil {
		tlsCfg = &tls.Config{MinVersion: tls.VersionTLS12}
	}

	raw, err := dialTCP(ctx, u, cfg.Proxy)
	if err != nil {
		return nil, nil, err
	}
	// Bound the TLS and WebSocket handshakes by ctx as well.
	stop := context.AfterFunc(ctx, func() { _ = raw.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if dl, ok := ctx.Deadline(); ok {
		_ = raw.SetDeadline(dl)
	}
	var rwc net.Conn = raw
	if u.Scheme == "wss" {
		tc := tlsCfg.Clone()
		if tc.ServerName == "" {
			tc.ServerName = u.Hostname()
		}
		tlsConn := tls.Client(raw, tc)
		if err := tlsConn.HandshakeContext(ctx); err != nil {
			_ = raw.Close()
			return nil, nil, fmt.Errorf("websocket: tls handshake with %s: %w", u.Host, err)
		}
		rwc = tlsConn
	}
	var f frames
	if cfg.xnetFraming {
		f, err = xnetClient(rwc, u, cfg.Origin)
	} else {
		var pending []byte
		if pending, err = clientHandshake(rwc, u, cfg); err == nil {
			f = newLeanFrames(rwc, pending, clientSide)
		}
	}
	if err != nil {
		_ = rwc.Close()
		if ctx.Err() != nil {
			return nil, nil, fmt.Errorf("websocket: upgrade %s: %w", u, ctx.Err())
		}
		return nil, nil, fmt.Errorf("websocket: upgrade %s: %w", u, err)
	}
	if !stop() {
		// ctx ended just as the handshake finished; the deadline it set is stale.
		_ = rwc.Close()
		return nil, nil, fmt.Errorf("websocket: upgrade %s: %w", u, ctx.Err())
	}
	_ = raw.SetDeadline(time.Time{})
	return f, raw, nil
}

// ErrHandshake is returned by Dial when the server does not accept the
// upgrade: its HTTP status (403 for an origin not allowed, 404 for another
// path…) or an answer that breaks RFC 6455.
var ErrHandshake = errors.New("websocket: handshake refused")

// acceptGUID is RFC 6455's key suffix for Sec-WebSocket-Accept.
const acceptGUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

// clientHandshake sends the upgrade request for u on c and reads the
// answer (RFC 6455 section 4.1). It returns the bytes read past the answer:
// the first frames, if the server sent any at once.
func clientHandshake(c net.Conn, u *url.URL, cfg DialerConfig) ([]byte, error) {
	var nonce [16]byte
	_, _ = rand.Read(nonce[:])
	key := base64.StdEncoding.EncodeToString(nonce[:])
	req := &http.Request{
		Method:     http.MethodGet,
		URL:        &url.URL{Path: u.Path, RawQuery: u.RawQuery},
		Host:       u.Host,
		Proto:      "HTTP/1.1",
		ProtoMajor: 1, ProtoMinor: 1,
		Header: http.Header{
			"Upgrade":               {"websocket"},
			"Connection":            {"Upgrade"},
			"Sec-WebSocket-Key":     {key},
			"Sec-WebSocket-Version": {"13"},
		},
	}
	// A non-browser client has no origin: without one, the Listener needs
	// no same-origin check, which a proxy rewriting Host would defeat.
	if cfg.Origin != "" {
		req.Header.Set("Origin", cfg.Origin)
	}
	for name, values := range cfg.Header {
		if reserved[http.CanonicalHeaderKey(name)] {
			continue
		}
		for _, v := range values {
			req.Header.Add(name, v)
		}
	}
	if err := req.Write(c); err != nil {
		return nil, err
	}
	br := bufio.NewReaderSize(c, 4096)
	resp, err := http.ReadResponse(br, req)
	if err != nil {
		return nil, err
	}
	_ = resp.Body.Close() // a 101 has no body; an error's is not read
	if resp.StatusCode != http.StatusSwitchingProtocols {
		return nil, fmt.Errorf("%w: HTTP %s", ErrHandshake, resp.Status)
	}
	sum := sha1.Sum([]byte(key + acceptGUID)) //nolint:gosec // RFC 6455's accept key, not a security hash
	switch {
	case !headerHasToken(resp.Header, "Upgrade", "websocket") || !headerHasToken(resp.Header, "Connection", "upgrade"):
		return nil, fmt.Errorf("%w: the answer is not a WebSocket upgrade", ErrHandshake)
	case resp.Header.Get("Sec-WebSocket-Accept") != base64.StdEncoding.EncodeToString(sum[:]):
		return nil, fmt.Errorf("%w: wrong Sec-WebSocket-Accept", ErrHandshake)
	case resp.Header.Get("Sec-WebSocket-Extensions") != "" || resp.Header.Get("Sec-WebSocket-Protocol") != "":
		return nil, fmt.Errorf("%w: an extension or subprotocol that was not asked for", ErrHandshake)
	}
	pending, _ := br.Peek(br.Buffered())
	return pending, nil
}

// reserved are the upgrade request's own headers, which DialerConfig.Header
// cannot replace.
var reserved = map[string]bool{
	"Host": true, "Upgrade": true, "Connection": true, "Sec-Websocket-Key": true,
	"Sec-Websocket-Version": true, "Sec-Websocket-Extensions": true, "Sec-Websocket-Protocol": true,
}

// xnetClient does the handshake and the framing with x/net's own code (the
// tests and the framing benchmark compare it with the lean one); x/net
// always sends an Origin, the server's own by default.
func xnetClient(c net.Conn, u *url.URL, origin string) (frames, error) {
	if origin == "" {
		origin = "http://" + u.Host
	}
	wsCfg, err := xws.NewConfig(u.String(), origin)
	if err != nil {
		return nil, err
	}
	ws, err := xws.NewClient(wsCfg, c)
	if err != nil {
		return nil, err
	}
	return newXNetFrames(ws, nil), nil
}
