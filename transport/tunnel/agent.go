package tunnel

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/yamux"

	"github.com/anyconn/kitex-anyconn/transport/connadapt"
	"github.com/anyconn/kitex-anyconn/transport/internal/backoff"
	"github.com/anyconn/kitex-anyconn/transport/internal/proxy"
	"github.com/anyconn/kitex-anyconn/transport/websocket"
)

// Defaults for the agent's reconnect backoff.
const (
	DefaultBackoffMin = 100 * time.Millisecond
	DefaultBackoffMax = 10 * time.Second
)

// DefaultMaxStreams bounds the streams open at once on one session.
const DefaultMaxStreams = 1024

// DefaultProbeInterval is AgentConfig.ProbeInterval's default.
const DefaultProbeInterval = 30 * time.Second

// MaxSessions bounds AgentConfig.Sessions.
const MaxSessions = 16

// fastDeclines is how many declined dials in a row an agent makes at most
// a second apart (see keep).
const fastDeclines = 32

// stableSession is how long a session must last for the next reconnection
// to start again from BackoffMin.
const stableSession = 5 * time.Second

// AgentConfig configures an Agent.
type AgentConfig struct {
	// ID is the agent's identity (see ValidIdentity): the address callers
	// see and can target. Required.
	ID string
	// Token is the secret the agent proves it holds (a shared token, or its
	// own per-agent token); it never crosses the wire. At least
	// MinTokenLength characters. Token or TokenFile is required.
	Token string
	// TokenFile names a file whose first line (empty lines and # comments
	// skipped) is the token, read again at every connection, so a rotated
	// token is used without a restart. It wins over Token.
	TokenFile string
	// TLSConfig, if set, makes the agent connect over TLS. An empty
	// ServerName is filled with the gateway's host; add Certificates for
	// mutual TLS. A gateway certificate that cannot be verified
	// (InsecureSkipVerify, with a gateway that made its own, see
	// SelfSignedTLS) still gives a safe tunnel: the handshake is bound to
	// the TLS session, so a man in the middle without the token fails it.
	// Without TLS the handshake still never reveals the token, but the
	// session that follows is in clear.
	TLSConfig *tls.Config
	// HandshakeTimeout bounds connecting, TLS and the tunnel handshake;
	// DefaultHandshakeTimeout if zero.
	HandshakeTimeout time.Duration
	// KeepAliveInterval is the yamux keep-alive interval;
	// DefaultKeepAliveInterval if zero.
	KeepAliveInterval time.Duration
	// Sessions is how many sessions (TCP connections) the agent keeps to
	// each gateway, 1 to MaxSessions; 1 if zero. The gateway spreads the
	// streams to this agent over them: several sessions carry more calls
	// at once (parallel send and receive loops), at the cost of one
	// connection and one keep-alive each.
	Sessions int
	// MaxStreams bounds the streams (Kitex connections) a gateway may have
	// open at once on one session: a stream beyond it is closed at once and
	// logged. DefaultMaxStreams if zero.
	MaxStreams int
	// BackoffMin and BackoffMax bound the delay between reconnection
	// attempts, which grows 1.5 times per attempt from min to max, with jitter;
	// DefaultBackoffMin and DefaultBackoffMax if zero.
	BackoffMin, BackoffMax time.Duration
	// Dial opens the TCP connection to a gateway at a host:port address;
	// if nil, a net.Dialer, through Proxy if set.
	Dial func(ctx context.Context, network, address string) (net.Conn, error)
	// Proxy, if set, returns the HTTP proxy to reach a gateway through
	// (with CONNECT), or nil for a direct connection;
	// websocket.ProxyFromEnvironment is the usual one (HTTPS_PROXY,
	// NO_PROXY). For host:port gateways (a target of scheme "tcp", which
	// HTTPS_PROXY covers) and, unless WebSocket.Proxy is set, for URLs.
	Proxy func(target *url.URL) (*url.URL, error)
	// WebSocket configures the connections to gateways given as ws:// or
	// wss:// URLs (see SetGateways): TLSConfig verifies the certificate of
	// what terminates wss:// (an ingress; system roots if nil), Header adds
	// upgrade headers (an ingress's Authorization), Proxy a forward proxy.
	// Stream is always set: the session inside keeps itself alive with
	// yamux's keep-alive, every KeepAliveInterval, which proxies see as
	// data. TLSConfig above still runs inside, end to end to the gateway,
	// so that whatever terminates wss:// sees only ciphertext and the
	// handshake stays bound to the gateway's TLS session.
	WebSocket websocket.DialerConfig
	// ProbeInterval is how often the agent dials an address again to look
	// for gateways it does not hold, when no gateway there named its peers
	// (see Gateway.SetPeers), and the longest wait between such dials that
	// keep landing on gateways it holds already. DefaultProbeInterval if
	// zero.
	ProbeInterval time.Duration
	// Logger receives connection events; none if nil.
	Logger *slog.Logger
}

