// Command echo is a Kitex service that returns the message it is sent, on the
// transport named by TRANSPORT, registered in etcd for callers to find.
//
// Configuration is read from the environment (see the README). An invalid
// value stops it at start with exit code 2 and one line naming the variable.
// On SIGTERM or SIGINT it leaves etcd first, waits DRAIN_DELAY for callers to
// notice, then stops, letting calls in flight finish within SHUTDOWN_TIMEOUT.
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"slices"
	"sort"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/cloudwego/kitex/pkg/registry"
	"github.com/cloudwego/kitex/pkg/rpcinfo"
	"github.com/cloudwego/kitex/server"
	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/anyconn/kitex-anyconn/internal/config"
	"github.com/anyconn/kitex-anyconn/internal/etcdreg"
	"github.com/anyconn/kitex-anyconn/internal/obs"
	"github.com/anyconn/kitex-anyconn/internal/tlsconf"
	"github.com/anyconn/kitex-anyconn/kitex_gen/api/echo"
	"github.com/anyconn/kitex-anyconn/transport"
	"github.com/anyconn/kitex-anyconn/transport/tunnel"
	"github.com/anyconn/kitex-anyconn/transport/websocket"
)

// version is stamped at build time (make build).
var version = "dev"

func main() {
	os.Exit(run())
}

func run() int {
	cfg, err := config.LoadEcho(os.LookupEnv)
	if err != nil {
		fmt.Fprintln(os.Stderr, "echo: "+err.Error())
		return 2
	}
	log, err := obs.NewLogger(os.Stdout, cfg.LogLevel, cfg.LogFormat)
	if err != nil {
		fmt.Fprintln(os.Stderr, "echo: "+err.Error())
		return 2
	}
	defer func() { _ = log.Sync() }()
	log = log.With(zap.String("service", cfg.ServiceName), zap.String("transport", string(cfg.Transport)))
	obs.RouteKitexLogs(log)
	if err := serve(cfg, log); err != nil {
		log.Error("echo stopped with an error", zap.Error(err))
		return 1
	}
	return 0
}

func serve(cfg config.Echo, log *zap.Logger) error {
	ctx, stopSignals := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stopSignals()

	metrics := obs.NewMetricsRegistry()
	requests := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "echo_requests_total", Help: "Echo calls handled.",
		ConstLabels: prometheus.Labels{"transport": string(cfg.Transport)},
	})
	metrics.MustRegister(requests)

	// The admin server comes first, so that probes get an answer (alive, not
	// ready) while etcd is being reached.
	var draining atomic.Bool
	var current atomic.Pointer[inbound]
	admin, err := obs.StartAdmin(cfg.AdminAddr, metrics, func() error {
		if draining.Load() {
			return errors.New("shutting down")
		}
		if i := current.Load(); i != nil {
			return i.ready()
		}
		return errors.New("connecting to etcd")
	})
	if err != nil {
		return err
	}
	defer func() { _ = admin.Close(2 * time.Second) }()

	etcdCfg, err := cfg.Etcd.ClientConfig()
	if err != nil {
		return err
	}
	etcd, err := etcdreg.Connect(ctx, etcdCfg, log)
	if err != nil {
		return err
	}
	defer etcd.Close()

	// The transport decides how callers find this instance and how it leaves.
	var in *inbound
	if cfg.Transport == transport.Yamux {
		in, err = tunnelInbound(ctx, cfg, etcd, metrics, log)
	} else {
		in, err = listenInbound(cfg, etcd, metrics, log)
	}
	if err != nil {
		return err
	}
	defer in.finish()
	current.Store(in)

	exit := make(chan error, 1)
	svr := echo.NewServer(&echoHandler{requests: requests}, append(in.opts,
		server.WithServerBasicInfo(&rpcinfo.EndpointBasicInfo{ServiceName: cfg.ServiceName}),
		server.WithExitSignal(func() <-chan error { return exit }),
	)...)
	log.Info("echo serving", zap.String("version", version), zap.String("listen", in.addr),
		zap.String("admin", admin.Addr().String()), zap.Strings("etcd", cfg.Etcd.Endpoints))

	runErr := make(chan error, 1)
	go func() { runErr <- svr.Run() }()
	select {
	case err := <-runErr:
		return fmt.Errorf("server stopped: %w", err)
	case <-ctx.Done():
	}

	// Leave first (deregister, or tell the gateways to open no more
	// streams), so callers stop choosing this instance, then drain.
	draining.Store(true)
	log.Info("shutting down: leaving", zap.Duration("drain_delay", cfg.DrainDelay))
	in.leave()
	select {
	case <-time.After(cfg.DrainDelay):
	case err := <-runErr:
		return fmt.Errorf("server stopped while draining: %w", err)
	}
	exit <- nil
	err = <-runErr
	log.Info("echo stopped")
	if err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return nil
}

// inbound is how calls reach this instance.
type inbound struct {
	opts   []server.Option
	addr   string       // what to log as the listen address
	ready  func() error // nil when callers can reach this instance
	leave  func()       // stop being chosen by callers
	finish func()       // release what is left after the server stopped
}

