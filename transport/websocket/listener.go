package websocket

import (
	"bufio"
	"crypto/sha1" //nolint:gosec // RFC 6455's accept key
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http/httpguts"
	xws "golang.org/x/net/websocket"

	"github.com/anyconn/kitex-anyconn/transport/connadapt"
	"github.com/anyconn/kitex-anyconn/transport/internal/admit"
	"github.com/anyconn/kitex-anyconn/transport/internal/ratelog"
)

// DefaultPath is the HTTP path WebSocket upgrades are served on when
// ListenerConfig.Path is empty.
const DefaultPath = "/kitex"

// DefaultHandshakeTimeout bounds how long a client may take to send its
// upgrade request.
const DefaultHandshakeTimeout = 10 * time.Second

// DefaultMaxHandshakes bounds the connections not yet upgraded at once:
// enough for a fleet of a thousand clients coming back at once (a lower
// bound multiplies the time they take, see make bench-scale), a few tens
// of MiB at most while every slot is held.
const DefaultMaxHandshakes = 1024

// DefaultMaxHandshakesPerSource bounds the connections not yet upgraded at
// once from one source IP address.
const DefaultMaxHandshakesPerSource = 32

// ErrOriginNotAllowed is reported to ListenerConfig.OnReject when a request's
// Origin header names an origin that is not allowed.
var ErrOriginNotAllowed = errors.New("websocket: origin not allowed")

// ErrTooManyHandshakes is reported to ListenerConfig.OnRefuse for a
// connection closed because MaxHandshakes connections were already in their
// handshake.
var ErrTooManyHandshakes = fmt.Errorf("websocket: %w", admit.ErrTooMany)

// ErrTooManyHandshakesFromSource is reported to ListenerConfig.OnRefuse for
// a connection closed because MaxHandshakesPerSource connections from its
// source IP address were already in their handshake.
var ErrTooManyHandshakesFromSource = fmt.Errorf("websocket: %w", admit.ErrTooManyFromSource)

// ListenerConfig configures a Listener. The zero value is usable.
type ListenerConfig struct {
	// Path is the HTTP path that accepts WebSocket upgrades; DefaultPath if empty.
	Path string
	// AllowedOrigins lists the browser origins (for example
	// "https://app.example.com") allowed to connect, compared without regard
	// to case. "*" allows every origin. Requests without an Origin header
	// (non-browser clients, this package's Dialer) and same-origin requests
	// (the Origin's host and port equal to the request's Host, or to an
	// X-Forwarded-Host set by a proxy) are always allowed; any other Origin
	// gets 403.
	AllowedOrigins []string
	// TLSConfig, when set, makes the listener serve wss:// (TLS) instead of ws://.
	TLSConfig *tls.Config
	// HandshakeTimeout bounds the TLS handshake and the reading of the
	// upgrade request; DefaultHandshakeTimeout if zero.
	HandshakeTimeout time.Duration
	// MaxHandshakes bounds the TCP connections accepted but not yet
	// upgraded; one beyond it is closed at once (see OnRefuse).
	// DefaultMaxHandshakes if zero.
	MaxHandshakes int
	// MaxHandshakesPerSource bounds those connections from one source IP
	// address, so that one client cannot hold every slot and starve the
	// others (behind a proxy, every client shares the proxy's address: raise
	// it to MaxHandshakes there). DefaultMaxHandshakesPerSource if zero;
	// MaxHandshakes at most.
	MaxHandshakesPerSource int
	// Logger receives the listener's warnings: requests and connections it
	// refuses, sampled (the first of a kind in full, then one line every
	// 10 s with the count, since a client can repeat them at will), and at
	// debug level the HTTP server's own errors (such as failed TLS
	// handshakes). Nothing is logged if nil.
	Logger *slog.Logger
	// OnReject, if set, is called once for every request that is refused
	// (wrong path, not an upgrade, origin not allowed), with the HTTP status
	// sent. It must not block.
	OnReject func(r *http.Request, status int, reason error)
	// OnRefuse, if set, is called once for every connection closed before
	// any request was read (ErrTooManyHandshakes,
	// ErrTooManyHandshakesFromSource). It must not block.
	OnRefuse func(peer net.Addr, reason error)
	// PingInterval, if positive, makes the server ping a connection that
	// has received nothing for that long, for proxies whose idle timer
	// counts only the server's side, and clients that never ping. A
	// missing pong closes nothing: IdleTimeout (see transport.ServerConfig)
	// closes connections that carry no request. No pings if zero.
	PingInterval time.Duration
	// PongWriteTimeout, if positive, bounds the writing of each pong, so
	// that a client that pings and never reads cannot hold the reading
	// goroutine. The write deadline it sets stays set: for servers that set
	// their own before each write (transport.ServerOptions does, from its
	// WriteTimeout). No bound if zero.
	PongWriteTimeout time.Duration
	// Stream makes the connections plain byte streams for a protocol that
	// frames itself (the tunnel's yamux session): every Write is one
	// message. For Kitex servers, leave it off.
	Stream bool
	// xnetFraming makes the connections read and write frames with
	// golang.org/x/net/websocket's own code instead of this package's
	// leaner one: the wire is the same, and the tests and the framing
	// benchmark compare the two (export_test.go).
	xnetFraming bool
}