// AgentStats are counters for metrics.
type AgentStats struct {
	Sessions   int    // sessions to gateways now (Sessions per gateway)
	Reconnects uint64 // sessions established again after one was lost
	Failures   uint64 // connection or handshake attempts that failed
	Streams    uint64 // streams accepted (one per Kitex connection)
	Refused    uint64 // streams closed at once: MaxStreams were open
}

// Agent keeps a session to each of its gateways, reconnecting forever
// with backoff, and is the net.Listener of a Kitex server (through
// server.WithListener) for the streams those gateways open. Accept blocks
// while nothing arrives, never returns a transient error, and returns
// net.ErrClosed after Close.
type Agent struct {
	cfg      AgentConfig
	ymx      *yamux.Config
	log      *slog.Logger
	instance [instanceLen]byte // tells this agent from a restarted one with its identity

	streams   chan net.Conn
	leaving   chan struct{} // closed by Leave
	leaveOnce sync.Once
	done      chan struct{} // closed by Close
	once      sync.Once

	mu       sync.Mutex
	targets  map[string]*target // by address
	retired  []*target          // removed addresses whose sessions may still run
	gateways map[string]*held   // by gateway name
	wg       sync.WaitGroup

	sessions   atomic.Int64
	reconnects atomic.Uint64
	failures   atomic.Uint64
	accepted   atomic.Uint64
	refused    atomic.Uint64
}

// target is one address the agent was given (SetGateways), behind which
// may be one gateway or several (a shared Service, load balancer or
// ingress).
type target struct {
	addr       string
	cancel     context.CancelFunc
	done       chan struct{}
	retired    chan struct{} // closed when the address leaves the agent's list
	wake       chan struct{} // a session through it ended, or peers changed: look again
	peers      []string      // the gateways the last one reached through it named; under Agent.mu
	told       bool          // whether one named any
	lostFast   atomic.Bool   // a session through it ended before stableSession
	lost       atomic.Int64  // sessions through it lost and not yet established again
	lostStable atomic.Bool   // a session through it that had lasted stableSession ended
}

// held is a gateway the agent holds sessions to, by the gateway's name.
type held struct {
	addr  string                     // the address it was first reached at
	slots [MaxSessions]*agentSession // nil: free
}

func (h *held) count() int {
	n := 0
	for _, s := range h.slots {
		if s != nil {
			n++
		}
	}
	return n
}

// agentSession is one session to a gateway; sess is nil while its
// handshake runs.
type agentSession struct {
	addr, gateway string
	slot          int
	since         time.Time
	sess          *yamux.Session
	open          atomic.Int64 // streams accepted and not yet closed
}

var _ net.Listener = (*Agent)(nil)

