// Package config reads the services' configuration from environment
// variables into one struct per service, with defaults and Validate. Only the
// services' main functions call it; everything else takes the structs.
package config

import (
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/net/http/httpguts"

	"github.com/anyconn/kitex-anyconn/internal/tlsconf"
	"github.com/anyconn/kitex-anyconn/transport"
	"github.com/anyconn/kitex-anyconn/transport/tunnel"
	"github.com/anyconn/kitex-anyconn/transport/websocket"
)

// Error names the variable that is wrong, the value it had and what is allowed.
type Error struct {
	Var     string
	Value   string
	Allowed string
}

func (e *Error) Error() string {
	return fmt.Sprintf("invalid %s=%q: %s", e.Var, e.Value, e.Allowed)
}

// LookupFunc finds an environment variable; os.LookupEnv is one.
type LookupFunc func(key string) (string, bool)

// Common holds the settings both services share.
type Common struct {
	// Transport is TRANSPORT: netpoll, gonet, websocket or yamux.
	Transport transport.Kind
	// AdminAddr is ADMIN_ADDR: where /healthz, /readyz and /metrics are served.
	AdminAddr string
	// RegistryTTL is REGISTRY_TTL: the etcd lease TTL of echo's
	// registration. The caller reads it too: when etcd answers with no
	// instance (restarted with its data wiped), it keeps calling the ones
	// it knew for as long as echo may take to register again.
	RegistryTTL time.Duration
	// Etcd is how to reach etcd (ETCD_*).
	Etcd Etcd
	// LogLevel is LOG_LEVEL: debug, info, warn or error.
	LogLevel string
	// LogFormat is LOG_FORMAT: json or console.
	LogFormat string
	// WSPath is WS_PATH: the HTTP path of the WebSocket endpoint.
	WSPath string
	// DiscoveryRefresh is DISCOVERY_REFRESH: how often the caller reads
	// the echo instances in etcd in full (and, with yamux, echo the
	// gateways). Changes arrive by etcd's watch at once; the full read is
	// the safety net.
	DiscoveryRefresh time.Duration
	// Tunnel holds the yamux tunnel settings (TRANSPORT=yamux).
	Tunnel Tunnel
	// MaxMessageBytes is MAX_MESSAGE_BYTES: the largest Thrift message
	// read or written; a longer one closes its connection.
	MaxMessageBytes int
	// HandshakeTimeout is HANDSHAKE_TIMEOUT: how long a WebSocket upgrade
	// (echo) or a tunnel handshake (both sides) may take.
	HandshakeTimeout time.Duration
	// MaxHandshakes is MAX_HANDSHAKES: WebSocket upgrades (echo) or tunnel
	// handshakes (caller's gateway) in progress at once; more are closed.
	MaxHandshakes int
	// MaxHandshakesPerSource is MAX_HANDSHAKES_PER_SOURCE: how many of
	// those may come from one source IP address, so that one client cannot
	// hold them all.
	MaxHandshakesPerSource int
	// OTel holds the standard OTEL_* variables that Validate checks; the
	// OpenTelemetry SDK reads them itself.
	OTel OTel
}

// OTel is the part of OpenTelemetry's standard configuration that this
// project checks at start, so that a mistake stops the process with one
// line instead of tracing silently falling back to a default.
type OTel struct {
	// Endpoint and TracesEndpoint are OTEL_EXPORTER_OTLP_ENDPOINT and
	// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: either turns tracing on.
	Endpoint, TracesEndpoint string
	// Protocol and TracesProtocol are OTEL_EXPORTER_OTLP_PROTOCOL and
	// OTEL_EXPORTER_OTLP_TRACES_PROTOCOL: http/protobuf or grpc.
	Protocol, TracesProtocol string
	// Sampler and SamplerArg are OTEL_TRACES_SAMPLER and _ARG.
	Sampler, SamplerArg string
}

// otelSamplers are the values of OTEL_TRACES_SAMPLER the Go SDK knows.
var otelSamplers = []string{"always_on", "always_off", "traceidratio", "parentbased_always_on", "parentbased_always_off", "parentbased_traceidratio"}

func (o OTel) validate() error {
	for name, v := range map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": o.Endpoint, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": o.TracesEndpoint} {
		if u, err := url.Parse(v); v != "" && (err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "") {
			return &Error{name, v, "must be a URL such as http://otel-collector:4318 (http/protobuf) or http://otel-collector:4317 (grpc)"}
		}
	}
	for name, v := range map[string]string{"OTEL_EXPORTER_OTLP_PROTOCOL": o.Protocol, "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": o.TracesProtocol} {
		if v != "" && v != "http/protobuf" && v != "grpc" {
			return &Error{name, v, "allowed values are http/protobuf, grpc"}
		}
	}
	if o.Sampler != "" && !oneOf(o.Sampler, otelSamplers) {
		return &Error{"OTEL_TRACES_SAMPLER", o.Sampler, "allowed values are " + strings.Join(otelSamplers, ", ")}
	}
	if strings.HasSuffix(o.Sampler, "traceidratio") && o.SamplerArg != "" {
		if f, err := strconv.ParseFloat(o.SamplerArg, 64); err != nil || f < 0 || f > 1 {
			return &Error{"OTEL_TRACES_SAMPLER_ARG", o.SamplerArg, "must be a ratio from 0 to 1, such as 0.1"}
		}
	}
	return nil
}