// Listener is a net.Listener whose connections are WebSocket connections
// upgraded by its own HTTP server. Accept blocks while no client connects,
// never returns a transient error, and returns net.ErrClosed after Close,
// which is what Kitex's gonet server expects of a listener.
type Listener struct {
	ln       net.Listener
	srv      *http.Server
	cfg      ListenerConfig
	conns    chan net.Conn
	done     chan struct{}
	once     sync.Once
	served   chan struct{}
	serveErr error
	refusals *ratelog.Logger
	front    *front // reads plain connections' requests first; nil with TLS
}

var _ net.Listener = (*Listener)(nil)

// Listen listens on the TCP address addr and serves WebSocket upgrades on it.
func Listen(addr string, cfg ListenerConfig) (*Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("websocket: listen %s: %w", addr, err)
	}
	return NewListener(ln, cfg), nil
}

// NewListener serves WebSocket upgrades on ln. The Listener owns ln and
// closes it on Close.
func NewListener(ln net.Listener, cfg ListenerConfig) *Listener {
	if cfg.Path == "" {
		cfg.Path = DefaultPath
	}
	if cfg.HandshakeTimeout <= 0 {
		cfg.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if cfg.MaxHandshakes <= 0 {
		cfg.MaxHandshakes = DefaultMaxHandshakes
	}
	if cfg.MaxHandshakesPerSource <= 0 {
		cfg.MaxHandshakesPerSource = DefaultMaxHandshakesPerSource
	}
	l := &Listener{
		ln:     ln,
		cfg:    cfg,
		conns:  make(chan net.Conn),
		done:   make(chan struct{}),
		served: make(chan struct{}),
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	l.refusals = ratelog.New(logger, 0)
	l.srv = &http.Server{
		Handler:           l,
		ReadHeaderTimeout: cfg.HandshakeTimeout,
		IdleTimeout:       cfg.HandshakeTimeout,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelDebug),
		ConnState:         releaseUpgraded,
	}
	var serveLn net.Listener = &limitListener{Listener: ln, limit: admit.New(cfg.MaxHandshakes, cfg.MaxHandshakesPerSource),
		timeout: cfg.HandshakeTimeout, onRefuse: l.refused}
	if cfg.TLSConfig != nil {
		serveLn = tls.NewListener(serveLn, cfg.TLSConfig)
	} else if !cfg.xnetFraming {
		l.front = newFront(l, serveLn)
		serveLn = &restListener{f: l.front, closed: make(chan struct{})}
		go l.front.acceptLoop()
	}
	go func() {
		defer close(l.served)
		err := l.srv.Serve(serveLn)
		if !errors.Is(err, http.ErrServerClosed) {
			l.serveErr = err
		}
	}()
	return l
}

// Accept waits for the next upgraded WebSocket connection. After Close it
// returns net.ErrClosed; if the HTTP server stopped on its own, it returns
// that error.
func (l *Listener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	case <-l.served:
		if l.serveErr != nil {
			return nil, fmt.Errorf("websocket: http server stopped: %w", l.serveErr)
		}
		return nil, net.ErrClosed
	}
}