// NewAgent returns an agent with no gateway; give it some with SetGateways.
func NewAgent(cfg AgentConfig) (*Agent, error) {
	if !ValidIdentity(cfg.ID) {
		return nil, fmt.Errorf("tunnel agent: invalid identity %q: use 1 to 128 letters, digits, '.', '_' or '-'", cfg.ID)
	}
	if cfg.TokenFile != "" {
		if _, err := readToken(cfg.TokenFile); err != nil {
			return nil, fmt.Errorf("tunnel agent: token file: %w", err)
		}
	} else if cfg.Token == "" {
		return nil, errors.New("tunnel agent: a token (Token or TokenFile) is required")
	} else if err := CheckToken(cfg.Token); err != nil {
		return nil, fmt.Errorf("tunnel agent: %w", err)
	}
	if cfg.HandshakeTimeout <= 0 {
		cfg.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if cfg.Sessions <= 0 {
		cfg.Sessions = 1
	}
	if cfg.Sessions > MaxSessions {
		return nil, fmt.Errorf("tunnel agent: %d sessions per gateway; at most %d", cfg.Sessions, MaxSessions)
	}
	if cfg.MaxStreams <= 0 {
		cfg.MaxStreams = DefaultMaxStreams
	}
	if cfg.BackoffMin <= 0 {
		cfg.BackoffMin = DefaultBackoffMin
	}
	if cfg.BackoffMax < cfg.BackoffMin {
		cfg.BackoffMax = max(DefaultBackoffMax, cfg.BackoffMin)
	}
	if cfg.ProbeInterval <= 0 {
		cfg.ProbeInterval = DefaultProbeInterval
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	a := &Agent{
		cfg:      cfg,
		ymx:      yamuxConfig(cfg.KeepAliveInterval),
		log:      log.With(slog.String("agent", cfg.ID)),
		streams:  make(chan net.Conn),
		leaving:  make(chan struct{}),
		done:     make(chan struct{}),
		targets:  make(map[string]*target),
		gateways: make(map[string]*held),
	}
	random(a.instance[:])
	if cfg.TLSConfig == nil {
		a.log.Warn("tunnel agent: plaintext tunnel: the handshake does not reveal the token, but anyone on the network path can read the calls and take over a session once it is open; use TLS")
	}
	return a, nil
}

// token returns the token to prove now.
func (a *Agent) token() (string, error) {
	if a.cfg.TokenFile == "" {
		return a.cfg.Token, nil
	}
	return readToken(a.cfg.TokenFile)
}

// SetGateways makes the agent keep sessions to the gateways at these
// addresses: host:port, or ws:// and wss:// URLs. Behind one address there
// may be several gateways (a shared Service or load balancer): the agent
// keeps dialing it until it holds sessions to every gateway it was told
// of (see Gateway.SetPeers). A new address is dialed; a removed one is not
// dialed again, but its sessions that still work are kept until they end
// (a gateway missing from discovery for a moment must not cut calls in
// flight).
func (a *Agent) SetGateways(addrs []string) {
	want := make(map[string]bool, len(addrs))
	for _, addr := range addrs {
		want[addr] = true
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closing() {
		return
	}
	a.retired = slices.DeleteFunc(a.retired, func(t *target) bool { return isClosed(t.done) })
	for addr, t := range a.targets {
		if !want[addr] {
			close(t.retired)
			delete(a.targets, addr)
			a.retired = append(a.retired, t)
			a.log.Info("tunnel agent: gateway removed; its sessions are kept until they end", slog.String("gateway", addr))
		}
	}
	for addr := range want {
		if _, ok := a.targets[addr]; ok {
			continue
		}
		ctx, cancel := context.WithCancel(context.Background())
		t := &target{addr: addr, cancel: cancel, done: make(chan struct{}), retired: make(chan struct{}), wake: make(chan struct{}, 1)}
		a.targets[addr] = t
		a.wg.Add(1)
		go a.keep(ctx, t)
	}
}

// Gateways returns the gateway addresses the agent keeps sessions to, sorted.
func (a *Agent) Gateways() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]string, 0, len(a.targets))
	for addr := range a.targets {
		out = append(out, addr)
	}
	sort.Strings(out)
	return out
}

// wants reports whether the agent should dial t again: it holds no session
// through t yet and no gateway there named itself; or a gateway named at t
// (or reached through it) has fewer than Sessions sessions. Called with
// a.mu held.
func (a *Agent) wants(t *target) bool {
	if !t.told {
		found := false
		for _, h := range a.gateways {
			if h.addr == t.addr {
				found = true
				if h.count() < a.cfg.Sessions {
					return true
				}
			}
		}
		return !found
	}
	for _, name := range t.peers {
		if other := a.targets[name]; other != nil && other != t {
			continue // named by its own address (discovery), which its own loop dials
		}
		if h := a.gateways[name]; h == nil || h.count() < a.cfg.Sessions {
			return true
		}
	}
	for _, h := range a.gateways {
		if h.addr == t.addr && h.count() < a.cfg.Sessions {
			return true
		}
	}
	return false
}

