package websocket_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"testing"
	"time"

	"github.com/anyconn/kitex-anyconn/transport/websocket"
)

// startReverseProxy runs Go's standard reverse proxy in front of target, the
// way nginx's WebSocket recipe does: it rewrites Host to the upstream's
// address and, with forwarded, sets X-Forwarded-Host to the Host it got.
func startReverseProxy(t *testing.T, target string, forwarded bool) string {
	t.Helper()
	up := &url.URL{Scheme: "http", Host: target}
	proxy := &httputil.ReverseProxy{Rewrite: func(r *httputil.ProxyRequest) {
		r.SetURL(up) // Host becomes target's
		if forwarded {
			r.SetXForwarded()
		}
	}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: proxy, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return ln.Addr().String()
}

// Through a proxy that rewrites Host, the dialer's calls get through (it
// sends no Origin), and the cross-site protection for browsers stays: a
// foreign Origin still gets 403, the page's own gets through when the
// proxy says which host it served (X-Forwarded-Host).
func TestThroughAHostRewritingProxy(t *testing.T) {
	l := listen(t, websocket.ListenerConfig{})
	acceptEcho(t, l)
	for _, forwarded := range []bool{false, true} {
		proxy := startReverseProxy(t, l.Addr().String(), forwarded)
		roundTrip(t, proxy, websocket.DialerConfig{})

		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		c, err := websocket.Dial(ctx, proxy, websocket.DialerConfig{Origin: "https://evil.example"})
		cancel()
		if err == nil {
			c.Close()
			t.Fatalf("forwarded=%v: a foreign origin got through", forwarded)
		}
		if !errors.Is(err, websocket.ErrHandshake) {
			t.Fatalf("forwarded=%v: foreign origin: %v; want ErrHandshake (403)", forwarded, err)
		}
	}
	// The page served at the proxy's address, named by X-Forwarded-Host.
	proxy := startReverseProxy(t, l.Addr().String(), true)
	roundTrip(t, proxy, websocket.DialerConfig{Origin: "http://" + proxy})
}
