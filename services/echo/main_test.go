package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"maps"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/cloudwego/kitex/client"
	"github.com/cloudwego/kitex/pkg/registry"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/anyconn/kitex-anyconn/internal/app"
	"github.com/anyconn/kitex-anyconn/internal/app/apptest"
	"github.com/anyconn/kitex-anyconn/internal/config"
	"github.com/anyconn/kitex-anyconn/internal/etcdreg"
	"github.com/anyconn/kitex-anyconn/internal/testutil"
	"github.com/anyconn/kitex-anyconn/internal/testutil/etcdtest"
	"github.com/anyconn/kitex-anyconn/kitex_gen/api"
	"github.com/anyconn/kitex-anyconn/kitex_gen/api/echo"
	"github.com/anyconn/kitex-anyconn/transport"
	"github.com/anyconn/kitex-anyconn/transport/tunnel"
)

func TestMain(m *testing.M) { testutil.VerifyTestMain(m) }

const token = apptest.Token

// load reads the echo configuration from env, on top of test defaults.
func load(t *testing.T, env map[string]string) config.Echo {
	t.Helper()
	cfg, err := config.LoadEcho(apptest.Lookup(map[string]string{"LISTEN_ADDR": "127.0.0.1:0", "DRAIN_DELAY": "0s", "TUNNEL_AGENT_ID": "echo-1"}, env))
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	return cfg
}

func TestEveryTransportHasAnInbound(t *testing.T) { apptest.EveryKind(t, "inbound", inbounds) }

func TestServerConfigAndRegistration(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := testutil.WriteFiles(t, dir, "echo", testutil.NewCA(t).Issue(t, "echo", x509.ExtKeyUsageServerAuth))
	for _, tc := range []struct {
		env      map[string]string
		wantTags map[string]string
		wantTLS  bool
	}{
		{map[string]string{}, map[string]string{"transport": "netpoll"}, false},
		{map[string]string{"TRANSPORT": "gonet"}, map[string]string{"transport": "gonet"}, false},
		{map[string]string{"TRANSPORT": "websocket", "WS_PATH": "/rpc"},
			map[string]string{"transport": "websocket", "ws_path": "/rpc", "ws_scheme": "ws"}, false},
		{map[string]string{"TRANSPORT": "websocket", "TLS_CERT_FILE": certFile, "TLS_KEY_FILE": keyFile},
			map[string]string{"transport": "websocket", "ws_path": "/kitex", "ws_scheme": "wss"}, true},
	} {
		cfg := load(t, tc.env)
		scfg, err := serverConfig(cfg, zap.NewNop())
		if err != nil {
			t.Fatalf("%v: %v", tc.env, err)
		}
		if scfg.Kind != cfg.Transport || scfg.Addr != "127.0.0.1:0" || (scfg.WebSocket.TLSConfig != nil) != tc.wantTLS {
			t.Errorf("%v: server config kind %s addr %s TLS %v", tc.env, scfg.Kind, scfg.Addr, scfg.WebSocket.TLSConfig != nil)
		}
		if info := registration(cfg); info.ServiceName != "echo" || !maps.Equal(info.Tags, tc.wantTags) {
			t.Errorf("%v: registers %s with %v; want echo with %v", tc.env, info.ServiceName, info.Tags, tc.wantTags)
		}
	}
	// A key that does not load is named in the error.
	cfg := load(t, map[string]string{"TRANSPORT": "websocket", "TLS_CERT_FILE": certFile, "TLS_KEY_FILE": certFile})
	if _, err := serverConfig(cfg, zap.NewNop()); err == nil || !strings.Contains(err.Error(), "TLS_KEY_FILE") {
		t.Errorf("a certificate as key: %v", err)
	}
}

func TestAgentTLS(t *testing.T) {
	dir := t.TempDir()
	ca := testutil.NewCA(t)
	caFile := ca.WriteCAFile(t, dir)
	certFile, keyFile := testutil.WriteFiles(t, dir, "echo-1", ca.Issue(t, "echo-1", x509.ExtKeyUsageClientAuth))
	base := map[string]string{"TRANSPORT": "yamux", "TUNNEL_TOKEN": token}
	with := func(env map[string]string) map[string]string { m := maps.Clone(base); maps.Copy(m, env); return m }

	off, err := agentConfig(load(t, with(map[string]string{"TUNNEL_TLS": "off"})), zap.NewNop())
	if err != nil || off.TLSConfig != nil || off.ID != "echo-1" || off.Token != token {
		t.Errorf("TUNNEL_TLS=off: TLS %v, id %q, err %v", off.TLSConfig, off.ID, err)
	}
	unverified, err := agentConfig(load(t, base), zap.NewNop())
	if err != nil || unverified.TLSConfig == nil || !unverified.TLSConfig.InsecureSkipVerify {
		t.Errorf("TUNNEL_TLS=on without a CA: %+v, %v; want TLS without verifying the gateway", unverified.TLSConfig, err)
	}
	mutual, err := agentConfig(load(t, with(map[string]string{
		"TUNNEL_TLS_CA_FILE": caFile, "TUNNEL_TLS_CERT_FILE": certFile, "TUNNEL_TLS_KEY_FILE": keyFile,
	})), zap.NewNop())
	if err != nil || mutual.TLSConfig == nil || mutual.TLSConfig.InsecureSkipVerify || mutual.TLSConfig.RootCAs == nil ||
		len(mutual.TLSConfig.Certificates) != 1 {
		t.Errorf("with a CA and a client certificate: %v; want the gateway verified and the certificate presented", err)
	}
}

