package transport

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/cloudwego/kitex/client"
	"github.com/cloudwego/kitex/pkg/connpool"
	"github.com/cloudwego/kitex/pkg/remote"
	"github.com/cloudwego/kitex/pkg/remote/codec"
	kpool "github.com/cloudwego/kitex/pkg/remote/connpool"
	"github.com/cloudwego/kitex/pkg/remote/trans/gonet"
	"github.com/cloudwego/kitex/pkg/transmeta"
	"github.com/cloudwego/kitex/server"
	ktransport "github.com/cloudwego/kitex/transport"

	"github.com/anyconn/kitex-anyconn/transport/connadapt"
	"github.com/anyconn/kitex-anyconn/transport/internal/ratelog"
	"github.com/anyconn/kitex-anyconn/transport/internal/thriftcheck"
	"github.com/anyconn/kitex-anyconn/transport/websocket"
)

// Kind names a transport.
type Kind string

// The transports this package knows.
const (
	// Netpoll is Kitex's default network library (epoll based).
	Netpoll Kind = "netpoll"
	// GoNet is the Go standard library's TCP through Kitex's gonet transport.
	GoNet Kind = "gonet"
	// WebSocket carries Kitex over WebSocket connections (package websocket).
	WebSocket Kind = "websocket"
	// Yamux carries Kitex over streams of a yamux session that the server
	// dialed out (a reverse tunnel): the server side serves on the tunnel's
	// listener and the client side dials through the tunnel.
	Yamux Kind = "yamux"
)

// ErrUnknownKind is returned by ParseKind for a name that is not a Kind.
var ErrUnknownKind = errors.New("unknown transport")

// ErrNeedsTunnel is returned when a Yamux server or client is configured
// without the tunnel listener or dialer that it runs on.
var ErrNeedsTunnel = errors.New("the yamux transport needs a tunnel listener (server) or dialer (client)")

// Kinds returns every Kind, in a stable order.
func Kinds() []Kind { return []Kind{Netpoll, GoNet, WebSocket, Yamux} }

// ParseKind returns the Kind named s. Surrounding space and case are ignored.
func ParseKind(s string) (Kind, error) {
	k := Kind(strings.ToLower(strings.TrimSpace(s)))
	for _, known := range Kinds() {
		if k == known {
			return k, nil
		}
	}
	return "", fmt.Errorf("%w %q: allowed values are %s", ErrUnknownKind, s, kindList())
}

func kindList() string {
	names := make([]string, 0, len(Kinds()))
	for _, k := range Kinds() {
		names = append(names, string(k))
	}
	return strings.Join(names, ", ")
}

// String returns the transport's name.
func (k Kind) String() string { return string(k) }

// Protocol is the wire protocol of a client's calls. Servers read both.
type Protocol string

const (
	// TTHeader is Kitex's header protocol around a Thrift binary message:
	// it carries metainfo (and trace context with it), the caller's
	// service name and the server's graceful-close signal, which makes
	// clients let go of a stopping server's connections after their
	// replies. The default, for Kitex to Kitex.
	TTHeader Protocol = "ttheader"
	// Framed is Thrift Framed, which every Thrift server understands and
	// which carries no header: no metainfo, no trace context, no close
	// signal. For servers that are not Kitex.
	Framed Protocol = "framed"
)

// ErrUnknownProtocol is returned by ParseProtocol for a name it does not know.
var ErrUnknownProtocol = errors.New("unknown protocol")

// ParseProtocol returns the Protocol named s (TTHeader if s is empty).
// Surrounding space and case are ignored.
func ParseProtocol(s string) (Protocol, error) {
	switch p := Protocol(strings.ToLower(strings.TrimSpace(s))); p {
	case "":
		return TTHeader, nil
	case TTHeader, Framed:
		return p, nil
	}
	return "", fmt.Errorf("%w %q: allowed values are %s, %s", ErrUnknownProtocol, s, TTHeader, Framed)
}

