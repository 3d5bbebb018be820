package websocket_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"testing"
	"time"

	"github.com/anyconn/kitex-anyconn/internal/testutil"
	"github.com/anyconn/kitex-anyconn/transport/websocket"
)

// Through a proxy that rewrites Host, the dialer's calls get through (it
// sends no Origin), and the cross-site protection for browsers stays: a
// foreign Origin still gets 403, the page's own gets through when the
// proxy says which host it served (X-Forwarded-Host).
func TestThroughAHostRewritingProxy(t *testing.T) {
	l := listen(t, websocket.ListenerConfig{})
	acceptEcho(t, l)
	for _, forwarded := range []bool{false, true} {
		proxy := testutil.StartReverseProxy(t, l.Addr().String(), forwarded)
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
	proxy := testutil.StartReverseProxy(t, l.Addr().String(), true)
	roundTrip(t, proxy, websocket.DialerConfig{Origin: "http://" + proxy})
}

func TestTarget(t *testing.T) {
	for _, tc := range []struct {
		address string
		cfg     websocket.DialerConfig
		want    string
	}{
		{"10.0.0.7:8888", websocket.DialerConfig{}, "ws://10.0.0.7:8888/kitex"},
		{"10.0.0.7:8888", websocket.DialerConfig{Path: "/rpc", TLSConfig: &tls.Config{}}, "wss://10.0.0.7:8888/rpc"},
		{"wss://echo.example", websocket.DialerConfig{}, "wss://echo.example:443/kitex"},
		{"ws://echo.example/", websocket.DialerConfig{Path: "/rpc"}, "ws://echo.example:80/rpc"},
		{"ws://echo.example:8080/a/b?x=1", websocket.DialerConfig{TLSConfig: &tls.Config{}}, "ws://echo.example:8080/a/b?x=1"},
	} {
		u, err := websocket.Target(tc.address, tc.cfg)
		if err != nil || u.String() != tc.want {
			t.Errorf("Target(%q): %v, %v; want %s", tc.address, u, err, tc.want)
		}
	}
	for _, bad := range []string{"http://echo.example", "ws://", "ws://user:pw@echo.example", "ws://echo.example/#x"} {
		if u, err := websocket.Target(bad, websocket.DialerConfig{}); err == nil {
			t.Errorf("Target(%q) = %v; want an error", bad, u)
		}
	}
}

// startTLSFront runs a TLS-terminating reverse proxy (an ingress) in front
// of target, a plain ws:// listener, and records the upgrade requests'
// headers. It returns the front's address and a client TLS config that
// trusts it.
func startTLSFront(t *testing.T, target string, seen chan<- http.Header) (string, *tls.Config) {
	up := &url.URL{Scheme: "http", Host: target}
	front := httptest.NewTLSServer(&httputil.ReverseProxy{Rewrite: func(r *httputil.ProxyRequest) {
		select {
		case seen <- r.In.Header.Clone():
		default:
		}
		r.SetURL(up)
	}})
	t.Cleanup(front.Close)
	pool := x509.NewCertPool()
	pool.AddCert(front.Certificate())
	return front.Listener.Addr().String(), &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
}

// A wss:// URL reaches a plain ws:// backend behind a TLS-terminating
// front: the scheme comes from the URL; the extra headers go along.
func TestWSSURLThroughATLSTerminatingFront(t *testing.T) {
	l := listen(t, websocket.ListenerConfig{})
	acceptEcho(t, l)
	seen := make(chan http.Header, 1)
	front, tlsCfg := startTLSFront(t, l.Addr().String(), seen)
	roundTrip(t, "wss://"+front+"/kitex", websocket.DialerConfig{
		TLSConfig: tlsCfg,
		Header:    http.Header{"Authorization": {"Bearer abc"}, "Sec-Websocket-Key": {"not mine"}},
	})
	h := <-seen
	if h.Get("Authorization") != "Bearer abc" {
		t.Errorf("Authorization %q; want the configured header", h.Get("Authorization"))
	}
	if h.Get("Sec-Websocket-Key") == "not mine" || h.Get("Origin") != "" {
		t.Errorf("key %q, origin %q: a reserved header was replaced or an Origin sent", h.Get("Sec-Websocket-Key"), h.Get("Origin"))
	}
}

// A dialer with a proxy connects through its CONNECT tunnel, with the
// proxy's credentials; a proxy that refuses gives ErrProxy.
func TestThroughAnHTTPConnectProxy(t *testing.T) {
	l := listen(t, websocket.ListenerConfig{})
	acceptEcho(t, l)
	proxy := testutil.StartConnectProxy(t, "user", "secret")
	via := func(user string) func(*url.URL) (*url.URL, error) {
		return func(*url.URL) (*url.URL, error) {
			return &url.URL{Scheme: "http", Host: proxy.Addr(), User: url.UserPassword(user, "secret")}, nil
		}
	}
	roundTrip(t, l.Addr().String(), websocket.DialerConfig{Proxy: via("user")})
	if got := proxy.Connects(); len(got) != 1 || got[0] != l.Addr().String() {
		t.Fatalf("CONNECTs %v; want one to %s", got, l.Addr())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if c, err := websocket.Dial(ctx, l.Addr().String(), websocket.DialerConfig{Proxy: via("intruder")}); !errors.Is(err, websocket.ErrProxy) {
		if c != nil {
			c.Close()
		}
		t.Fatalf("with wrong proxy credentials: %v; want ErrProxy", err)
	}
}

func TestProxyFromEnvironment(t *testing.T) {
	t.Setenv("HTTPS_PROXY", "http://secure-proxy.example:3128")
	t.Setenv("HTTP_PROXY", "http://plain-proxy.example:3128")
	t.Setenv("NO_PROXY", "inside.example")
	proxy := websocket.ProxyFromEnvironment()
	for target, want := range map[string]string{
		"wss://echo.example:443/kitex":   "http://secure-proxy.example:3128",
		"ws://echo.example:80/kitex":     "http://plain-proxy.example:3128",
		"wss://inside.example:443/kitex": "",
	} {
		u, _ := url.Parse(target)
		got, err := proxy(u)
		if err != nil || (got == nil) != (want == "") || (got != nil && got.String() != want) {
			t.Errorf("proxy for %s: %v, %v; want %q", target, got, err, want)
		}
	}
}
