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
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/cloudwego/kitex/pkg/rpcinfo"
	"github.com/cloudwego/kitex/server"
	"github.com/prometheus/client_golang/prometheus"
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
	cfg, err := config.LoadEcho(os.LookupEnv)
	os.Exit(app.Main(app.Service{
		Name: "echo", Config: cfg.Common, ConfigErr: err,
		Fields: []zap.Field{zap.String("service", cfg.ServiceName), zap.String("transport", string(cfg.Transport))},
		Run:    func(ctx context.Context, rt *app.Runtime) error { return serve(ctx, cfg, rt) },
		// An agent given its gateways registers nothing and looks up nothing.
		NoEtcd: cfg.Transport == transport.Yamux && len(cfg.Tunnel.Gateways) > 0,
	}))
}

// serve runs echo until ctx ends, then leaves and drains.
func serve(ctx context.Context, cfg config.Echo, rt *app.Runtime) error {
	requests := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "echo_requests_total", Help: "Echo calls handled. Deprecated: use kitex_server_throughput; removed in the next release.",
		ConstLabels: prometheus.Labels{"transport": string(cfg.Transport)},
	})
	rt.Metrics.MustRegister(requests)

	tc := obs.TracingConfig{Service: cfg.ServiceName, Transport: string(cfg.Transport)}
	if cfg.Transport == transport.Yamux {
		tc.AgentID = cfg.Tunnel.AgentID
	}
	tracing, err := obs.NewTracing(ctx, tc)
	if err != nil {
		return err
	}
	defer tracing.Stop(rt.Log)

	in, err := inbounds[cfg.Transport](ctx, cfg, rt)
	if err != nil {
		return err
	}
	defer in.finish()
	leaving := make(chan struct{})
	rt.SetReady(func() error {
		select {
		case <-leaving:
			return errors.New("shutting down")
		default:
			return in.ready()
		}
	})

	exit := make(chan error, 1)
	svr := echo.NewServer(&echoHandler{requests: requests}, append(append(in.opts,
		server.WithServerBasicInfo(&rpcinfo.EndpointBasicInfo{ServiceName: cfg.ServiceName}),
		server.WithTracer(obs.NewServerRPCMetrics(rt.Metrics, string(cfg.Transport))),
		server.WithExitSignal(func() <-chan error { return exit }),
	), tracing.ServerOptions()...)...)
	rt.Log.Info("echo serving", zap.String("version", version), zap.String("listen", in.addr),
		zap.String("admin", rt.AdminAddr), zap.Strings("etcd", rt.EtcdEndpoints))

	runErr := make(chan error, 1)
	go func() { runErr <- svr.Run() }()
	select {
	case err := <-runErr:
		return fmt.Errorf("server stopped: %w", err)
	case <-ctx.Done():
	}

	// Leave first (deregister, or tell the gateways to open no more
	// streams), so callers stop choosing this instance, then drain.
	close(leaving)
	rt.Log.Info("shutting down: leaving", zap.Duration("drain_delay", cfg.DrainDelay))
	in.leave()
	select {
	case <-time.After(cfg.DrainDelay):
	case err := <-runErr:
		return fmt.Errorf("server stopped while draining: %w", err)
	}
	exit <- nil
	err = <-runErr
	rt.Log.Info("echo stopped")
	if err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return nil
}