// Etcd holds the ETCD_* settings: where etcd is and how to authenticate.
type Etcd struct {
	// Endpoints is ETCD_ENDPOINTS, comma-separated host:port or URLs
	// (https:// turns TLS on).
	Endpoints []string
	// CAFile is ETCD_CA_FILE: TLS to etcd, verified against this CA bundle.
	CAFile string
	// CertFile and KeyFile are ETCD_CERT_FILE and ETCD_KEY_FILE: a client
	// certificate for etcd (mutual TLS).
	CertFile, KeyFile string
	// ServerName is ETCD_SERVER_NAME: the name expected in etcd's
	// certificate (the endpoint's host when empty).
	ServerName string
	// Username is ETCD_USERNAME (etcd's user/password authentication).
	Username string
	// Password is ETCD_PASSWORD, or the content of ETCD_PASSWORD_FILE.
	Password     string
	PasswordFile string
}

// TLSEnabled reports whether the etcd connection uses TLS: a CA, a client
// certificate or an https:// endpoint.
func (e Etcd) TLSEnabled() bool {
	if e.CAFile != "" || e.CertFile != "" {
		return true
	}
	for _, ep := range e.Endpoints {
		if strings.HasPrefix(ep, "https://") {
			return true
		}
	}
	return false
}

func (e Etcd) validate() error {
	if len(e.Endpoints) == 0 {
		return &Error{"ETCD_ENDPOINTS", "", "must list at least one etcd endpoint, such as 127.0.0.1:2379"}
	}
	if (e.CertFile == "") != (e.KeyFile == "") {
		return &Error{"ETCD_CERT_FILE", e.CertFile, "ETCD_CERT_FILE and ETCD_KEY_FILE go together"}
	}
	if e.PasswordFile != "" && e.Password == "" {
		return &Error{"ETCD_PASSWORD_FILE", e.PasswordFile, "must name a readable file holding the password"}
	}
	if e.Password != "" && e.Username == "" {
		return &Error{"ETCD_USERNAME", "", "must be set when ETCD_PASSWORD or ETCD_PASSWORD_FILE is set"}
	}
	if _, err := tlsconf.Client(e.CAFile, "", "", ""); err != nil {
		return &Error{"ETCD_CA_FILE", e.CAFile, "TLS files must be readable PEM: " + err.Error()}
	}
	if _, err := tlsconf.Client("", e.CertFile, e.KeyFile, ""); err != nil {
		return &Error{"ETCD_CERT_FILE", e.CertFile, "TLS files must be readable PEM: " + err.Error()}
	}
	return nil
}

// Tunnel holds the TUNNEL_* settings. The caller runs the gateway, each
// echo runs an agent that dials every gateway found in etcd.
type Tunnel struct {
	// Token is TUNNEL_TOKEN: the shared token, at least
	// tunnel.MinTokenLength characters.
	Token string
	// TokenFile is TUNNEL_TOKEN_FILE, instead of TUNNEL_TOKEN: a file of
	// tokens, one per line, read again whenever it is needed (a rotated
	// Secret takes effect without a restart). The gateway accepts every
	// token of the file, an agent proves the first.
	TokenFile string
	// AgentTokensFile is TUNNEL_AGENT_TOKENS_FILE (caller): per-agent
	// tokens, one "identity token" pair per line, re-read when it changes.
	AgentTokensFile string
	// TLS is TUNNEL_TLS: on (the default) or off (plaintext).
	TLS bool
	// Service is TUNNEL_SERVICE: the etcd service name of the gateways;
	// "<echo service>-tunnel" by default.
	Service string
	// ListenAddr is TUNNEL_LISTEN_ADDR (caller): where the gateway listens.
	ListenAddr string
	// AdvertiseAddr is TUNNEL_ADVERTISE_ADDR (caller): the gateway address
	// registered in etcd; derived from TUNNEL_LISTEN_ADDR when empty.
	AdvertiseAddr string
	// AgentID is TUNNEL_AGENT_ID (echo): the agent's identity; the host name
	// by default (the pod name in Kubernetes).
	AgentID string
	// KeepAlive is TUNNEL_KEEPALIVE: the yamux keep-alive interval.
	KeepAlive time.Duration
	// MaxStreams is TUNNEL_MAX_STREAMS (echo): the streams a gateway may
	// have open at once on one session; more are closed.
	MaxStreams int
	// Sessions is TUNNEL_SESSIONS (echo): sessions (TCP connections) kept
	// to each gateway.
	Sessions int
	// BackoffMax is TUNNEL_BACKOFF_MAX (echo): the longest wait between
	// reconnection attempts.
	BackoffMax time.Duration
	// TLSCertFile, TLSKeyFile and TLSCAFile are TUNNEL_TLS_CERT_FILE,
	// TUNNEL_TLS_KEY_FILE and TUNNEL_TLS_CA_FILE. On the caller, cert and key
	// make the gateway serve TLS, and a CA makes it require client
	// certificates signed by it (mutual TLS). On echo, a CA makes the agent
	// use TLS and verify the gateway against it, and cert and key are its
	// client certificate.
	TLSCertFile, TLSKeyFile, TLSCAFile string
	// TLSServerName is TUNNEL_TLS_SERVER_NAME (echo): the name expected in
	// the gateway's certificate; the gateway's host by default.
	TLSServerName string
	// Gateways is TUNNEL_GATEWAYS (echo): the gateways' addresses, host:port
	// or ws:// and wss:// URLs, instead of discovery in etcd: echo then
	// needs no etcd at all. One address may stand for several gateways (a
	// Service, a load balancer, an ingress): the agent dials it until it
	// holds sessions to each.
	Gateways []string
	// WSCAFile is TUNNEL_WS_CA_FILE (echo): the CA that signed the
	// certificate of what terminates a wss:// gateway URL (an ingress);
	// the system's roots by default.
	WSCAFile string
	// WSListenAddr is TUNNEL_WS_LISTEN_ADDR (caller): where the gateway
	// also serves agents over WebSocket (at WSPath), for ws:// and wss://
	// gateway URLs through ingresses and proxies; off when empty.
	WSListenAddr string
	// WSPath is TUNNEL_WS_PATH (caller): the HTTP path of that endpoint.
	WSPath string
	// PublicAddresses is TUNNEL_PUBLIC_ADDRESSES (caller): the addresses
	// and URLs agents reach the gateways at besides their registered one
	// (a NodePort, a LoadBalancer, an ingress's wss:// URL). The gateway
	// accepts handshakes made for these too, and refuses others.
	PublicAddresses []string
}

