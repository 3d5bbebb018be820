package obs

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/bytedance/gopkg/cloud/metainfo"
	"github.com/cloudwego/kitex/client"
	"github.com/cloudwego/kitex/pkg/endpoint"
	"github.com/cloudwego/kitex/pkg/kerrors"
	"github.com/cloudwego/kitex/pkg/rpcinfo"
	"github.com/cloudwego/kitex/server"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"
)

// Tracing is OpenTelemetry tracing of Kitex calls, configured by the
// standard OTEL_* variables: a client span per call the caller makes and
// a server span per call echo handles, one trace across both. The trace
// context travels in Kitex metainfo (W3C traceparent, tracestate and
// baggage, one hop), which only TTHeader carries: with Framed each side
// starts its own trace.
//
// A nil *Tracing is tracing switched off: its options are empty and cost
// nothing per call.
type Tracing struct {
	tp     *sdktrace.TracerProvider
	tracer trace.Tracer
	prop   propagation.TextMapPropagator
	// transport is the anyconn.transport attribute of every span; agent,
	// if set, the anyconn.tunnel.agent_id of server spans.
	transport, agent string
}

// TracingConfig names what the spans describe.
type TracingConfig struct {
	// Service is service.name unless OTEL_SERVICE_NAME (or
	// OTEL_RESOURCE_ATTRIBUTES) gives one.
	Service string
	// Transport is the transport the calls use.
	Transport string
	// AgentID is the tunnel agent's identity, on echo with yamux.
	AgentID string
}

// Span attributes of this project, beside OpenTelemetry's rpc.* ones.
const (
	AttrTransport = "anyconn.transport"
	AttrAgentID   = "anyconn.tunnel.agent_id"
)

// TracingEnabled says whether the OTEL_* variables ask for traces: an OTLP
// endpoint is set (OTEL_EXPORTER_OTLP_ENDPOINT or its _TRACES_ form), and
// neither OTEL_SDK_DISABLED=true nor OTEL_TRACES_EXPORTER=none says no.
func TracingEnabled(lookup func(string) (string, bool)) bool {
	get := func(k string) string { v, _ := lookup(k); return strings.TrimSpace(v) }
	if strings.EqualFold(get("OTEL_SDK_DISABLED"), "true") || strings.EqualFold(get("OTEL_TRACES_EXPORTER"), "none") {
		return false
	}
	return get("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != ""
}

// OTLPProtocols are the values OTEL_EXPORTER_OTLP_PROTOCOL (and its
// _TRACES_ form) may take; the first is the default, as the specification
// says.
var OTLPProtocols = []string{"http/protobuf", "grpc"}

// OTLPProtocol returns the OTLP protocol the variables choose.
func OTLPProtocol(lookup func(string) (string, bool)) string {
	for _, k := range []string{"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"} {
		if v, ok := lookup(k); ok && strings.TrimSpace(v) != "" {
			return strings.TrimSpace(v)
		}
	}
	return OTLPProtocols[0]
}

// NewTracing returns the tracing the process environment asks for, or nil
// when it asks for none. The exporter, resource and sampler read the
// OTEL_* variables themselves (OTEL_EXPORTER_OTLP_*, OTEL_SERVICE_NAME,
// OTEL_RESOURCE_ATTRIBUTES, OTEL_TRACES_SAMPLER and _ARG); internal/config
// has checked their values. Stop flushes what is left.
func NewTracing(ctx context.Context, cfg TracingConfig) (*Tracing, error) {
	if !TracingEnabled(os.LookupEnv) {
		return nil, nil
	}
	var exp sdktrace.SpanExporter
	var err error
	switch p := OTLPProtocol(os.LookupEnv); p {
	case "http/protobuf":
		exp, err = otlptracehttp.New(ctx)
	case "grpc":
		exp, err = otlptracegrpc.New(ctx)
	default:
		err = fmt.Errorf("OTLP protocol %q: allowed values are %s", p, strings.Join(OTLPProtocols, ", "))
	}
	if err != nil {
		return nil, fmt.Errorf("tracing: %w", err)
	}
	res, err := resource.New(ctx,
		resource.WithAttributes(attribute.String("service.name", cfg.Service)),
		resource.WithFromEnv(), // OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES win
		resource.WithTelemetrySDK(),
	)
	if err != nil {
		return nil, fmt.Errorf("tracing: resource: %w", err)
	}
	return newTracing(sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res)), cfg), nil
}

func newTracing(tp *sdktrace.TracerProvider, cfg TracingConfig) *Tracing {
	return &Tracing{
		tp:        tp,
		tracer:    tp.Tracer("github.com/anyconn/kitex-anyconn"),
		prop:      propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}),
		transport: cfg.Transport,
		agent:     cfg.AgentID,
	}
}

// Stop exports the spans still buffered (for at most 5 s) and stops; a
// failure is logged to log.
func (t *Tracing) Stop(log *zap.Logger) {
	if t == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := t.tp.Shutdown(ctx); err != nil {
		log.Warn("tracing: spans not exported at exit", zap.Error(err))
	}
}

// ServerOptions are the Kitex server options that trace each call handled.
func (t *Tracing) ServerOptions() []server.Option {
	if t == nil {
		return nil
	}
	return []server.Option{server.WithTracer(holderTracer{}), server.WithMiddleware(t.serverMiddleware)}
}

// ClientOptions are the Kitex client options that trace each call made.
func (t *Tracing) ClientOptions() []client.Option {
	if t == nil {
		return nil
	}
	return []client.Option{client.WithMiddleware(t.clientMiddleware)}
}

