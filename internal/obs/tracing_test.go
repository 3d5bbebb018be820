package obs

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/cloudwego/kitex/client"
	"github.com/cloudwego/kitex/pkg/klog"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/anyconn/kitex-anyconn/internal/testutil"
	"github.com/anyconn/kitex-anyconn/kitex_gen/api"
	"github.com/anyconn/kitex-anyconn/kitex_gen/api/echo"
	"github.com/anyconn/kitex-anyconn/transport"
)

func TestTracingEnabled(t *testing.T) {
	for _, c := range []struct {
		env  map[string]string
		want bool
	}{
		{nil, false},
		{map[string]string{"OTEL_SERVICE_NAME": "echo"}, false}, // no endpoint: nowhere to send
		{map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, true},
		{map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"}, true},
		{map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_SDK_DISABLED": "true"}, false},
		{map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_TRACES_EXPORTER": "none"}, false},
	} {
		lookup := func(k string) (string, bool) { v, ok := c.env[k]; return v, ok }
		if got := TracingEnabled(lookup); got != c.want {
			t.Errorf("TracingEnabled(%v) = %v, want %v", c.env, got, c.want)
		}
	}
}

// Without the OTEL_* variables tracing is off: no options, so Kitex runs
// no middleware or tracer of ours for it.
func TestTracingOffAddsNothing(t *testing.T) {
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "")
	t.Setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "")
	tr, err := NewTracing(context.Background(), TracingConfig{Service: "echo"})
	if err != nil || tr != nil {
		t.Fatalf("NewTracing without an endpoint = %v, %v; want nil, nil", tr, err)
	}
	if len(tr.ServerOptions()) != 0 || len(tr.ClientOptions()) != 0 {
		t.Fatal("tracing off still adds Kitex options")
	}
	tr.Stop(nil) // a nil Tracing stops without a logger
}

// Kitex's own ctx log lines carry the trace_id and span_id of the call:
// from the span in ctx, or from the holder of the call's outer ctx.
func TestKitexCtxLinesCarryTheTrace(t *testing.T) {
	var buf bytes.Buffer
	log, err := NewLogger(&buf, "info", "json")
	if err != nil {
		t.Fatal(err)
	}
	RouteKitexLogs(log)
	sc := trace.NewSpanContext(trace.SpanContextConfig{TraceID: trace.TraceID{1, 2, 3}, SpanID: trace.SpanID{4, 5, 6}, TraceFlags: trace.FlagsSampled})
	inSpan := trace.ContextWithSpanContext(context.Background(), sc)
	outer := WithSpanHolder(context.Background())
	outer.Value(holderKey{}).(*spanHolder).sc = sc
	for name, ctx := range map[string]context.Context{"span in ctx": inSpan, "held for the outer ctx": outer, "none": context.Background()} {
		buf.Reset()
		klog.CtxErrorf(ctx, "KITEX: processing request error, %s", name)
		var line map[string]any
		if err := json.Unmarshal(buf.Bytes(), &line); err != nil {
			t.Fatalf("%s: %v: %q", name, err, buf.String())
		}
		wantTrace, wantSpan := sc.TraceID().String(), sc.SpanID().String()
		if name == "none" {
			wantTrace, wantSpan = "", ""
		}
		if got, _ := line["trace_id"].(string); got != wantTrace {
			t.Errorf("%s: trace_id %q, want %q", name, got, wantTrace)
		}
		if got, _ := line["span_id"].(string); got != wantSpan {
			t.Errorf("%s: span_id %q, want %q", name, got, wantSpan)
		}
	}
}

type failingEcho struct{}

func (*failingEcho) Echo(context.Context, *api.Request) (*api.Response, error) {
	return nil, errors.New("handler failed on purpose")
}

// Kitex's own line for a call its handler failed is written with the
// call's outer ctx, where no span is: it still carries the server span's
// trace_id, through the holder (a real Kitex server and client, TTHeader).
func TestKitexErrorLineOfAFailedCallCarriesItsTrace(t *testing.T) {
	core, logs := observer.New(zapcore.ErrorLevel)
	RouteKitexLogs(zap.New(core))
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	defer func() { _ = tp.Shutdown(context.Background()) }()
	tr := newTracing(tp, TracingConfig{Service: "echo", Transport: "gonet"})

	sopts, ln, err := transport.ServerOptions(transport.ServerConfig{Kind: transport.GoNet, Addr: "127.0.0.1:0", ExitWaitTime: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	run := testutil.NewRunner()
	run.Run(echo.NewServer(new(failingEcho), append(append(sopts, run.Option()), tr.ServerOptions()...)...))
	defer run.Stop()
	ct, err := transport.NewClientTransport(transport.ClientConfig{Kind: transport.GoNet})
	if err != nil {
		t.Fatal(err)
	}
	defer ct.Close()
	cli, err := echo.NewClient("echo", append(append(ct.Options(), tr.ClientOptions()...), client.WithHostPorts(ln.Addr().String()))...)
	if err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, "the failing call made and logged by Kitex", 10*time.Second, func() bool {
		_, _ = cli.Echo(context.Background(), &api.Request{Message: "x"})
		return logs.FilterMessageSnippet("handler failed on purpose").Len() > 0
	})
	line := logs.FilterMessageSnippet("handler failed on purpose").All()[0]
	traces := map[string]bool{}
	for _, s := range exp.GetSpans() {
		if s.SpanKind == trace.SpanKindServer {
			traces[s.SpanContext.TraceID().String()] = true
		}
	}
	if got, _ := line.ContextMap()["trace_id"].(string); !traces[got] {
		t.Fatalf("Kitex's line %q has trace_id %q, not one of the server spans' %v", line.Message, got, traces)
	}
}
