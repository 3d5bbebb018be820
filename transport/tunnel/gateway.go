package tunnel

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cloudwego/kitex/pkg/discovery"
	"github.com/cloudwego/kitex/pkg/loadbalance"
	"github.com/cloudwego/kitex/pkg/remote"
	"github.com/cloudwego/kitex/pkg/rpcinfo"
	"github.com/hashicorp/yamux"

	"github.com/anyconn/kitex-anyconn/transport/connadapt"
	"github.com/anyconn/kitex-anyconn/transport/internal/admit"
	"github.com/anyconn/kitex-anyconn/transport/internal/ratelog"
	"github.com/anyconn/kitex-anyconn/transport/websocket"
)

// Defaults for GatewayConfig and AgentConfig.
const (
	DefaultHandshakeTimeout  = 10 * time.Second
	DefaultKeepAliveInterval = 10 * time.Second
	DefaultMaxHandshakes     = 1024 // 1,000 agents back at once without a refusal (make bench-scale)
	// DefaultMaxHandshakesPerSource is GatewayConfig.MaxHandshakesPerSource's default.
	DefaultMaxHandshakesPerSource = 32
	DefaultReloadInterval         = 10 * time.Second
	DefaultRefusalLogInterval     = 10 * time.Second
	// livenessTimeout bounds the wait for a live session of an identity
	// that a newcomer with a shared token claims.
	livenessTimeout = time.Second
)

// Network is the network name of agent instances in the Gateway's resolver.
const Network = "yamux"

// GatewayConfig configures a Gateway. At least one of Token, TokenFile
// and AgentTokensFile is required.
type GatewayConfig struct {
	// Token is a shared secret: any agent that proves it holds it may
	// connect, under any identity that has no per-agent token. At least
	// MinTokenLength characters.
	Token string
	// TokenFile names a file of shared tokens, one per line (empty lines
	// and # comments skipped), all accepted besides Token: put the new
	// token next to the old one during a rotation. Re-read every
	// ReloadInterval.
	TokenFile string
	// AgentTokensFile names a file of per-agent tokens, one "identity
	// token" pair per line (an identity may have two during a rotation).
	// An identity listed there must prove one of its own tokens; the shared
	// ones no longer open it, and its token opens no other identity.
	// Re-read every ReloadInterval: the sessions of an identity whose token
	// was removed are closed.
	AgentTokensFile string
	// ReloadInterval is how often TokenFile and AgentTokensFile are checked
	// for changes; DefaultReloadInterval if zero. A file that no longer
	// parses is logged and the tokens already loaded stay in force.
	ReloadInterval time.Duration
	// Addresses, if set, are the addresses agents reach this gateway at
	// (as registered in discovery, and any shared address or ws:// and
	// wss:// URL in front of it): a handshake for another address, one
	// that an impostor relays from an address of its own, is refused.
	// URLs compare with their default ports filled in.
	Addresses []string
	// TLSConfig, if set, makes agents connect over TLS; set ClientCAs and
	// ClientAuth = tls.RequireAndVerifyClientCert for mutual TLS, where an
	// agent's identity must then be one its certificate allows: a DNS name
	// of the certificate ("*.domain" allows one label in front of domain),
	// or its common name if it has no DNS name. See SelfSignedTLS. Without
	// TLS the handshake still never reveals the token, but the session that
	// follows is in clear and can be taken over by whoever is on the path.
	TLSConfig *tls.Config
	// HandshakeTimeout bounds an agent's TLS and tunnel handshake;
	// DefaultHandshakeTimeout if zero.
	HandshakeTimeout time.Duration
	// MaxHandshakes bounds the handshakes in progress at once; connections
	// beyond it are closed at once. DefaultMaxHandshakes if zero.
	MaxHandshakes int
	// MaxHandshakesPerSource bounds the handshakes in progress from one IP
	// address, so that one client cannot take every slot;
	// DefaultMaxHandshakesPerSource if zero.
	MaxHandshakesPerSource int
	// KeepAliveInterval is the yamux keep-alive interval: a session whose
	// peer stops answering is closed after about this long.
	// DefaultKeepAliveInterval if zero.
	KeepAliveInterval time.Duration
	// Logger receives session events and refusals (refusals sampled: the
	// first of a kind, then one line per RefusalLogInterval with a
	// count); none if nil.
	Logger *slog.Logger
	// RefusalLogInterval is the interval of the refusal summaries;
	// DefaultRefusalLogInterval if zero.
	RefusalLogInterval time.Duration
	// Name is how the gateway names itself to agents, at most 255 bytes.
	// Agents that reach several gateways through one shared address (a
	// Service, a load balancer, an ingress) tell them apart by it, so each
	// gateway needs its own: its own address, or its pod's name. A random
	// one if empty.
	Name string
}

