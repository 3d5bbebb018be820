package testutil

import (
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"testing"
	"time"
)

// StartReverseProxy runs Go's standard reverse proxy on loopback in front
// of the HTTP server at target until the test ends, the way nginx's
// WebSocket recipe does: it passes upgrades on, rewrites Host to target's
// address and, with forwarded, sets X-Forwarded-Host to the Host it got.
// It returns the proxy's address.
func StartReverseProxy(t testing.TB, target string, forwarded bool) string {
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
