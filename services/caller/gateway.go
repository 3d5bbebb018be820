package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"

	"github.com/cloudwego/kitex/client"
	"github.com/cloudwego/kitex/pkg/registry"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/anyconn/kitex-anyconn/internal/app"
	"github.com/anyconn/kitex-anyconn/internal/config"
	"github.com/anyconn/kitex-anyconn/internal/etcdreg"
	"github.com/anyconn/kitex-anyconn/internal/obs"
	"github.com/anyconn/kitex-anyconn/internal/tlsconf"
	"github.com/anyconn/kitex-anyconn/transport"
	"github.com/anyconn/kitex-anyconn/transport/tunnel"
	"github.com/anyconn/kitex-anyconn/transport/websocket"
)

// tunnelOutbound runs a tunnel gateway, registers it in etcd for the echo
// agents to find, and calls the agents connected to it. It names itself by
// its registered address, and tells the agents the names of every gateway
// of the service in etcd, so that agents reaching several through one
// shared address (TUNNEL_PUBLIC_ADDRESSES) hold sessions to each.
func tunnelOutbound(cfg config.Caller, rt *app.Runtime) (*outbound, error) {
	tc := cfg.Tunnel
	gcfg, err := gatewayConfig(cfg, rt.Log)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", tc.ListenAddr)
	if err != nil {
		return nil, fmt.Errorf("tunnel gateway: listen %s: %w", tc.ListenAddr, err)
	}
	// Agents dial the address registered in etcd; the gateway refuses a
	// handshake made for any other (one relayed by an impostor).
	advertise := tc.AdvertiseAddr
	if advertise == "" {
		if advertise, err = etcdreg.AdvertiseAddr(ln.Addr().String()); err != nil {
			_ = ln.Close()
			return nil, err
		}
	}
	gcfg.Name = advertise
	gcfg.Addresses = append([]string{advertise}, tc.PublicAddresses...)
	gw, err := tunnel.NewGateway(ln, gcfg)
	if err != nil {
		_ = ln.Close()
		return nil, err
	}
	if tc.WSListenAddr != "" {
		wl, err := websocket.Listen(tc.WSListenAddr, websocket.ListenerConfig{
			Path: tc.WSPath, Stream: true, HandshakeTimeout: cfg.HandshakeTimeout, Logger: obs.Slog(rt.Log),
			MaxHandshakes: cfg.MaxHandshakes, MaxHandshakesPerSource: cfg.MaxHandshakesPerSource,
		})
		if err == nil {
			err = gw.Serve(wl)
		}
		if err != nil {
			_ = gw.Close()
			return nil, fmt.Errorf("tunnel gateway: websocket: %w", err)
		}
		rt.Log.Info("tunnel gateway serving agents over websocket", zap.String("listen", wl.Addr().String()), zap.String("path", tc.WSPath))
	}
	reg := etcdreg.NewRegistry(rt.Etcd, etcdreg.RegistryOptions{Advertise: advertise, Logger: rt.Log})
	if err := reg.Register(&registry.Info{
		ServiceName: tc.Service, Addr: gw.Addr(), Tags: etcdreg.Tags(transport.Yamux, "", false),
	}); err != nil {
		_ = gw.Close()
		return nil, err
	}
	registerGatewayMetrics(rt.Metrics, gw)
	rt.Handle("GET /tunnel/agents", obs.JSON(func() any { return agentsView{Gateway: gw.Name(), Agents: gw.AgentInfos()} }))
	rt.Log.Info("tunnel gateway listening", zap.String("listen", gw.Addr().String()), zap.String("service", tc.Service),
		zap.String("name", gw.Name()), zap.Strings("public_addresses", tc.PublicAddresses))
	peers := etcdreg.NewResolver(rt.Etcd, "", etcdreg.Tags(transport.Yamux, "", false)).WithLogger(rt.Log).Watch(cfg.DiscoveryRefresh)
	stopFollow := peers.Follow(context.Background(), tc.Service, cfg.DiscoveryRefresh, rt.Log, "tunnel gateway peers", gw.SetPeers) // until close
	noInstance := fmt.Sprintf("no %s agent connected to this caller's tunnel gateway yet", cfg.EchoService)
	return &outbound{
		transport: transport.ClientConfig{Kind: transport.Yamux, Dialer: gw.Dialer(), MaxMessageBytes: cfg.MaxMessageBytes, Protocol: cfg.CallProtocol},
		opts: []client.Option{
			client.WithResolver(gw.Resolver()),
			client.WithLoadBalancer(gw.Balancer(), balancer(cfg)),
		},
		hasInstance: func(context.Context) error {
			if len(gw.Agents()) == 0 {
				return errors.New(noInstance)
			}
			return nil
		},
		noInstance: noInstance,
		close: func() {
			stopFollow()
			peers.Close()
			_ = reg.Deregister(nil)
			_ = gw.Close()
		},
	}, nil
}

