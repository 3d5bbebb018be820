// Command caller finds the echo service in etcd and calls it every
// CALL_INTERVAL, on the transport named by TRANSPORT, writing one log line
// per call: "call ok" or "call failed", with the fields transport, target
// (the instance's address), latency_ms and, on failure, error.
//
// With CALL_COUNT=N it waits (up to DISCOVERY_TIMEOUT) for a first instance,
// makes N calls and exits 0 only if every call succeeded. An invalid
// configuration stops it at start with exit code 2.
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/cloudwego/kitex/client"
	"github.com/cloudwego/kitex/pkg/loadbalance"
	"github.com/cloudwego/kitex/pkg/loadbalance/lbcache"
	"github.com/cloudwego/kitex/pkg/registry"
	"github.com/cloudwego/kitex/pkg/rpcinfo"
	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/anyconn/kitex-anyconn/internal/config"
	"github.com/anyconn/kitex-anyconn/internal/etcdreg"
	"github.com/anyconn/kitex-anyconn/internal/obs"
	"github.com/anyconn/kitex-anyconn/internal/secretinit"
	"github.com/anyconn/kitex-anyconn/internal/tlsconf"
	"github.com/anyconn/kitex-anyconn/kitex_gen/api/echo"
	"github.com/anyconn/kitex-anyconn/transport"
	"github.com/anyconn/kitex-anyconn/transport/tunnel"
)

// Exit codes.
const (
	exitOK     = 0
	exitFailed = 1 // a call failed (CALL_COUNT), or the caller could not run
	exitConfig = 2 // invalid configuration
)

// version is stamped at build time (make build).
var version = "dev"

func main() {
	if len(os.Args) > 1 && os.Args[1] == "init-secret" {
		os.Exit(initSecret())
	}
	os.Exit(run())
}