// choose picks the slot of a new session to gw, reached through t, and
// claims it; ok is false when the agent holds Sessions sessions to gw
// already, or is leaving. It learns gw's peers.
func (a *Agent) choose(t *target, gw gateway) (*agentSession, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.learn(t, gw)
	if a.closing() {
		return nil, false
	}
	h := a.gateways[gw.name]
	if h == nil {
		h = &held{addr: t.addr}
		a.gateways[gw.name] = h
	}
	for slot := 0; slot < a.cfg.Sessions; slot++ {
		if h.slots[slot] == nil {
			s := &agentSession{addr: t.addr, gateway: gw.name, slot: slot}
			h.slots[slot] = s
			return s, true
		}
	}
	return nil, false
}

// learn records the peers gw named, and wakes t if they changed. Called
// with a.mu held.
func (a *Agent) learn(t *target, gw gateway) {
	if len(gw.peers) == 0 || (t.told && slices.Equal(gw.peers, t.peers)) {
		return
	}
	t.peers, t.told = gw.peers, true
	poke(t.wake)
}

// release frees s's slot.
func (a *Agent) release(s *agentSession) {
	a.mu.Lock()
	defer a.mu.Unlock()
	h := a.gateways[s.gateway]
	if h == nil || h.slots[s.slot] != s {
		return
	}
	h.slots[s.slot] = nil
	if h.count() == 0 {
		delete(a.gateways, s.gateway)
	}
}

func poke(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// keep holds the agent's sessions through one address: it dials while a
// gateway there lacks sessions (see wants), serves each session it opens,
// and dials again after any loss, until ctx ends, the address is removed
// or the agent leaves.
func (a *Agent) keep(ctx context.Context, t *target) {
	defer a.wg.Done()
	defer close(t.done)
	var sessions sync.WaitGroup
	defer sessions.Wait()
	log := a.log.With(slog.String("gateway", t.addr))
	retry := backoff.New(a.cfg.BackoffMin, a.cfg.BackoffMax)
	probe := backoff.New(a.cfg.BackoffMin, a.cfg.ProbeInterval)
	// A balancer spreads connections at random: with k gateways behind
	// the address, landing on the one we lack takes k dials on average. So
	// the first declines in a row wait at most a second (a declined dial
	// costs a TLS handshake and a few bytes), the later ones back off to
	// ProbeInterval (a named gateway may not be behind this address at all).
	fast := backoff.New(a.cfg.BackoffMin, time.Second)
	declines := 0
	attempt, lastLog := 0, time.Time{}
	for a.alive(ctx, t) {
		if t.lostStable.Swap(false) {
			retry.Reset()
		}
		if t.lostFast.Swap(false) && !a.sleep(ctx, t, retry.Next()) {
			return
		}
		a.mu.Lock()
		want, told := a.wants(t), t.told
		a.mu.Unlock()
		if !want {
			// Everything named is held. Without names, probe now and then
			// for gateways behind the address that we do not know of.
			wait := a.cfg.ProbeInterval
			if told {
				wait = 24 * time.Hour
			}
			if !a.await(ctx, t, wait) {
				return
			}
			if !told {
				if !a.probe(ctx, t, log, &sessions) && !a.sleep(ctx, t, probe.Next()) {
					return
				}
			}
			continue
		}
		s, err := a.connect(ctx, t)
		switch {
		case err == nil:
			attempt, declines = 0, 0
			probe.Reset()
			fast.Reset()
			a.start(ctx, t, s, log, &sessions)
		case errors.Is(err, errDeclined):
			// We landed on a gateway we hold already: the one we lack is
			// elsewhere behind the address, or gone. Try again, less often,
			// or at once when the gateways' names change.
			declines++
			wait := fast.Next()
			if declines > fastDeclines {
				wait = probe.Next()
			}
			if !a.await(ctx, t, wait) {
				return
			}
		default:
			if ctx.Err() != nil {
				return
			}
			a.failures.Add(1)
			attempt++
			wait := retry.Next()
			// Log the first failure, then at most every 30 s, or whenever
			// the gateway refused us or failed to prove itself (a
			// configuration problem, or an impostor).
			if attempt == 1 || time.Since(lastLog) >= 30*time.Second || errors.Is(err, ErrRefused) || errors.Is(err, ErrGatewayUnauthenticated) {
				log.Warn("tunnel agent: cannot connect to gateway; retrying", slog.Int("attempt", attempt),
					slog.Duration("next_in", wait), slog.Any("error", err))
				lastLog = time.Now()
			}
			if !a.sleep(ctx, t, wait) {
				return
			}
		}
	}
}

// probe dials t once to look for a gateway the agent does not hold; it
// reports whether it found one.
func (a *Agent) probe(ctx context.Context, t *target, log *slog.Logger, sessions *sync.WaitGroup) bool {
	s, err := a.connect(ctx, t)
	if err != nil {
		return false
	}
	a.start(ctx, t, s, log, sessions)
	return true
}

// start serves a new session until it ends, then frees its slot and wakes
// its target's loop.
func (a *Agent) start(ctx context.Context, t *target, s *agentSession, log *slog.Logger, sessions *sync.WaitGroup) {
	log = log.With(slog.String("gateway_name", s.gateway))
	if a.cfg.Sessions > 1 {
		log = log.With(slog.Int("session", s.slot))
	}
	if lost := t.lost.Load(); lost > 0 && t.lost.CompareAndSwap(lost, lost-1) {
		a.reconnects.Add(1)
	}
	a.sessions.Add(1)
	log.Info("tunnel agent: connected to gateway")
	sessions.Add(1)
	go func() {
		defer sessions.Done()
		err := a.serve(ctx, t, s, log)
		a.sessions.Add(-1)
		a.release(s)
		if ctx.Err() != nil || a.closing() || isClosed(t.retired) {
			return
		}
		// Only a session that lasted lets the next dial go at once: one
		// that keeps ending at once (another agent with our identity
		// replacing us, a gateway that drops us) is retried ever more
		// slowly.
		if time.Since(s.since) < stableSession {
			t.lostFast.Store(true)
		} else {
			t.lostStable.Store(true)
		}
		t.lost.Add(1)
		log.Warn("tunnel agent: session to gateway lost; reconnecting", slog.Any("error", err))
		poke(t.wake)
	}()
}

// alive reports whether t's loop should go on.
func (a *Agent) alive(ctx context.Context, t *target) bool {
	return ctx.Err() == nil && !a.closing() && !isClosed(t.retired)
}

// closing reports whether the agent is leaving (or closed).
func (a *Agent) closing() bool { return isClosed(a.leaving) }

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// sleep waits d; it returns false if ctx ends, the agent leaves or the
// address is retired first.
func (a *Agent) sleep(ctx context.Context, t *target, d time.Duration) bool {
	return a.wait(ctx, t, d, nil)
}

// await is sleep that also ends, returning true, when t is woken.
func (a *Agent) await(ctx context.Context, t *target, d time.Duration) bool {
	return a.wait(ctx, t, d, t.wake)
}

func (a *Agent) wait(ctx context.Context, t *target, d time.Duration, wake <-chan struct{}) bool {
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-a.leaving:
		return false
	case <-t.retired:
		return false
	case <-wake: // nil: never
		return true
	case <-tm.C:
		return true
	}
}