func (t *Tracing) clientMiddleware(next endpoint.Endpoint) endpoint.Endpoint {
	return func(ctx context.Context, req, resp any) error {
		ri := rpcinfo.GetRPCInfo(ctx)
		ctx, span := t.tracer.Start(ctx, spanName(ri), trace.WithSpanKind(trace.SpanKindClient))
		if span.IsRecording() { // attributes only for sampled calls: the others cost less
			span.SetAttributes(append(t.rpcAttributes(ri), attribute.String("peer.service", ri.To().ServiceName()))...)
		}
		if h, ok := ctx.Value(holderKey{}).(*spanHolder); ok {
			h.sc = span.SpanContext()
		}
		carrier := propagation.MapCarrier{}
		t.prop.Inject(ctx, carrier)
		for k, v := range carrier {
			ctx = metainfo.WithValue(ctx, k, v) // one hop: a later hop without tracing must not pass it on
		}
		err := next(ctx, req, resp)
		if addr := ri.To().Address(); addr != nil && span.IsRecording() { // chosen by the balancer, after this middleware
			span.SetAttributes(attribute.String("server.address", addr.String()))
			if t.transport == "yamux" {
				span.SetAttributes(attribute.String(AttrAgentID, addr.String())) // a tunnel address is the agent's identity
			}
		}
		endSpan(span, ri, err)
		return err
	}
}

func (t *Tracing) serverMiddleware(next endpoint.Endpoint) endpoint.Endpoint {
	return func(ctx context.Context, req, resp any) error {
		ri := rpcinfo.GetRPCInfo(ctx)
		ctx = t.prop.Extract(ctx, metainfoCarrier{ctx})
		ctx, span := t.tracer.Start(ctx, spanName(ri), trace.WithSpanKind(trace.SpanKindServer))
		if span.IsRecording() {
			attrs := t.rpcAttributes(ri)
			if t.agent != "" {
				attrs = append(attrs, attribute.String(AttrAgentID, t.agent))
			}
			if addr := ri.From().Address(); addr != nil {
				attrs = append(attrs, attribute.String("client.address", addr.String()))
			}
			span.SetAttributes(attrs...)
		}
		if h, ok := ctx.Value(holderKey{}).(*spanHolder); ok {
			h.sc = span.SpanContext()
		}
		err := next(ctx, req, resp)
		endSpan(span, ri, err)
		return err
	}
}

// rpcAttributes are OpenTelemetry's RPC attributes of a call, and its transport.
func (t *Tracing) rpcAttributes(ri rpcinfo.RPCInfo) []attribute.KeyValue {
	return []attribute.KeyValue{
		attribute.String("rpc.system", "kitex"), // as kitex-contrib/obs-opentelemetry
		attribute.String("rpc.service", ri.Invocation().ServiceName()),
		attribute.String("rpc.method", ri.Invocation().MethodName()),
		attribute.String(AttrTransport, t.transport),
	}
}

func spanName(ri rpcinfo.RPCInfo) string {
	return ri.Invocation().ServiceName() + "/" + ri.Invocation().MethodName()
}

// endSpan records err, or a business status error, and ends span.
func endSpan(span trace.Span, ri rpcinfo.RPCInfo, err error) {
	var biz kerrors.BizStatusErrorIface
	switch {
	case err != nil && errors.As(err, &biz):
		span.SetAttributes(attribute.Int64("rpc.kitex.biz_status_code", int64(biz.BizStatusCode())))
		fallthrough
	case err != nil:
		span.RecordError(err)
		span.SetStatus(codes.Error, clip(err.Error()))
	case ri.Invocation().BizStatusErr() != nil:
		span.SetAttributes(attribute.Int64("rpc.kitex.biz_status_code", int64(ri.Invocation().BizStatusErr().BizStatusCode())))
	}
	span.End()
}

// clip bounds peer-controlled text in a span's status, as PeerError does
// in log lines.
func clip(s string) string {
	if len(s) > MaxPeerText {
		return s[:MaxPeerText] + "…"
	}
	return s
}

// metainfoCarrier reads the propagator's keys from a call's metainfo.
type metainfoCarrier struct{ ctx context.Context }

func (c metainfoCarrier) Get(k string) string {
	v, _ := metainfo.GetValue(c.ctx, k)
	return v
}
func (metainfoCarrier) Set(string, string) {}
func (metainfoCarrier) Keys() []string     { return nil }

// spanHolder receives a call's span context, for log lines written with a
// ctx the span is not in: Kitex logs its own server-side errors with the
// call's outer ctx, and the caller logs each call after it returned.
type spanHolder struct{ sc trace.SpanContext }

type holderKey struct{}

// WithSpanHolder returns ctx with room for the span of the call made with
// it, so that TraceFields(ctx) names that span once the call returned.
func WithSpanHolder(ctx context.Context) context.Context {
	return context.WithValue(ctx, holderKey{}, &spanHolder{})
}

// holderTracer gives each server call's outer ctx a spanHolder (a Kitex
// stats.Tracer starts before the request is read).
type holderTracer struct{}

func (holderTracer) Start(ctx context.Context) context.Context { return WithSpanHolder(ctx) }
func (holderTracer) Finish(context.Context)                    {}

// TraceFields are the trace_id and span_id fields of the span ctx is in,
// or of the call whose span ctx holds; none without one.
func TraceFields(ctx context.Context) []zap.Field {
	sc := trace.SpanContextFromContext(ctx)
	if !sc.IsValid() {
		if h, ok := ctx.Value(holderKey{}).(*spanHolder); ok {
			sc = h.sc
		}
	}
	if !sc.IsValid() {
		return nil
	}
	return []zap.Field{zap.String("trace_id", sc.TraceID().String()), zap.String("span_id", sc.SpanID().String())}
}