// Close stops accepting: the TCP listener is closed and requests still in
// their handshake are dropped. Connections already accepted are left to
// their owner (Kitex drains and closes them). Close is safe to call more
// than once.
func (l *Listener) Close() error {
	l.once.Do(func() {
		close(l.done)
		_ = l.srv.Close()
		<-l.served
		if l.front != nil {
			l.front.close()
		}
		l.refusals.Close()
	})
	return nil
}

// refused logs a connection closed before its handshake (sampled) and
// reports it to OnRefuse.
func (l *Listener) refused(peer net.Addr, reason error) {
	l.refusals.Warn("refuse:"+reason.Error(), "websocket: connection refused", slog.String("peer", peer.String()),
		slog.Int("max_handshakes", l.cfg.MaxHandshakes), slog.Int("max_handshakes_per_source", l.cfg.MaxHandshakesPerSource),
		slog.Any("error", reason))
	if l.cfg.OnRefuse != nil {
		l.cfg.OnRefuse(peer, reason)
	}
}

// Addr returns the TCP address the listener is bound to.
func (l *Listener) Addr() net.Addr { return l.ln.Addr() }

// Path returns the HTTP path that accepts upgrades.
func (l *Listener) Path() string { return l.cfg.Path }

// ServeHTTP upgrades valid WebSocket requests on the configured path and
// answers everything else with a plain HTTP error.
func (l *Listener) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch {
	case r.URL.Path != l.cfg.Path:
		l.reject(w, r, http.StatusNotFound, fmt.Errorf("websocket: path %q is not %q", r.URL.Path, l.cfg.Path))
		return
	case r.Method != http.MethodGet:
		w.Header().Set("Allow", http.MethodGet)
		l.reject(w, r, http.StatusMethodNotAllowed, fmt.Errorf("websocket: method %s is not GET", r.Method))
		return
	case !r.ProtoAtLeast(1, 1): // RFC 6455, 4.2.1
		l.reject(w, r, http.StatusBadRequest, fmt.Errorf("websocket: an upgrade needs HTTP/1.1 at least, not %s", r.Proto))
		return
	case !headerHasToken(r.Header, "Connection", "upgrade") || !headerHasToken(r.Header, "Upgrade", "websocket"):
		w.Header().Set("Upgrade", "websocket")
		l.reject(w, r, http.StatusUpgradeRequired, errors.New("websocket: not a WebSocket upgrade request"))
		return
	}
	if err := l.checkOrigin(r); err != nil {
		l.reject(w, r, http.StatusForbidden, err)
		return
	}
	var accept [28]byte
	switch {
	case len(r.Header.Values("Sec-Websocket-Key")) > 1 || len(r.Header.Values("Sec-Websocket-Version")) > 1: // RFC 6455, 11.3.1 and 11.3.5
		l.reject(w, r, http.StatusBadRequest, errors.New("websocket: Sec-WebSocket-Key or Sec-WebSocket-Version given more than once"))
		return
	case r.Header.Get("Sec-Websocket-Version") != "13":
		w.Header().Set("Sec-WebSocket-Version", "13")
		l.reject(w, r, http.StatusBadRequest, fmt.Errorf("websocket: version %q is not 13", r.Header.Get("Sec-Websocket-Version")))
		return
	case !acceptKey(accept[:], r.Header.Get("Sec-Websocket-Key")):
		l.reject(w, r, http.StatusBadRequest, errors.New("websocket: Sec-WebSocket-Key is not 16 bytes in base64"))
		return
	}
	protocol, err := subprotocol(r.Header)
	if err != nil {
		l.reject(w, r, http.StatusBadRequest, err)
		return
	}
	if l.cfg.xnetFraming {
		// x/net does the handshake again, and its framing is kept.
		h := &hijacked{ResponseWriter: w}
		xws.Server{Handler: func(ws *xws.Conn) { l.serveXNet(ws, r, h) }}.ServeHTTP(h, r)
		return
	}
	l.upgrade(w, r, accept[:], protocol)
}

