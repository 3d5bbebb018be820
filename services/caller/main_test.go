package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/cloudwego/kitex/pkg/registry"
	"github.com/cloudwego/kitex/pkg/utils"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

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

// load reads the caller configuration from env, on top of test defaults.
func load(t *testing.T, env map[string]string) config.Caller {
	t.Helper()
	cfg, err := config.LoadCaller(apptest.Lookup(map[string]string{"CALL_INTERVAL": "10ms", "DISCOVERY_REFRESH": "100ms", "TUNNEL_LISTEN_ADDR": "127.0.0.1:0"}, env))
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	return cfg
}

func TestEveryTransportHasAnOutbound(t *testing.T) { apptest.EveryKind(t, "outbound", outbounds) }

func TestClientConfigAndWantedTags(t *testing.T) {
	caFile := testutil.NewCA(t).WriteCAFile(t, t.TempDir())
	for _, tc := range []struct {
		env      map[string]string
		wantTags map[string]string
		wantTLS  bool
	}{
		{map[string]string{}, map[string]string{"transport": "netpoll"}, false},
		{map[string]string{"TRANSPORT": "gonet"}, map[string]string{"transport": "gonet"}, false},
		{map[string]string{"TRANSPORT": "websocket", "WS_PATH": "/rpc"},
			map[string]string{"transport": "websocket", "ws_path": "/rpc", "ws_scheme": "ws"}, false},
		{map[string]string{"TRANSPORT": "websocket", "TLS_CA_FILE": caFile},
			map[string]string{"transport": "websocket", "ws_path": "/kitex", "ws_scheme": "wss"}, true},
	} {
		cfg := load(t, tc.env)
		ccfg, err := clientConfig(cfg)
		if err != nil {
			t.Fatalf("%v: %v", tc.env, err)
		}
		if ccfg.Kind != cfg.Transport || ccfg.WebSocket.Path != cfg.WSPath || (ccfg.WebSocket.TLSConfig != nil) != tc.wantTLS {
			t.Errorf("%v: client config kind %s path %s TLS %v", tc.env, ccfg.Kind, ccfg.WebSocket.Path, ccfg.WebSocket.TLSConfig != nil)
		}
		if got := wantedTags(cfg); !maps.Equal(got, tc.wantTags) {
			t.Errorf("%v: looks for %v; want %v", tc.env, got, tc.wantTags)
		}
	}
}

func TestGatewayTLS(t *testing.T) {
	dir := t.TempDir()
	ca := testutil.NewCA(t)
	caFile := ca.WriteCAFile(t, dir)
	certFile, keyFile := testutil.WriteFiles(t, dir, "gw", ca.Issue(t, "gw", x509.ExtKeyUsageServerAuth))
	for _, tc := range []struct {
		env        map[string]string
		wantTLS    bool
		clientAuth tls.ClientAuthType
	}{
		{map[string]string{"TUNNEL_TLS": "off"}, false, 0},
		{map[string]string{}, true, tls.NoClientCert},
		{map[string]string{"TUNNEL_TLS_CA_FILE": caFile}, true, tls.RequireAndVerifyClientCert},
		{map[string]string{"TUNNEL_TLS_CERT_FILE": certFile, "TUNNEL_TLS_KEY_FILE": keyFile}, true, tls.NoClientCert},
		{map[string]string{"TUNNEL_TLS_CERT_FILE": certFile, "TUNNEL_TLS_KEY_FILE": keyFile, "TUNNEL_TLS_CA_FILE": caFile}, true, tls.RequireAndVerifyClientCert},
	} {
		env := map[string]string{"TRANSPORT": "yamux", "TUNNEL_TOKEN": token}
		maps.Copy(env, tc.env)
		gcfg, err := gatewayConfig(load(t, env), zap.NewNop())
		if err != nil {
			t.Fatalf("%v: %v", tc.env, err)
		}
		if gcfg.Token != token || (gcfg.TLSConfig != nil) != tc.wantTLS {
			t.Errorf("%v: token set %v, TLS %v; want TLS %v", tc.env, gcfg.Token == token, gcfg.TLSConfig != nil, tc.wantTLS)
			continue
		}
		if tc.wantTLS && (gcfg.TLSConfig.ClientAuth != tc.clientAuth || len(gcfg.TLSConfig.Certificates) != 1) {
			t.Errorf("%v: client auth %v with %d certificates; want %v with 1", tc.env, gcfg.TLSConfig.ClientAuth, len(gcfg.TLSConfig.Certificates), tc.clientAuth)
		}
	}
}