// initSecret is `caller init-secret`, the Helm chart's hook Job: it creates
// the Secret SECRET_NAME (in the pod's namespace) with a random token under
// SECRET_KEY ("token" by default) and the labels in SECRET_LABELS
// (k=v,k=v), unless that Secret exists, which it keeps.
func initSecret() int {
	name, key := os.Getenv("SECRET_NAME"), os.Getenv("SECRET_KEY")
	if key == "" {
		key = "token"
	}
	labels := map[string]string{}
	for _, kv := range strings.Split(os.Getenv("SECRET_LABELS"), ",") {
		if k, v, ok := strings.Cut(strings.TrimSpace(kv), "="); ok && k != "" {
			labels[k] = v
		}
	}
	if name == "" {
		fmt.Fprintln(os.Stderr, `caller init-secret: invalid SECRET_NAME="": must name the Secret to create`)
		return exitConfig
	}
	log, _ := obs.NewLogger(os.Stdout, "info", "json")
	defer func() { _ = log.Sync() }()
	log = log.With(zap.String("secret", name), zap.String("key", key))
	cluster, err := secretinit.InCluster()
	if err != nil {
		log.Error("init-secret failed", zap.Error(err))
		return exitFailed
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	created, err := secretinit.Ensure(ctx, cluster, secretinit.Secret{Name: name, Key: key, Labels: labels})
	switch {
	case err != nil:
		log.Error("init-secret failed", zap.Error(err))
		return exitFailed
	case created:
		log.Info("secret created with a new random token", zap.Int("bits", 8*secretinit.TokenBytes))
	default:
		log.Info("secret exists; kept as it is")
	}
	return exitOK
}

func run() int {
	cfg, err := config.LoadCaller(os.LookupEnv)
	if err != nil {
		fmt.Fprintln(os.Stderr, "caller: "+err.Error())
		return exitConfig
	}
	log, err := obs.NewLogger(os.Stdout, cfg.LogLevel, cfg.LogFormat)
	if err != nil {
		fmt.Fprintln(os.Stderr, "caller: "+err.Error())
		return exitConfig
	}
	defer func() { _ = log.Sync() }()
	obs.RouteKitexLogs(log)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := runCaller(ctx, cfg, log); err != nil {
		log.Error("caller stopped with an error", zap.Error(err))
		return exitFailed
	}
	return exitOK
}

func runCaller(ctx context.Context, cfg config.Caller, log *zap.Logger) error {
	m := newMetrics(cfg.Transport)
	// The admin server comes first, so that probes get an answer (alive, not
	// ready) while etcd is being reached.
	var found atomic.Pointer[outbound]
	admin, err := obs.StartAdmin(cfg.AdminAddr, m.registry, func() error {
		out := found.Load()
		if out == nil {
			return errors.New("connecting to etcd")
		}
		rctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		return out.hasInstance(rctx)
	})
	if err != nil {
		return err
	}
	defer func() { _ = admin.Close(2 * time.Second) }()

	// With CALL_COUNT the caller must finish: reaching etcd counts against
	// DISCOVERY_TIMEOUT.
	connectCtx, cancelConnect := ctx, context.CancelFunc(func() {})
	if cfg.CallCount > 0 {
		connectCtx, cancelConnect = context.WithTimeout(ctx, cfg.DiscoveryTimeout)
	}
	etcdCfg, err := cfg.Etcd.ClientConfig()
	if err != nil {
		cancelConnect()
		return err
	}
	etcd, err := etcdreg.Connect(connectCtx, etcdCfg, log)
	cancelConnect()
	if err != nil {
		return err
	}
	defer etcd.Close()

	var out *outbound
	if cfg.Transport == transport.Yamux {
		out, err = tunnelOutbound(cfg, etcd, m.registry, log)
	} else {
		out, err = etcdOutbound(cfg, etcd)
	}
	if err != nil {
		return err
	}
	defer out.close()
	found.Store(out)

	ct, err := transport.NewClientTransport(out.transport)
	if err != nil {
		return err
	}
	defer ct.Close()
	cli, err := echo.NewClient(cfg.EchoService, append(append(ct.Options(), out.opts...),
		client.WithClientBasicInfo(&rpcinfo.EndpointBasicInfo{ServiceName: "caller"}),
		client.WithRPCTimeout(cfg.CallTimeout),
		client.WithConnectTimeout(cfg.CallTimeout),
		client.WithInstanceMW(recordTarget),
	)...)
	if err != nil {
		return fmt.Errorf("kitex client: %w", err)
	}

	log.Info("caller started", zap.String("version", version), zap.String("transport", string(cfg.Transport)),
		zap.String("echo_service", cfg.EchoService), zap.String("admin", admin.Addr().String()),
		zap.Strings("etcd", cfg.Etcd.Endpoints), zap.Int("call_count", cfg.CallCount))

	l := &loop{cfg: cfg, cli: cli, log: log, metrics: m}
	if cfg.CallCount > 0 {
		if err := waitForInstance(ctx, out.hasInstance, cfg.DiscoveryTimeout); err != nil {
			return err
		}
	}
	return l.run(ctx)
}

// outbound is how the caller finds and reaches echo instances.
type outbound struct {
	transport   transport.ClientConfig
	opts        []client.Option
	hasInstance func(context.Context) error // nil if at least one instance is known
	close       func()
}

// etcdOutbound discovers echo instances of the caller's transport in etcd.
func etcdOutbound(cfg config.Caller, etcd *clientv3.Client) (*outbound, error) {
	tags := etcdreg.Tags(cfg.Transport, cfg.WSPath, cfg.TLSCAFile != "")
	ccfg := transport.ClientConfig{Kind: cfg.Transport, MaxMessageBytes: cfg.MaxMessageBytes}
	if cfg.Transport == transport.WebSocket {
		ccfg.WebSocket.Path = cfg.WSPath
		if cfg.TLSCAFile != "" {
			tc, err := tlsconf.Client(cfg.TLSCAFile, "", "", cfg.TLSServerName)
			if err != nil {
				return nil, fmt.Errorf("TLS_CA_FILE: %w", err)
			}
			ccfg.WebSocket.TLSConfig = tc
		}
	}
	// An emptied etcd (restarted with its data wiped) does not stop the
	// calls: the instances known last stay in use while echo registers again
	// (echo notices its lost lease and registers again within about its
	// REGISTRY_TTL, which the caller reads too).
	resolver := etcdreg.NewResolver(etcd, "", tags).KeepLast(etcdreg.KeepLastFor(cfg.RegistryTTL))
	return &outbound{
		transport: ccfg,
		opts: []client.Option{
			client.WithResolver(resolver),
			client.WithLoadBalancer(loadbalance.NewWeightedRoundRobinBalancer(), &lbcache.Options{
				RefreshInterval: cfg.DiscoveryRefresh,
				ExpireInterval:  10 * cfg.DiscoveryRefresh,
			}),
		},
		hasInstance: func(ctx context.Context) error {
			res, err := resolver.Resolve(ctx, cfg.EchoService)
			if err != nil {
				return err
			}
			if len(res.Instances) == 0 {
				return fmt.Errorf("no instance of %s with transport %s in etcd", cfg.EchoService, cfg.Transport)
			}
			return nil
		},
		close: func() {},
	}, nil
}

// tunnelOutbound runs a tunnel gateway, registers it in etcd for the echo
// agents to find, and calls the agents connected to it.
func tunnelOutbound(cfg config.Caller, etcd *clientv3.Client, metrics *prometheus.Registry, log *zap.Logger) (*outbound, error) {
	tc := cfg.Tunnel
	gcfg := tunnel.GatewayConfig{
		Token: tc.Token, TokenFile: tc.TokenFile, AgentTokensFile: tc.AgentTokensFile,
		KeepAliveInterval: tc.KeepAlive, HandshakeTimeout: cfg.HandshakeTimeout,
		MaxHandshakes: cfg.MaxHandshakes, MaxHandshakesPerSource: cfg.MaxHandshakesPerSource, Logger: obs.Slog(log),
	}
	var err error
	if gcfg.TLSConfig, err = gatewayTLS(tc); err != nil {
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
	gcfg.Addresses = []string{advertise}
	gw, err := tunnel.NewGateway(ln, gcfg)
	if err != nil {
		_ = ln.Close()
		return nil, err
	}
	reg := etcdreg.NewRegistry(etcd, etcdreg.RegistryOptions{Advertise: advertise, Logger: log})
	if err := reg.Register(&registry.Info{
		ServiceName: tc.Service, Addr: gw.Addr(), Tags: etcdreg.Tags(transport.Yamux, "", false),
	}); err != nil {
		_ = gw.Close()
		return nil, err
	}
	registerGatewayMetrics(metrics, gw)
	log.Info("tunnel gateway listening", zap.String("listen", gw.Addr().String()), zap.String("service", tc.Service))
	return &outbound{
		transport: transport.ClientConfig{Kind: transport.Yamux, Dialer: gw.Dialer(), MaxMessageBytes: cfg.MaxMessageBytes},
		opts: []client.Option{
			client.WithResolver(gw.Resolver()),
			client.WithLoadBalancer(gw.Balancer(), &lbcache.Options{
				RefreshInterval: cfg.DiscoveryRefresh,
				ExpireInterval:  10 * cfg.DiscoveryRefresh,
			}),
		},
		hasInstance: func(context.Context) error {
			if len(gw.Agents()) == 0 {
				return fmt.Errorf("no echo agent connected to the tunnel gateway")
			}
			return nil
		},
		close: func() {
			_ = reg.Deregister(nil)
			_ = gw.Close()
		},
	}, nil
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
	)
}

// waitForInstance polls until hasInstance succeeds, up to timeout.
func waitForInstance(ctx context.Context, hasInstance func(context.Context) error, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		err := hasInstance(ctx)
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("no instance discovered within DISCOVERY_TIMEOUT=%s: %w", timeout, err)
		case <-tick.C:
		}
	}
}
