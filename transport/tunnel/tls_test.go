package tunnel_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"testing"
	"time"

	"github.com/anyconn/kitex-anyconn/internal/testutil"
	"github.com/anyconn/kitex-anyconn/transport/tunnel"
)

// mutualTLSGateway starts a gateway whose certificate ca signed and that
// requires client certificates signed by ca.
func mutualTLSGateway(t *testing.T, ca *testutil.CA) *tunnel.Gateway {
	t.Helper()
	gw, err := tunnel.Listen("127.0.0.1:0", tunnel.GatewayConfig{Token: token, HandshakeTimeout: 500 * time.Millisecond, TLSConfig: &tls.Config{
		Certificates: []tls.Certificate{ca.Issue(t, "gateway", x509.ExtKeyUsageServerAuth)},
		ClientCAs:    ca.Pool, ClientAuth: tls.RequireAndVerifyClientCert,
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = gw.Close() })
	return gw
}

func TestMutualTLS(t *testing.T) {
	ca := testutil.NewCA(t)
	gw := mutualTLSGateway(t, ca)
	addr := gw.Addr().String()

	startAgentWith(t, tunnel.AgentConfig{ID: "with-cert", TLSConfig: &tls.Config{
		RootCAs: ca.Pool, Certificates: []tls.Certificate{ca.Issue(t, "with-cert", x509.ExtKeyUsageClientAuth)},
	}}, addr)
	waitAgents(t, gw, 1)
	if got, err := call(newClient(t, gw), "over mtls"); err != nil || got != "with-cert:over mtls" {
		t.Fatalf("call over mutual TLS: %q, %v", got, err)
	}

	// Without a client certificate, or not trusting the gateway: no session.
	var failing []*tunnel.Agent
	for id, cfg := range map[string]*tls.Config{
		"no-cert":  {RootCAs: ca.Pool},
		"distrust": {RootCAs: x509.NewCertPool(), Certificates: []tls.Certificate{ca.Issue(t, "distrust", x509.ExtKeyUsageClientAuth)}},
	} {
		a, err := tunnel.NewAgent(tunnel.AgentConfig{ID: id, Token: token, TLSConfig: cfg, BackoffMin: 50 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = a.Shutdown(context.Background()) })
		a.SetGateways([]string{addr})
		failing = append(failing, a)
	}
	for _, a := range failing {
		testutil.Eventually(t, "an agent without a valid TLS setup failing", 10*time.Second, func() bool { return a.Stats().Failures > 0 })
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