// dial opens the connection a session runs on: TCP (through the proxy, if
// any) for host:port, a WebSocket stream for ws:// and wss:// URLs.
func (a *Agent) dial(ctx context.Context, addr string) (net.Conn, error) {
	if isURL(addr) {
		cfg := a.cfg.WebSocket
		cfg.Stream = true
		if cfg.Proxy == nil {
			cfg.Proxy = a.cfg.Proxy
		}
		return websocket.Dial(ctx, addr, cfg)
	}
	if a.cfg.Dial != nil {
		return a.cfg.Dial(ctx, "tcp", addr)
	}
	return proxy.Dial(ctx, &url.URL{Scheme: "tcp", Host: addr}, a.cfg.Proxy)
}

func isURL(addr string) bool {
	return strings.HasPrefix(addr, "ws://") || strings.HasPrefix(addr, "wss://")
}

// serverName is the TLS server name for a gateway address.
func serverName(addr string) string {
	if isURL(addr) {
		if u, err := url.Parse(addr); err == nil {
			return u.Hostname()
		}
	}
	host, _, _ := net.SplitHostPort(addr)
	return host
}

// connect dials t, runs the handshake and opens a session in the slot it
// chose; errDeclined if the gateway reached is one it holds already.
func (a *Agent) connect(ctx context.Context, t *target) (*agentSession, error) {
	ctx, cancel := context.WithTimeout(ctx, a.cfg.HandshakeTimeout)
	defer cancel()
	c, err := a.dial(ctx, t.addr)
	if err != nil {
		return nil, err
	}
	raw := c
	stop := context.AfterFunc(ctx, func() { _ = raw.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	if a.cfg.TLSConfig != nil {
		tc := a.cfg.TLSConfig.Clone()
		if tc.ServerName == "" {
			tc.ServerName = serverName(t.addr)
		}
		tlsConn := tls.Client(c, tc)
		if err := tlsConn.HandshakeContext(ctx); err != nil {
			_ = c.Close()
			return nil, fmt.Errorf("tls: %w", err)
		}
		c = tlsConn
	}
	var s *agentSession
	choose := func(gw gateway) (int, bool) {
		var ok bool
		s, ok = a.choose(t, gw)
		if !ok {
			return 0, false
		}
		return s.slot, true
	}
	token, err := a.token()
	if err == nil {
		_, _, err = agentHandshake(c, hello{id: a.cfg.ID, addr: t.addr}, token, a.instance, choose)
	}
	if err == nil && !stop() {
		err = ctx.Err()
	}
	var sess *yamux.Session
	if err == nil {
		_ = c.SetDeadline(time.Time{})
		bc := newBatchConn(c, a.ymx.ConnectionWriteTimeout)
		if sess, err = yamux.Server(bc, a.ymx); err != nil {
			_ = bc.Close()
		}
	}
	if err != nil {
		_ = c.Close()
		if s != nil {
			a.release(s)
		}
		return nil, err
	}
	a.mu.Lock()
	s.sess, s.since = sess, time.Now()
	a.mu.Unlock()
	return s, nil
}

// serve hands the session's streams to Accept until the session ends, and
// listens to what the gateway tells of its peers. Once the agent leaves,
// the session is drained: see Leave.
func (a *Agent) serve(ctx context.Context, t *target, s *agentSession, log *slog.Logger) error {
	sess := s.sess
	stop := context.AfterFunc(ctx, func() { _ = sess.Close() })
	defer stop()
	defer sess.Close()
	watch := a.watchPeers(t, s)
	ended := make(chan struct{})
	defer close(ended)
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		select {
		case <-a.leaving:
			if watch != nil {
				_ = watch.Close()
			}
			drain(sess, &s.open, ended)
		case <-ended:
		}
	}()
	for {
		st, err := sess.AcceptStream()
		if err != nil {
			return err
		}
		if n := s.open.Add(1); n > int64(a.cfg.MaxStreams) {
			s.open.Add(-1)
			_ = st.Close()
			a.refused.Add(1)
			log.Warn("tunnel agent: too many streams open on this session; stream closed",
				slog.Int("max_streams", a.cfg.MaxStreams))
			continue
		}
		c := &countedStream{Stream: st, open: &s.open}
		select {
		case a.streams <- c:
			a.accepted.Add(1)
		case <-a.done: // the listener is closed: nobody will serve it
			_ = c.Close()
		case <-ctx.Done():
			_ = c.Close()
			return ctx.Err()
		}
	}
}

// maxPeersMessage bounds a message of the watch stream: a name and
// maxPeers peers of 255 bytes each, with their lengths.
const maxPeersMessage = 256 * (maxPeers + 1)

// watchPeers opens the watch stream on s (see the gateway's watchStreams)
// and reads the gateway's peers from it until the session ends; it returns
// the stream, or nil if it could not be opened.
func (a *Agent) watchPeers(t *target, s *agentSession) *yamux.Stream {
	st, err := s.sess.OpenStream()
	if err != nil {
		return nil
	}
	_ = st.SetWriteDeadline(time.Now().Add(a.cfg.HandshakeTimeout))
	if _, err := st.Write([]byte{noticeWatch}); err != nil {
		_ = st.Close()
		return nil
	}
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		defer st.Close()
		var n [2]byte
		for {
			if _, err := io.ReadFull(st, n[:]); err != nil {
				return
			}
			size := int(binary.BigEndian.Uint16(n[:]))
			if size > maxPeersMessage {
				return
			}
			gw, err := readGateway(io.LimitReader(st, int64(size)))
			if err != nil {
				return
			}
			a.mu.Lock()
			a.learn(t, gw)
			a.mu.Unlock()
		}
	}()
	return st
}