// GatewayStats are counters for metrics.
type GatewayStats struct {
	Sessions          int    // sessions of the agents connected now
	SessionsAccepted  uint64 // handshakes accepted since start
	HandshakeFailures uint64 // connections refused or failed before a session
	StreamsOpened     uint64 // streams opened to agents (one per Kitex connection)
	Declined          uint64 // handshakes an agent declined: it holds its sessions to this gateway already
}

// Gateway accepts agents on a listener and lets a Kitex client call them.
// It keeps the yamux sessions of each agent identity by slot (one, unless
// the agent asks for more): an agent that reconnects replaces its previous
// session in that slot. Streams to an agent are spread over its sessions in
// turn.
//
// One identity belongs to one agent at a time. A new agent instance (a
// restarted pod) takes an identity over at once when its credential is
// bound to the identity (a per-agent token, or a client certificate that
// names it); with only the shared token it takes over only if the agent
// holding the identity no longer answers a ping within a second, and is
// refused otherwise. Both peers' addresses are logged.
type Gateway struct {
	cfg   GatewayConfig
	ln    net.Listener
	ymx   *yamux.Config
	log   *slog.Logger
	rlog  *ratelog.Logger // refusals, sampled
	admit *admit.Limiter
	keys  atomic.Pointer[keyring]

	mu       sync.RWMutex
	sessions map[string][]slotSession // by identity, never empty
	ids      []string                 // sorted identities, for the balancer; replaced, never changed in place
	closed   bool

	leaving sync.Map // *yamux.Session → struct{}: the agent said it is leaving

	lns     []net.Listener // besides ln, from Serve; under mu
	peers   []string       // SetPeers's names, under mu
	peersCh chan struct{}  // closed and replaced when peers change, under mu

	rr                atomic.Uint64 // balancer's rotation
	spread            atomic.Uint64 // rotation over an agent's sessions
	accepted          atomic.Uint64
	handshakeFailures atomic.Uint64
	declined          atomic.Uint64
	streams           atomic.Uint64

	wg     sync.WaitGroup
	done   chan struct{}
	ctx    context.Context // ends with Close
	cancel context.CancelFunc
}

// Listen listens on the TCP address addr and serves agents on it.
func Listen(addr string, cfg GatewayConfig) (*Gateway, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("tunnel gateway: listen %s: %w", addr, err)
	}
	g, err := NewGateway(ln, cfg)
	if err != nil {
		_ = ln.Close()
	}
	return g, err
}

