package obs

import (
	"context"

	"github.com/cloudwego/kitex/pkg/rpcinfo"
	"github.com/cloudwego/kitex/pkg/stats"
	"github.com/prometheus/client_golang/prometheus"
)

// RPC metrics under the names and labels of kitex-contrib/monitor-prometheus
// (kitex_{client,server}_{throughput,latency_us}), which Kitex users'
// dashboards already query, with one label more: the transport.
//
// Two differences from monitor-prometheus, both deliberate: the latency
// buckets start at 100 µs instead of 5 ms (calls on these transports take
// well under a millisecond, and 5 ms as the first bucket makes every
// quantile below it a guess), and the metrics go to the registry the
// service already serves at /metrics instead of a server of their own.
const (
	labelCaller    = "caller"
	labelCallee    = "callee"
	labelMethod    = "method"
	labelStatus    = "status"
	labelRetry     = "retry"
	labelTransport = "transport"

	statusSucceed = "succeed"
	statusError   = "error"
	unknown       = "unknown"
)

// LatencyBucketsMicros are the latency histograms' buckets, in µs.
var LatencyBucketsMicros = []float64{100, 250, 500, 1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000, 500000, 1000000, 2500000}

// RPCMetrics is a Kitex stats.Tracer that counts every call and observes
// its latency, by caller, callee, method, status, retry and transport.
// Pass it to server.WithTracer or client.WithTracer.
type RPCMetrics struct {
	transport  string
	throughput *prometheus.CounterVec
	latency    *prometheus.HistogramVec
}

var _ stats.Tracer = (*RPCMetrics)(nil)

// NewServerRPCMetrics registers kitex_server_throughput and
// kitex_server_latency_us in reg, for calls served over transport.
func NewServerRPCMetrics(reg prometheus.Registerer, transport string) *RPCMetrics {
	return newRPCMetrics(reg, "server", "Calls handled", transport)
}

// NewClientRPCMetrics registers kitex_client_throughput and
// kitex_client_latency_us in reg, for calls made over transport.
func NewClientRPCMetrics(reg prometheus.Registerer, transport string) *RPCMetrics {
	return newRPCMetrics(reg, "client", "Calls made", transport)
}

func newRPCMetrics(reg prometheus.Registerer, side, what, transport string) *RPCMetrics {
	labels := []string{labelCaller, labelCallee, labelMethod, labelStatus, labelRetry, labelTransport}
	m := &RPCMetrics{
		transport: transport,
		throughput: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kitex_" + side + "_throughput",
			Help: what + ", by caller, callee, method, status (succeed or error), retry and transport.",
		}, labels),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "kitex_" + side + "_latency_us",
			Help:    what + ": time from the call's start to its end, in microseconds, by the same labels.",
			Buckets: LatencyBucketsMicros,
		}, labels),
	}
	reg.MustRegister(m.throughput, m.latency)
	return m
}

// Start implements stats.Tracer.
func (m *RPCMetrics) Start(ctx context.Context) context.Context { return ctx }

// Finish implements stats.Tracer: it records the call that ends.
func (m *RPCMetrics) Finish(ctx context.Context) {
	ri := rpcinfo.GetRPCInfo(ctx)
	if ri == nil || ri.Stats() == nil || ri.Stats().Level() == stats.LevelDisabled {
		return
	}
	st := ri.Stats()
	start, finish := st.GetEvent(stats.RPCStart), st.GetEvent(stats.RPCFinish)
	if start == nil || finish == nil {
		return
	}
	status := statusSucceed
	if st.Error() != nil {
		status = statusError
	}
	retry := "0"
	if n, ok := ri.To().Tag(rpcinfo.RetryTag); ok {
		retry = n
	}
	values := []string{
		orUnknown(ri.From().ServiceName()), orUnknown(ri.To().ServiceName()), orUnknown(ri.To().Method()),
		status, retry, m.transport,
	}
	m.throughput.WithLabelValues(values...).Inc()
	m.latency.WithLabelValues(values...).Observe(float64(finish.Time().Sub(start.Time()).Microseconds()))
}

func orUnknown(s string) string {
	if s == "" {
		return unknown
	}
	return s
}
