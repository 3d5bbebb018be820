package tunnel_test

import (
	"crypto/tls"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/anyconn/kitex-anyconn/internal/testutil"
	"github.com/anyconn/kitex-anyconn/transport/tunnel"
	"github.com/anyconn/kitex-anyconn/transport/websocket"
)

// wsGateway starts a gateway that also serves agents over WebSocket at
// /tunnel, and returns it with the ws:// listener's address.
func wsGateway(t *testing.T, cfg tunnel.GatewayConfig) (*tunnel.Gateway, string) {
	t.Helper()
	cfg.Token, cfg.HandshakeTimeout, cfg.KeepAliveInterval = token, 2*time.Second, time.Second
	gw, err := tunnel.Listen("127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = gw.Close() })
	wl, err := websocket.Listen("127.0.0.1:0", websocket.ListenerConfig{Path: "/tunnel", Stream: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := gw.Serve(wl); err != nil {
		t.Fatal(err)
	}
	return gw, wl.Addr().String()
}

// The tunnel over WebSocket: an agent given a ws:// URL is called through
// the gateway as over TCP, with the tunnel's TLS inside or without it,
// directly, through an HTTP CONNECT proxy (the agent's only way out), and
// through a reverse proxy that rewrites Host (nginx's recipe).
func TestTunnelOverWebSocket(t *testing.T) {
	serverTLS, err := tunnel.SelfSignedTLS()
	if err != nil {
		t.Fatal(err)
	}
	clientTLS := &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12} //nolint:gosec // the handshake is bound to the TLS session
	for _, tc := range []struct {
		name  string
		tls   bool
		route string // direct, connect or rewrite
	}{
		{"direct", false, "direct"},
		{"direct-tls-inside", true, "direct"},
		{"connect-proxy", true, "connect"},
		{"host-rewriting-proxy", true, "rewrite"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			gcfg := tunnel.GatewayConfig{}
			acfg := tunnel.AgentConfig{ID: "ws-" + tc.name}
			if tc.tls {
				gcfg.TLSConfig, acfg.TLSConfig = serverTLS, clientTLS
			}
			gw, wsAddr := wsGateway(t, gcfg)
			var connect *testutil.ConnectProxy
			switch tc.route {
			case "connect":
				connect = testutil.StartConnectProxy(t, "edge", "secret")
				via := &url.URL{Scheme: "http", User: url.UserPassword("edge", "secret"), Host: connect.Addr()}
				acfg.Proxy = func(*url.URL) (*url.URL, error) { return via, nil }
			case "rewrite":
				wsAddr = testutil.StartReverseProxy(t, wsAddr, false)
			}
			a := startAgentWith(t, acfg, "ws://"+wsAddr+"/tunnel")
			waitAgents(t, gw, 1)
			answeredBy(t, newClient(t, gw), acfg.ID, "over websocket", 20)
			if connect != nil && !slices.Contains(connect.Connects(), wsAddr) {
				t.Fatalf("the agent did not go through the CONNECT proxy: it opened %v", connect.Connects())
			}
			if got := a.agent.GatewaySessions(); len(got) != 1 || got[0].Address != "ws://"+wsAddr+"/tunnel" || got[0].Gateway != gw.Name() {
				t.Fatalf("the agent's sessions: %+v", got)
			}
		})
	}
}

// A proxy that closes connections idle for 300 ms does not cut the
// tunnel: yamux's keep-alive (every 100 ms here) is data to it.
func TestTunnelKeepAliveBeatsAProxyIdleTimeout(t *testing.T) {
	gw, wsAddr := wsGateway(t, tunnel.GatewayConfig{})
	p := testutil.StartProxy(t, wsAddr)
	p.IdleTimeout(300 * time.Millisecond)
	a := startAgentWith(t, tunnel.AgentConfig{ID: "kept", KeepAliveInterval: 100 * time.Millisecond}, "ws://"+p.Addr()+"/tunnel")
	waitAgents(t, gw, 1)
	cli := newClient(t, gw)
	for range 4 {
		time.Sleep(450 * time.Millisecond)
		answeredBy(t, cli, "kept", "idle", 1)
	}
	if st := a.agent.Stats(); st.Reconnects != 0 {
		t.Fatalf("the session was cut %d times by the proxy's idle timeout", st.Reconnects)
	}
}

// Several gateways behind one address (a Service, a load balancer): each
// agent keeps dialing it until every gateway holds its sessions, whether
// the gateways name their peers (at once) or not (probes); a gateway added
// behind it is found, and one removed is let go, with no failed call.
func TestEveryGatewayGetsEveryAgentBehindOneAddress(t *testing.T) {
	for _, named := range []bool{true, false} {
		t.Run(map[bool]string{true: "peers-named", false: "probing"}[named], func(t *testing.T) {
			gws := make([]*tunnel.Gateway, 3)
			addrs := make([]string, 3)
			names := make([]string, 3)
			for i := range gws {
				names[i] = fmt.Sprintf("gw-%d", i)
				gws[i] = startNamedGateway(t, names[i])
				addrs[i] = gws[i].Addr().String()
			}
			peers := func(n int) {
				if named {
					for _, gw := range gws[:n] {
						gw.SetPeers(names[:n])
					}
				}
			}
			peers(2)
			lb := testutil.StartBalancer(t, addrs[:2]...)
			const sessions = 2
			for _, id := range []string{"edge-a", "edge-b"} {
				startAgentWith(t, tunnel.AgentConfig{ID: id, Sessions: sessions, ProbeInterval: 100 * time.Millisecond}, lb.Addr())
			}
			everyAgent := func(gws []*tunnel.Gateway) func() bool {
				return func() bool {
					for _, gw := range gws {
						infos := gw.AgentInfos()
						if len(infos) != 2 {
							return false
						}
						for _, in := range infos {
							if len(in.Sessions) != sessions {
								return false
							}
						}
					}
					return true
				}
			}
			began := time.Now()
			testutil.Eventually(t, "both gateways holding both agents' sessions", 15*time.Second, everyAgent(gws[:2]))
			t.Logf("report: 2 gateways behind one address, peers named %v: every agent on every gateway after %v", named, time.Since(began).Round(time.Millisecond))

			// Calls on the first gateway go on while a third gateway joins
			// behind the address and the second leaves.
			cli := newClient(t, gws[0])
			var ok, failed atomic.Int64
			stop := make(chan struct{})
			done := make(chan struct{})
			go func() {
				defer close(done)
				for {
					select {
					case <-stop:
						return
					case <-time.After(10 * time.Millisecond):
					}
					if _, err := call(cli, "steady"); err != nil {
						failed.Add(1)
						t.Logf("call failed: %v", err)
					} else {
						ok.Add(1)
					}
				}
			}()
			lb.SetTargets(addrs...)
			peers(3)
			began = time.Now()
			testutil.Eventually(t, "the third gateway holding both agents' sessions", 15*time.Second, everyAgent(gws))
			t.Logf("report: a gateway added, peers named %v: found after %v", named, time.Since(began).Round(time.Millisecond))
			lb.SetTargets(addrs[0], addrs[2])
			_ = gws[1].Close()
			gws[0].SetPeers([]string{names[0], names[2]})
			gws[2].SetPeers([]string{names[0], names[2]})
			time.Sleep(300 * time.Millisecond)
			close(stop)
			<-done
			if failed.Load() != 0 || ok.Load() == 0 {
				t.Fatalf("calls on the first gateway while the others changed: %d ok, %d failed", ok.Load(), failed.Load())
			}
			if !everyAgent([]*tunnel.Gateway{gws[0], gws[2]})() {
				t.Fatalf("after the second gateway left: %+v, %+v", gws[0].AgentInfos(), gws[2].AgentInfos())
			}
		})
	}
}

func startNamedGateway(t *testing.T, name string) *tunnel.Gateway {
	t.Helper()
	gw, err := tunnel.Listen("127.0.0.1:0", tunnel.GatewayConfig{Token: token, Name: name, HandshakeTimeout: 2 * time.Second, KeepAliveInterval: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = gw.Close() })
	return gw
}

// The inventory: the gateway lists each agent with its sessions, where they
// come from, since when, and the streams open on them; the agent lists its
// gateways.
func TestInventory(t *testing.T) {
	gw := startNamedGateway(t, "inventory-gw")
	before := time.Now()
	a := startAgentWith(t, tunnel.AgentConfig{ID: "listed", Sessions: 2}, gw.Addr().String())
	testutil.Eventually(t, "two sessions", 15*time.Second, func() bool {
		infos := gw.AgentInfos()
		return len(infos) == 1 && len(infos[0].Sessions) == 2
	})
	cli := newClient(t, gw)
	answeredBy(t, cli, "listed", "count me", 3)
	info := gw.AgentInfos()[0]
	if info.ID != "listed" || info.Streams < 1 {
		t.Fatalf("agent info %+v: want identity listed and the pooled stream counted", info)
	}
	for i, s := range info.Sessions {
		host, _, _ := net.SplitHostPort(s.Remote)
		if s.Slot != i || host != "127.0.0.1" || s.ConnectedSince.Before(before) || s.ConnectedSince.After(time.Now()) {
			t.Fatalf("session %d: %+v", i, s)
		}
	}
	sessions := a.agent.GatewaySessions()
	if len(sessions) != 2 || sessions[0].Gateway != "inventory-gw" || sessions[1].Slot != 1 || !strings.HasPrefix(sessions[0].Address, "127.0.0.1:") {
		t.Fatalf("agent sessions %+v", sessions)
	}
	streams := 0
	for _, s := range sessions {
		streams += s.Streams
	}
	if streams != info.Streams {
		t.Fatalf("the agent counts %d open streams, the gateway %d", streams, info.Streams)
	}
}