// countedStream is a stream that counts itself out of its session's open
// streams when it is closed (the agent's accepted ones, the gateway's
// opened ones).
//
// It also gathers a Kitex message that is written in pieces into one
// stream write, so one yamux frame: Kitex's gonet transport writes a
// message as a list of buffers, one Write each (with TTHeader and a
// payload of 4 KiB or more, the header in one and the Thrift payload in
// another), and each Write is a frame that yamux hands to its send loop
// and the peer's receive loop hands to the reader: a round of goroutine
// hand-offs per piece. A write that starts a message of Kitex's framings
// (TTHeader or Framed strict binary Thrift: a 4-byte length, then the
// TTHeader magic or the binary version) without holding all of it is
// kept, with the writes after it, until the message is complete. Anything
// else is written at once; what is kept is written before a write that
// does not continue it, and before a Read or Close, so that a peer that
// is answered never waits for it. A message complete and being written
// (which may wait for the peer's window) holds up neither: Close ends that
// write, as it ends any, and a Read waits for the peer only.
type countedStream struct {
	*yamux.Stream
	open *atomic.Int64
	once sync.Once

	wmu     sync.Mutex  // held by Write, and by Read or Close while they write what was gathered
	pend    *[]byte     // the message gathered so far, from gatherPool; under wmu
	left    int         // bytes of it still to come; under wmu
	pending atomic.Bool // pend != nil, for Read and Close
}