// upgrade answers the upgrade request with 101 and hands the connection to
// Accept. No goroutine, request, reader or writer of net/http's is kept:
// the bytes the client sent behind its request are copied out of the
// HTTP server's reader.
func (l *Listener) upgrade(w http.ResponseWriter, r *http.Request, accept []byte, protocol string) {
	hj, ok := w.(http.Hijacker)
	if !ok {
		l.reject(w, r, http.StatusInternalServerError, errors.New("websocket: the HTTP server cannot hand the connection over"))
		return
	}
	conn, buf, err := hj.Hijack()
	if err != nil {
		l.refusals.Warn("hijack", "websocket: hijack failed", slog.String("peer", r.RemoteAddr), slog.Any("error", err))
		return
	}
	// A client may send frames right behind its upgrade request: they wait
	// in the HTTP server's reader, which is let go (and, for a connection
	// the front passed on, in what the front read and the reader did not).
	var pending []byte
	if n := buf.Reader.Buffered(); n > 0 {
		p, _ := buf.Reader.Peek(n)
		pending = append(pending, p...)
	}
	if rc, ok := conn.(*replayConn); ok {
		pending = append(pending, rc.pending...)
		conn = rc.Conn
	}
	if sc, ok := conn.(*slotConn); ok {
		conn = sc.Conn // its slot was released at the hijack; drop the wrapper and its timer
	}
	remote := conn.RemoteAddr()
	if remote == nil {
		remote = tcpAddr(r.RemoteAddr)
	}
	l.handOff(conn, accept, protocol, pending, remote)
}

// handOff answers an upgrade request with 101 on conn (in one write) and
// hands the connection, with the lean framing, to Accept. pending holds the
// bytes that came behind the request.
func (l *Listener) handOff(conn net.Conn, accept []byte, protocol string, pending []byte, remote net.Addr) {
	rb := readBufs.Get().(*[readBufSize]byte) // not a per-connection allocation
	b := append(rb[:0], "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: "...)
	b = append(b, accept...)
	if protocol != "" {
		b = append(b, "\r\nSec-WebSocket-Protocol: "...)
		b = append(b, protocol...)
	}
	b = append(b, "\r\n\r\n"...)
	_, err := conn.Write(b)
	readBufs.Put(rb)
	if err != nil {
		_ = conn.Close()
		return
	}
	lean := newLeanFrames(conn, pending, serverSide)
	lean.pongWrite = l.cfg.PongWriteTimeout
	c := newConn(lean, conn.LocalAddr(), remote)
	c.stream = l.cfg.Stream
	select {
	case l.conns <- c:
	case <-l.done:
		_ = c.Close()
		return
	}
	if l.cfg.PingInterval > 0 {
		l.pingIdle(c, lean)
	}
}

// acceptKey writes the Sec-WebSocket-Accept of key (RFC 6455, 4.2.2) to
// dst (28 bytes) and reports whether key is a valid Sec-WebSocket-Key: 16
// bytes in base64 (4.2.1).
func acceptKey(dst []byte, key string) bool {
	var nonce [18]byte
	if len(key) != 24 {
		return false
	}
	if n, err := base64.StdEncoding.Decode(nonce[:], []byte(key)); err != nil || n != 16 {
		return false
	}
	var in [24 + len(acceptGUID)]byte
	copy(in[copy(in[:], key):], acceptGUID)
	sum := sha1.Sum(in[:]) //nolint:gosec // RFC 6455's accept key, not a security hash
	base64.StdEncoding.Encode(dst, sum[:])
	return true
}