// Echo is the echo service's configuration.
type Echo struct {
	Common
	// ServiceName is SERVICE_NAME: the name registered in etcd.
	ServiceName string
	// ListenAddr is LISTEN_ADDR: the RPC listen address.
	ListenAddr string
	// AdvertiseAddr is ADVERTISE_ADDR: the host:port registered in etcd;
	// derived from LISTEN_ADDR (with this host's IPv4 address for an
	// unspecified host) when empty.
	AdvertiseAddr string
	// TLSCertFile and TLSKeyFile are TLS_CERT_FILE and TLS_KEY_FILE: with
	// both set, the WebSocket transport serves wss://.
	TLSCertFile string
	TLSKeyFile  string
	// WSAllowedOrigins is WS_ALLOWED_ORIGINS: browser origins allowed on the
	// WebSocket endpoint besides same-origin and Origin-less requests.
	WSAllowedOrigins []string
	// WSPingInterval is WS_PING_INTERVAL: with websocket, ping a
	// connection that received nothing for this long (proxies whose idle
	// timer counts only the server's side); 0, the default, sends none.
	WSPingInterval time.Duration
	// DrainDelay is DRAIN_DELAY: after SIGTERM, the time between
	// deregistering and stopping the server, so callers stop choosing it.
	DrainDelay time.Duration
	// ReadTimeout is READ_TIMEOUT: a request must arrive whole within this
	// of its first byte, or its connection is closed (slow clients).
	ReadTimeout time.Duration
	// IdleTimeout is IDLE_TIMEOUT: connections without a request for this
	// long are closed (clients gone without a word).
	IdleTimeout time.Duration
	// WriteTimeout is WRITE_TIMEOUT: a reply must be written within this,
	// or its connection is closed (clients that do not read).
	WriteTimeout time.Duration
	// MaxConnections is MAX_CONNECTIONS: connections (tunnel streams with
	// yamux) open at once; one beyond it is closed at once. 0: no limit.
	MaxConnections int
	// ShutdownTimeout is SHUTDOWN_TIMEOUT: how long calls in flight may take
	// to finish once the server stops.
	ShutdownTimeout time.Duration
}

// Caller is the caller service's configuration.
type Caller struct {
	Common
	// EchoService is ECHO_SERVICE: the service name to discover.
	EchoService string
	// CallInterval is CALL_INTERVAL: the time between calls.
	CallInterval time.Duration
	// CallTimeout is CALL_TIMEOUT: each call's timeout.
	CallTimeout time.Duration
	// CallCount is CALL_COUNT: make this many calls and exit (0 = forever).
	CallCount int
	// CallMessage is CALL_MESSAGE: the message sent in every call.
	CallMessage string
	// CallProtocol is CALL_PROTOCOL: the calls' wire protocol, ttheader
	// (Kitex's: metainfo, trace context, the server's close signal) or
	// framed (plain Thrift, for servers that are not Kitex).
	CallProtocol transport.Protocol
	// DiscoveryTimeout is DISCOVERY_TIMEOUT: with CALL_COUNT, how long to
	// wait for a first instance before giving up.
	DiscoveryTimeout time.Duration
	// TLSCAFile is TLS_CA_FILE: with it set, the WebSocket transport dials
	// wss:// and verifies the server against this CA bundle.
	TLSCAFile string
	// TLSServerName is TLS_SERVER_NAME: the name expected in the server's
	// certificate (the dialed host when empty).
	TLSServerName string
	// EchoAddresses is ECHO_ADDRESSES: echo's addresses, which replace
	// discovery in etcd (a caller outside the cluster): host:port, or with
	// websocket ws:// and wss:// URLs (an ingress). The caller then needs
	// no etcd.
	EchoAddresses []string
	// WSPingInterval is WS_PING_INTERVAL: with websocket, how long a
	// connection may stay idle before it is pinged; 0 sends none.
	WSPingInterval time.Duration
	// WSPongTimeout is WS_PONG_TIMEOUT: a pong must come within this, else
	// the connection is dropped (unused).
	WSPongTimeout time.Duration
	// WSMaxConnectionAge is WS_MAX_CONNECTION_AGE: with websocket, a
	// connection is retired this long (±10 %) after it was opened, when no
	// call uses it; 0 keeps connections for as long as they work.
	WSMaxConnectionAge time.Duration
	// WSHeaders are WS_HEADERS and the content of WS_HEADERS_FILE: extra
	// headers of the WebSocket upgrade request ("Name: value" lines), such
	// as an ingress's Authorization. Those of the file are never shown.
	WSHeaders     http.Header
	WSHeadersFile string
}