// maxGather bounds the messages a countedStream gathers: a frame saved is
// worth a few microseconds, the copy of a larger message more.
const maxGather = 64 << 10

// gatherPool holds the buffers messages are gathered in.
var gatherPool = sync.Pool{New: func() any { return new([]byte) }}

// Write writes p to the stream, or gathers it (see countedStream).
func (c *countedStream) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.pend != nil {
		if len(p) <= c.left {
			*c.pend = append(*c.pend, p...)
			c.left -= len(p)
			if c.left > 0 {
				return len(p), nil
			}
			if err := c.flushLocked(); err != nil {
				return 0, err
			}
			return len(p), nil
		}
		if err := c.flushLocked(); err != nil { // not a continuation after all
			return 0, err
		}
	}
	if n, ok := messageStart(p); ok && len(p) < n {
		c.pend = gatherPool.Get().(*[]byte)
		*c.pend = append((*c.pend)[:0], p...)
		c.left = n - len(p)
		c.pending.Store(true)
		return len(p), nil
	}
	return c.write(p)
}

// messageStart reports whether p starts a Kitex message (TTHeader, or
// Framed strict binary Thrift) of at most maxGather bytes, and its size.
func messageStart(p []byte) (int, bool) {
	if len(p) < 6 {
		return 0, false
	}
	n := int(binary.BigEndian.Uint32(p)) + 4
	magic := binary.BigEndian.Uint16(p[4:])
	return n, n <= maxGather && (magic == 0x1000 || magic == 0x8001)
}

// flushLocked writes what was gathered. Called with wmu held; pending is
// false before the write starts, so that a Read or Close does not wait
// for it.
func (c *countedStream) flushLocked() error {
	if c.pend == nil {
		return nil
	}
	pend := c.pend
	c.pend, c.left = nil, 0
	c.pending.Store(false)
	_, err := c.write(*pend)
	gatherPool.Put(pend)
	return err
}

// flush writes what was gathered, if anything, unless a Write is under way
// (it holds wmu only to add to the message, or while it writes the message
// it completed, which may wait for the peer's window: a Read or Close must
// not wait for that).
func (c *countedStream) flush() error {
	if !c.pending.Load() || !c.wmu.TryLock() {
		return nil
	}
	defer c.wmu.Unlock()
	return c.flushLocked()
}

// write writes p to the stream.
func (c *countedStream) write(p []byte) (int, error) { return c.Stream.Write(p) }

// Read writes what was gathered first (a message shorter than it said it
// was), then reads.
func (c *countedStream) Read(p []byte) (int, error) {
	if err := c.flush(); err != nil {
		return 0, err
	}
	return c.Stream.Read(p)
}

// Close writes what was gathered, then closes the stream.
func (c *countedStream) Close() error {
	_ = c.flush()
	c.once.Do(func() { c.open.Add(-1) })
	return c.Stream.Close()
}

// maxDrain bounds how long a leaving agent keeps a session for its streams.
const maxDrain = 30 * time.Second