// NewGateway serves agents on ln, which it owns from then on.
func NewGateway(ln net.Listener, cfg GatewayConfig) (*Gateway, error) {
	keys, err := loadKeyring(cfg.Token, cfg.TokenFile, cfg.AgentTokensFile)
	if err != nil {
		return nil, fmt.Errorf("tunnel gateway: %w", err)
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
	if cfg.ReloadInterval <= 0 {
		cfg.ReloadInterval = DefaultReloadInterval
	}
	if cfg.RefusalLogInterval <= 0 {
		cfg.RefusalLogInterval = DefaultRefusalLogInterval
	}
	if len(cfg.Name) > 255 {
		return nil, fmt.Errorf("tunnel gateway: name longer than 255 bytes: %q", cfg.Name)
	}
	if cfg.Name == "" {
		var b [8]byte
		random(b[:])
		cfg.Name = fmt.Sprintf("gateway-%x", b)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.TLSConfig == nil {
		log.Warn("tunnel gateway: plaintext tunnel: the handshake does not reveal the token, but anyone on the network path can read the calls and take over a session once it is open; use TLS")
	}
	g := &Gateway{
		cfg:      cfg,
		ln:       ln,
		ymx:      yamuxConfig(cfg.KeepAliveInterval),
		log:      log,
		rlog:     ratelog.New(log, cfg.RefusalLogInterval),
		admit:    admit.New(cfg.MaxHandshakes, cfg.MaxHandshakesPerSource),
		sessions: make(map[string][]slotSession),
		peersCh:  make(chan struct{}),
		done:     make(chan struct{}),
	}
	g.keys.Store(keys)
	g.ctx, g.cancel = context.WithCancel(context.Background())
	g.wg.Add(1)
	go g.acceptLoop(ln)
	if cfg.TokenFile != "" || cfg.AgentTokensFile != "" {
		g.wg.Add(1)
		go g.reloadLoop()
	}
	return g, nil
}

func yamuxConfig(keepAlive time.Duration) *yamux.Config {
	c := yamux.DefaultConfig()
	if keepAlive <= 0 {
		keepAlive = DefaultKeepAliveInterval
	}
	c.EnableKeepAlive = true
	c.KeepAliveInterval = keepAlive
	c.ConnectionWriteTimeout = keepAlive
	c.StreamOpenTimeout = keepAlive
	c.MaxStreamWindowSize = 1 << 20
	c.AcceptBacklog = 1024
	c.LogOutput = nil
	c.Logger = discardLogger{}
	return c
}

type discardLogger struct{}

func (discardLogger) Print(...interface{})          {}
func (discardLogger) Printf(string, ...interface{}) {}
func (discardLogger) Println(...interface{})        {}

// Addr returns the address agents connect to.
func (g *Gateway) Addr() net.Addr { return g.ln.Addr() }

// Name returns the name the gateway gives itself (GatewayConfig.Name).
func (g *Gateway) Name() string { return g.cfg.Name }

// Serve serves agents on another listener as well, such as a
// websocket.Listener with Stream set, for agents that reach the gateway at
// a ws:// or wss:// URL. The gateway owns ln from then on, and closes it on
// Close. It does not block.
func (g *Gateway) Serve(ln net.Listener) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		_ = ln.Close()
		return net.ErrClosed
	}
	g.lns = append(g.lns, ln)
	g.wg.Add(1)
	go g.acceptLoop(ln)
	return nil
}

// SetPeers sets the names of every gateway that the agents should hold
// sessions to (this one included or not), as they know themselves
// (GatewayConfig.Name): the agents learn them in their handshakes and at
// every change, and an agent that reaches gateways through one shared
// address keeps dialing it until it holds sessions to each. At most 64
// are told, in order. Without SetPeers, agents probe a shared address
// every 30 s for gateways they do not hold yet.
func (g *Gateway) SetPeers(names []string) {
	names = slices.Clone(names)
	sort.Strings(names)
	names = slices.Compact(names)
	names = slices.DeleteFunc(names, func(n string) bool { return n == "" || len(n) > 255 })
	if len(names) > maxPeers {
		g.log.Warn("tunnel gateway: more peers than agents are told of; the first ones are told", slog.Int("peers", len(names)), slog.Int("told", maxPeers))
		names = names[:maxPeers]
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if slices.Equal(names, g.peers) {
		return
	}
	g.peers = names
	close(g.peersCh)
	g.peersCh = make(chan struct{})
}

// self returns how the gateway presents itself to agents now, and a
// channel closed at the next change of its peers.
func (g *Gateway) self() (gateway, <-chan struct{}) {
	g.mu.RLock()
	defer g.mu.RUnlock()
	return gateway{name: g.cfg.Name, peers: g.peers}, g.peersCh
}

func (g *Gateway) acceptLoop(ln net.Listener) {
	defer g.wg.Done()
	var delay time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			select {
			case <-g.done:
				return
			default:
			}
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// A transient error (out of file descriptors...): wait and go on.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			g.log.Warn("tunnel gateway: accept failed; retrying", slog.Any("error", err), slog.Duration("in", delay))
			select {
			case <-g.done:
				return
			case <-time.After(delay):
			}
			continue
		}
		delay = 0
		release, err := g.admit.Acquire(c.RemoteAddr())
		if err != nil {
			g.handshakeFailures.Add(1)
			g.rlog.Warn("busy:"+err.Error(), "tunnel gateway: connection closed: "+err.Error(),
				slog.String("peer", c.RemoteAddr().String()), slog.Int("max_handshakes", g.cfg.MaxHandshakes),
				slog.Int("max_handshakes_per_source", g.cfg.MaxHandshakesPerSource))
			_ = c.Close()
			continue
		}
		g.wg.Add(1)
		go g.serveConn(c, release)
	}
}