// Defaults for the variables.
const (
	DefaultTransport              = transport.Netpoll
	DefaultEtcdEndpoints          = "127.0.0.1:2379"
	DefaultEchoListenAddr         = ":8888"
	DefaultEchoAdminAddr          = ":9090"
	DefaultCallerAdminAddr        = ":9091"
	DefaultServiceName            = "echo"
	DefaultWSPath                 = "/kitex"
	DefaultCallInterval           = time.Second
	DefaultCallTimeout            = 2 * time.Second
	DefaultDiscoveryTimeout       = 30 * time.Second
	DefaultDiscoveryRefresh       = 30 * time.Second
	DefaultRegistryTTL            = 10 * time.Second
	DefaultDrainDelay             = 5 * time.Second
	DefaultShutdownTimeout        = 5 * time.Second
	DefaultTunnelListenAddr       = ":7000"
	DefaultTunnelWSPath           = "/tunnel"
	DefaultTunnelKeepAlive        = 10 * time.Second
	DefaultTunnelBackoffMax       = 10 * time.Second
	DefaultMaxMessageBytes        = transport.DefaultMaxMessageBytes
	DefaultHandshakeTimeout       = websocket.DefaultHandshakeTimeout       // tunnel's is the same
	DefaultMaxHandshakes          = websocket.DefaultMaxHandshakes          // tunnel's is the same
	DefaultMaxHandshakesPerSource = websocket.DefaultMaxHandshakesPerSource // tunnel's is the same
	DefaultTunnelMaxStreams       = tunnel.DefaultMaxStreams
	DefaultTunnelSessions         = 4
	DefaultWSPingInterval         = websocket.DefaultPingInterval // the caller's; echo sends none by default
	DefaultWSPongTimeout          = websocket.DefaultPongTimeout
	DefaultWSMaxConnectionAge     = 10 * time.Minute
	DefaultReadTimeout            = transport.DefaultReadTimeout
	DefaultIdleTimeout            = transport.DefaultIdleTimeout
	DefaultMaxConnections         = 10000
	DefaultWriteTimeout           = transport.DefaultWriteTimeout
	// callerPoolIdle is how long callers keep an idle connection: echo
	// must keep it longer.
	callerPoolIdle = transport.DefaultMaxIdleTimeout
)

var (
	logLevels  = []string{"debug", "info", "warn", "error"}
	logFormats = []string{"json", "console"}
)

// LoadEcho reads and validates the echo configuration.
func LoadEcho(lookup LookupFunc) (Echo, error) {
	r := reader{lookup: lookup}
	c := Echo{
		Common:           r.common(DefaultEchoAdminAddr, "SERVICE_NAME"),
		ServiceName:      r.str("SERVICE_NAME", DefaultServiceName),
		ListenAddr:       r.str("LISTEN_ADDR", DefaultEchoListenAddr),
		AdvertiseAddr:    r.str("ADVERTISE_ADDR", ""),
		TLSCertFile:      r.str("TLS_CERT_FILE", ""),
		TLSKeyFile:       r.str("TLS_KEY_FILE", ""),
		WSAllowedOrigins: r.list("WS_ALLOWED_ORIGINS", ""),
		WSPingInterval:   r.duration("WS_PING_INTERVAL", 0),
		DrainDelay:       r.duration("DRAIN_DELAY", DefaultDrainDelay),
		ReadTimeout:      r.duration("READ_TIMEOUT", DefaultReadTimeout),
		IdleTimeout:      r.duration("IDLE_TIMEOUT", DefaultIdleTimeout),
		MaxConnections:   r.integer("MAX_CONNECTIONS", DefaultMaxConnections),
		WriteTimeout:     r.duration("WRITE_TIMEOUT", DefaultWriteTimeout),
		ShutdownTimeout:  r.duration("SHUTDOWN_TIMEOUT", DefaultShutdownTimeout),
	}
	if r.err != nil {
		return Echo{}, r.err
	}
	return c, c.Validate()
}

// LoadCaller reads and validates the caller configuration.
func LoadCaller(lookup LookupFunc) (Caller, error) {
	r := reader{lookup: lookup}
	c := Caller{
		Common:             r.common(DefaultCallerAdminAddr, "ECHO_SERVICE"),
		EchoService:        r.str("ECHO_SERVICE", DefaultServiceName),
		CallInterval:       r.duration("CALL_INTERVAL", DefaultCallInterval),
		CallTimeout:        r.duration("CALL_TIMEOUT", DefaultCallTimeout),
		CallCount:          r.integer("CALL_COUNT", 0),
		CallMessage:        r.str("CALL_MESSAGE", "hello"),
		CallProtocol:       transport.Protocol(r.str("CALL_PROTOCOL", string(transport.TTHeader))),
		DiscoveryTimeout:   r.duration("DISCOVERY_TIMEOUT", DefaultDiscoveryTimeout),
		TLSCAFile:          r.str("TLS_CA_FILE", ""),
		TLSServerName:      r.str("TLS_SERVER_NAME", ""),
		EchoAddresses:      r.list("ECHO_ADDRESSES", ""),
		WSPingInterval:     r.duration("WS_PING_INTERVAL", DefaultWSPingInterval),
		WSPongTimeout:      r.duration("WS_PONG_TIMEOUT", DefaultWSPongTimeout),
		WSMaxConnectionAge: r.duration("WS_MAX_CONNECTION_AGE", DefaultWSMaxConnectionAge),
		WSHeaders:          r.headers("WS_HEADERS", "WS_HEADERS_FILE"),
		WSHeadersFile:      r.str("WS_HEADERS_FILE", ""),
	}
	if r.err != nil {
		return Caller{}, r.err
	}
	if p, err := transport.ParseProtocol(string(c.CallProtocol)); err == nil {
		c.CallProtocol = p // case and space, as TRANSPORT
	}
	return c, c.Validate()
}