// drain tells the gateway to open no more streams (GoAway), then closes the
// session once the streams it accepted (open) are closed (their owner, the
// Kitex server, closes them when its calls are done), or after maxDrain.
func drain(sess *yamux.Session, open *atomic.Int64, ended <-chan struct{}) {
	_ = sess.GoAway()
	notifyLeaving(sess)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	limit := time.NewTimer(maxDrain)
	defer limit.Stop()
	for open.Load() > 0 {
		select {
		case <-ended:
			return
		case <-limit.C:
			_ = sess.Close()
			return
		case <-tick.C:
		}
	}
	_ = sess.Close()
}

// notifyLeaving tells the gateway on a stream of our own that this agent is
// leaving, so that it stops reusing the streams it has pooled (see the
// gateway's watchNotices). Best effort: a gateway that misses it still sees
// the GoAway at its next stream open.
func notifyLeaving(sess *yamux.Session) {
	st, err := sess.OpenStream()
	if err != nil {
		return
	}
	_ = st.SetWriteDeadline(time.Now().Add(time.Second))
	_, _ = st.Write([]byte{noticeLeaving})
	_ = st.Close()
}

// Accept waits for the next stream a gateway opens.
func (a *Agent) Accept() (net.Conn, error) {
	select {
	case c := <-a.streams:
		return c, nil
	case <-a.done:
		return nil, net.ErrClosed
	}
}

// Leave makes the agent leave its gateways gracefully: each is told to open
// no more streams (so callers go to other agents at once), no gateway is
// dialed again, and each session closes when its last stream does (at most
// 30 s later). Accept keeps serving streams already on their way. Leave
// does not wait; it is safe to call more than once.
func (a *Agent) Leave() {
	a.leaveOnce.Do(func() {
		a.mu.Lock()
		close(a.leaving)
		a.mu.Unlock()
	})
}

// Close leaves (see Leave) and stops accepting: Accept returns
// net.ErrClosed. It does not wait for the sessions to end; it is safe to
// call more than once.
func (a *Agent) Close() error {
	a.Leave()
	a.once.Do(func() { close(a.done) })
	return nil
}

// Shutdown closes the agent and waits until every session has ended or ctx ends.
func (a *Agent) Shutdown(ctx context.Context) error {
	_ = a.Close()
	waited := make(chan struct{})
	go func() { a.wg.Wait(); close(waited) }()
	select {
	case <-waited:
		return nil
	case <-ctx.Done():
		a.mu.Lock()
		for addr, t := range a.targets {
			t.cancel()
			delete(a.targets, addr)
		}
		for _, t := range a.retired {
			t.cancel()
		}
		a.retired = nil
		a.mu.Unlock()
		<-waited
		return ctx.Err()
	}
}

// Addr returns the agent's identity as an address of network "yamux".
func (a *Agent) Addr() net.Addr { return connadapt.Addr{Net: Network, Address: a.cfg.ID} }

// GatewaySession describes one of the agent's sessions, for an inventory.
type GatewaySession struct {
	// Gateway is the name the gateway gave itself (GatewayConfig.Name).
	Gateway string `json:"gateway"`
	// Address is the address it was reached at (SetGateways).
	Address string `json:"address"`
	// Slot is the session's slot (see AgentConfig.Sessions).
	Slot int `json:"slot"`
	// ConnectedSince is when the session was opened.
	ConnectedSince time.Time `json:"connected_since"`
	// Streams is the number of streams (Kitex connections) open on it now.
	Streams int `json:"streams"`
}

// GatewaySessions returns the agent's sessions now, sorted by gateway,
// then slot.
func (a *Agent) GatewaySessions() []GatewaySession {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []GatewaySession
	for name, h := range a.gateways {
		for _, s := range h.slots {
			if s != nil && s.sess != nil {
				out = append(out, GatewaySession{Gateway: name, Address: s.addr, Slot: s.slot, ConnectedSince: s.since, Streams: int(s.open.Load())})
			}
		}
	}
	slices.SortFunc(out, func(x, y GatewaySession) int {
		if c := strings.Compare(x.Gateway, y.Gateway); c != 0 {
			return c
		}
		return x.Slot - y.Slot
	})
	return out
}

// Stats returns the agent's counters.
func (a *Agent) Stats() AgentStats {
	return AgentStats{
		Sessions:   int(a.sessions.Load()),
		Reconnects: a.reconnects.Load(),
		Failures:   a.failures.Load(),
		Streams:    a.accepted.Load(),
		Refused:    a.refused.Load(),
	}
}
