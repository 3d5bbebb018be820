package websocket_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"testing"
	"time"

	"github.com/anyconn/kitex-anyconn/transport/websocket"
)

// selfSigned returns a certificate for 127.0.0.1 and a pool that trusts it.
func selfSigned(t *testing.T) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "echo"},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, pool
}

func TestSecureWebSocket(t *testing.T) {
	cert, pool := selfSigned(t)
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
