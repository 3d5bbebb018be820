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
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/cloudwego/kitex/client"
	"github.com/cloudwego/kitex/pkg/loadbalance"
	"github.com/cloudwego/kitex/pkg/loadbalance/lbcache"
	"github.com/cloudwego/kitex/pkg/rpcinfo"
	"go.uber.org/zap"

	"github.com/anyconn/kitex-anyconn/internal/config"
	"github.com/anyconn/kitex-anyconn/internal/discovery"
	"github.com/anyconn/kitex-anyconn/internal/obs"
	"github.com/anyconn/kitex-anyconn/kitex_gen/api/echo"
	"github.com/anyconn/kitex-anyconn/transport"
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
	os.Exit(run())
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
	etcd, err := discovery.NewEtcdClient(cfg.EtcdEndpoints, log)
	if err != nil {
		return err
	}
	defer etcd.Close()

	tags := map[string]string{discovery.TagTransport: string(cfg.Transport)}
	ccfg := transport.ClientConfig{Kind: cfg.Transport}
	if cfg.Transport == transport.WebSocket {
		ccfg.WebSocket.Path = cfg.WSPath
		tags[discovery.TagWSPath], tags[discovery.TagWSScheme] = cfg.WSPath, "ws"
		if cfg.TLSCAFile != "" {
			tc, err := clientTLS(cfg.TLSCAFile, cfg.TLSServerName)
			if err != nil {
				return err
			}
			ccfg.WebSocket.TLSConfig = tc
			tags[discovery.TagWSScheme] = "wss"
		}
	}
	resolver := discovery.NewResolver(etcd, "", tags)
	ct, err := transport.NewClient(ccfg)
	if err != nil {
		return err
	}
	defer ct.Close()
	cli, err := echo.NewClient(cfg.EchoService, append(ct.Options(),
		client.WithClientBasicInfo(&rpcinfo.EndpointBasicInfo{ServiceName: "caller"}),
		client.WithResolver(resolver),
		client.WithLoadBalancer(loadbalance.NewWeightedRoundRobinBalancer(), &lbcache.Options{
			RefreshInterval: cfg.DiscoveryRefresh,
			ExpireInterval:  10 * cfg.DiscoveryRefresh,
		}),
		client.WithRPCTimeout(cfg.CallTimeout),
		client.WithConnectTimeout(cfg.CallTimeout),
		client.WithMiddleware(recordTarget),
	)...)
	if err != nil {
		return fmt.Errorf("kitex client: %w", err)
	}

	m := newMetrics(cfg.Transport)
	admin, err := obs.StartAdmin(cfg.AdminAddr, m.registry, func() error {
		rctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		return hasInstance(rctx, resolver, cfg.EchoService)
	})
	if err != nil {
		return err
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = admin.Close(sctx)
	}()
	log.Info("caller started", zap.String("version", version), zap.String("transport", string(cfg.Transport)), zap.String("echo_service", cfg.EchoService),
		zap.String("admin", admin.Addr().String()), zap.Strings("etcd", cfg.EtcdEndpoints), zap.Int("call_count", cfg.CallCount))

	l := &loop{cfg: cfg, cli: cli, log: log, metrics: m}
	if cfg.CallCount > 0 {
		if err := waitForInstance(ctx, resolver, cfg, log); err != nil {
			return err
		}
	}
	return l.run(ctx)
}

// hasInstance reports nil if discovery lists at least one matching instance.
func hasInstance(ctx context.Context, r *discovery.Resolver, service string) error {
	res, err := r.Resolve(ctx, service)
	if err != nil {
		return err
	}
	if len(res.Instances) == 0 {
		return fmt.Errorf("no instance of %s with this transport in etcd", service)
	}
	return nil
}

// waitForInstance polls discovery until it lists an instance, up to DISCOVERY_TIMEOUT.
func waitForInstance(ctx context.Context, r *discovery.Resolver, cfg config.Caller, log *zap.Logger) error {
	ctx, cancel := context.WithTimeout(ctx, cfg.DiscoveryTimeout)
	defer cancel()
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		err := hasInstance(ctx, r, cfg.EchoService)
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("no instance discovered within DISCOVERY_TIMEOUT=%s: %w", cfg.DiscoveryTimeout, err)
		case <-tick.C:
		}
	}
}

func clientTLS(caFile, serverName string) (*tls.Config, error) {
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("read TLS_CA_FILE: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, errors.New("TLS_CA_FILE holds no PEM certificate")
	}
	return &tls.Config{RootCAs: pool, ServerName: serverName, MinVersion: tls.VersionTLS12}, nil
}