// subprotocol returns the subprotocol to name in the answer: as x/net's
// handshake did, the one the client offered, if it offered exactly one;
// offering several is refused, since this server chooses none.
func subprotocol(h http.Header) (string, error) {
	offered := strings.TrimSpace(h.Get("Sec-Websocket-Protocol"))
	switch {
	case offered == "":
		return "", nil
	case strings.Contains(offered, ","):
		return "", fmt.Errorf("websocket: several subprotocols offered (%q), none chosen", offered)
	case !httpguts.ValidHeaderFieldName(offered): // a token
		return "", fmt.Errorf("websocket: subprotocol %q is not a token", offered)
	}
	return offered, nil
}

// hijacked is the ResponseWriter given to x/net's handshake (x/net's
// framing only, for the tests): it keeps what Hijack returned, and gives
// x/net the connection behind a handoffConn, so that the handler can return
// (ending net/http's goroutine) without x/net closing the connection.
type hijacked struct {
	http.ResponseWriter
	conn net.Conn
	ho   *handoffConn
}

func (h *hijacked) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	hj, ok := h.ResponseWriter.(http.Hijacker)
	if !ok {
		return nil, nil, errors.New("websocket: the HTTP server cannot hand the connection over")
	}
	c, buf, err := hj.Hijack()
	if err != nil {
		return c, buf, err
	}
	h.conn, h.ho = c, &handoffConn{Conn: c}
	return h.ho, buf, nil
}

// handoffConn is the connection x/net's handshake sees: its Close closes
// the connection until the connection is handed off, and does nothing after
// (x/net closes it when the handler returns).
type handoffConn struct {
	net.Conn
	handedOff atomic.Bool
}

func (c *handoffConn) Close() error {
	if c.handedOff.Load() {
		return nil
	}
	return c.Conn.Close()
}

// serveXNet hands a connection upgraded by x/net, with x/net's framing, to
// Accept.
func (l *Listener) serveXNet(ws *xws.Conn, r *http.Request, h *hijacked) {
	// net/http leaves its header read deadline on a hijacked connection.
	_ = ws.SetDeadline(time.Time{})
	local, _ := r.Context().Value(http.LocalAddrContextKey).(net.Addr)
	if local == nil {
		local = l.ln.Addr()
	}
	c := newConn(newXNetFrames(ws, h.conn), local, tcpAddr(r.RemoteAddr))
	c.stream = l.cfg.Stream
	// From here on the connection belongs to c: x/net's close when this
	// handler returns does nothing.
	h.ho.handedOff.Store(true)
	select {
	case l.conns <- c:
	case <-l.done:
		_ = c.Close()
	}
}

// pingIdle pings c every PingInterval while nothing is received, from a
// timer: no goroutine waits meanwhile.
func (l *Listener) pingIdle(c *Conn, lean *leanFrames) {
	every := l.cfg.PingInterval
	var t *time.Timer
	var mu sync.Mutex
	mu.Lock()
	defer mu.Unlock()
	t = time.AfterFunc(every, func() {
		select {
		case <-c.done:
			return
		default:
		}
		if time.Since(time.Unix(0, lean.lastRead.Load())) >= every {
			_ = lean.write(opPing, nil)
		}
		mu.Lock()
		t.Reset(every)
		mu.Unlock()
	})
}

func (l *Listener) reject(w http.ResponseWriter, r *http.Request, status int, reason error) {
	l.refusals.Warn("reject:"+strconv.Itoa(status), "websocket: request refused", slog.String("peer", r.RemoteAddr),
		slog.String("path", r.URL.Path), slog.Int("status", status), slog.Any("error", reason))
	if l.cfg.OnReject != nil {
		l.cfg.OnReject(r, status, reason)
	}
	http.Error(w, http.StatusText(status), status)
}

func (l *Listener) checkOrigin(r *http.Request) error {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return nil
	}
	for _, allowed := range l.cfg.AllowedOrigins {
		if allowed == "*" || strings.EqualFold(allowed, origin) {
			return nil
		}
	}
	if u, err := url.Parse(origin); err == nil && u.Host != "" && sameOrigin(u, r) {
		return nil
	}
	return fmt.Errorf("%w: %q", ErrOriginNotAllowed, origin)
}

