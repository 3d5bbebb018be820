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
	"net/http"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/cloudwego/kitex/pkg/registry"
	"github.com/cloudwego/kitex/pkg/rpcinfo"
	"github.com/cloudwego/kitex/server"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/anyconn/kitex-anyconn/internal/config"
	"github.com/anyconn/kitex-anyconn/internal/discovery"
	"github.com/anyconn/kitex-anyconn/internal/obs"
	"github.com/anyconn/kitex-anyconn/kitex_gen/api/echo"
	"github.com/anyconn/kitex-anyconn/transport"
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

	etcd, err := discovery.NewEtcdClient(cfg.EtcdEndpoints, log)
	if err != nil {
		return err
	}
	defer etcd.Close()
	reg := discovery.NewRegistry(etcd, discovery.RegistryOptions{
		TTL: cfg.RegistryTTL, Advertise: cfg.AdvertiseAddr, Logger: log,
	})

	scfg := transport.ServerConfig{Kind: cfg.Transport, Addr: cfg.ListenAddr, ExitWaitTime: cfg.ShutdownTimeout}
	tags := map[string]string{discovery.TagTransport: string(cfg.Transport)}
	if cfg.Transport == transport.WebSocket {
		scfg.WebSocket = websocket.ListenerConfig{
			Path:           cfg.WSPath,
			AllowedOrigins: cfg.WSAllowedOrigins,
			OnReject: func(r *http.Request, status int, reason error) {
				log.Warn("websocket request refused", zap.String("peer", r.RemoteAddr),
					zap.String("path", r.URL.Path), zap.Int("status", status), zap.Error(reason))
			},
		}
		tags[discovery.TagWSPath], tags[discovery.TagWSScheme] = cfg.WSPath, "ws"
		if cfg.TLSCertFile != "" {
			cert, err := tls.LoadX509KeyPair(cfg.TLSCertFile, cfg.TLSKeyFile)
			if err != nil {
				return fmt.Errorf("load TLS_CERT_FILE and TLS_KEY_FILE: %w", err)
			}
			scfg.WebSocket.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
			tags[discovery.TagWSScheme] = "wss"
		}
	}
	sopts, addr, err := transport.ServerOptions(scfg)
	if err != nil {
		return err
	}

	metrics := obs.NewMetricsRegistry()
	requests := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "echo_requests_total", Help: "Echo calls handled.",
		ConstLabels: prometheus.Labels{"transport": string(cfg.Transport)},
	})
	registered := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "echo_registered", Help: "1 while this instance is registered in etcd.",
	}, func() float64 {
		if reg.Registered() {
			return 1
		}
		return 0
	})
	metrics.MustRegister(requests, registered)

	var draining atomic.Bool
	admin, err := obs.StartAdmin(cfg.AdminAddr, metrics, func() error {
		switch {
		case draining.Load():
			return errors.New("shutting down")
		case !reg.Registered():
			return errors.New("not registered in etcd")
		}
		return nil
	})
	if err != nil {
		return err
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = admin.Close(ctx)
	}()

	exit := make(chan error, 1)
	svr := echo.NewServer(&echoHandler{requests: requests}, append(sopts,
		server.WithServerBasicInfo(&rpcinfo.EndpointBasicInfo{ServiceName: cfg.ServiceName}),
		server.WithRegistry(reg),
		server.WithRegistryInfo(&registry.Info{ServiceName: cfg.ServiceName, Weight: 10, Tags: tags}),
		server.WithExitSignal(func() <-chan error { return exit }),
	)...)
	log.Info("echo serving", zap.String("version", version), zap.String("listen", addr.String()), zap.String("admin", admin.Addr().String()),
		zap.Strings("etcd", cfg.EtcdEndpoints))

	runErr := make(chan error, 1)
	go func() { runErr <- svr.Run() }()
	select {
	case err := <-runErr:
		return fmt.Errorf("server stopped: %w", err)
	case <-ctx.Done():
	}

	// Leave etcd first, so callers stop choosing this instance, then drain.
	draining.Store(true)
	log.Info("shutting down: deregistering", zap.Duration("drain_delay", cfg.DrainDelay))
	if err := reg.Deregister(nil); err != nil {
		log.Warn("deregister failed; the registration expires with its lease", zap.Error(err))
	}
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