type echoImpl struct{}

func (*echoImpl) Echo(_ context.Context, req *api.Request) (*api.Response, error) {
	return &api.Response{Message: req.GetMessage()}, nil
}

// serveEcho runs an echo server on scfg until the test ends and returns
// its address.
func serveEcho(t *testing.T, scfg transport.ServerConfig) string {
	sopts, ln, err := transport.ServerOptions(scfg)
	if err != nil {
		t.Fatal(err)
	}
	run := testutil.NewRunner()
	run.Run(echo.NewServer(new(echoImpl), append(sopts, run.Option())...))
	t.Cleanup(func() { run.Stop(); <-run.Stopped() })
	return ln.Addr().String()
}

// runtime is what app.Main would give runCaller, with its log lines kept.
func runtime(t *testing.T, endpoint string) (*app.Runtime, *observer.ObservedLogs) {
	core, logs := observer.New(zap.InfoLevel)
	return apptest.Runtime(t, endpoint, zap.New(core)), logs
}

// callsOK checks that every call line of logs is "call ok" to target and
// that there are n.
func callsOK(t *testing.T, logs *observer.ObservedLogs, n int, target string) {
	t.Helper()
	ok := logs.FilterMessage("call ok")
	if ok.Len() != n || logs.FilterMessage("call failed").Len() != 0 {
		t.Fatalf("%d calls ok, %d failed; want %d ok", ok.Len(), logs.FilterMessage("call failed").Len(), n)
	}
	for _, e := range ok.All() {
		if got := e.ContextMap()["target"]; target != "" && got != target {
			t.Fatalf("call went to %v; want %s", got, target)
		}
	}
}

// TestCallsTheRegisteredEcho runs the caller with CALL_COUNT on each
// transport that discovers echo in etcd, against an echo registered there.
func TestCallsTheRegisteredEcho(t *testing.T) {
	endpoint := etcdtest.Start(t)
	for _, kind := range []transport.Kind{transport.Netpoll, transport.GoNet, transport.WebSocket} {
		t.Run(string(kind), func(t *testing.T) {
			cfg := load(t, map[string]string{"TRANSPORT": string(kind), "CALL_COUNT": "3", "ECHO_SERVICE": "echo-" + string(kind)})
			rt, logs := runtime(t, endpoint)
			scfg := transport.ServerConfig{Kind: kind, Addr: "127.0.0.1:0"}
			scfg.WebSocket.Path = cfg.WSPath
			addr := serveEcho(t, scfg)
			reg := etcdreg.NewRegistry(rt.Etcd, etcdreg.RegistryOptions{Advertise: addr})
			if err := reg.Register(&registry.Info{ServiceName: cfg.EchoService, Addr: utils.NewNetAddr("tcp", addr), Tags: etcdreg.Tags(kind, cfg.WSPath, false)}); err != nil {
				t.Fatal(err)
			}
			defer func() { _ = reg.Deregister(nil) }()
			if err := runCaller(context.Background(), cfg, rt); err != nil {
				t.Fatalf("runCaller: %v", err)
			}
			callsOK(t, logs, 3, addr)
			if err := rt.Ready(); err != nil {
				t.Errorf("ready: %v", err)
			}
		})
	}
}

