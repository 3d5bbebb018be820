package obs

import (
	"bytes"
	"context"
	"encoding/json"
	"testing"

	"github.com/cloudwego/kitex/pkg/klog"
	"go.opentelemetry.io/otel/trace"
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