func (g *Gateway) serveConn(c net.Conn, release func()) {
	defer g.wg.Done()
	peer := c.RemoteAddr().String()
	// Close must not wait for a peer that is slow to finish its handshake.
	raw := c
	stop := context.AfterFunc(g.ctx, func() { _ = raw.SetDeadline(time.Unix(1, 0)) })
	c, a, err := g.handshake(c, peer)
	stop()
	release()
	if errors.Is(err, errDeclined) {
		g.declined.Add(1)
		g.log.Debug("tunnel gateway: the agent holds its sessions to this gateway already; connection closed", slog.String("peer", peer), slog.String("agent", a.id))
		_ = c.Close()
		return
	}
	if err != nil {
		g.handshakeFailures.Add(1)
		g.rlog.Warn("refused", "tunnel gateway: agent refused", slog.String("peer", peer), slog.String("agent", a.id), slog.Any("error", err))
		_ = c.Close()
		return
	}
	bc := newBatchConn(c, g.ymx.ConnectionWriteTimeout)
	sess, err := yamux.Client(bc, g.ymx)
	if err != nil {
		_ = bc.Close()
		return
	}
	s := slotSession{slot: a.slot, sess: sess, instance: a.instance, key: a.key, peer: peer, since: time.Now(), bound: a.bound, open: new(atomic.Int64)}
	if !g.add(a.id, s, a.bound) {
		_ = sess.Close()
		return
	}
	g.accepted.Add(1)
	log := g.log.With(slog.String("agent", a.id), slog.String("peer", peer), slog.Int("session", a.slot))
	log.Info("tunnel gateway: agent connected", slog.Bool("identity_bound", a.bound))
	g.wg.Add(1)
	go g.watchStreams(a.id, peer, sess, log)
	select {
	case <-sess.CloseChan():
	case <-g.done:
		_ = sess.Close()
	}
	defer g.leaving.Delete(sess)
	if g.remove(a.id, sess) {
		log.Info("tunnel gateway: agent disconnected")
	}
}

// watchStreams serves the streams an agent may open itself (a gateway
// never gets streams otherwise), each starting with one byte:
//   - noticeWatch, at most once, right after the handshake: the gateway
//     writes its peers on it now and at every change (SetPeers), so that an
//     agent behind a shared address learns of new gateways at once;
//   - noticeLeaving, at most once, when the agent is shutting down. It is
//     then no longer chosen, and its pooled streams stop being reused
//     (IsActive turns false), so calls move to other agents at once while
//     the ones in flight finish. yamux's own GoAway alone would only be
//     seen at the next stream open, never by streams already pooled.
//
// Any other stream, or a third one, closes the session: an agent that
// opens streams of its own is not one of ours, and its streams would hold
// the gateway's memory.
func (g *Gateway) watchStreams(id, peer string, sess *yamux.Session, log *slog.Logger) {
	defer g.wg.Done()
	seen := map[byte]bool{}
	for range 3 {
		st, err := sess.AcceptStream()
		if err != nil {
			return
		}
		_ = st.SetReadDeadline(time.Now().Add(time.Second))
		var b [1]byte
		_, err = io.ReadFull(st, b[:])
		_ = st.SetReadDeadline(time.Time{})
		if err != nil || seen[b[0]] || (b[0] != noticeLeaving && b[0] != noticeWatch) {
			_ = st.Close()
			break
		}
		seen[b[0]] = true
		if b[0] == noticeWatch {
			g.wg.Add(1)
			go g.tellPeers(st, sess)
			continue
		}
		_ = st.Close()
		g.leaving.Store(sess, struct{}{})
		if g.remove(id, sess) {
			log.Info("tunnel gateway: agent leaving; no longer chosen")
		}
	}
	g.refuseStreams(sess, id, peer)
}

// tellPeers writes the gateway's name and peers on an agent's watch
// stream, then again at every change, until the session ends.
func (g *Gateway) tellPeers(st *yamux.Stream, sess *yamux.Session) {
	defer g.wg.Done()
	defer st.Close()
	for {
		self, changed := g.self()
		msg := self.encode(make([]byte, 2, 64))
		binary.BigEndian.PutUint16(msg, uint16(len(msg)-2))
		_ = st.SetWriteDeadline(time.Now().Add(g.cfg.HandshakeTimeout))
		if _, err := st.Write(msg); err != nil {
			return
		}
		select {
		case <-changed:
		case <-sess.CloseChan():
			return
		case <-g.done:
			return
		}
	}
}