// agentsView is what /tunnel/agents shows: the gateway's name and the
// agents connected to it.
type agentsView struct {
	Gateway string             `json:"gateway"`
	Agents  []tunnel.AgentInfo `json:"agents"`
}

// gatewayConfig is the tunnel gateway's configuration for cfg, TLS files
// loaded, without the address it is registered under.
func gatewayConfig(cfg config.Caller, log *zap.Logger) (tunnel.GatewayConfig, error) {
	tc := cfg.Tunnel
	gcfg := tunnel.GatewayConfig{
		Token: tc.Token, TokenFile: tc.TokenFile, AgentTokensFile: tc.AgentTokensFile,
		KeepAliveInterval: tc.KeepAlive, HandshakeTimeout: cfg.HandshakeTimeout,
		MaxHandshakes: cfg.MaxHandshakes, MaxHandshakesPerSource: cfg.MaxHandshakesPerSource, Logger: obs.Slog(log),
	}
	var err error
	gcfg.TLSConfig, err = gatewayTLS(tc)
	return gcfg, err
}

// gatewayTLS is the gateway's TLS configuration: none with TUNNEL_TLS=off;
// else the certificate in TUNNEL_TLS_CERT_FILE, or one the gateway makes
// for itself (agents cannot verify it, but the handshake is bound to the
// TLS session, so only a holder of the token can stand in the middle).
// TUNNEL_TLS_CA_FILE requires client certificates signed by that CA, and
// takes the agents' identities from them.
func gatewayTLS(tc config.Tunnel) (*tls.Config, error) {
	if !tc.TLS {
		return nil, nil
	}
	if tc.TLSCertFile != "" {
		c, err := tlsconf.Server(tc.TLSCertFile, tc.TLSKeyFile, tc.TLSCAFile)
		if err != nil {
			return nil, fmt.Errorf("TUNNEL_TLS_*: %w", err)
		}
		return c, nil
	}
	c, err := tunnel.SelfSignedTLS()
	if err != nil {
		return nil, err
	}
	if err := tlsconf.RequireClientCerts(c, tc.TLSCAFile); err != nil {
		return nil, fmt.Errorf("TUNNEL_TLS_CA_FILE: %w", err)
	}
	return c, nil
}

func registerGatewayMetrics(reg *prometheus.Registry, gw *tunnel.Gateway) {
	reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "tunnel_sessions", Help: "Agent sessions connected to the gateway now (TUNNEL_SESSIONS per agent)."},
			func() float64 { return float64(gw.Stats().Sessions) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "tunnel_sessions_accepted_total", Help: "Agent handshakes accepted."},
			func() float64 { return float64(gw.Stats().SessionsAccepted) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "tunnel_handshake_failures_total", Help: "Connections refused or failed before a session."},
			func() float64 { return float64(gw.Stats().HandshakeFailures) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "tunnel_streams_total", Help: "Streams opened to agents."},
			func() float64 { return float64(gw.Stats().StreamsOpened) }),
		agentCollector{gw: gw,
			sessions: prometheus.NewDesc("tunnel_agent_sessions", fmt.Sprintf("Sessions of each agent connected now (the first %d agents by identity; the others summed under agent=%q).", maxAgentSeries, otherAgents), []string{"agent"}, nil),
			streams:  prometheus.NewDesc("tunnel_agent_streams", fmt.Sprintf("Streams open to each agent now (the first %d agents by identity; the others summed under agent=%q).", maxAgentSeries, otherAgents), []string{"agent"}, nil),
		},
	)
}

// maxAgentSeries bounds the values of the agent label: an agent identity is
// chosen by whoever runs echo, and every value is a series to store. The
// first agents by identity get their own; the others are summed under
// otherAgents.
const (
	maxAgentSeries = 100
	otherAgents    = "_other"
)

// agentCollector reports the per-agent gauges from the gateway's inventory
// at each scrape; an agent gone is gone from the next scrape.
type agentCollector struct {
	gw                *tunnel.Gateway
	sessions, streams *prometheus.Desc
}

func (c agentCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.sessions; ch <- c.streams }

func (c agentCollector) Collect(ch chan<- prometheus.Metric) {
	infos := c.gw.AgentInfos()
	var otherSessions, otherStreams int
	for i, a := range infos {
		if i >= maxAgentSeries {
			otherSessions += len(a.Sessions)
			otherStreams += a.Streams
			continue
		}
		ch <- prometheus.MustNewConstMetric(c.sessions, prometheus.GaugeValue, float64(len(a.Sessions)), a.ID)
		ch <- prometheus.MustNewConstMetric(c.streams, prometheus.GaugeValue, float64(a.Streams), a.ID)
	}
	if len(infos) > maxAgentSeries {
		ch <- prometheus.MustNewConstMetric(c.sessions, prometheus.GaugeValue, float64(otherSessions), otherAgents)
		ch <- prometheus.MustNewConstMetric(c.streams, prometheus.GaugeValue, float64(otherStreams), otherAgents)
	}
}