// Validate checks the shared settings.
func (c Common) Validate() error {
	if _, err := transport.ParseKind(string(c.Transport)); err != nil {
		return &Error{"TRANSPORT", string(c.Transport), "allowed values are " + kinds()}
	}
	if err := checkHostPort("ADMIN_ADDR", c.AdminAddr); err != nil {
		return err
	}
	if err := c.Etcd.validate(); err != nil {
		return err
	}
	if err := c.OTel.validate(); err != nil {
		return err
	}
	if !oneOf(c.LogLevel, logLevels) {
		return &Error{"LOG_LEVEL", c.LogLevel, "allowed values are " + strings.Join(logLevels, ", ")}
	}
	if !oneOf(c.LogFormat, logFormats) {
		return &Error{"LOG_FORMAT", c.LogFormat, "allowed values are " + strings.Join(logFormats, ", ")}
	}
	if !strings.HasPrefix(c.WSPath, "/") || strings.ContainsAny(c.WSPath, " ?#") {
		return &Error{"WS_PATH", c.WSPath, "must be an HTTP path starting with /, such as /kitex"}
	}
	if c.RegistryTTL < time.Second {
		return &Error{"REGISTRY_TTL", c.RegistryTTL.String(), "must be at least 1s"}
	}
	if err := positive("DISCOVERY_REFRESH", c.DiscoveryRefresh); err != nil {
		return err
	}
	if c.MaxMessageBytes < 1024 {
		return &Error{"MAX_MESSAGE_BYTES", strconv.Itoa(c.MaxMessageBytes), "must be a number of bytes of at least 1024, such as 4194304 (4 MiB)"}
	}
	if err := positive("HANDSHAKE_TIMEOUT", c.HandshakeTimeout); err != nil {
		return err
	}
	if c.MaxHandshakes < 1 {
		return &Error{"MAX_HANDSHAKES", strconv.Itoa(c.MaxHandshakes), "must be a positive number of connections, such as 1024"}
	}
	if c.MaxHandshakesPerSource < 1 || c.MaxHandshakesPerSource > c.MaxHandshakes {
		return &Error{"MAX_HANDSHAKES_PER_SOURCE", strconv.Itoa(c.MaxHandshakesPerSource),
			fmt.Sprintf("must be a number of connections from 1 to MAX_HANDSHAKES (%d), such as 32", c.MaxHandshakes)}
	}
	return c.Tunnel.validate(c.Transport)
}

func (t Tunnel) validate(kind transport.Kind) error {
	if kind != transport.Yamux {
		return nil
	}
	switch {
	case t.Token != "" && t.TokenFile != "":
		return &Error{"TUNNEL_TOKEN_FILE", t.TokenFile, "set either TUNNEL_TOKEN or TUNNEL_TOKEN_FILE, not both"}
	case t.Token == "" && t.TokenFile == "" && t.AgentTokensFile == "":
		return &Error{"TUNNEL_TOKEN", "", "a shared token (or TUNNEL_TOKEN_FILE) is required with TRANSPORT=yamux"}
	case t.Token != "":
		if tunnel.CheckToken(t.Token) != nil { // the value is a secret: not in the message
			return &Error{"TUNNEL_TOKEN", "(hidden)", fmt.Sprintf("must be %d to 1024 characters without spaces (128 bits of a random alphabet), such as the output of `openssl rand -base64 32`", tunnel.MinTokenLength)}
		}
	case t.TokenFile != "":
		if err := tunnel.CheckTokens("", t.TokenFile, ""); err != nil {
			return &Error{"TUNNEL_TOKEN_FILE", t.TokenFile, "must name a readable file of tokens, one per line: " + err.Error()}
		}
	}
	if !t.TLS && (t.TLSCertFile != "" || t.TLSCAFile != "") {
		return &Error{"TUNNEL_TLS", "off", "TUNNEL_TLS_* files are set: remove them or set TUNNEL_TLS=on"}
	}
	if err := checkServiceName("TUNNEL_SERVICE", t.Service); err != nil {
		return err
	}
	if (t.TLSCertFile == "") != (t.TLSKeyFile == "") {
		return &Error{"TUNNEL_TLS_CERT_FILE", t.TLSCertFile, "TUNNEL_TLS_CERT_FILE and TUNNEL_TLS_KEY_FILE go together"}
	}
	if err := positive("TUNNEL_KEEPALIVE", t.KeepAlive); err != nil {
		return err
	}
	if t.Sessions < 1 || t.Sessions > tunnel.MaxSessions {
		return &Error{"TUNNEL_SESSIONS", strconv.Itoa(t.Sessions), fmt.Sprintf("must be a number of sessions from 1 to %d", tunnel.MaxSessions)}
	}
	if t.MaxStreams < 1 {
		return &Error{"TUNNEL_MAX_STREAMS", strconv.Itoa(t.MaxStreams), "must be a positive number of streams, such as 1024"}
	}
	return positive("TUNNEL_BACKOFF_MAX", t.BackoffMax)
}

// validateAgent checks what only echo's tunnel agent reads.
func (t Tunnel) validateAgent() error {
	if !tunnel.ValidIdentity(t.AgentID) {
		return &Error{"TUNNEL_AGENT_ID", t.AgentID, "must be 1 to 128 letters, digits, '.', '_' or '-', starting with a letter or digit"}
	}
	if t.Token == "" && t.TokenFile == "" {
		return &Error{"TUNNEL_TOKEN", "", "an agent needs the shared token or its own (TUNNEL_TOKEN or TUNNEL_TOKEN_FILE); TUNNEL_AGENT_TOKENS_FILE is the caller's"}
	}
	if t.TLSCertFile != "" && t.TLSCAFile == "" {
		return &Error{"TUNNEL_TLS_CA_FILE", "", "must name the CA that signed the gateway's certificate when the agent has a client certificate (TUNNEL_TLS_CERT_FILE)"}
	}
	if err := checkGatewayAddresses("TUNNEL_GATEWAYS", t.Gateways); err != nil {
		return err
	}
	if _, err := tlsconf.Client(t.WSCAFile, "", "", ""); err != nil {
		return &Error{"TUNNEL_WS_CA_FILE", t.WSCAFile, "must be a readable PEM file of CA certificates: " + err.Error()}
	}
	return nil
}