// ServerConfig says how a Kitex server receives connections.
type ServerConfig struct {
	// Kind is the transport.
	Kind Kind
	// Addr is the TCP address to listen on (for example ":8888" or
	// "127.0.0.1:0"). Ignored when Listener is set.
	Addr string
	// Listener, if set, is served instead of listening on Addr: any
	// net.Listener whose connections carry Kitex's byte stream. Yamux
	// requires it (the tunnel agent's listener). With WebSocket it is the
	// TCP listener that the WebSocket HTTP server runs on.
	Listener net.Listener
	// WebSocket configures the WebSocket listener.
	WebSocket websocket.ListenerConfig
	// ExitWaitTime is how long a stopping server lets calls in flight
	// finish before it closes the connections that remain;
	// DefaultExitWaitTime if zero.
	ExitWaitTime time.Duration
	// MaxMessageBytes is the largest Thrift message the server reads or
	// writes: a request that declares a longer frame is refused before it
	// is read, and its connection closed. A connection may also hold at
	// most twice this that the server has not read yet: netpoll reads
	// ahead, and closes a connection over it (checked every 20 ms); the
	// other transports read a request only once the last reply is written.
	// DefaultMaxMessageBytes if zero; no limit if negative.
	MaxMessageBytes int
	// ReadTimeout bounds the reading of one request from its first byte to
	// its last: a client that sends too slowly has its connection closed.
	// DefaultReadTimeout if zero; no limit if negative.
	ReadTimeout time.Duration
	// WriteTimeout bounds the writing of each reply: a client that does not
	// read its replies (and makes the server hold them) has its connection
	// closed, and what it held freed. DefaultWriteTimeout if zero; no limit
	// if negative.
	WriteTimeout time.Duration
	// IdleTimeout closes connections that carry no request for this long,
	// which also frees those of clients that went away without a word
	// (half-open). Keep it longer than the clients' pool idle time (30 s
	// with NewClientTransport). DefaultIdleTimeout if zero.
	IdleTimeout time.Duration
	// MaxConnections bounds the connections the server holds at once (with
	// yamux, the tunnel streams, one per caller's pooled connection): one
	// beyond it is closed as soon as it is accepted, and logged (the first
	// at once, then one line per 10 s with a count). No limit if zero or
	// negative.
	MaxConnections int
	// Logger receives the transport's own log lines: connections closed
	// for idling (debug level), connections refused over MaxConnections,
	// and the WebSocket listener's unless WebSocket.Logger is set. Nothing
	// is logged if nil.
	Logger *slog.Logger
}

// Defaults of ServerConfig.
const (
	// DefaultExitWaitTime is Kitex's own default.
	DefaultExitWaitTime = 5 * time.Second
	// DefaultMaxMessageBytes is 4 MiB, as gRPC's default.
	DefaultMaxMessageBytes = 4 << 20
	// DefaultReadTimeout bounds the reading of one request.
	DefaultReadTimeout = 30 * time.Second
	// DefaultWriteTimeout bounds the writing of one reply.
	DefaultWriteTimeout = 30 * time.Second
	// DefaultIdleTimeout is Kitex's own default.
	DefaultIdleTimeout = 10 * time.Minute
)

// writeTimeout is the write timeout of WriteTimeout d: 0 for none.
func writeTimeout(d time.Duration) time.Duration {
	switch {
	case d == 0:
		return DefaultWriteTimeout
	case d < 0:
		return 0
	}
	return d
}

// boundedCodec is Kitex's codec with the size limit of MaxMessageBytes n
// and, with a limit, the check of every length a message declares before
// it is decoded (internal/thriftcheck): a message can make the decoder
// reserve no more than the limit, whatever it declares.
func boundedCodec(n int) remote.Codec {
	c := codec.NewDefaultCodecWithSizeLimit(messageLimit(n))
	if limit := messageLimit(n); limit > 0 {
		return thriftcheck.Codec{Codec: c, Limit: limit}
	}
	return c
}

// messageLimit returns the codec size limit for MaxMessageBytes n: Kitex's
// 0 means no limit.
func messageLimit(n int) int {
	switch {
	case n == 0:
		return DefaultMaxMessageBytes
	case n < 0:
		return 0
	}
	return n
}