// TestNoInstanceFailsWithinDiscoveryTimeout: an echo of another transport
// is not called, and CALL_COUNT gives up after DISCOVERY_TIMEOUT.
func TestNoInstanceFailsWithinDiscoveryTimeout(t *testing.T) {
	endpoint := etcdtest.Start(t)
	rt, _ := runtime(t, endpoint)
	reg := etcdreg.NewRegistry(rt.Etcd, etcdreg.RegistryOptions{Advertise: "127.0.0.1:9"})
	if err := reg.Register(&registry.Info{ServiceName: "echo", Addr: utils.NewNetAddr("tcp", "127.0.0.1:9"), Tags: etcdreg.Tags(transport.GoNet, "", false)}); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = reg.Deregister(nil) }()
	cfg := load(t, map[string]string{"CALL_COUNT": "1", "DISCOVERY_TIMEOUT": "500ms"})
	err := runCaller(context.Background(), cfg, rt)
	if err == nil || !strings.Contains(err.Error(), "DISCOVERY_TIMEOUT=500ms") || !strings.Contains(err.Error(), "no echo instance with transport netpoll found in etcd") {
		t.Fatalf("runCaller: %v; want no instance within DISCOVERY_TIMEOUT", err)
	}
}

// TestCallsAgentsThroughItsGateway runs the caller with TRANSPORT=yamux: it
// registers its gateway in etcd, an agent that finds it there connects, and
// the calls go through the tunnel.
func TestCallsAgentsThroughItsGateway(t *testing.T) {
	endpoint := etcdtest.Start(t)
	cfg := load(t, map[string]string{"TRANSPORT": "yamux", "TUNNEL_TOKEN": token, "CALL_COUNT": "3", "DISCOVERY_TIMEOUT": "10s"})
	rt, logs := runtime(t, endpoint)
	done := make(chan error, 1)
	go func() { done <- runCaller(context.Background(), cfg, rt) }()

	var gateways []string
	resolver := etcdreg.NewResolver(rt.Etcd, "", etcdreg.Tags(transport.Yamux, "", false))
	testutil.Eventually(t, "the gateway registered", 10*time.Second, func() bool {
		res, err := resolver.Resolve(context.Background(), "echo-tunnel")
		gateways = gateways[:0]
		for _, in := range res.Instances {
			gateways = append(gateways, in.Address().String())
		}
		return err == nil && len(gateways) == 1
	})
	agent, err := tunnel.NewAgent(tunnel.AgentConfig{ID: "echo-1", Token: token, TLSConfig: &tls.Config{InsecureSkipVerify: true}}) //nolint:gosec // the gateway's certificate is self-made
	if err != nil {
		t.Fatal(err)
	}
	agent.SetGateways(gateways)
	serveEcho(t, transport.ServerConfig{Kind: transport.Yamux, Listener: agent})

	if err := <-done; err != nil {
		t.Fatalf("runCaller: %v", err)
	}
	callsOK(t, logs, 3, "echo-1")
	if res, err := resolver.Resolve(context.Background(), "echo-tunnel"); err != nil || len(res.Instances) != 0 {
		t.Errorf("gateways registered after the caller stopped: %v, %v; want none", res.Instances, err)
	}
}

// TestCallsEchoAddressesWithoutEtcd runs the caller with ECHO_ADDRESSES and
// no etcd: host:port on netpoll, a ws:// URL (its path from the URL) on
// websocket.
func TestCallsEchoAddressesWithoutEtcd(t *testing.T) {
	for _, kind := range []transport.Kind{transport.Netpoll, transport.WebSocket} {
		t.Run(string(kind), func(t *testing.T) {
			scfg := transport.ServerConfig{Kind: kind, Addr: "127.0.0.1:0"}
			scfg.WebSocket.Path = "/from-the-url"
			target := serveEcho(t, scfg)
			if kind == transport.WebSocket {
				target = "ws://" + target + "/from-the-url"
			}
			cfg := load(t, map[string]string{"TRANSPORT": string(kind), "CALL_COUNT": "3", "ECHO_ADDRESSES": target})
			rt, logs := runtime(t, "") // no etcd
			if err := runCaller(context.Background(), cfg, rt); err != nil {
				t.Fatalf("runCaller: %v", err)
			}
			callsOK(t, logs, 3, target)
		})
	}
}