// refuseStreams closes the session of an agent that opened a stream it
// may not.
func (g *Gateway) refuseStreams(sess *yamux.Session, id, peer string) {
	if sess.IsClosed() {
		return
	}
	_ = sess.Close()
	g.rlog.Warn("streams", "tunnel gateway: the agent opened a stream other than its one leave notice; session closed",
		slog.String("agent", id), slog.String("peer", peer))
}

// admitted is what a successful handshake established.
type admitted struct {
	id       string
	slot     int
	instance [instanceLen]byte
	key      [sha256.Size]byte // digest of the token the agent proved
	bound    bool              // the credential names this identity
}

// handshake authenticates the agent on c. It returns the connection the
// session runs on (c, or TLS over c) and what the agent proved.
func (g *Gateway) handshake(c net.Conn, peer string) (net.Conn, admitted, error) {
	_ = c.SetDeadline(time.Now().Add(g.cfg.HandshakeTimeout))
	certBound := false
	if g.cfg.TLSConfig != nil {
		tc := tls.Server(c, g.cfg.TLSConfig)
		ctx, cancel := context.WithTimeout(context.Background(), g.cfg.HandshakeTimeout)
		err := tc.HandshakeContext(ctx)
		cancel()
		if err != nil {
			return c, admitted{}, fmt.Errorf("tls: %w", err)
		}
		c = tc
		certBound = len(tc.ConnectionState().VerifiedChains) > 0
	}
	h, err := readHello(c)
	if err != nil {
		var v versionError
		if errors.As(err, &v) {
			_ = writeAnswer(c, statusRefused, fmt.Sprintf("protocol version %d is not accepted: this gateway speaks version %d; upgrade the agent", v.version, protocolVersion))
		}
		return c, admitted{}, err
	}
	a := admitted{id: h.id}
	refuse := func(reason string, err error) (net.Conn, admitted, error) {
		_ = writeAnswer(c, statusRefused, reason)
		return c, a, err
	}
	if !ValidIdentity(h.id) {
		return refuse("invalid identity", fmt.Errorf("invalid identity %q", h.id))
	}
	if len(g.cfg.Addresses) > 0 && !slices.ContainsFunc(g.cfg.Addresses, func(a string) bool { return sameAddress(a, h.addr) }) {
		return refuse("this gateway is not at the address you dialed",
			fmt.Errorf("the agent dialed %q, which is not this gateway's (%s): a handshake relayed by another address", h.addr, strings.Join(g.cfg.Addresses, ", ")))
	}
	if certBound {
		leaf := c.(*tls.Conn).ConnectionState().PeerCertificates[0]
		if !certAllows(leaf, h.id) {
			return refuse("identity not allowed by your client certificate",
				fmt.Errorf("identity %q is not one its client certificate allows (DNS names %v, common name %q)", h.id, leaf.DNSNames, leaf.Subject.CommonName))
		}
	}
	keys := g.keys.Load().candidates(h.id)
	if len(keys) == 0 {
		return refuse("no token for this identity", fmt.Errorf("no token accepted for identity %q", h.id))
	}
	binding, err := channelBinding(c)
	if err != nil {
		return c, a, err
	}
	var ch challenge
	random(ch.nonce[:])
	ch.gateway, _ = g.self()
	t := transcript(h, ch, binding)
	for _, k := range keys {
		ch.macs = append(ch.macs, gatewayMAC(k.token, t))
	}
	if err := writeChallenge(c, ch); err != nil {
		return c, a, err
	}
	p, err := readProof(c)
	if err != nil {
		return c, a, err
	}
	a.slot = p.slot
	if p.index >= len(keys) {
		return refuse("unauthorized", errors.New("wrong token"))
	}
	k := keys[p.index]
	if want := agentMAC(k.token, t, p.index, p.slot, p.instance); !hmac.Equal(want[:], p.mac[:]) {
		return refuse("unauthorized", errors.New("wrong token"))
	}
	a.instance, a.key, a.bound = p.instance, k.digest, k.perAgent || certBound
	if !a.bound {
		if holder, busy := g.identityBusy(h.id, p.instance); busy {
			return refuse("identity in use by another live agent",
				fmt.Errorf("identity %q is held by a live agent at %s; a shared token does not take it over (give each agent its own identity, or a per-agent token or certificate)", h.id, holder))
		}
	}
	if err := writeAnswer(c, statusAccepted, ""); err != nil {
		return c, a, err
	}
	return c, a, c.SetDeadline(time.Time{})
}