// sameOrigin reports whether the page at origin u is served by the host the
// request was sent to: its Host header, or the X-Forwarded-Host that a
// reverse proxy which rewrote Host passes on. Ports are compared with the
// origin scheme's default filled in (https://a.example is a.example:443). A
// browser cannot set X-Forwarded-Host on a WebSocket, so a page of another
// site cannot pass this check through it.
func sameOrigin(u *url.URL, r *http.Request) bool {
	want := withPort(u.Host, u.Scheme)
	hosts := []string{r.Host}
	for _, v := range r.Header.Values("X-Forwarded-Host") {
		hosts = append(hosts, strings.Split(v, ",")...)
	}
	for _, h := range hosts {
		if h = strings.TrimSpace(h); h != "" && strings.EqualFold(withPort(h, u.Scheme), want) {
			return true
		}
	}
	return false
}

// withPort returns host with the default port of scheme when it has none.
func withPort(host, scheme string) string {
	if _, _, err := net.SplitHostPort(host); err == nil {
		return host
	}
	port := "80"
	if scheme == "https" || scheme == "wss" {
		port = "443"
	}
	return net.JoinHostPort(strings.Trim(host, "[]"), port)
}

// headerHasToken reports whether the comma-separated header name contains token.
func headerHasToken(h http.Header, name, token string) bool {
	for _, v := range h.Values(name) {
		for _, t := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}

func tcpAddr(hostport string) net.Addr {
	if ap, err := netip.ParseAddrPort(hostport); err == nil {
		return net.TCPAddrFromAddrPort(ap)
	}
	return connadapt.Addr{Net: "tcp", Address: hostport}
}

// limitListener admits at most cap(slots) connections in their handshake:
// a connection holds a slot until it is upgraded (hijacked) or closed, and
// is closed if it is not upgraded within timeout of its accept, whatever
// it does meanwhile (ordinary HTTP requests on a kept-alive connection
// each restart net/http's own timeouts).
type limitListener struct {
	net.Listener
	limit    *admit.Limiter
	timeout  time.Duration
	onRefuse func(net.Addr, error)
}

func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		release, err := l.limit.Acquire(c.RemoteAddr())
		if err == nil {
			sc := &slotConn{Conn: c, release: release}
			sc.timer = time.AfterFunc(time.Hour, sc.expire)
			sc.timer.Reset(l.timeout) // after the assignment, which expire reads
			return sc, nil
		}
		_ = c.Close()
		if errors.Is(err, admit.ErrTooManyFromSource) {
			err = ErrTooManyHandshakesFromSource
		} else {
			err = ErrTooManyHandshakes
		}
		l.onRefuse(c.RemoteAddr(), err)
	}
}

// slotConn holds a handshake slot until it is upgraded or closed
// (release may be called more than once), and is closed when its
// handshake time runs out first.
type slotConn struct {
	net.Conn
	release func()
	timer   *time.Timer
	state   atomic.Int32 // slotHandshake, slotUpgraded or slotExpired
}

const (
	slotHandshake = iota
	slotUpgraded
	slotExpired
)

// expire closes a connection still in its handshake.
func (c *slotConn) expire() {
	if c.state.CompareAndSwap(slotHandshake, slotExpired) {
		_ = c.Close()
	}
}

// leave takes the connection out of its handshake (upgraded, or closed by
// the HTTP server): its time no longer runs.
func (c *slotConn) leave() {
	if c.state.CompareAndSwap(slotHandshake, slotUpgraded) {
		c.timer.Stop()
	}
	c.release()
}

func (c *slotConn) Close() error {
	c.timer.Stop()
	c.release()
	return c.Conn.Close()
}

// releaseUpgraded is the HTTP server's ConnState hook: a connection leaves
// its handshake when it is hijacked (upgraded) or closed.
func releaseUpgraded(c net.Conn, state http.ConnState) {
	if state != http.StateHijacked && state != http.StateClosed {
		return
	}
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	if rc, ok := c.(*replayConn); ok {
		c = rc.Conn
	}
	if sc, ok := c.(*slotConn); ok {
		sc.leave()
	}
}
