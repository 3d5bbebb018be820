// Package app is the skeleton that echo and caller share: configuration
// errors, the logger, signals, the admin server and the etcd connection, in
// that order, and the exit codes.
package app

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/anyconn/kitex-anyconn/internal/config"
	"github.com/anyconn/kitex-anyconn/internal/etcdreg"
	"github.com/anyconn/kitex-anyconn/internal/obs"
	"github.com/anyconn/kitex-anyconn/internal/tlsconf"
)

// Exit codes of both services.
const (
	ExitOK     = 0
	ExitFailed = 1 // the service could not run, or (caller, CALL_COUNT) a call failed
	ExitConfig = 2 // invalid configuration: one line on stderr names the variable
)

// Service is what a service hands to Main.
type Service struct {
	// Name prefixes the configuration error line ("echo: invalid ...").
	Name string
	// Config is the shared part of the configuration; ConfigErr is the
	// error that loading it returned.
	Config    config.Common
	ConfigErr error
	// Fields are added to every log line.
	Fields []zap.Field
	// ConnectTimeout bounds the wait for etcd; no bound if zero.
	ConnectTimeout time.Duration
	// NoEtcd runs the service without etcd (Runtime.Etcd is nil).
	NoEtcd bool
	// Run is the service itself. It returns when ctx ends (SIGTERM or
	// SIGINT) or on an error.
	Run func(ctx context.Context, rt *Runtime) error
}

// Runtime is what Main gives Run.
type Runtime struct {
	Log     *zap.Logger
	Metrics *prometheus.Registry
	Etcd    *clientv3.Client // nil with Service.NoEtcd
	// EtcdEndpoints are the endpoints Etcd was given; none with
	// Service.NoEtcd. For the log.
	EtcdEndpoints []string
	// AdminAddr is where /healthz, /readyz and /metrics are served.
	AdminAddr string
	ready     atomic.Pointer[func() error]
	admin     *obs.Admin
}

// Handle serves h on the admin port at pattern (such as
// "GET /tunnel/agents"); nothing, in a Runtime made without an admin
// server (a test's).
func (rt *Runtime) Handle(pattern string, h http.Handler) {
	if rt.admin != nil {
		rt.admin.Handle(pattern, h)
	}
}

// SetReady sets what /readyz reports: nil from f means ready. Until it is
// first called, /readyz answers that etcd is being reached.
func (rt *Runtime) SetReady(f func() error) { rt.ready.Store(&f) }

// Ready is what /readyz reports: nil when ready.
func (rt *Runtime) Ready() error {
	if f := rt.ready.Load(); f != nil {
		return (*f)()
	}
	return errors.New("connecting to etcd")
}

// Main runs s and returns the process's exit code.
func Main(s Service) int {
	return run(s, os.Stdout, os.Stderr)
}

func run(s Service, stdout, stderr io.Writer) int {
	if s.ConfigErr != nil {
		fmt.Fprintln(stderr, s.Name+": "+s.ConfigErr.Error())
		return ExitConfig
	}
	log, err := obs.NewLogger(stdout, s.Config.LogLevel, s.Config.LogFormat)
	if err != nil {
		fmt.Fprintln(stderr, s.Name+": "+err.Error())
		return ExitConfig
	}
	defer func() { _ = log.Sync() }()
	log = log.With(s.Fields...)
	obs.RouteKitexLogs(log)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := start(ctx, s, log); err != nil {
		log.Error(s.Name+" stopped with an error", zap.Error(err))
		return ExitFailed
	}
	return ExitOK
}

// start serves the admin endpoints first, so that probes get an answer
// (alive, not ready) while etcd is being reached, then connects to etcd and
// runs the service.
func start(ctx context.Context, s Service, log *zap.Logger) error {
	rt := &Runtime{Log: log, Metrics: obs.NewMetricsRegistry()}
	admin, err := obs.StartAdmin(s.Config.AdminAddr, rt.Metrics, rt.Ready)
	if err != nil {
		return err
	}
	defer func() { _ = admin.Close(2 * time.Second) }()
	rt.AdminAddr, rt.admin = admin.Addr().String(), admin
	if s.NoEtcd {
		return s.Run(ctx, rt)
	}

	etcdCfg, err := EtcdConfig(s.Config.Etcd)
	if err != nil {
		return err
	}
	connectCtx, cancel := ctx, context.CancelFunc(func() {})
	if s.ConnectTimeout > 0 {
		connectCtx, cancel = context.WithTimeout(ctx, s.ConnectTimeout)
	}
	rt.Etcd, err = etcdreg.Connect(connectCtx, etcdCfg, log)
	rt.EtcdEndpoints = s.Config.Etcd.Endpoints
	cancel()
	if err != nil {
		return err
	}
	defer rt.Etcd.Close()
	return s.Run(ctx, rt)
}

// EtcdConfig returns the etcd client settings of the ETCD_* variables,
// loading the TLS files.
func EtcdConfig(e config.Etcd) (etcdreg.EtcdConfig, error) {
	cfg := etcdreg.EtcdConfig{Endpoints: e.Endpoints, Username: e.Username, Password: e.Password}
	if e.TLSEnabled() {
		t, err := tlsconf.Client(e.CAFile, e.CertFile, e.KeyFile, e.ServerName)
		if err != nil {
			return etcdreg.EtcdConfig{}, fmt.Errorf("ETCD_* TLS files: %w", err)
		}
		cfg.TLS = t
	}
	return cfg, nil
}