// sameAddress reports whether two gateway addresses are the same: equal,
// or URLs equal once their default ports are filled in (wss://host/path is
// wss://host:443/path).
func sameAddress(a, b string) bool {
	if a == b {
		return true
	}
	if !isURL(a) || !isURL(b) {
		return false
	}
	ua, errA := websocket.Target(a, websocket.DialerConfig{Path: "/"})
	ub, errB := websocket.Target(b, websocket.DialerConfig{Path: "/"})
	return errA == nil && errB == nil && ua.String() == ub.String()
}

// identityBusy reports whether another instance than inst holds id with a
// session that answers a ping within livenessTimeout, and its address.
func (g *Gateway) identityBusy(id string, inst [instanceLen]byte) (string, bool) {
	g.mu.RLock()
	var others []slotSession
	for _, s := range g.sessions[id] {
		if s.instance != inst {
			others = append(others, s)
		}
	}
	g.mu.RUnlock()
	if len(others) == 0 {
		return "", false
	}
	answers := make(chan string, len(others)) // the peer, or "" if it did not answer
	for _, s := range others {
		g.wg.Add(1)
		go func() {
			defer g.wg.Done()
			if _, err := s.sess.Ping(); err != nil {
				answers <- ""
				return
			}
			answers <- s.peer
		}()
	}
	timeout := time.NewTimer(livenessTimeout)
	defer timeout.Stop()
	for range others {
		select {
		case peer := <-answers:
			if peer != "" {
				return peer, true
			}
		case <-timeout.C:
			return "", false
		}
	}
	return "", false
}

// slotSession is one of an agent's sessions.
type slotSession struct {
	slot     int
	sess     *yamux.Session
	instance [instanceLen]byte
	key      [sha256.Size]byte
	peer     string
	since    time.Time
	bound    bool
	open     *atomic.Int64 // streams opened on it (Open) and not yet closed
}

// add records s as a session of id. A session of the same instance in the
// same slot is replaced (a reconnection); the sessions of another instance
// are closed: the handshake let the newcomer in, because its credential is
// bound to the identity or because they no longer answered.
func (g *Gateway) add(id string, s slotSession, bound bool) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return false
	}
	list, known := g.sessions[id]
	kept := list[:0:0]
	for _, old := range list {
		switch {
		case old.instance != s.instance:
			g.log.Warn("tunnel gateway: identity taken over by another agent instance; the previous one's session is closed",
				slog.String("agent", id), slog.String("peer", s.peer), slog.String("previous_peer", old.peer),
				slog.Bool("identity_bound", bound))
			_ = old.sess.Close()
		case old.slot == s.slot:
			g.log.Info("tunnel gateway: agent reconnected a session slot; the previous session is closed",
				slog.String("agent", id), slog.String("peer", s.peer), slog.String("previous_peer", old.peer), slog.Int("session", s.slot))
			_ = old.sess.Close()
		default:
			kept = append(kept, old)
		}
	}
	if !known {
		j, _ := slices.BinarySearch(g.ids, id)
		g.ids = slices.Insert(slices.Clip(g.ids), j, id) // a new array: pickers hold the old one
	}
	g.sessions[id] = append(kept, s)
	return true
}

// remove forgets sess if it is still one of id's sessions, and reports
// whether it was.
func (g *Gateway) remove(id string, sess *yamux.Session) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	list := g.sessions[id]
	i := slices.IndexFunc(list, func(s slotSession) bool { return s.sess == sess })
	if i < 0 {
		return false
	}
	if len(list) > 1 {
		g.sessions[id] = append(list[:i:i], list[i+1:]...)
		return true
	}
	delete(g.sessions, id)
	j := sort.SearchStrings(g.ids, id)
	g.ids = slices.Concat(g.ids[:j], g.ids[j+1:]) // a new array: pickers hold the old one
	return true
}

// reloadLoop re-reads the token files every ReloadInterval and, when they
// changed, closes the sessions whose token is no longer accepted.
func (g *Gateway) reloadLoop() {
	defer g.wg.Done()
	tick := time.NewTicker(g.cfg.ReloadInterval)
	defer tick.Stop()
	var lastErr string
	for {
		select {
		case <-g.done:
			return
		case <-tick.C:
		}
		keys, err := loadKeyring(g.cfg.Token, g.cfg.TokenFile, g.cfg.AgentTokensFile)
		if err != nil {
			if err.Error() != lastErr {
				g.log.Error("tunnel gateway: cannot reload the tokens; the ones loaded before stay in force", slog.Any("error", err))
				lastErr = err.Error()
			}
			continue
		}
		lastErr = ""
		g.keys.Store(keys)
		g.revoke(keys)
	}
}