// ServerOptions returns the Kitex server options for cfg and the listener
// they serve (its Addr is the address the server is bound to). It listens
// at once, so a busy port is reported here. The listener belongs to the
// Kitex server, which closes it when it stops; close it yourself only if
// you never run the server.
func ServerOptions(cfg ServerConfig) ([]server.Option, net.Listener, error) {
	kind, err := ParseKind(string(cfg.Kind))
	if err != nil {
		return nil, nil, err
	}
	cfg.Kind = kind
	ln := cfg.Listener
	if cfg.Kind == Yamux && ln == nil {
		return nil, nil, ErrNeedsTunnel
	}
	if ln == nil {
		if ln, err = net.Listen("tcp", cfg.Addr); err != nil {
			return nil, nil, fmt.Errorf("transport %s: listen %s: %w", cfg.Kind, cfg.Addr, err)
		}
	}
	if cfg.Kind == WebSocket {
		ws := cfg.WebSocket
		if ws.Logger == nil {
			ws.Logger = cfg.Logger
		}
		if ws.PongWriteTimeout == 0 {
			ws.PongWriteTimeout = writeTimeout(cfg.WriteTimeout) // each reply's write sets its own deadline
		}
		ln = websocket.NewListener(ln, ws)
	}
	exitWait := cfg.ExitWaitTime
	if exitWait <= 0 {
		exitWait = DefaultExitWaitTime
	}
	idle := cfg.IdleTimeout
	if idle <= 0 {
		idle = DefaultIdleTimeout
	}
	opts := []server.Option{
		server.WithCodec(boundedCodec(cfg.MaxMessageBytes)),
		// TTHeader's own fields: the close signal during a graceful stop,
		// business status errors. (Metainfo is Kitex's default handler.)
		server.WithMetaHandler(transmeta.ServerTTHeaderHandler),
		server.WithMaxConnIdleTime(idle),
	}
	switch {
	case cfg.ReadTimeout == 0:
		opts = append(opts, server.WithReadWriteTimeout(DefaultReadTimeout))
	case cfg.ReadTimeout > 0:
		opts = append(opts, server.WithReadWriteTimeout(cfg.ReadTimeout))
	}
	refusals := connRefusals{log: ratelog.New(cfg.Logger, 0), max: cfg.MaxConnections}
	if cfg.Kind == Netpoll {
		log := cfg.Logger
		if log == nil {
			log = slog.New(slog.DiscardHandler)
		}
		nl, drain, err := netpollDrained(ln, &netpollDrain{
			grace: exitWait, idle: idle, write: writeTimeout(cfg.WriteTimeout), log: log,
			maxConns: cfg.MaxConnections, refused: refusals.ConnOverloadReport,
			maxUnread: 2 * messageLimit(cfg.MaxMessageBytes), overread: refusals.overread,
		})
		if err != nil {
			_ = ln.Close()
			return nil, nil, fmt.Errorf("transport %s: %w", cfg.Kind, err)
		}
		ln = nl
		opts = append(opts, server.WithBoundHandler(drain))
	} else {
		// Kitex's gonet server waits at least 2 minutes for a request on an
		// idle connection; the listener's connections cut that to idle.
		// Kitex's own connection limiter is not used: its gonet server never
		// releases the count of a connection the limiter refused.
		dl := newDrainListener(ln, exitWait, idle)
		dl.maxConns, dl.refused, dl.write = cfg.MaxConnections, refusals.ConnOverloadReport, writeTimeout(cfg.WriteTimeout)
		ln = dl
		opts = append(opts,
			server.WithTransServerFactory(gonet.NewTransServerFactory()),
			server.WithTransHandlerFactory(gonet.NewSvrTransHandlerFactory()),
		)
	}
	opts = append(opts,
		server.WithListener(ln),
		server.WithServiceAddr(ln.Addr()),
		server.WithExitWaitTime(exitWait),
	)
	return opts, ln, nil
}

// connRefusals logs, sampled, the connections refused over MaxConnections
// and those closed for sending too far ahead of their replies.
type connRefusals struct {
	log *ratelog.Logger
	max int
}

func (r connRefusals) ConnOverloadReport() {
	r.log.Warn("max-connections", "transport: connection refused: MaxConnections are open", slog.Int("max_connections", r.max))
}

func (r connRefusals) overread(peer net.Addr, unread int) {
	r.log.Warn("unread", "transport: connection closed: it sent more than twice MaxMessageBytes that the server has not read yet",
		slog.String("peer", peer.String()), slog.Int("unread_bytes", unread))
}

// DefaultMaxIdlePerAddress is the connection pool size per server address
// when ClientConfig.MaxIdlePerAddress is zero. Kitex's own default (10)
// makes more concurrent callers than that close and redial connections.
const DefaultMaxIdlePerAddress = 64