// validateGateway checks what only the caller's tunnel gateway reads.
func (t Tunnel) validateGateway() error {
	if err := checkHostPort("TUNNEL_LISTEN_ADDR", t.ListenAddr); err != nil {
		return err
	}
	if t.AdvertiseAddr != "" {
		if err := checkHostPort("TUNNEL_ADVERTISE_ADDR", t.AdvertiseAddr); err != nil {
			return err
		}
	}
	if t.WSListenAddr != "" {
		if err := checkHostPort("TUNNEL_WS_LISTEN_ADDR", t.WSListenAddr); err != nil {
			return err
		}
	}
	if !strings.HasPrefix(t.WSPath, "/") {
		return &Error{"TUNNEL_WS_PATH", t.WSPath, "must be an HTTP path starting with /, such as /tunnel"}
	}
	return checkGatewayAddresses("TUNNEL_PUBLIC_ADDRESSES", t.PublicAddresses)
}

// checkGatewayAddresses checks a list of gateway addresses: host:port, or
// ws:// and wss:// URLs.
func checkGatewayAddresses(name string, addrs []string) error {
	for _, a := range addrs {
		if err := checkEndpoint(name, a, "tunnel.example.com:7000", "wss://tunnel.example.com/tunnel"); err != nil {
			return err
		}
	}
	return nil
}

// Validate checks the echo configuration.
func (c Echo) Validate() error {
	if err := c.Common.Validate(); err != nil {
		return err
	}
	if err := checkServiceName("SERVICE_NAME", c.ServiceName); err != nil {
		return err
	}
	if err := checkHostPort("LISTEN_ADDR", c.ListenAddr); err != nil {
		return err
	}
	if c.AdvertiseAddr != "" {
		if err := checkHostPort("ADVERTISE_ADDR", c.AdvertiseAddr); err != nil {
			return err
		}
		if host, port, _ := net.SplitHostPort(c.AdvertiseAddr); host == "" || port == "0" {
			return &Error{"ADVERTISE_ADDR", c.AdvertiseAddr, "must name a host and a port that callers can reach, such as 10.0.0.7:8888"}
		}
	}
	if (c.TLSCertFile == "") != (c.TLSKeyFile == "") {
		if c.TLSCertFile == "" {
			return &Error{"TLS_CERT_FILE", "", "must be set when TLS_KEY_FILE is set"}
		}
		return &Error{"TLS_KEY_FILE", "", "must be set when TLS_CERT_FILE is set"}
	}
	if c.TLSCertFile != "" && c.Transport != transport.WebSocket {
		return &Error{"TLS_CERT_FILE", c.TLSCertFile, "TLS is available with TRANSPORT=websocket only"}
	}
	if c.Transport == transport.Yamux {
		if err := c.Tunnel.validateAgent(); err != nil {
			return err
		}
	}
	if c.DrainDelay < 0 {
		return &Error{"DRAIN_DELAY", c.DrainDelay.String(), "must not be negative"}
	}
	if c.WSPingInterval < 0 {
		return &Error{"WS_PING_INTERVAL", c.WSPingInterval.String(), "must be 0 (no pings) or a positive duration such as 20s"}
	}
	if err := positive("READ_TIMEOUT", c.ReadTimeout); err != nil {
		return err
	}
	if err := positive("WRITE_TIMEOUT", c.WriteTimeout); err != nil {
		return err
	}
	if c.MaxConnections < 0 {
		return &Error{"MAX_CONNECTIONS", strconv.Itoa(c.MaxConnections), "must be 0 (no limit) or a positive number of connections, such as 10000"}
	}
	if c.IdleTimeout <= callerPoolIdle {
		return &Error{"IDLE_TIMEOUT", c.IdleTimeout.String(), fmt.Sprintf("must be longer than the callers' pool idle time (%v), such as 10m", callerPoolIdle)}
	}
	return positive("SHUTDOWN_TIMEOUT", c.ShutdownTimeout)
}

// Validate checks the caller configuration.
func (c Caller) Validate() error {
	if err := c.Common.Validate(); err != nil {
		return err
	}
	if err := checkServiceName("ECHO_SERVICE", c.EchoService); err != nil {
		return err
	}
	if err := positive("CALL_INTERVAL", c.CallInterval); err != nil {
		return err
	}
	if err := positive("CALL_TIMEOUT", c.CallTimeout); err != nil {
		return err
	}
	if _, err := transport.ParseProtocol(string(c.CallProtocol)); err != nil || c.CallProtocol == "" {
		return &Error{"CALL_PROTOCOL", string(c.CallProtocol), "allowed values are " + string(transport.TTHeader) + ", " + string(transport.Framed)}
	}
	if err := positive("DISCOVERY_TIMEOUT", c.DiscoveryTimeout); err != nil {
		return err
	}
	if c.CallCount < 0 {
		return &Error{"CALL_COUNT", strconv.Itoa(c.CallCount), "must be 0 (call forever) or a positive number of calls"}
	}
	if c.TLSCAFile != "" && c.Transport != transport.WebSocket {
		return &Error{"TLS_CA_FILE", c.TLSCAFile, "TLS is available with TRANSPORT=websocket only"}
	}
	if err := c.validateWebSocket(); err != nil {
		return err
	}
	if err := checkAddresses(c.Transport, c.EchoAddresses); err != nil {
		return err
	}
	if c.Transport == transport.Yamux {
		if f := c.Tunnel.AgentTokensFile; f != "" {
			if err := tunnel.CheckTokens("", "", f); err != nil {
				return &Error{"TUNNEL_AGENT_TOKENS_FILE", f, `must name a readable file of "identity token" lines: ` + err.Error()}
			}
		}
		if err := c.Tunnel.validateGateway(); err != nil {
			return err
		}
	}
	return nil
}