// runtime is what app.Main would give serve, on the etcd at endpoint.
func runtime(t *testing.T, endpoint string) *app.Runtime {
	return apptest.Runtime(t, endpoint, zaptest.NewLogger(t, zaptest.Level(zap.InfoLevel)))
}

// start runs serve until the test calls stop, which ends its context,
// and wait, which checks that serve then returned nil.
func start(t *testing.T, cfg config.Echo, rt *app.Runtime) (stop, wait func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serve(ctx, cfg, rt) }()
	t.Cleanup(cancel)
	return cancel, func() {
		t.Helper()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("serve: %v", err)
			}
		case <-time.After(15 * time.Second):
			t.Fatal("serve did not return after its context ended")
		}
	}
}

// call makes one echo call through a client of ccfg.
func call(t *testing.T, ccfg transport.ClientConfig, opts ...client.Option) {
	t.Helper()
	ct, err := transport.NewClientTransport(ccfg)
	if err != nil {
		t.Fatal(err)
	}
	defer ct.Close()
	cli, err := echo.NewClient("echo", append(ct.Options(), append(opts, client.WithRPCTimeout(5*time.Second))...)...)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := cli.Echo(context.Background(), &api.Request{Message: "hi"})
	if err != nil {
		t.Fatalf("call: %v", err)
	}
	if resp.GetMessage() != "hi" {
		t.Fatalf("reply %q; want hi", resp.GetMessage())
	}
}

// TestServeRegistersAnswersAndLeaves runs echo on each listening transport:
// it becomes ready once registered with its transport's tags and answers;
// stopped, it leaves etcd and reports not ready at once, and answers for
// DRAIN_DELAY still.
func TestServeRegistersAnswersAndLeaves(t *testing.T) {
	endpoint := etcdtest.Start(t)
	for _, kind := range []transport.Kind{transport.Netpoll, transport.GoNet, transport.WebSocket} {
		t.Run(string(kind), func(t *testing.T) {
			t.Parallel()
			cfg := load(t, map[string]string{"TRANSPORT": string(kind), "SERVICE_NAME": "echo-" + string(kind), "DRAIN_DELAY": "3s"})
			rt := runtime(t, endpoint)
			stop, wait := start(t, cfg, rt)
			testutil.Eventually(t, "echo ready", 30*time.Second, func() bool { return rt.Ready() == nil })

			resolver := etcdreg.NewResolver(rt.Etcd, "", registration(cfg).Tags)
			res, err := resolver.Resolve(context.Background(), cfg.ServiceName)
			if err != nil || len(res.Instances) != 1 {
				t.Fatalf("registered instances: %v, %v; want 1", res.Instances, err)
			}
			ccfg := transport.ClientConfig{Kind: kind}
			ccfg.WebSocket.Path = cfg.WSPath
			addr := client.WithHostPorts(res.Instances[0].Address().String())
			call(t, ccfg, addr)

			stop()
			testutil.Eventually(t, "echo gone from etcd while draining", 2*time.Second, func() bool {
				res, err := resolver.Resolve(context.Background(), cfg.ServiceName)
				return err == nil && len(res.Instances) == 0
			})
			if err := rt.Ready(); err == nil || err.Error() != "shutting down" {
				t.Errorf("ready while draining: %v; want shutting down", err)
			}
			call(t, ccfg, addr) // still served while draining
			wait()
		})
	}
}

// TestServeDialsTheRegisteredGateway runs echo with TRANSPORT=yamux: it
// finds a gateway registered in etcd, connects to it and answers through it.
func TestServeDialsTheRegisteredGateway(t *testing.T) {
	endpoint := etcdtest.Start(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gw, err := tunnel.NewGateway(ln, tunnel.GatewayConfig{Token: token, Addresses: []string{ln.Addr().String()}, TLSConfig: gatewayTLS(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer gw.Close()
	rt := runtime(t, endpoint)
	reg := etcdreg.NewRegistry(rt.Etcd, etcdreg.RegistryOptions{Advertise: ln.Addr().String()})
	if err := reg.Register(&registry.Info{ServiceName: "echo-tunnel", Addr: gw.Addr(), Tags: etcdreg.Tags(transport.Yamux, "", false)}); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = reg.Deregister(nil) }()

	cfg := load(t, map[string]string{"TRANSPORT": "yamux", "TUNNEL_TOKEN": token, "TUNNEL_SESSIONS": "2", "DISCOVERY_REFRESH": "100ms"})
	stop, wait := start(t, cfg, rt)
	testutil.Eventually(t, "echo ready", 30*time.Second, func() bool { return rt.Ready() == nil })
	if agents := gw.Agents(); len(agents) != 1 || agents[0] != "echo-1" {
		t.Fatalf("agents %v; want [echo-1]", agents)
	}
	call(t, transport.ClientConfig{Kind: transport.Yamux, Dialer: gw.Dialer()},
		client.WithResolver(gw.Resolver()), client.WithLoadBalancer(gw.Balancer()))
	stop()
	wait()
	testutil.Eventually(t, "the agent gone from the gateway", 5*time.Second, func() bool { return len(gw.Agents()) == 0 })
}

// gatewayTLS is a gateway's TLS configuration with a certificate it made
// itself, as the caller's default.
func gatewayTLS(t *testing.T) *tls.Config {
	c, err := tunnel.SelfSignedTLS()
	if err != nil {
		t.Fatal(err)
	}
	return c
}