// serverConfig is the part of the server's transport settings that every
// transport shares.
func serverConfig(cfg config.Echo, log *zap.Logger) transport.ServerConfig {
	return transport.ServerConfig{
		Kind:            cfg.Transport,
		Logger:          obs.Slog(log),
		ExitWaitTime:    cfg.ShutdownTimeout,
		MaxMessageBytes: cfg.MaxMessageBytes,
		ReadTimeout:     cfg.ReadTimeout,
		IdleTimeout:     cfg.IdleTimeout,
	}
}

// listenInbound listens on LISTEN_ADDR and registers the instance in etcd
// with tags naming its transport.
func listenInbound(cfg config.Echo, etcd *clientv3.Client, metrics *prometheus.Registry, log *zap.Logger) (*inbound, error) {
	reg := etcdreg.NewRegistry(etcd, etcdreg.RegistryOptions{
		TTL: cfg.RegistryTTL, Advertise: cfg.AdvertiseAddr, Logger: log,
	})
	scfg := serverConfig(cfg, log)
	scfg.Addr = cfg.ListenAddr
	tags := etcdreg.Tags(cfg.Transport, cfg.WSPath, cfg.TLSCertFile != "")
	if cfg.Transport == transport.WebSocket {
		scfg.WebSocket = websocket.ListenerConfig{
			Path:                   cfg.WSPath,
			AllowedOrigins:         cfg.WSAllowedOrigins,
			HandshakeTimeout:       cfg.HandshakeTimeout,
			MaxHandshakes:          cfg.MaxHandshakes,
			MaxHandshakesPerSource: cfg.MaxHandshakesPerSource,
		}
		if cfg.TLSCertFile != "" {
			tc, err := tlsconf.Server(cfg.TLSCertFile, cfg.TLSKeyFile, "")
			if err != nil {
				return nil, fmt.Errorf("TLS_CERT_FILE and TLS_KEY_FILE: %w", err)
			}
			scfg.WebSocket.TLSConfig = tc
		}
	}
	sopts, ln, err := transport.ServerOptions(scfg)
	if err != nil {
		return nil, err
	}
	metrics.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "echo_registered", Help: "1 while this instance is registered in etcd.",
	}, func() float64 { return boolGauge(reg.Registered()) }))
	return &inbound{
		opts: append(sopts,
			server.WithRegistry(reg),
			server.WithRegistryInfo(&registry.Info{ServiceName: cfg.ServiceName, Weight: 10, Tags: tags}),
		),
		addr: ln.Addr().String(),
		ready: func() error {
			if !reg.Registered() {
				return errors.New("not registered in etcd")
			}
			return nil
		},
		leave: func() {
			if err := reg.Deregister(nil); err != nil {
				log.Warn("deregister failed; the registration expires with its lease", zap.Error(err))
			}
		},
		finish: func() {},
	}, nil
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

// tunnelInbound opens no port: a tunnel agent dials every gateway that
// callers registered in etcd and serves the streams they open.
func tunnelInbound(ctx context.Context, cfg config.Echo, etcd *clientv3.Client, metrics *prometheus.Registry, log *zap.Logger) (*inbound, error) {
	tc := cfg.Tunnel
	acfg := tunnel.AgentConfig{
		ID: tc.AgentID, Token: tc.Token, TokenFile: tc.TokenFile, KeepAliveInterval: tc.KeepAlive, BackoffMax: tc.BackoffMax,
		HandshakeTimeout: cfg.HandshakeTimeout, MaxStreams: tc.MaxStreams, Sessions: tc.Sessions, Logger: obs.Slog(log),
	}
	var err error
	if acfg.TLSConfig, err = agentTLS(tc, log); err != nil {
		return nil, err
	}
	agent, err := tunnel.NewAgent(acfg)
	if err != nil {
		return nil, err
	}
	scfg := serverConfig(cfg, log)
	scfg.Listener = agent
	sopts, ln, err := transport.ServerOptions(scfg)
	if err != nil {
		return nil, err
	}
	registerAgentMetrics(metrics, agent)
	followCtx, stopFollow := context.WithCancel(ctx)
	followed := make(chan struct{})
	go func() {
		defer close(followed)
		followGateways(followCtx, agent, etcdreg.NewResolver(etcd, "", etcdreg.Tags(transport.Yamux, "", false)), tc.Service, cfg.DiscoveryRefresh, log)
	}()
	return &inbound{
		opts: sopts,
		addr: "tunnel agent " + ln.Addr().String(),
		ready: func() error {
			if agent.Stats().Sessions == 0 {
				return fmt.Errorf("no tunnel session to a gateway of %s", tc.Service)
			}
			return nil
		},
		leave: func() {
			stopFollow()
			<-followed
			agent.Leave()
		},
		finish: func() {
			stopFollow()
			<-followed
			sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			_ = agent.Shutdown(sctx)
		},
	}, nil
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

func boolGauge(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
