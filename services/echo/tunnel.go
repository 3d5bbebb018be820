package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/cloudwego/kitex/server"
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

// tunnelInbound opens no port: a tunnel agent dials every gateway that
// callers registered in etcd, or the ones of TUNNEL_GATEWAYS, and serves
// the streams they open.
func tunnelInbound(ctx context.Context, cfg config.Echo, rt *app.Runtime) (*inbound, error) {
	acfg, err := agentConfig(cfg, rt.Log)
	if err != nil {
		return nil, err
	}
	agent, err := tunnel.NewAgent(acfg)
	if err != nil {
		return nil, err
	}
	scfg, err := serverConfig(cfg, rt.Log)
	scfg.Listener = agent
	var sopts []server.Option
	var ln net.Listener
	if err == nil {
		sopts, ln, err = transport.ServerOptions(scfg)
	}
	if err != nil {
		_ = agent.Close()
		return nil, err
	}
	registerAgentMetrics(rt.Metrics, agent)
	rt.Handle("GET /tunnel/gateways", obs.JSON(func() any {
		return gatewaysView{Agent: cfg.Tunnel.AgentID, Sessions: agent.GatewaySessions()}
	}))
	stop := func() {}
	notReady := fmt.Sprintf("no tunnel session to a gateway of %s", cfg.Tunnel.Service)
	if static := cfg.Tunnel.Gateways; len(static) > 0 {
		rt.Log.Info("tunnel gateways (TUNNEL_GATEWAYS)", zap.Strings("gateways", static))
		agent.SetGateways(static)
		notReady = "no tunnel session to a gateway of TUNNEL_GATEWAYS " + strings.Join(static, ",")
	} else {
		gateways := etcdreg.NewResolver(rt.Etcd, "", etcdreg.Tags(transport.Yamux, "", false)).WithLogger(rt.Log).Watch(cfg.DiscoveryRefresh)
		stopFollow := gateways.Follow(ctx, cfg.Tunnel.Service, cfg.DiscoveryRefresh, rt.Log, "tunnel gateways", agent.SetGateways)
		stop = func() {
			stopFollow()
			gateways.Close()
		}
	}
	return &inbound{
		opts: sopts,
		addr: "tunnel agent " + ln.Addr().String(),
		ready: func() error {
			if agent.Stats().Sessions == 0 {
				return errors.New(notReady)
			}
			return nil
		},
		leave: func() {
			stop()
			agent.Leave()
		},
		finish: func() {
			stop()
			sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			_ = agent.Shutdown(sctx)
		},
	}, nil
}

// gatewaysView is what /tunnel/gateways shows: the agent's identity and
// its sessions to gateways.
type gatewaysView struct {
	Agent    string                  `json:"agent"`
	Sessions []tunnel.GatewaySession `json:"sessions"`
}

// agentConfig is the tunnel agent's configuration for cfg, TLS files
// loaded. It goes through the forward proxy that HTTPS_PROXY, HTTP_PROXY
// and NO_PROXY name, if any.
func agentConfig(cfg config.Echo, log *zap.Logger) (tunnel.AgentConfig, error) {
	tc := cfg.Tunnel
	acfg := tunnel.AgentConfig{
		ID: tc.AgentID, Token: tc.Token, TokenFile: tc.TokenFile, KeepAliveInterval: tc.KeepAlive, BackoffMax: tc.BackoffMax,
		HandshakeTimeout: cfg.HandshakeTimeout, MaxStreams: tc.MaxStreams, Sessions: tc.Sessions, Logger: obs.Slog(log),
		Proxy: websocket.ProxyFromEnvironment(),
	}
	var err error
	if acfg.TLSConfig, err = agentTLS(tc, log); err != nil {
		return acfg, err
	}
	if tc.WSCAFile != "" {
		if acfg.WebSocket.TLSConfig, err = tlsconf.Client(tc.WSCAFile, "", "", ""); err != nil {
			return acfg, fmt.Errorf("TUNNEL_WS_CA_FILE: %w", err)
		}
	}
	return acfg, nil
}

// agentTLS is the agent's TLS configuration: none with TUNNEL_TLS=off; the
// gateway verified against TUNNEL_TLS_CA_FILE if set (with the client
// certificate, if any); else TLS without verifying the gateway's
// certificate, which the gateway may have made for itself: the tunnel
// handshake, bound to the TLS session, authenticates the gateway instead.
func agentTLS(tc config.Tunnel, log *zap.Logger) (*tls.Config, error) {
	if !tc.TLS {
		return nil, nil
	}
	if tc.TLSCAFile == "" {
		log.Info("tunnel TLS without TUNNEL_TLS_CA_FILE: the gateway's certificate is not verified; the token proof, bound to the TLS session, authenticates the gateway")
		return &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12}, nil //nolint:gosec // authenticated by the channel-bound handshake
	}
	c, err := tlsconf.Client(tc.TLSCAFile, tc.TLSCertFile, tc.TLSKeyFile, tc.TLSServerName)
	if err != nil {
		return nil, fmt.Errorf("TUNNEL_TLS_*: %w", err)
	}
	return c, nil
}

func registerAgentMetrics(reg *prometheus.Registry, agent *tunnel.Agent) {
	reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "tunnel_sessions", Help: "Tunnel sessions to gateways now."},
			func() float64 { return float64(agent.Stats().Sessions) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "tunnel_reconnects_total", Help: "Sessions established again after a loss."},
			func() float64 { return float64(agent.Stats().Reconnects) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "tunnel_connect_failures_total", Help: "Failed connection or handshake attempts."},
			func() float64 { return float64(agent.Stats().Failures) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "tunnel_streams_total", Help: "Streams accepted from gateways."},
			func() float64 { return float64(agent.Stats().Streams) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "tunnel_streams_refused_total", Help: "Streams closed at once because TUNNEL_MAX_STREAMS were open."},
			func() float64 { return float64(agent.Stats().Refused) }),
	)
}
