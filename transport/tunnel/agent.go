package tunnel

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/yamux"

	"github.com/anyconn/kitex-anyconn/transport/connadapt"
	"github.com/anyconn/kitex-anyconn/transport/internal/backoff"
)

// Defaults for the agent's reconnect backoff.
const (
	DefaultBackoffMin = 100 * time.Millisecond
	DefaultBackoffMax = 10 * time.Second
)

// DefaultMaxStreams bounds the streams open at once on one session.
const DefaultMaxStreams = 1024

// MaxSessions bounds AgentConfig.Sessions.
const MaxSessions = 16

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
	// attempts, which doubles from min to max with jitter;
	// DefaultBackoffMin and DefaultBackoffMax if zero.
	BackoffMin, BackoffMax time.Duration
	// Dial opens the TCP connection to a gateway; net.Dialer if nil.
	Dial func(ctx context.Context, network, address string) (net.Conn, error)
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

	mu      sync.Mutex
	peers   map[string]*peer
	retired []*peer // removed gateways whose session may still run
	wg      sync.WaitGroup

	sessions   atomic.Int64
	reconnects atomic.Uint64
	failures   atomic.Uint64
	accepted   atomic.Uint64
	refused    atomic.Uint64
}

type peer struct {
	cancel  context.CancelFunc
	done    chan struct{}
	retired chan struct{} // closed when the gateway leaves the agent's list
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
	if cfg.Dial == nil {
		var d net.Dialer
		cfg.Dial = d.DialContext
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	a := &Agent{
		cfg:     cfg,
		ymx:     yamuxConfig(cfg.KeepAliveInterval),
		log:     log.With(slog.String("agent", cfg.ID)),
		streams: make(chan net.Conn),
		leaving: make(chan struct{}),
		done:    make(chan struct{}),
		peers:   make(map[string]*peer),
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

// SetGateways makes the agent keep sessions to these gateway addresses: new
// ones are dialed; a removed one is not dialed again, but a session to it
// that still works is kept until it ends (a gateway missing from discovery
// for a moment must not cut calls in flight).
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
	a.retired = slices.DeleteFunc(a.retired, func(p *peer) bool { return isClosed(p.done) })
	for addr, p := range a.peers {
		if !want[addr] {
			close(p.retired)
			delete(a.peers, addr)
			a.retired = append(a.retired, p)
			a.log.Info("tunnel agent: gateway removed; its session is kept until it ends", slog.String("gateway", addr))
		}
	}
	for addr := range want {
		if _, ok := a.peers[addr]; ok {
			continue
		}
		ctx, cancel := context.WithCancel(context.Background())
		p := &peer{cancel: cancel, done: make(chan struct{}), retired: make(chan struct{})}
		a.peers[addr] = p
		a.wg.Add(1)
		go a.keepAll(ctx, addr, p)
	}
}

// Gateways returns the gateway addresses the agent keeps sessions to, sorted.
func (a *Agent) Gateways() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]string, 0, len(a.peers))
	for addr := range a.peers {
		out = append(out, addr)
	}
	sort.Strings(out)
	return out
}

// keepAll keeps the agent's sessions to one gateway, one loop per slot.
func (a *Agent) keepAll(ctx context.Context, addr string, p *peer) {
	defer a.wg.Done()
	defer close(p.done)
	var wg sync.WaitGroup
	for slot := 0; slot < a.cfg.Sessions; slot++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			a.keep(ctx, addr, slot, p)
		}()
	}
	wg.Wait()
}

// keep connects one session slot to one gateway, serves its streams, and
// reconnects after any loss, until ctx ends or the agent closes.
func (a *Agent) keep(ctx context.Context, addr string, slot int, p *peer) {
	log := a.log.With(slog.String("gateway", addr))
	if a.cfg.Sessions > 1 {
		log = log.With(slog.Int("session", slot))
	}
	retry := backoff.New(a.cfg.BackoffMin, a.cfg.BackoffMax)
	attempt, everConnected := 0, false
	lastLog := time.Time{}
	for ctx.Err() == nil && !a.closing() && !isClosed(p.retired) {
		sess, err := a.connect(ctx, addr, slot)
		if err != nil {
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
			if !a.sleep(ctx, p, wait) {
				return
			}
			continue
		}
		if everConnected {
			a.reconnects.Add(1)
		}
		everConnected, attempt = true, 0
		a.sessions.Add(1)
		log.Info("tunnel agent: connected to gateway")
		began := time.Now()
		err = a.serve(ctx, sess, log)
		a.sessions.Add(-1)
		if ctx.Err() != nil || a.closing() || isClosed(p.retired) {
			return
		}
		// Only a session that lasted resets the backoff: one that keeps
		// ending at once (another agent with our identity replacing us, a
		// gateway that drops us) is retried ever more slowly.
		if time.Since(began) >= stableSession {
			retry.Reset()
		}
		wait := retry.Next()
		log.Warn("tunnel agent: session to gateway lost; reconnecting", slog.Any("error", err), slog.Duration("next_in", wait))
		if !a.sleep(ctx, p, wait) {
			return
		}
	}
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
// gateway is retired first.
func (a *Agent) sleep(ctx context.Context, p *peer, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-a.leaving:
		return false
	case <-p.retired:
		return false
	case <-t.C:
		return true
	}
}