// revoke closes the sessions authenticated by a token keys no longer
// accepts for their identity.
func (g *Gateway) revoke(keys *keyring) {
	g.mu.RLock()
	defer g.mu.RUnlock()
	for id, list := range g.sessions {
		for _, s := range list {
			if !keys.valid(id, s.key) {
				g.log.Warn("tunnel gateway: the token of this session is no longer accepted; session closed",
					slog.String("agent", id), slog.String("peer", s.peer), slog.Int("session", s.slot))
				_ = s.sess.Close()
			}
		}
	}
}

// Agents returns the identities of the agents connected now, sorted.
func (g *Gateway) Agents() []string {
	g.mu.RLock()
	defer g.mu.RUnlock()
	return append([]string(nil), g.ids...)
}

// agentIDs returns the identities of the agents connected now, sorted,
// without a copy: the slice is never changed, only replaced.
func (g *Gateway) agentIDs() []string {
	g.mu.RLock()
	defer g.mu.RUnlock()
	return g.ids
}

// AgentInfo describes a connected agent, for an inventory.
type AgentInfo struct {
	// ID is the agent's identity.
	ID string `json:"id"`
	// Sessions are its sessions to this gateway, by slot.
	Sessions []SessionInfo `json:"sessions"`
	// Streams is the number of streams open to it now, over all sessions.
	Streams int `json:"streams"`
}

// SessionInfo describes one session of an agent.
type SessionInfo struct {
	// Slot is the session's slot (see AgentConfig.Sessions).
	Slot int `json:"slot"`
	// Remote is the address the session comes from (the agent's, or a
	// proxy's in front of it).
	Remote string `json:"remote"`
	// ConnectedSince is when the session was accepted.
	ConnectedSince time.Time `json:"connected_since"`
	// Streams is the number of streams open on it now.
	Streams int `json:"streams"`
	// IdentityBound tells whether the agent's credential names its
	// identity (a per-agent token or a client certificate).
	IdentityBound bool `json:"identity_bound"`
}

// AgentInfos returns the agents connected now with their sessions, sorted
// by identity, then slot.
func (g *Gateway) AgentInfos() []AgentInfo {
	g.mu.RLock()
	defer g.mu.RUnlock()
	out := make([]AgentInfo, 0, len(g.ids))
	for _, id := range g.ids {
		a := AgentInfo{ID: id}
		for _, s := range g.sessions[id] {
			n := int(s.open.Load())
			a.Streams += n
			a.Sessions = append(a.Sessions, SessionInfo{Slot: s.slot, Remote: s.peer, ConnectedSince: s.since, Streams: n, IdentityBound: s.bound})
		}
		slices.SortFunc(a.Sessions, func(x, y SessionInfo) int { return x.Slot - y.Slot })
		out = append(out, a)
	}
	return out
}

// Stats returns the gateway's counters.
func (g *Gateway) Stats() GatewayStats {
	g.mu.RLock()
	n := 0
	for _, list := range g.sessions {
		n += len(list)
	}
	g.mu.RUnlock()
	return GatewayStats{
		Sessions:          n,
		SessionsAccepted:  g.accepted.Load(),
		HandshakeFailures: g.handshakeFailures.Load(),
		StreamsOpened:     g.streams.Load(),
		Declined:          g.declined.Load(),
	}
}

// Close stops accepting agents and closes every session.
func (g *Gateway) Close() error {
	g.mu.Lock()
	if g.closed {
		g.mu.Unlock()
		return nil
	}
	g.closed = true
	close(g.done)
	g.cancel()
	lns := g.lns
	g.mu.Unlock()
	err := g.ln.Close()
	for _, ln := range lns {
		_ = ln.Close()
	}
	g.wg.Wait()
	g.rlog.Close()
	return err
}

