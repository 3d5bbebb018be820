package tunnel_test

import (
	"context"
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

	"github.com/anyconn/kitex-anyconn/transport/tunnel"
)

// testCA issues certificates for the tests.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

func newCA(t *testing.T) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &testCA{cert: cert, key: key, pool: pool}
}

func (ca *testCA) issue(t *testing.T, name string, usage x509.ExtKeyUsage) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		NotBefore:   time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

func TestMutualTLS(t *testing.T) {
	ca := newCA(t)
	gw, err := tunnel.Listen("127.0.0.1:0", tunnel.GatewayConfig{Token: token, TLSConfig: &tls.Config{
		Certificates: []tls.Certificate{ca.issue(t, "gateway", x509.ExtKeyUsageServerAuth)},
		ClientCAs:    ca.pool, ClientAuth: tls.RequireAndVerifyClientCert,
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = gw.Close() })
	addr := gw.Addr().String()

	startAgentWith(t, tunnel.AgentConfig{ID: "with-cert", TLSConfig: &tls.Config{
		RootCAs: ca.pool, Certificates: []tls.Certificate{ca.issue(t, "agent", x509.ExtKeyUsageClientAuth)},
	}}, addr)
	waitAgents(t, gw, 1)
	if got, err := call(newClient(t, gw), "over mtls"); err != nil || got != "with-cert:over mtls" {
		t.Fatalf("call over mutual TLS: %q, %v", got, err)
	}

	// Without a client certificate, or not trusting the gateway: no session.
	var failing []*tunnel.Agent
	for id, cfg := range map[string]*tls.Config{
		"no-cert":  {RootCAs: ca.pool},
		"distrust": {RootCAs: x509.NewCertPool(), Certificates: []tls.Certificate{ca.issue(t, "agent2", x509.ExtKeyUsageClientAuth)}},
	} {
		a, err := tunnel.NewAgent(tunnel.AgentConfig{ID: id, Token: token, TLSConfig: cfg, BackoffMin: 50 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = a.Shutdown(context.Background()) })
		a.SetGateways([]string{addr})
		failing = append(failing, a)
	}
	deadline := time.Now().Add(10 * time.Second)
	for _, a := range failing {
		for a.Stats().Failures == 0 {
			if time.Now().After(deadline) {
				t.Fatalf("an agent without a valid TLS setup never failed: %+v", a.Stats())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	// A plain-TCP agent that skips TLS gets no answer either.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := tunnel.Handshake(ctx, addr, "plain", token); err == nil {
		t.Fatal("a handshake without TLS was accepted by a TLS gateway")
	}
	if ids := gw.Agents(); len(ids) != 1 || ids[0] != "with-cert" {
		t.Fatalf("agents %v; want only with-cert", ids)
	}
}