func (a *Agent) connect(ctx context.Context, addr string, slot int) (*yamux.Session, error) {
	ctx, cancel := context.WithTimeout(ctx, a.cfg.HandshakeTimeout)
	defer cancel()
	c, err := a.cfg.Dial(ctx, "tcp", addr)
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
			tc.ServerName, _, _ = net.SplitHostPort(addr)
		}
		tlsConn := tls.Client(c, tc)
		if err := tlsConn.HandshakeContext(ctx); err != nil {
			_ = c.Close()
			return nil, fmt.Errorf("tls: %w", err)
		}
		c = tlsConn
	}
	token, err := a.token()
	if err == nil {
		err = agentHandshake(c, hello{id: a.cfg.ID, slot: slot, addr: addr}, token, a.instance)
	}
	if err != nil || !stop() {
		_ = c.Close()
		if err == nil {
			err = ctx.Err()
		}
		return nil, err
	}
	_ = c.SetDeadline(time.Time{})
	sess, err := yamux.Server(newBatchConn(c, a.ymx.ConnectionWriteTimeout), a.ymx)
	if err != nil {
		_ = c.Close()
		return nil, err
	}
	return sess, nil
}

// serve hands the session's streams to Accept until the session ends. Once
// the agent leaves, the session is drained: see Leave.
func (a *Agent) serve(ctx context.Context, sess *yamux.Session, log *slog.Logger) error {
	stop := context.AfterFunc(ctx, func() { _ = sess.Close() })
	defer stop()
	defer sess.Close()
	ended := make(chan struct{})
	defer close(ended)
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		select {
		case <-a.leaving:
			drain(sess, ended)
		case <-ended:
		}
	}()
	var open atomic.Int64 // streams accepted and not yet closed
	for {
		st, err := sess.AcceptStream()
		if err != nil {
			return err
		}
		if n := open.Add(1); n > int64(a.cfg.MaxStreams) {
			open.Add(-1)
			_ = st.Close()
			a.refused.Add(1)
			log.Warn("tunnel agent: too many streams open on this session; stream closed",
				slog.Int("max_streams", a.cfg.MaxStreams))
			continue
		}
		c := &countedStream{Stream: st, open: &open}
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

// countedStream is an accepted stream that counts itself out of its
// session's open streams when it is closed.
type countedStream struct {
	*yamux.Stream
	open *atomic.Int64
	once sync.Once
}

func (c *countedStream) Close() error {
	c.once.Do(func() { c.open.Add(-1) })
	return c.Stream.Close()
}

// maxDrain bounds how long a leaving agent keeps a session for its streams.
const maxDrain = 30 * time.Second

// drain tells the gateway to open no more streams (GoAway), then closes the
// session once its streams are closed (their owner, the Kitex server,
// closes them when its calls are done), or after maxDrain.
func drain(sess *yamux.Session, ended <-chan struct{}) {
	_ = sess.GoAway()
	notifyLeaving(sess)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	limit := time.NewTimer(maxDrain)
	defer limit.Stop()
	for sess.NumStreams() > 0 {
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
		for addr, p := range a.peers {
			p.cancel()
			delete(a.peers, addr)
		}
		for _, p := range a.retired {
			p.cancel()
		}
		a.retired = nil
		a.mu.Unlock()
		<-waited
		return ctx.Err()
	}
}

// Addr returns the agent's identity as an address of network "yamux".
func (a *Agent) Addr() net.Addr { return connadapt.Addr{Net: Network, Address: a.cfg.ID} }

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
