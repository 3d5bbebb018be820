package obs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// NewMetricsRegistry returns a Prometheus registry with the Go runtime and
// process collectors.
func NewMetricsRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// Admin is the admin HTTP server: /healthz (the process is alive), /readyz
// (ready reports nil) and /metrics.
type Admin struct {
	srv  *http.Server
	ln   net.Listener
	done chan struct{}
	mux  *http.ServeMux
}

// The admin server's bounds: a probe, a scrape or an inventory read is a
// small request with a small, quick answer, so a client that is slow to
// send, slow to read or idle on a kept-alive connection is cut.
var adminTimeouts = struct{ header, read, write, idle time.Duration }{
	header: 5 * time.Second,
	read:   10 * time.Second,
	write:  30 * time.Second, // a scrape of a busy registry included
	idle:   60 * time.Second,
}

// AdminMaxHeaderBytes bounds a request's headers on the admin port.
const AdminMaxHeaderBytes = 16 << 10

// StartAdmin listens on addr and serves the admin endpoints. ready is
// called on every /readyz request; a non-nil error gives 503 with its text.
func StartAdmin(addr string, reg *prometheus.Registry, ready func() error) (*Admin, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("admin: listen %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if err := ready(); err != nil {
			http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ready\n"))
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	a := &Admin{
		mux: mux,
		srv: &http.Server{
			Handler:           mux,
			ReadHeaderTimeout: adminTimeouts.header,
			ReadTimeout:       adminTimeouts.read,
			WriteTimeout:      adminTimeouts.write,
			IdleTimeout:       adminTimeouts.idle,
			MaxHeaderBytes:    AdminMaxHeaderBytes,
		},
		ln:   ln,
		done: make(chan struct{}),
	}
	go func() {
		defer close(a.done)
		_ = a.srv.Serve(ln)
	}()
	return a, nil
}

// Handle serves h at pattern (a net/http ServeMux pattern such as
// "GET /tunnel/agents") from now on.
func (a *Admin) Handle(pattern string, h http.Handler) { a.mux.Handle(pattern, h) }

// JSON returns a handler that answers with f's value as indented JSON.
func JSON(f func() any) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		b, err := json.MarshalIndent(f(), "", "  ")
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(append(b, '\n'))
	})
}

// Addr returns the address the admin server listens on.
func (a *Admin) Addr() net.Addr { return a.ln.Addr() }

// Close stops the admin server, waiting at most grace for requests in
// progress.
func (a *Admin) Close(grace time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	err := a.srv.Shutdown(ctx)
	<-a.done
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}