// DefaultMaxIdleTimeout is ClientConfig.MaxIdleTimeout when it is zero. A
// server's idle timeout must be longer, or it closes pooled connections
// that a client is about to reuse.
const DefaultMaxIdleTimeout = 30 * time.Second

// ClientConfig says how a Kitex client reaches servers.
type ClientConfig struct {
	// Kind is the transport.
	Kind Kind
	// Dialer, if set, replaces the transport's dialer (gonet, websocket and
	// yamux only). Yamux requires it: the tunnel's dialer.
	Dialer remote.Dialer
	// WebSocket configures the WebSocket dialer.
	WebSocket websocket.DialerConfig
	// MaxIdlePerAddress is how many idle connections are kept per server
	// address; size it to the expected concurrent calls per server.
	// DefaultMaxIdlePerAddress if zero.
	MaxIdlePerAddress int
	// MaxIdleTimeout closes connections idle for longer;
	// DefaultMaxIdleTimeout if zero.
	MaxIdleTimeout time.Duration
	// MaxMessageBytes is the largest Thrift message the client writes or
	// reads (a longer response fails its call and closes the connection).
	// DefaultMaxMessageBytes if zero; no limit if negative.
	MaxMessageBytes int
	// Protocol is the calls' wire protocol; TTHeader if empty.
	Protocol Protocol
}

// ClientTransport is the client side of one transport: the Kitex client
// options (Options) and the connection pool behind them. Build one Kitex
// client from its Options and Close it when that client is no longer used.
type ClientTransport struct {
	opts []client.Option
	pool *kpool.LongPool
}

// NewClientTransport returns the client side of the transport cfg names,
// calling with cfg.Protocol.
func NewClientTransport(cfg ClientConfig) (*ClientTransport, error) {
	kind, err := ParseKind(string(cfg.Kind))
	if err != nil {
		return nil, err
	}
	cfg.Kind = kind
	protocol, err := ParseProtocol(string(cfg.Protocol))
	if err != nil {
		return nil, err
	}
	dialer := cfg.Dialer
	switch cfg.Kind {
	case Yamux:
		if dialer == nil {
			return nil, ErrNeedsTunnel
		}
	case WebSocket:
		if dialer == nil {
			dialer = websocket.NewDialer(cfg.WebSocket)
		}
	case GoNet:
		if dialer == nil {
			var d net.Dialer
			dialer = connadapt.Dialer{Dial: d.DialContext}
		}
	case Netpoll:
		if dialer != nil {
			return nil, fmt.Errorf("transport %s: a custom dialer needs gonet, websocket or yamux", cfg.Kind)
		}
	}
	idle := connpool.IdleConfig{
		MaxIdlePerAddress: cfg.MaxIdlePerAddress,
		MaxIdleGlobal:     1 << 20,
		MaxIdleTimeout:    cfg.MaxIdleTimeout,
	}
	if idle.MaxIdlePerAddress <= 0 {
		idle.MaxIdlePerAddress = DefaultMaxIdlePerAddress
	}
	if idle.MaxIdleTimeout <= 0 {
		idle.MaxIdleTimeout = DefaultMaxIdleTimeout
	}
	pool := kpool.NewLongPool("kitex-anyconn", idle)
	opts := []client.Option{
		client.WithConnPool(pool),
		client.WithCodec(boundedCodec(cfg.MaxMessageBytes)),
	}
	if protocol == TTHeader {
		// Kitex ORs protocols together: give one.
		opts = append(opts,
			client.WithTransportProtocol(ktransport.TTHeader),
			client.WithMetaHandler(transmeta.ClientTTHeaderHandler),
		)
	} else {
		opts = append(opts, client.WithTransportProtocol(ktransport.Framed))
	}
	if cfg.Kind != Netpoll {
		opts = append(opts,
			client.WithDialer(dialer),
			client.WithTransHandlerFactory(gonet.NewCliTransHandlerFactory()),
		)
	}
	return &ClientTransport{opts: opts, pool: pool}, nil
}

// Options returns the options to pass to the Kitex client constructor.
func (c *ClientTransport) Options() []client.Option { return append([]client.Option(nil), c.opts...) }

// Close closes every pooled connection. Later calls through a client built
// from Options fail.
func (c *ClientTransport) Close() error { return c.pool.Close() }
