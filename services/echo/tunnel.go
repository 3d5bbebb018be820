package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"slices"
	"sort"
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
)

// tunnelInbound opens no port: a tunnel agent dials every gateway that
// callers registered in etcd and serves the streams they open.
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
	gateways := etcdreg.NewResolver(rt.Etcd, "", etcdreg.Tags(transport.Yamux, "", false))
	followCtx, stopFollow := context.WithCancel(ctx)
	followed := make(chan struct{})
	go func() {
		defer close(followed)
		followGateways(followCtx, agent, gateways, cfg.Tunnel.Service, cfg.DiscoveryRefresh, rt.Log)
	}()
	stop := func() {
		stopFollow()
		<-followed
	}
	return &inbound{
		opts: sopts,
		addr: "tunnel agent " + ln.Addr().String(),
		ready: func() error {
			if agent.Stats().Sessions == 0 {
				return fmt.Errorf("no tunnel session to a gateway of %s", cfg.Tunnel.Service)
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

// agentConfig is the tunnel agent's configuration for cfg, TLS files loaded.
func agentConfig(cfg config.Echo, log *zap.Logger) (tunnel.AgentConfig, error) {
	tc := cfg.Tunnel
	acfg := tunnel.AgentConfig{
		ID: tc.AgentID, Token: tc.Token, TokenFile: tc.TokenFile, KeepAliveInterval: tc.KeepAlive, BackoffMax: tc.BackoffMax,
		HandshakeTimeout: cfg.HandshakeTimeout, MaxStreams: tc.MaxStreams, Sessions: tc.Sessions, Logger: obs.Slog(log),
	}
	var err error
	acfg.TLSConfig, err = agentTLS(tc, log)
	return acfg, err
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

// followGateways keeps the agent's gateways equal to those registered in
// etcd, re-reading every refresh; while etcd is unreachable the agent keeps
// the gateways it has.
func followGateways(ctx context.Context, agent *tunnel.Agent, r *etcdreg.Resolver, service string, refresh time.Duration, log *zap.Logger) {
	tick := time.NewTicker(refresh)
	defer tick.Stop()
	var last []string
	for {
		rctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		res, err := r.Resolve(rctx, service)
		cancel()
		if err == nil {
			addrs := make([]string, 0, len(res.Instances))
			for _, in := range res.Instances {
				addrs = append(addrs, in.Address().String())
			}
			sort.Strings(addrs)
			if !slices.Equal(addrs, last) {
				log.Info("tunnel gateways", zap.String("service", service), zap.Strings("gateways", addrs))
				last = addrs
			}
			agent.SetGateways(addrs)
		} else if ctx.Err() == nil {
			log.Warn("cannot list tunnel gateways in etcd; keeping the current ones", zap.Error(err))
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
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
