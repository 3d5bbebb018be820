package websocket

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"time"

	xws "golang.org/x/net/websocket"

	"github.com/anyconn/kitex-anyconn/transport/connadapt"
)

// DialerConfig configures the client side. The zero value dials ws://<address>/kitex.
type DialerConfig struct {
	// Path is the HTTP path of the server's Listener; DefaultPath if empty.
	Path string
	// TLSConfig, when set, makes the dialer use wss:// (TLS). An empty
	// ServerName is filled with the host being dialed.
	TLSConfig *tls.Config
	// Origin is sent as the Origin header. If empty, the dialer sends the
	// server's own origin (same-origin), which a Listener always allows.
	Origin string
	// xnetFraming makes the connections read and write frames with
	// golang.org/x/net/websocket's own code instead of this package's
	// leaner one: the wire is the same, and the tests and the framing
	// benchmark compare the two (export_test.go).
	xnetFraming bool
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

// Dial opens a WebSocket connection to the Listener at address (host:port).
// The whole handshake is bounded by ctx.
func Dial(ctx context.Context, address string, cfg DialerConfig) (*Conn, error) {
	path := cfg.Path
	if path == "" {
		path = DefaultPath
	}
	scheme, originScheme := "ws", "http"
	if cfg.TLSConfig != nil {
		scheme, originScheme = "wss", "https"
	}
	origin := cfg.Origin
	if origin == "" {
		origin = originScheme + "://" + address
	}
	wsCfg, err := xws.NewConfig(scheme+"://"+address+path, origin)
	if err != nil {
		return nil, fmt.Errorf("websocket: config for %s: %w", address, err)
	}

	var d net.Dialer
	raw, err := d.DialContext(ctx, "tcp", address)
	if err != nil {
		return nil, err
	}
	// Bound the TLS and WebSocket handshakes by ctx as well.
	stop := context.AfterFunc(ctx, func() { _ = raw.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if dl, ok := ctx.Deadline(); ok {
		_ = raw.SetDeadline(dl)
	}
	var rwc net.Conn = raw
	if cfg.TLSConfig != nil {
		tc := cfg.TLSConfig.Clone()
		if tc.ServerName == "" {
			host, _, _ := net.SplitHostPort(address)
			tc.ServerName = host
		}
		tlsConn := tls.Client(raw, tc)
		if err := tlsConn.HandshakeContext(ctx); err != nil {
			_ = raw.Close()
			return nil, fmt.Errorf("websocket: tls handshake with %s: %w", address, err)
		}
		rwc = tlsConn
	}
	ws, err := xws.NewClient(wsCfg, rwc)
	if err != nil {
		_ = rwc.Close()
		if ctx.Err() != nil {
			return nil, fmt.Errorf("websocket: upgrade %s: %w", wsCfg.Location, ctx.Err())
		}
		return nil, fmt.Errorf("websocket: upgrade %s: %w", wsCfg.Location, err)
	}
	if !stop() {
		// ctx ended just as the handshake finished; the deadline it set is stale.
		_ = rwc.Close()
		return nil, fmt.Errorf("websocket: upgrade %s: %w", wsCfg.Location, ctx.Err())
	}
	_ = raw.SetDeadline(time.Time{})
	// The server sends nothing before the first request, so x/net's
	// handshake reader has nothing buffered.
	var f frames = newLeanFrames(rwc, nil, clientSide)
	if cfg.xnetFraming {
		f = newXNetFrames(ws)
	}
	return newConn(f, raw.LocalAddr(), raw.RemoteAddr()), nil
}
