package websocket_test

import (
	"crypto/tls"
	"crypto/x509"
	"testing"
	"time"

	"github.com/anyconn/kitex-anyconn/internal/testutil"
	"github.com/anyconn/kitex-anyconn/transport/websocket"
)

func TestSecureWebSocket(t *testing.T) {
	ca := testutil.NewCA(t)
	cert, pool := ca.Issue(t, "echo", x509.ExtKeyUsageServerAuth), ca.Pool
	l := listen(t, websocket.ListenerConfig{TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}}})
	acceptEcho(t, l)
	addr := l.Addr().String()
	roundTrip(t, addr, websocket.DialerConfig{TLSConfig: &tls.Config{RootCAs: pool}})

	// A client that does not trust the certificate is refused, and a
	// plain ws:// client gets no WebSocket; the listener keeps serving.
	d := websocket.NewDialer(websocket.DialerConfig{TLSConfig: &tls.Config{RootCAs: x509.NewCertPool()}})
	if c, err := d.DialTimeout("tcp", addr, 2*time.Second); err == nil {
		c.Close()
		t.Fatal("dial with an untrusted certificate succeeded")
	}
	if c, err := websocket.NewDialer(websocket.DialerConfig{}).DialTimeout("tcp", addr, 2*time.Second); err == nil {
		c.Close()
		t.Fatal("plain ws:// dial to a wss:// listener succeeded")
	}
	roundTrip(t, addr, websocket.DialerConfig{TLSConfig: &tls.Config{RootCAs: pool}})
}

// Over wss://, pings and their pongs pass through TLS records (and the
// server's session tickets), and an idle connection stays usable.
func TestPingsOverTLS(t *testing.T) {
	ca := testutil.NewCA(t)
	l := listen(t, websocket.ListenerConfig{TLSConfig: &tls.Config{Certificates: []tls.Certificate{ca.Issue(t, "echo", x509.ExtKeyUsageServerAuth)}}})
	serverConns(t, l, true)
	c := dial(t, l.Addr().String(), websocket.DialerConfig{TLSConfig: &tls.Config{RootCAs: ca.Pool}, PingInterval: 50 * time.Millisecond})
	for i := range 3 {
		if err := echoOnce(c, "over tls"); err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
		time.Sleep(300 * time.Millisecond) // several pings while idle
		if !c.IsActive() {
			t.Fatalf("after %d idle periods with pings the connection is inactive", i+1)
		}
	}
}
