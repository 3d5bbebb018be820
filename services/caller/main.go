// Command caller finds the echo service in etcd (or takes the addresses in
// ECHO_ADDRESSES, without etcd) and calls it every CALL_INTERVAL, on the
// transport named by TRANSPORT, writing one log line per call: "call ok" or
// "call failed", with the fields transport, target (the instance's
// address), latency_ms and, on failure, error.
//
// With CALL_COUNT=N it waits (up to DISCOVERY_TIMEOUT) for a first instance,
// makes N calls and exits 0 only if every call succeeded. An invalid
// configuration stops it at start with exit code 2.
//
// `caller init-secret` is the Helm chart's hook that creates the tunnel
// token Secret (see initsecret.go).
package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/cloudwego/kitex/client"
	"github.com/cloudwego/kitex/pkg/rpcinfo"
	"go.uber.org/zap"

	"github.com/anyconn/kitex-anyconn/internal/app"
	"github.com/anyconn/kitex-anyconn/internal/config"
	"github.com/anyconn/kitex-anyconn/internal/obs"
	"github.com/anyconn/kitex-anyconn/kitex_gen/api/echo"
	"github.com/anyconn/kitex-anyconn/transport"
)

// version is stamped at build time (make build).
var version = "dev"

func main() {
	if len(os.Args) > 1 && os.Args[1] == "init-secret" {
		os.Exit(initSecret())
	}
	cfg, err := config.LoadCaller(os.LookupEnv)
	s := app.Service{
		Name: "caller", Config: cfg.Common, ConfigErr: err,
		Run: func(ctx context.Context, rt *app.Runtime) error { return runCaller(ctx, cfg, rt) },
	}
	if cfg.CallCount > 0 { // the caller must finish: reaching etcd counts against DISCOVERY_TIMEOUT
		s.ConnectTimeout = cfg.DiscoveryTimeout
	}
	s.NoEtcd = len(cfg.EchoAddresses) > 0
	os.Exit(app.Main(s))
}

// runCaller calls echo until ctx ends or, with CALL_COUNT, that many calls
// are made.
func runCaller(ctx context.Context, cfg config.Caller, rt *app.Runtime) error {
	m := newMetrics(rt.Metrics, cfg.Transport)
	tracing, err := obs.NewTracing(ctx, obs.TracingConfig{Service: "caller", Transport: string(cfg.Transport)})
	if err != nil {
		return err
	}
	defer tracing.Stop(rt.Log)
	build := outbounds[cfg.Transport]
	if len(cfg.EchoAddresses) > 0 {
		build = staticOutbound
	}
	out, err := build(cfg, rt)
	if err != nil {
		return err
	}
	defer out.close()
	rt.SetReady(func() error {
		rctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		return out.hasInstance(rctx)
	})

	ct, err := transport.NewClientTransport(out.transport)
	if err != nil {
		return err
	}
	defer ct.Close()
	cli, err := echo.NewClient(cfg.EchoService, append(append(append(ct.Options(), out.opts...), tracing.ClientOptions()...),
		client.WithClientBasicInfo(&rpcinfo.EndpointBasicInfo{ServiceName: "caller"}),
		client.WithTracer(obs.NewClientRPCMetrics(rt.Metrics, string(cfg.Transport))),
		client.WithRPCTimeout(cfg.CallTimeout),
		client.WithConnectTimeout(cfg.CallTimeout),
		client.WithInstanceMW(recordTarget),
	)...)
	if err != nil {
		return fmt.Errorf("kitex client: %w", err)
	}

	rt.Log.Info("caller started", zap.String("version", version), zap.String("transport", string(cfg.Transport)),
		zap.String("echo_service", cfg.EchoService), zap.String("admin", rt.AdminAddr),
		zap.Strings("etcd", rt.EtcdEndpoints), zap.Strings("echo_addresses", cfg.EchoAddresses), zap.Int("call_count", cfg.CallCount))

	if cfg.CallCount > 0 {
		if err := waitForInstance(ctx, out.hasInstance, cfg.DiscoveryTimeout); err != nil {
			return err
		}
	}
	l := &loop{cfg: cfg, cli: cli, log: rt.Log, metrics: m, noInstance: out.noInstance, traced: tracing != nil}
	return l.run(ctx)
}

// waitForInstance polls until hasInstance succeeds, up to timeout.
func waitForInstance(ctx context.Context, hasInstance func(context.Context) error, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	var last error // the last answer before the timeout cut one short
	for {
		err := hasInstance(ctx)
		if err == nil {
			return nil
		}
		if last == nil || ctx.Err() == nil {
			last = err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("no instance discovered within DISCOVERY_TIMEOUT=%s: %w", timeout, last)
		case <-tick.C:
		}
	}
}
