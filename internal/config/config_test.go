package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/anyconn/kitex-anyconn/transport"
	"github.com/anyconn/kitex-anyconn/transport/tunnel"
)

// tok is a tunnel token long enough for the configuration to accept.
const tok = "a-token-of-22-characters-at-least"

func env(kv ...string) LookupFunc {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

func TestDefaults(t *testing.T) {
	e, err := LoadEcho(env())
	if err != nil {
		t.Fatalf("LoadEcho with no variables: %v", err)
	}
	if e.Transport != transport.Netpoll || e.ListenAddr != ":8888" || e.AdminAddr != ":9090" ||
		e.ServiceName != "echo" || e.WSPath != "/kitex" || e.Etcd.Endpoints[0] != "127.0.0.1:2379" ||
		e.LogFormat != "json" || e.LogLevel != "info" || e.DrainDelay != DefaultDrainDelay {
		t.Fatalf("unexpected echo defaults: %+v", e)
	}
	c, err := LoadCaller(env())
	if err != nil {
		t.Fatalf("LoadCaller with no variables: %v", err)
	}
	if c.AdminAddr != ":9091" || c.EchoService != "echo" || c.CallInterval != time.Second ||
		c.CallTimeout != 2*time.Second || c.CallCount != 0 || c.DiscoveryTimeout != 30*time.Second || c.CallProtocol != transport.TTHeader {
		t.Fatalf("unexpected caller defaults: %+v", c)
	}
	// HANDSHAKE_TIMEOUT and MAX_HANDSHAKES serve both WebSocket and the
	// tunnel; their defaults come from websocket's and must be tunnel's too.
	if DefaultHandshakeTimeout != tunnel.DefaultHandshakeTimeout || DefaultMaxHandshakes != tunnel.DefaultMaxHandshakes {
		t.Fatalf("handshake defaults %v, %d differ from the tunnel's %v, %d",
			DefaultHandshakeTimeout, DefaultMaxHandshakes, tunnel.DefaultHandshakeTimeout, tunnel.DefaultMaxHandshakes)
	}
}

func TestValuesAreRead(t *testing.T) {
	c, err := LoadCaller(env("TRANSPORT", " WebSocket ", "ETCD_ENDPOINTS", "a:1, b:2,", "CALL_COUNT", "7",
		"CALL_INTERVAL", "250ms", "WS_PATH", "/rpc", "LOG_FORMAT", "console", "CALL_PROTOCOL", " Framed "))
	if err != nil {
		t.Fatal(err)
	}
	if c.Transport != transport.WebSocket || len(c.Etcd.Endpoints) != 2 || c.Etcd.Endpoints[1] != "b:2" ||
		c.CallCount != 7 || c.CallInterval != 250*time.Millisecond || c.WSPath != "/rpc" || c.LogFormat != "console" || c.CallProtocol != transport.Framed {
		t.Fatalf("values not read: %+v", c)
	}
}

func TestInvalidValues(t *testing.T) {
	tests := []struct {
		name    string
		caller  bool
		env     LookupFunc
		wantVar string
		allowed string
	}{
		{"unknown transport", false, env("TRANSPORT", "quic"), "TRANSPORT", "netpoll, gonet, websocket"},
		{"bad listen addr", false, env("LISTEN_ADDR", "8888"), "LISTEN_ADDR", "host:port"},
		{"bad port", false, env("LISTEN_ADDR", ":99999"), "LISTEN_ADDR", "0 to 65535"},
		{"bad admin addr", true, env("ADMIN_ADDR", "nope"), "ADMIN_ADDR", "host:port"},
		{"advertise without port", false, env("ADVERTISE_ADDR", "10.0.0.1:0"), "ADVERTISE_ADDR", "reach"},
		{"empty etcd", true, env("ETCD_ENDPOINTS", " , "), "ETCD_ENDPOINTS", "at least one"},
		{"log level", true, env("LOG_LEVEL", "loud"), "LOG_LEVEL", "debug, info, warn, error"},
		{"log format", false, env("LOG_FORMAT", "xml"), "LOG_FORMAT", "json, console"},
		{"ws path", false, env("WS_PATH", "kitex"), "WS_PATH", "starting with /"},
		{"interval not a duration", true, env("CALL_INTERVAL", "fast"), "CALL_INTERVAL", "duration"},
		{"interval zero", true, env("CALL_INTERVAL", "0s"), "CALL_INTERVAL", "positive"},
		{"timeout negative", true, env("CALL_TIMEOUT", "-1s"), "CALL_TIMEOUT", "positive"},
		{"count not a number", true, env("CALL_COUNT", "ten"), "CALL_COUNT", "whole number"},
		{"call protocol", true, env("CALL_PROTOCOL", "binary"), "CALL_PROTOCOL", "ttheader, framed"},
		{"otlp endpoint", false, env("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318"), "OTEL_EXPORTER_OTLP_ENDPOINT", "URL"},
		{"otlp protocol", true, env("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"), "OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf, grpc"},
		{"otlp traces protocol", false, env("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "udp"), "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf, grpc"},
		{"sampler", true, env("OTEL_TRACES_SAMPLER", "sometimes"), "OTEL_TRACES_SAMPLER", "parentbased_traceidratio"},
		{"sampler arg", false, env("OTEL_TRACES_SAMPLER", "traceidratio", "OTEL_TRACES_SAMPLER_ARG", "2"), "OTEL_TRACES_SAMPLER_ARG", "from 0 to 1"},
		{"count negative", true, env("CALL_COUNT", "-3"), "CALL_COUNT", "positive"},
		{"discovery timeout", true, env("DISCOVERY_TIMEOUT", "soon"), "DISCOVERY_TIMEOUT", "duration"},
		{"service name", false, env("SERVICE_NAME", "a/b"), "SERVICE_NAME", "without '/'"},
		{"echo service", true, env("ECHO_SERVICE", "a b"), "ECHO_SERVICE", "without '/'"},
		{"cert without key", false, env("TRANSPORT", "websocket", "TLS_CERT_FILE", "c.pem"), "TLS_KEY_FILE", "must be set"},
		{"key without cert", false, env("TRANSPORT", "websocket", "TLS_KEY_FILE", "k.pem"), "TLS_CERT_FILE", "must be set"},
		{"tls on gonet", false, env("TRANSPORT", "gonet", "TLS_CERT_FILE", "c", "TLS_KEY_FILE", "k"), "TLS_CERT_FILE", "websocket only"},
		{"ca on netpoll", true, env("TLS_CA_FILE", "ca.pem"), "TLS_CA_FILE", "websocket only"},
		{"registry ttl", false, env("REGISTRY_TTL", "100ms"), "REGISTRY_TTL", "at least 1s"},
		{"registry ttl, read by the caller too", true, env("REGISTRY_TTL", "100ms"), "REGISTRY_TTL", "at least 1s"},
		{"drain negative", false, env("DRAIN_DELAY", "-1s"), "DRAIN_DELAY", "negative"},
		{"etcd cert without key", true, env("ETCD_CERT_FILE", "c.pem"), "ETCD_CERT_FILE", "go together"},
		{"etcd password without user", false, env("ETCD_PASSWORD", "p"), "ETCD_USERNAME", "must be set"},
		{"etcd password file", true, env("ETCD_USERNAME", "u", "ETCD_PASSWORD_FILE", "/nonexistent"), "ETCD_PASSWORD_FILE", "readable file"},
		{"etcd ca file", false, env("ETCD_CA_FILE", "/nonexistent/ca.pem"), "ETCD_CA_FILE", "readable PEM"},
		{"discovery refresh", true, env("DISCOVERY_REFRESH", "0"), "DISCOVERY_REFRESH", "positive"},
		{"message size not a number", true, env("MAX_MESSAGE_BYTES", "4MiB"), "MAX_MESSAGE_BYTES", "whole number"},
		{"message size too small", false, env("MAX_MESSAGE_BYTES", "100"), "MAX_MESSAGE_BYTES", "at least 1024"},
		{"handshake timeout", false, env("HANDSHAKE_TIMEOUT", "0s"), "HANDSHAKE_TIMEOUT", "positive"},
		{"max handshakes", true, env("MAX_HANDSHAKES", "0"), "MAX_HANDSHAKES", "positive number"},
		{"read timeout", false, env("READ_TIMEOUT", "-1s"), "READ_TIMEOUT", "positive"},
		{"idle timeout under the callers' pool idle", false, env("IDLE_TIMEOUT", "30s"), "IDLE_TIMEOUT", "longer than the callers' pool idle time"},
		{"tunnel sessions", false, env("TRANSPORT", "yamux", "TUNNEL_TOKEN", tok, "TUNNEL_SESSIONS", "17"), "TUNNEL_SESSIONS", "from 1 to 16"},
		{"tunnel token too short", false, env("TRANSPORT", "yamux", "TUNNEL_TOKEN", "sixteen-chars-xx"), "TUNNEL_TOKEN", "22 to 1024 characters"},
		{"tunnel token and token file", true, env("TRANSPORT", "yamux", "TUNNEL_TOKEN", tok, "TUNNEL_TOKEN_FILE", "/t"), "TUNNEL_TOKEN_FILE", "not both"},
		{"agent without token", false, env("TRANSPORT", "yamux", "TUNNEL_AGENT_TOKENS_FILE", "/t"), "TUNNEL_TOKEN", "an agent needs"},
		{"agent client cert without CA", false, env("TRANSPORT", "yamux", "TUNNEL_TOKEN", tok, "TUNNEL_TLS_CERT_FILE", "c.pem", "TUNNEL_TLS_KEY_FILE", "k.pem"), "TUNNEL_TLS_CA_FILE", "client certificate"},
		{"tunnel tls files with tls off", true, env("TRANSPORT", "yamux", "TUNNEL_TOKEN", tok, "TUNNEL_TLS", "off", "TUNNEL_TLS_CA_FILE", "ca.pem"), "TUNNEL_TLS", "TUNNEL_TLS=on"},
		{"tunnel tls not on or off", true, env("TRANSPORT", "yamux", "TUNNEL_TOKEN", tok, "TUNNEL_TLS", "maybe"), "TUNNEL_TLS", "on"},
		{"tunnel max streams", false, env("TRANSPORT", "yamux", "TUNNEL_TOKEN", tok, "TUNNEL_MAX_STREAMS", "0"), "TUNNEL_MAX_STREAMS", "positive number"},
		{"addresses with yamux", true, env("TRANSPORT", "yamux", "TUNNEL_TOKEN", tok, "ECHO_ADDRESSES", "a:1"), "ECHO_ADDRESSES", "netpoll, gonet and websocket"},
		{"address without port", true, env("ECHO_ADDRESSES", "echo.example"), "ECHO_ADDRESSES", "host:port"},
		{"URL on gonet", true, env("TRANSPORT", "gonet", "ECHO_ADDRESSES", "ws://echo.example"), "ECHO_ADDRESSES", "TRANSPORT=websocket"},
		{"http URL", true, env("TRANSPORT", "websocket", "ECHO_ADDRESSES", "https://echo.example"), "ECHO_ADDRESSES", "ws:// or wss://"},
		{"ping negative", true, env("WS_PING_INTERVAL", "-1s"), "WS_PING_INTERVAL", "0 (no pings)"},
		{"echo's ping negative", false, env("WS_PING_INTERVAL", "-1s"), "WS_PING_INTERVAL", "0 (no pings)"},
		{"pong zero", true, env("WS_PONG_TIMEOUT", "0s"), "WS_PONG_TIMEOUT", "positive"},
		{"age negative", true, env("WS_MAX_CONNECTION_AGE", "-1m"), "WS_MAX_CONNECTION_AGE", "0 (no limit)"},
		{"header without colon", true, env("TRANSPORT", "websocket", "WS_HEADERS", "Authorization Bearer x"), "WS_HEADERS", `"Name: value" lines`},
		{"handshake header", true, env("TRANSPORT", "websocket", "WS_HEADERS", "Sec-WebSocket-Key: x"), "WS_HEADERS", "sets Sec-Websocket-Key itself"},
		{"headers on netpoll", true, env("WS_HEADERS", "X-A: b"), "WS_HEADERS", "websocket only"},
		{"headers file unreadable", true, env("TRANSPORT", "websocket", "WS_HEADERS_FILE", "/nonexistent"), "WS_HEADERS_FILE", "readable file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var err error
			if tt.caller {
				_, err = LoadCaller(tt.env)
			} else {
				_, err = LoadEcho(tt.env)
			}
			var ce *Error
			if !errors.As(err, &ce) {
				t.Fatalf("got %v, want a *config.Error", err)
			}
			if ce.Var != tt.wantVar {
				t.Fatalf("error names %s, want %s: %v", ce.Var, tt.wantVar, err)
			}
			msg := err.Error()
			if !strings.Contains(msg, tt.wantVar) || !strings.Contains(msg, tt.allowed) || strings.Contains(msg, "\n") {
				t.Fatalf("message %q must name %s, say %q and be one line", msg, tt.wantVar, tt.allowed)
			}
		})
	}
}

func TestTunnelSettings(t *testing.T) {
	if _, err := LoadCaller(env("TRANSPORT", "yamux")); err == nil || !strings.Contains(err.Error(), "TUNNEL_TOKEN") {
		t.Fatalf("yamux without a token: %v, want an error naming TUNNEL_TOKEN", err)
	}
	if _, err := LoadEcho(env("TRANSPORT", "yamux", "TUNNEL_TOKEN_FILE", "/nonexistent/token")); err == nil ||
		!strings.Contains(err.Error(), "TUNNEL_TOKEN_FILE") {
		t.Fatalf("unreadable token file: %v", err)
	}
	file := t.TempDir() + "/token"
	if err := os.WriteFile(file, []byte("# rotated by the operator\n"+tok+"\nnext-token-0123456789abcdef\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	e, err := LoadEcho(env("TRANSPORT", "yamux", "TUNNEL_TOKEN_FILE", file, "TUNNEL_AGENT_ID", "pod-1", "SERVICE_NAME", "svc"))
	if err != nil {
		t.Fatal(err)
	}
	if e.Tunnel.TokenFile != file || e.Tunnel.AgentID != "pod-1" || e.Tunnel.Service != "svc-tunnel" {
		t.Fatalf("tunnel settings %+v", e.Tunnel)
	}
	if _, err := LoadEcho(env("TRANSPORT", "yamux", "TUNNEL_TOKEN", tok, "TUNNEL_AGENT_ID", "no/slash")); err == nil ||
		!strings.Contains(err.Error(), "TUNNEL_AGENT_ID") {
		t.Fatalf("bad agent id: %v", err)
	}
	c, err := LoadCaller(env("TRANSPORT", "yamux", "TUNNEL_TOKEN", tok, "ECHO_SERVICE", "svc"))
	if err != nil || c.Tunnel.ListenAddr != ":7000" || c.Tunnel.Service != "svc-tunnel" {
		t.Fatalf("caller tunnel defaults: %+v, %v", c.Tunnel, err)
	}
	if _, err := LoadCaller(env("TRANSPORT", "yamux", "TUNNEL_TOKEN", tok, "TUNNEL_LISTEN_ADDR", "7000")); err == nil ||
		!strings.Contains(err.Error(), "TUNNEL_LISTEN_ADDR") {
		t.Fatalf("bad tunnel listen addr: %v", err)
	}
}

// The caller may run with per-agent tokens only; the file is checked at
// start, and a line that does not parse names the file and the line.
func TestAgentTokensFile(t *testing.T) {
	file := filepath.Join(t.TempDir(), "agents")
	if err := os.WriteFile(file, []byte("# identity token\npod-0 "+tok+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := LoadCaller(env("TRANSPORT", "yamux", "TUNNEL_AGENT_TOKENS_FILE", file))
	if err != nil || c.Tunnel.AgentTokensFile != file {
		t.Fatalf("caller with per-agent tokens only: %+v, %v", c.Tunnel, err)
	}
	if err := os.WriteFile(file, []byte("pod-0 short\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = LoadCaller(env("TRANSPORT", "yamux", "TUNNEL_AGENT_TOKENS_FILE", file))
	if err == nil || !strings.Contains(err.Error(), "TUNNEL_AGENT_TOKENS_FILE") || !strings.Contains(err.Error(), "line 1") || strings.Contains(err.Error(), "short") {
		t.Fatalf("a short per-agent token: %v, want an error naming the variable and the line, not the token", err)
	}
}

func TestWebSocketCallerSettings(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "headers")
	if err := os.WriteFile(file, []byte("Authorization: Bearer s3cret\n\nX-Tenant: blue\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := LoadCaller(env("TRANSPORT", "websocket", "WS_HEADERS", "X-Client: caller\nX-Tenant: red",
		"WS_HEADERS_FILE", file, "ECHO_ADDRESSES", "wss://echo.example/kitex, ws://10.0.0.7:8888", "WS_PING_INTERVAL", "0"))
	if err != nil {
		t.Fatal(err)
	}
	if got := c.WSHeaders; got.Get("Authorization") != "Bearer s3cret" || got.Get("X-Client") != "caller" ||
		len(got.Values("X-Tenant")) != 2 {
		t.Errorf("headers %v", got)
	}
	if len(c.EchoAddresses) != 2 || c.WSPingInterval != 0 || c.WSPongTimeout != DefaultWSPongTimeout || c.WSMaxConnectionAge != DefaultWSMaxConnectionAge {
		t.Errorf("addresses %v, ping %v, pong %v, age %v", c.EchoAddresses, c.WSPingInterval, c.WSPongTimeout, c.WSMaxConnectionAge)
	}
	// A bad line of the file is named without its value.
	if err := os.WriteFile(file, []byte("Authorization Bearer s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = LoadCaller(env("TRANSPORT", "websocket", "WS_HEADERS_FILE", file))
	if err == nil || !strings.Contains(err.Error(), "WS_HEADERS_FILE") || strings.Contains(err.Error(), "s3cret") {
		t.Errorf("bad header file: %v; want WS_HEADERS_FILE named and the value hidden", err)
	}
}