// Open opens a stream to the agent named id. It fails at once with
// ErrUnknownAgent when no such agent is connected.
func (g *Gateway) Open(ctx context.Context, id string) (net.Conn, error) {
	g.mu.RLock()
	list := g.sessions[id]
	var chosen slotSession
	if len(list) > 0 {
		chosen = list[g.spread.Add(1)%uint64(len(list))]
	}
	g.mu.RUnlock()
	sess := chosen.sess
	if sess == nil {
		return nil, fmt.Errorf("%w: %q", ErrUnknownAgent, id)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	st, err := sess.OpenStream()
	if err != nil {
		if errors.Is(err, yamux.ErrRemoteGoAway) {
			// The agent is leaving: stop offering it to the balancer.
			g.remove(id, sess)
			return nil, fmt.Errorf("%w: %q is shutting down", ErrUnknownAgent, id)
		}
		if sess.IsClosed() {
			return nil, fmt.Errorf("%w: %q (its session just ended: %v)", ErrUnknownAgent, id, err)
		}
		return nil, fmt.Errorf("tunnel: open stream to %q: %w", id, err)
	}
	g.streams.Add(1)
	chosen.open.Add(1)
	return &sessionStream{countedStream: &countedStream{Stream: st, open: chosen.open}, sess: sess, gw: g}, nil
}

// sessionStream is a stream that knows whether its session still lives, so
// that Kitex's pool drops pooled streams of a session that ended instead of
// failing a call on them. It counts itself out of the session's open
// streams when it is closed.
type sessionStream struct {
	*countedStream
	sess *yamux.Session
	gw   *Gateway
}

// IsActive reports whether the stream's session is still open and its agent
// is not leaving.
func (s *sessionStream) IsActive() bool {
	if s.sess.IsClosed() {
		return false
	}
	_, leaving := s.gw.leaving.Load(s.sess)
	return !leaving
}

// Dialer returns the Kitex dialer (for client.WithDialer) that reaches an
// agent by its identity, the address Kitex dials.
func (g *Gateway) Dialer() remote.Dialer {
	return connadapt.Dialer{Dial: func(ctx context.Context, _, address string) (net.Conn, error) {
		return g.Open(ctx, address)
	}}
}

// Resolver returns a Kitex resolver listing every connected agent as an
// instance whose address is its identity. It ignores the service name: all
// agents of the gateway serve the one service its client calls.
func (g *Gateway) Resolver() discovery.Resolver { return gatewayResolver{g} }

type gatewayResolver struct{ g *Gateway }

func (r gatewayResolver) Target(_ context.Context, t rpcinfo.EndpointInfo) string {
	return t.ServiceName()
}

func (r gatewayResolver) Resolve(_ context.Context, desc string) (discovery.Result, error) {
	ids := r.g.Agents()
	res := discovery.Result{Cacheable: true, CacheKey: "tunnel:" + desc, Instances: make([]discovery.Instance, 0, len(ids))}
	for _, id := range ids {
		res.Instances = append(res.Instances, discovery.NewInstance(Network, id, discovery.DefaultWeight, nil))
	}
	return res, nil
}

func (r gatewayResolver) Diff(key string, prev, next discovery.Result) (discovery.Change, bool) {
	return discovery.DefaultDiff(key, prev, next)
}

func (r gatewayResolver) Name() string { return fmt.Sprintf("tunnel-gateway@%p", r.g) }

// Balancer returns a round-robin Kitex load balancer over the agents
// connected at the moment of each call, so an agent that disconnects is
// skipped at once and a new one is used at once, whatever the resolver's
// refresh interval.
func (g *Gateway) Balancer() loadbalance.Loadbalancer { return gatewayBalancer{g} }

type gatewayBalancer struct{ g *Gateway }

func (b gatewayBalancer) GetPicker(discovery.Result) loadbalance.Picker {
	ids := b.g.agentIDs() // per call: no copy of every agent's name
	return &picker{ids: ids, start: int(b.g.rr.Add(1) % uint64(max(1, len(ids))))}
}

func (b gatewayBalancer) Name() string { return fmt.Sprintf("tunnel-round-robin@%p", b.g) }

// picker offers each connected agent at most once per call, starting at a
// rotating position, then nil (Kitex then reports that no instance is left).
type picker struct {
	ids   []string
	start int
	n     int
}

func (p *picker) Next(context.Context, interface{}) discovery.Instance {
	if p.n >= len(p.ids) {
		return nil
	}
	id := p.ids[(p.start+p.n)%len(p.ids)]
	p.n++
	return discovery.NewInstance(Network, id, discovery.DefaultWeight, nil)
}
