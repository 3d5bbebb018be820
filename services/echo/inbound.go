package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/cloudwego/kitex/pkg/registry"
	"github.com/cloudwego/kitex/server"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/anyconn/kitex-anyconn/internal/app"
	"github.com/anyconn/kitex-anyconn/internal/config"
	"github.com/anyconn/kitex-anyconn/internal/etcdreg"
	"github.com/anyconn/kitex-anyconn/internal/obs"
	"github.com/anyconn/kitex-anyconn/internal/tlsconf"
	"github.com/anyconn/kitex-anyconn/transport"
	"github.com/anyconn/kitex-anyconn/transport/websocket"
)

// inbounds says, per transport, how calls reach this instance: the one
// place in echo where the transports differ. Every transport.Kinds() has an
// entry (a test checks it).
var inbounds = map[transport.Kind]func(context.Context, config.Echo, *app.Runtime) (*inbound, error){
	transport.Netpoll:   listenInbound,
	transport.GoNet:     listenInbound,
	transport.WebSocket: listenInbound,
	transport.Yamux:     tunnelInbound,
}

// inbound is how calls reach this instance.
type inbound struct {
	opts   []server.Option
	addr   string       // what to log as the listen address
	ready  func() error // nil when callers can reach this instance
	leave  func()       // stop being chosen by callers
	finish func()       // release what is left after the server stopped
}

// serverConfig is the server's transport configuration for cfg, TLS
// files loaded. The WebSocket settings are read by that transport only.
func serverConfig(cfg config.Echo, log *zap.Logger) (transport.ServerConfig, error) {
	scfg := transport.ServerConfig{
		Kind:            cfg.Transport,
		Addr:            cfg.ListenAddr,
		Logger:          obs.Slog(log),
		ExitWaitTime:    cfg.ShutdownTimeout,
		MaxMessageBytes: cfg.MaxMessageBytes,
		ReadTimeout:     cfg.ReadTimeout,
		IdleTimeout:     cfg.IdleTimeout,
		MaxConnections:  cfg.MaxConnections,
		WriteTimeout:    cfg.WriteTimeout,
		WebSocket: websocket.ListenerConfig{
			Path:                   cfg.WSPath,
			AllowedOrigins:         cfg.WSAllowedOrigins,
			HandshakeTimeout:       cfg.HandshakeTimeout,
			MaxHandshakes:          cfg.MaxHandshakes,
			MaxHandshakesPerSource: cfg.MaxHandshakesPerSource,
			PingInterval:           cfg.WSPingInterval,
		},
	}
	if cfg.TLSCertFile != "" { // config allows it with websocket only
		tc, err := tlsconf.Server(cfg.TLSCertFile, cfg.TLSKeyFile, "")
		if err != nil {
			return scfg, fmt.Errorf("TLS_CERT_FILE and TLS_KEY_FILE: %w", err)
		}
		scfg.WebSocket.TLSConfig = tc
	}
	return scfg, nil
}

// registration is what echo registers in etcd: its service name and the
// tags that callers of the same transport look for.
func registration(cfg config.Echo) *registry.Info {
	return &registry.Info{
		ServiceName: cfg.ServiceName, Weight: 10,
		Tags: etcdreg.Tags(cfg.Transport, cfg.WSPath, cfg.TLSCertFile != ""),
	}
}

// listenInbound listens on LISTEN_ADDR and registers the instance in etcd.
func listenInbound(_ context.Context, cfg config.Echo, rt *app.Runtime) (*inbound, error) {
	scfg, err := serverConfig(cfg, rt.Log)
	if err != nil {
		return nil, err
	}
	sopts, ln, err := transport.ServerOptions(scfg)
	if err != nil {
		return nil, err
	}
	reg := etcdreg.NewRegistry(rt.Etcd, etcdreg.RegistryOptions{
		TTL: cfg.RegistryTTL, Advertise: cfg.AdvertiseAddr, Logger: rt.Log,
	})
	rt.Metrics.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "echo_registered", Help: "1 while this instance is registered in etcd.",
	}, func() float64 {
		if reg.Registered() {
			return 1
		}
		return 0
	}))
	return &inbound{
		opts: append(sopts, server.WithRegistry(reg), server.WithRegistryInfo(registration(cfg))),
		addr: ln.Addr().String(),
		ready: func() error {
			if !reg.Registered() {
				return errors.New("not registered in etcd")
			}
			return nil
		},
		leave: func() {
			if err := reg.Deregister(nil); err != nil {
				rt.Log.Warn("deregister failed; the registration expires with its lease", zap.Error(err))
			}
		},
		finish: func() {},
	}, nil
}
