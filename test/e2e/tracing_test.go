package e2e

import (
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/anyconn/kitex-anyconn/internal/testutil"
	"github.com/anyconn/kitex-anyconn/internal/testutil/etcdtest"
)

// receivedSpan is a span an OTLP receiver got, with its service's name.
type receivedSpan struct {
	service string
	span    *tracepb.Span
}

// otlpReceiver is an OTLP/HTTP endpoint (protobuf, POST /v1/traces) that
// keeps the spans it receives.
type otlpReceiver struct {
	mu    sync.Mutex
	spans []receivedSpan
}

func (r *otlpReceiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	body, err := io.ReadAll(req.Body)
	var in coltracepb.ExportTraceServiceRequest
	if req.Method != http.MethodPost || req.URL.Path != "/v1/traces" || err != nil || proto.Unmarshal(body, &in) != nil {
		http.Error(w, "want an OTLP/HTTP protobuf trace export at /v1/traces", http.StatusBadRequest)
		return
	}
	r.mu.Lock()
	for _, rs := range in.ResourceSpans {
		service := ""
		for _, kv := range rs.GetResource().GetAttributes() {
			if kv.Key == "service.name" {
				service = kv.GetValue().GetStringValue()
			}
		}
		for _, ss := range rs.ScopeSpans {
			for _, s := range ss.Spans {
				r.spans = append(r.spans, receivedSpan{service, s})
			}
		}
	}
	r.mu.Unlock()
	out, _ := proto.Marshal(&coltracepb.ExportTraceServiceResponse{})
	w.Header().Set("Content-Type", "application/x-protobuf")
	_, _ = w.Write(out)
}

// find returns the span of service in trace traceID of kind, if received.
func (r *otlpReceiver) find(service, traceID string, kind tracepb.Span_SpanKind) *tracepb.Span {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, s := range r.spans {
		if s.service == service && hex.EncodeToString(s.span.TraceId) == traceID && s.span.Kind == kind {
			return s.span
		}
	}
	return nil
}

func attr(s *tracepb.Span, key string) string {
	for _, kv := range s.Attributes {
		if kv.Key == key {
			return kv.GetValue().GetStringValue()
		}
	}
	return ""
}

// Traces across both processes, on every transport: both export to an
// OTLP receiver (only the standard OTEL_* variables set), each call's
// client span (caller) and server span (echo) share one trace, the server
// span is the client span's child, both name the transport (and with yamux
// the agent), and the caller's "call ok" line carries the trace_id and
// span_id of its call.
func TestTracesAcrossCallerAndEchoOnEveryTransport(t *testing.T) {
	etcd := etcdtest.Start(t)
	recv := &otlpReceiver{}
	srv := httptest.NewServer(recv)
	t.Cleanup(srv.Close)
	otel := []string{"OTEL_EXPORTER_OTLP_ENDPOINT=" + srv.URL, "OTEL_BSP_SCHEDULE_DELAY=100"}
	for _, transport := range []string{"netpoll", "gonet", "websocket", "yamux"} {
		t.Run(transport, func(t *testing.T) {
			t.Parallel()
			service, agent := "tr-"+transport, "tr-agent-"+transport
			env := append([]string{"SERVICE_NAME=" + service, "ECHO_SERVICE=" + service}, otel...)
			startEcho(t, etcd, transport, append(env, tunnelEnv(agent)...)...)
			const calls = 3
			caller := start(t, "caller", append(append(env, tunnelEnv("")...), "TRANSPORT="+transport, "ETCD_ENDPOINTS="+etcd,
				"ADMIN_ADDR=127.0.0.1:0", fmt.Sprintf("CALL_COUNT=%d", calls), "CALL_INTERVAL=50ms",
				"DISCOVERY_TIMEOUT=20s")...)
			if code := caller.wait(60 * time.Second); code != 0 {
				t.Fatalf("caller exited %d, want 0", code)
			}
			traced := 0
			for _, line := range caller.logLines() {
				if line["msg"] != "call ok" {
					continue
				}
				traceID, _ := line["trace_id"].(string)
				spanID, _ := line["span_id"].(string)
				if traceID == "" || spanID == "" {
					t.Fatalf("a call ok line without trace_id and span_id: %v", line)
				}
				var client, server *tracepb.Span
				testutil.Eventually(t, "both spans of trace "+traceID, 10*time.Second, func() bool {
					client = recv.find("caller", traceID, tracepb.Span_SPAN_KIND_CLIENT)
					server = recv.find(service, traceID, tracepb.Span_SPAN_KIND_SERVER)
					return client != nil && server != nil
				})
				if got := hex.EncodeToString(client.SpanId); got != spanID {
					t.Errorf("the call ok line names span %s, the client span is %s", spanID, got)
				}
				if string(server.ParentSpanId) != string(client.SpanId) {
					t.Errorf("echo's span's parent is %x, want the caller's span %x", server.ParentSpanId, client.SpanId)
				}
				for side, s := range map[string]*tracepb.Span{"client": client, "server": server} {
					if got := attr(s, "anyconn.transport"); got != transport {
						t.Errorf("%s span's anyconn.transport = %q, want %q", side, got, transport)
					}
					if got := attr(s, "anyconn.tunnel.agent_id"); transport == "yamux" && got != agent {
						t.Errorf("%s span's anyconn.tunnel.agent_id = %q, want %q", side, got, agent)
					}
					if got := attr(s, "rpc.method"); got != "echo" {
						t.Errorf("%s span's rpc.method = %q, want echo", side, got)
					}
				}
				if traced == 0 {
					t.Logf("report: %s: trace %s: caller's client span %x (call ok line, span_id %s), echo's server span %x with parent %x",
						transport, traceID, client.SpanId, spanID, server.SpanId, server.ParentSpanId)
				}
				traced++
			}
			if traced != calls {
				t.Fatalf("%d traced calls, want %d", traced, calls)
			}
			t.Logf("report: %s: %d calls, each one trace with the caller's client span and echo's server span", transport, traced)
		})
	}
}
