package main

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/cloudwego/kitex/pkg/endpoint"
	"github.com/cloudwego/kitex/pkg/kerrors"
	"github.com/cloudwego/kitex/pkg/rpcinfo"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/anyconn/kitex-anyconn/internal/config"
	"github.com/anyconn/kitex-anyconn/internal/obs"
	"github.com/anyconn/kitex-anyconn/kitex_gen/api"
	"github.com/anyconn/kitex-anyconn/kitex_gen/api/echo"
	"github.com/anyconn/kitex-anyconn/transport"
)

type metrics struct {
	calls   *prometheus.CounterVec
	latency prometheus.Observer
}

func newMetrics(reg *prometheus.Registry, kind transport.Kind) *metrics {
	m := &metrics{
		calls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "caller_calls_total", Help: "Calls made to echo, by result (ok or failed) and transport. Deprecated: use kitex_client_throughput; removed in the next release.",
		}, []string{"result", "transport"}),
	}
	hist := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "caller_call_duration_seconds", Help: "Latency of calls to echo, by transport. Deprecated: use kitex_client_latency_us; removed in the next release.",
		Buckets: prometheus.ExponentialBuckets(0.0001, 2, 18),
	}, []string{"transport"})
	m.latency = hist.WithLabelValues(string(kind))
	// Both results exist from the start, so a rate over them is never missing.
	m.calls.WithLabelValues("ok", string(kind))
	m.calls.WithLabelValues("failed", string(kind))
	reg.MustRegister(m.calls, hist)
	return m
}

// targetKey carries the *target that recordTarget fills in.
type targetKey struct{}

// target is the address of the instance a call went to. Kitex may still be
// writing it from its timeout worker when the call has returned, hence the lock.
type target struct {
	mu   sync.Mutex
	addr string
}

func (t *target) set(addr string) {
	t.mu.Lock()
	t.addr = addr
	t.mu.Unlock()
}

func (t *target) get() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.addr
}

// recordTarget is a Kitex instance middleware (client.WithInstanceMW): it
// runs once the load balancer has chosen an instance, before any network
// I/O, so the target is known even for calls that time out.
func recordTarget(next endpoint.Endpoint) endpoint.Endpoint {
	return func(ctx context.Context, req, resp interface{}) error {
		if t, ok := ctx.Value(targetKey{}).(*target); ok {
			if ri := rpcinfo.GetRPCInfo(ctx); ri != nil && ri.To() != nil && ri.To().Address() != nil {
				t.set(ri.To().Address().String())
			}
		}
		return next(ctx, req, resp)
	}
}

// loop makes the calls and logs each one.
type loop struct {
	cfg        config.Caller
	cli        echo.Client
	log        *zap.Logger
	metrics    *metrics
	traced     bool   // the calls have spans: their log lines name them
	noInstance string // what a call that found no instance failed with
}

// errReply is returned when echo answers with a message that is not the one sent.
var errReply = errors.New("reply differs from the message sent")

// run calls until ctx ends or CALL_COUNT calls are made. With CALL_COUNT it
// returns an error unless every call succeeded.
func (l *loop) run(ctx context.Context) error {
	tick := time.NewTicker(l.cfg.CallInterval)
	defer tick.Stop()
	failed, made := 0, 0
	for seq := 1; l.cfg.CallCount == 0 || seq <= l.cfg.CallCount; seq++ {
		if err := l.call(ctx, seq); err != nil {
			failed++
		}
		made++
		if l.cfg.CallCount > 0 && seq == l.cfg.CallCount {
			break
		}
		select {
		case <-ctx.Done():
			if l.cfg.CallCount > 0 {
				return fmt.Errorf("interrupted after %d of %d calls", made, l.cfg.CallCount)
			}
			return nil
		case <-tick.C:
		}
	}
	l.log.Info("calls done", zap.Int("calls", made), zap.Int("failed", failed))
	if failed > 0 {
		return fmt.Errorf("%d of %d calls failed", failed, made)
	}
	return nil
}

func (l *loop) call(ctx context.Context, seq int) error {
	var dst target
	msg := fmt.Sprintf("%s #%d", l.cfg.CallMessage, seq)
	ctx = context.WithValue(ctx, targetKey{}, &dst)
	if l.traced {
		ctx = obs.WithSpanHolder(ctx)
	}
	start := time.Now()
	// A stop (SIGTERM) lets the call in flight finish, within CALL_TIMEOUT,
	// instead of failing it: the loop stops after it.
	resp, err := l.cli.Echo(context.WithoutCancel(ctx), &api.Request{Message: msg})
	elapsed := time.Since(start)
	if errors.Is(err, kerrors.ErrNoMoreInstance) {
		err = errors.New(l.noInstance)
	}
	if err == nil && resp.GetMessage() != msg {
		err = fmt.Errorf("%w: got %q", errReply, resp.GetMessage())
	}
	fields := []zap.Field{
		zap.String("transport", string(l.cfg.Transport)),
		zap.String("target", dst.get()),
		zap.Float64("latency_ms", float64(elapsed.Microseconds())/1000),
		zap.Int("seq", seq),
	}
	fields = append(fields, obs.TraceFields(ctx)...)
	kind := string(l.cfg.Transport)
	if err != nil {
		l.metrics.calls.WithLabelValues("failed", kind).Inc()
		l.log.Error("call failed", append(fields, obs.PeerError(err))...)
		return err
	}
	l.metrics.calls.WithLabelValues("ok", kind).Inc()
	l.metrics.latency.Observe(elapsed.Seconds())
	l.log.Info("call ok", fields...)
	return nil
}