// validateWebSocket checks the caller's WS_* settings.
func (c Caller) validateWebSocket() error {
	if c.WSPingInterval < 0 {
		return &Error{"WS_PING_INTERVAL", c.WSPingInterval.String(), "must be 0 (no pings) or a positive duration such as 20s"}
	}
	if err := positive("WS_PONG_TIMEOUT", c.WSPongTimeout); err != nil {
		return err
	}
	if c.WSMaxConnectionAge < 0 {
		return &Error{"WS_MAX_CONNECTION_AGE", c.WSMaxConnectionAge.String(), "must be 0 (no limit) or a positive duration such as 10m"}
	}
	if len(c.WSHeaders) > 0 && c.Transport != transport.WebSocket {
		return &Error{"WS_HEADERS", "(not shown)", "upgrade headers apply with TRANSPORT=websocket only"}
	}
	return nil
}

// checkAddresses checks ECHO_ADDRESSES for kind: host:port entries, or
// with websocket ws:// and wss:// URLs too.
func checkAddresses(kind transport.Kind, addrs []string) error {
	if len(addrs) == 0 {
		return nil
	}
	if kind == transport.Yamux {
		return &Error{"ECHO_ADDRESSES", strings.Join(addrs, ","), "the yamux tunnel's echo instances dial the caller: ECHO_ADDRESSES is for netpoll, gonet and websocket"}
	}
	for _, a := range addrs {
		if strings.Contains(a, "://") && kind != transport.WebSocket {
			return &Error{"ECHO_ADDRESSES", a, "URLs are for TRANSPORT=websocket; give host:port"}
		}
		if err := checkEndpoint("ECHO_ADDRESSES", a, "echo.example.com:8888", "wss://echo.example.com/kitex"); err != nil {
			return err
		}
	}
	return nil
}

// checkEndpoint checks one entry of the list name: host:port, or a ws://
// or wss:// URL; the examples are of each.
func checkEndpoint(name, a, hostPort, url string) error {
	if strings.Contains(a, "://") {
		if _, err := websocket.Target(a, websocket.DialerConfig{}); err != nil {
			return &Error{name, a, "must be host:port or a ws:// or wss:// URL such as " + url}
		}
		return nil
	}
	if host, port, err := net.SplitHostPort(a); err != nil || host == "" || port == "" || port == "0" {
		return &Error{name, a, "must be a comma-separated list of host:port or ws:// and wss:// URLs, such as " + hostPort}
	}
	return nil
}

func kinds() string {
	var names []string
	for _, k := range transport.Kinds() {
		names = append(names, string(k))
	}
	return strings.Join(names, ", ")
}

func oneOf(v string, allowed []string) bool {
	for _, a := range allowed {
		if v == a {
			return true
		}
	}
	return false
}

func positive(name string, d time.Duration) error {
	if d <= 0 {
		return &Error{name, d.String(), "must be a positive duration such as 500ms or 2s"}
	}
	return nil
}

func checkHostPort(name, v string) error {
	_, port, err := net.SplitHostPort(v)
	if err != nil {
		return &Error{name, v, "must be host:port or :port, such as :8888"}
	}
	if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
		return &Error{name, v, "the port must be a number from 0 to 65535"}
	}
	return nil
}

func checkServiceName(name, v string) error {
	if v == "" || strings.ContainsAny(v, "/ ") {
		return &Error{name, v, "must be a non-empty service name without '/' or spaces"}
	}
	return nil
}

// reader reads variables and keeps the first parse error.
type reader struct {
	lookup LookupFunc
	err    error
}

func (r *reader) common(adminDefault, serviceVar string) Common {
	host, _ := os.Hostname()
	return Common{
		Tunnel: Tunnel{
			Token:           r.str("TUNNEL_TOKEN", ""),
			TokenFile:       r.str("TUNNEL_TOKEN_FILE", ""),
			AgentTokensFile: r.str("TUNNEL_AGENT_TOKENS_FILE", ""),
			TLS:             r.onOff("TUNNEL_TLS", true),
			Service:         r.str("TUNNEL_SERVICE", r.str(serviceVar, DefaultServiceName)+"-tunnel"),
			ListenAddr:      r.str("TUNNEL_LISTEN_ADDR", DefaultTunnelListenAddr),
			AdvertiseAddr:   r.str("TUNNEL_ADVERTISE_ADDR", ""),
			AgentID:         r.str("TUNNEL_AGENT_ID", host),
			KeepAlive:       r.duration("TUNNEL_KEEPALIVE", DefaultTunnelKeepAlive),
			MaxStreams:      r.integer("TUNNEL_MAX_STREAMS", DefaultTunnelMaxStreams),
			Sessions:        r.integer("TUNNEL_SESSIONS", DefaultTunnelSessions),
			BackoffMax:      r.duration("TUNNEL_BACKOFF_MAX", DefaultTunnelBackoffMax),
			TLSCertFile:     r.str("TUNNEL_TLS_CERT_FILE", ""),
			TLSKeyFile:      r.str("TUNNEL_TLS_KEY_FILE", ""),
			TLSCAFile:       r.str("TUNNEL_TLS_CA_FILE", ""),
			TLSServerName:   r.str("TUNNEL_TLS_SERVER_NAME", ""),
			Gateways:        r.list("TUNNEL_GATEWAYS", ""),
			WSCAFile:        r.str("TUNNEL_WS_CA_FILE", ""),
			WSListenAddr:    r.str("TUNNEL_WS_LISTEN_ADDR", ""),
			WSPath:          r.str("TUNNEL_WS_PATH", DefaultTunnelWSPath),
			PublicAddresses: r.list("TUNNEL_PUBLIC_ADDRESSES", ""),
		},
		Transport:   transport.Kind(strings.ToLower(r.str("TRANSPORT", string(DefaultTransport)))),
		AdminAddr:   r.str("ADMIN_ADDR", adminDefault),
		RegistryTTL: r.duration("REGISTRY_TTL", DefaultRegistryTTL),
		Etcd: Etcd{
			Endpoints:    r.list("ETCD_ENDPOINTS", DefaultEtcdEndpoints),
			CAFile:       r.str("ETCD_CA_FILE", ""),
			CertFile:     r.str("ETCD_CERT_FILE", ""),
			KeyFile:      r.str("ETCD_KEY_FILE", ""),
			ServerName:   r.str("ETCD_SERVER_NAME", ""),
			Username:     r.str("ETCD_USERNAME", ""),
			Password:     r.secret("ETCD_PASSWORD", "ETCD_PASSWORD_FILE"),
			PasswordFile: r.str("ETCD_PASSWORD_FILE", ""),
		},
		LogLevel:               strings.ToLower(r.str("LOG_LEVEL", "info")),
		LogFormat:              strings.ToLower(r.str("LOG_FORMAT", "json")),
		WSPath:                 r.str("WS_PATH", DefaultWSPath),
		DiscoveryRefresh:       r.duration("DISCOVERY_REFRESH", DefaultDiscoveryRefresh),
		MaxMessageBytes:        r.integer("MAX_MESSAGE_BYTES", DefaultMaxMessageBytes),
		HandshakeTimeout:       r.duration("HANDSHAKE_TIMEOUT", DefaultHandshakeTimeout),
		MaxHandshakes:          r.integer("MAX_HANDSHAKES", DefaultMaxHandshakes),
		MaxHandshakesPerSource: r.integer("MAX_HANDSHAKES_PER_SOURCE", DefaultMaxHandshakesPerSource),
		OTel: OTel{
			Endpoint:       r.str("OTEL_EXPORTER_OTLP_ENDPOINT", ""),
			TracesEndpoint: r.str("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", ""),
			Protocol:       r.str("OTEL_EXPORTER_OTLP_PROTOCOL", ""),
			TracesProtocol: r.str("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", ""),
			Sampler:        r.str("OTEL_TRACES_SAMPLER", ""),
			SamplerArg:     r.str("OTEL_TRACES_SAMPLER_ARG", ""),
		},
	}
}

// secret returns the variable, else the trimmed content of the file named by
// fileVar (empty if that cannot be read; Validate then names the file).
func (r *reader) secret(name, fileVar string) string {
	if v, ok := r.lookup(name); ok && v != "" {
		return v
	}
	path := r.str(fileVar, "")
	if path == "" {
		return ""
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// headers reads "Name: value" lines from the variable name and from the
// file named by fileVar. A line that is not a valid header fails, naming
// the variable and, for the file, not the value.
func (r *reader) headers(name, fileVar string) http.Header {
	h := http.Header{}
	// src names the source, shown the file (whose lines are never shown).
	add := func(src, file, text string) {
		for i, line := range strings.Split(text, "\n") {
			line = strings.TrimSpace(line)
			if line == "" {
				continue
			}
			k, v, ok := strings.Cut(line, ":")
			k, v = strings.TrimSpace(k), strings.TrimSpace(v)
			shown, where := line, ""
			if file != "" {
				shown, where = file, fmt.Sprintf("line %d: ", i+1)
			}
			switch {
			case !ok || !httpguts.ValidHeaderFieldName(k) || !httpguts.ValidHeaderFieldValue(v):
				r.fail(&Error{src, shown, where + `must hold "Name: value" lines, one header per line`})
			case reservedHeader(k):
				r.fail(&Error{src, shown, where + "the WebSocket handshake sets " + http.CanonicalHeaderKey(k) + " itself"})
			default:
				h.Add(k, v)
			}
		}
	}
	if v, ok := r.lookup(name); ok {
		add(name, "", v)
	}
	if path := r.str(fileVar, ""); path != "" {
		b, err := os.ReadFile(path)
		if err != nil {
			r.fail(&Error{fileVar, path, "must name a readable file of \"Name: value\" lines"})
		}
		add(fileVar, path, string(b))
	}
	return h
}

// reservedHeader reports whether the WebSocket handshake sets header k itself.
func reservedHeader(k string) bool {
	switch k = http.CanonicalHeaderKey(k); k {
	case "Host", "Upgrade", "Connection":
		return true
	}
	return strings.HasPrefix(k, "Sec-Websocket-")
}

// str returns the variable, or def when it is unset or empty.
func (r *reader) str(name, def string) string {
	if v, ok := r.lookup(name); ok && strings.TrimSpace(v) != "" {
		return strings.TrimSpace(v)
	}
	return def
}

func (r *reader) list(name, def string) []string {
	var out []string
	for _, part := range strings.Split(r.str(name, def), ",") {
		if p := strings.TrimSpace(part); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func (r *reader) duration(name string, def time.Duration) time.Duration {
	v := r.str(name, "")
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		r.fail(&Error{name, v, "must be a duration such as 500ms, 2s or 1m"})
		return def
	}
	return d
}

func (r *reader) onOff(name string, def bool) bool {
	switch v := strings.ToLower(r.str(name, "")); v {
	case "":
		return def
	case "on":
		return true
	case "off":
		return false
	default:
		r.fail(&Error{name, v, "allowed values are on, off"})
		return def
	}
}

func (r *reader) integer(name string, def int) int {
	v := r.str(name, "")
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		r.fail(&Error{name, v, "must be a whole number"})
		return def
	}
	return n
}

func (r *reader) fail(err error) {
	if r.err == nil {
		r.err = err
	}
}
