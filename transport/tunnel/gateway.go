package tunnel

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cloudwego/kitex/pkg/discovery"
	"github.com/cloudwego/kitex/pkg/loadbalance"
	"github.com/cloudwego/kitex/pkg/remote"
	"github.com/cloudwego/kitex/pkg/rpcinfo"
	"github.com/hashicorp/yamux"
	"go.uber.org/zap"

	"github.com/anyconn/kitex-anyconn/transport/connadapt"
)

// Defaults for GatewayConfig and AgentConfig.
const (
	DefaultHandshakeTimeout  = 10 * time.Second
	DefaultKeepAliveInterval = 10 * time.Second
	DefaultMaxHandshakes     = 128
)

// Network is the network name of agent instances in the Gateway's resolver.
const Network = "yamux"

// GatewayConfig configures a Gateway.
type GatewayConfig struct {
	// Token is the shared secret every agent must present. Required.
	Token string
	// TLSConfig, if set, makes agents connect over TLS; set ClientCAs and
	// ClientAuth = tls.RequireAndVerifyClientCert for mutual TLS.
	TLSConfig *tls.Config
	// HandshakeTimeout bounds an agent's TLS and tunnel handshake;
	// DefaultHandshakeTimeout if zero.
	HandshakeTimeout time.Duration
	// MaxHandshakes bounds the handshakes in progress at once; connections
	// beyond it are closed at once. DefaultMaxHandshakes if zero.
	MaxHandshakes int
	// KeepAliveInterval is the yamux keep-alive interval: a session whose
	// peer stops answering is closed after about this long.
	// DefaultKeepAliveInterval if zero.
	KeepAliveInterval time.Duration
	// Logger receives session events and refusals; none if nil.
	Logger *zap.Logger
}

// GatewayStats are counters for metrics.
type GatewayStats struct {
	Sessions          int    // sessions of the agents connected now
	SessionsAccepted  uint64 // handshakes accepted since start
	HandshakeFailures uint64 // connections refused or failed before a session
	StreamsOpened     uint64 // streams opened to agents (one per Kitex connection)
}

// Gateway accepts agents on a listener and lets a Kitex client call them.
// It keeps the yamux sessions of each agent identity by slot (one, unless
// the agent asks for more): an agent that reconnects with the same identity
// (and the token) replaces its previous session in that slot. Streams to an
// agent are spread over its sessions in turn.
type Gateway struct {
	cfg   GatewayConfig
	ln    net.Listener
	ymx   *yamux.Config
	log   *zap.Logger
	slots chan struct{}

	mu       sync.RWMutex
	sessions map[string][]slotSession // by identity, never empty
	ids      []string                 // sorted identities, for the balancer
	closed   bool

	leaving sync.Map // *yamux.Session → struct{}: the agent said it is leaving

	rr                atomic.Uint64 // balancer's rotation
	spread            atomic.Uint64 // rotation over an agent's sessions
	accepted          atomic.Uint64
	handshakeFailures atomic.Uint64
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
	if cfg.Token == "" {
		return nil, errors.New("tunnel gateway: a token is required")
	}
	if cfg.HandshakeTimeout <= 0 {
		cfg.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if cfg.MaxHandshakes <= 0 {
		cfg.MaxHandshakes = DefaultMaxHandshakes
	}
	log := cfg.Logger
	if log == nil {
		log = zap.NewNop()
	}
	g := &Gateway{
		cfg:      cfg,
		ln:       ln,
		ymx:      yamuxConfig(cfg.KeepAliveInterval),
		log:      log,
		slots:    make(chan struct{}, cfg.MaxHandshakes),
		sessions: make(map[string][]slotSession),
		done:     make(chan struct{}),
	}
	g.ctx, g.cancel = context.WithCancel(context.Background())
	g.wg.Add(1)
	go g.acceptLoop()
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

func (g *Gateway) acceptLoop() {
	defer g.wg.Done()
	var delay time.Duration
	for {
		c, err := g.ln.Accept()
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
			g.log.Warn("tunnel gateway: accept failed; retrying", zap.Error(err), zap.Duration("in", delay))
			select {
			case <-g.done:
				return
			case <-time.After(delay):
			}
			continue
		}
		delay = 0
		select {
		case g.slots <- struct{}{}:
		default:
			g.handshakeFailures.Add(1)
			g.log.Warn("tunnel gateway: too many handshakes in progress; connection closed",
				zap.String("peer", c.RemoteAddr().String()), zap.Int("max_handshakes", g.cfg.MaxHandshakes))
			_ = c.Close()
			continue
		}
		g.wg.Add(1)
		go g.serveConn(c)
	}
}

func (g *Gateway) serveConn(c net.Conn) {
	defer g.wg.Done()
	peer := c.RemoteAddr().String()
	// Close must not wait for a peer that is slow to finish its handshake.
	raw := c
	stop := context.AfterFunc(g.ctx, func() { _ = raw.SetDeadline(time.Unix(1, 0)) })
	c, h, err := g.handshake(c)
	stop()
	<-g.slots
	id := h.id
	if err != nil {
		g.handshakeFailures.Add(1)
		g.log.Warn("tunnel gateway: agent refused", zap.String("peer", peer), zap.String("agent", id), zap.Error(err))
		_ = c.Close()
		return
	}
	sess, err := yamux.Client(newBatchConn(c, g.ymx.ConnectionWriteTimeout), g.ymx)
	if err != nil {
		_ = c.Close()
		return
	}
	if !g.add(id, h.slot, sess) {
		_ = sess.Close()
		return
	}
	g.accepted.Add(1)
	log := g.log.With(zap.String("agent", id), zap.String("peer", peer), zap.Int("session", h.slot))
	log.Info("tunnel gateway: agent connected")
	g.wg.Add(1)
	go g.watchNotices(id, sess, log)
	select {
	case <-sess.CloseChan():
	case <-g.done:
		_ = sess.Close()
	}
	defer g.leaving.Delete(sess)
	if g.remove(id, sess) {
		log.Info("tunnel gateway: agent disconnected")
	}
}

// watchNotices reads the notices an agent sends on streams it opens itself
// (a gateway never gets streams otherwise). noticeLeaving: the agent is
// shutting down; it is no longer chosen, and its pooled streams stop being
// reused (IsActive turns false), so calls move to other agents at once
// while the ones in flight finish. yamux's own GoAway alone would only be
// seen at the next stream open, never by streams already pooled.
func (g *Gateway) watchNotices(id string, sess *yamux.Session, log *zap.Logger) {
	defer g.wg.Done()
	for {
		st, err := sess.AcceptStream()
		if err != nil {
			return
		}
		_ = st.SetReadDeadline(time.Now().Add(time.Second))
		var b [1]byte
		_, err = io.ReadFull(st, b[:])
		_ = st.Close()
		if err == nil && b[0] == noticeLeaving {
			g.leaving.Store(sess, struct{}{})
			if g.remove(id, sess) {
				log.Info("tunnel gateway: agent leaving; no longer chosen")
			}
		}
	}
}

// handshake authenticates the agent on c. It returns the connection the
// session runs on (c, or TLS over c) and the agent's hello.
func (g *Gateway) handshake(c net.Conn) (net.Conn, hello, error) {
	_ = c.SetDeadline(time.Now().Add(g.cfg.HandshakeTimeout))
	if g.cfg.TLSConfig != nil {
		tc := tls.Server(c, g.cfg.TLSConfig)
		ctx, cancel := context.WithTimeout(context.Background(), g.cfg.HandshakeTimeout)
		err := tc.HandshakeContext(ctx)
		cancel()
		if err != nil {
			return c, hello{}, fmt.Errorf("tls: %w", err)
		}
		c = tc
	}
	h, err := readHello(c)
	if err != nil {
		return c, hello{}, err
	}
	if !tokenEqual(h.token, g.cfg.Token) {
		_ = writeAnswer(c, statusRefused, "unauthorized")
		return c, hello{id: h.id}, errors.New("wrong or missing token")
	}
	if !ValidIdentity(h.id) {
		_ = writeAnswer(c, statusRefused, "invalid identity")
		return c, hello{}, fmt.Errorf("invalid identity %q", h.id)
	}
	if err := writeAnswer(c, statusAccepted, ""); err != nil {
		return c, h, err
	}
	return c, h, c.SetDeadline(time.Time{})
}

// slotSession is one of an agent's sessions.
type slotSession struct {
	slot int
	sess *yamux.Session
}

func (g *Gateway) add(id string, slot int, sess *yamux.Session) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return false
	}
	list, known := g.sessions[id]
	for i, s := range list {
		if s.slot == slot {
			g.log.Warn("tunnel gateway: an agent connected with an identity (and session slot) already in use; replacing the previous session (two agents sharing an identity keep replacing each other)",
				zap.String("agent", id), zap.Int("session", slot))
			_ = s.sess.Close()
			list = append(list[:i:i], list[i+1:]...)
			break
		}
	}
	if !known {
		g.ids = append(g.ids, id)
		sort.Strings(g.ids)
	}
	g.sessions[id] = append(list, slotSession{slot: slot, sess: sess})
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
	g.ids = append(g.ids[:j], g.ids[j+1:]...)
	return true
}

// Agents returns the identities of the agents connected now, sorted.
func (g *Gateway) Agents() []string {
	g.mu.RLock()
	defer g.mu.RUnlock()
	return append([]string(nil), g.ids...)
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
	g.mu.Unlock()
	err := g.ln.Close()
	g.wg.Wait()
	return err
}

// Open opens a stream to the agent named id. It fails at once with
// ErrUnknownAgent when no such agent is connected.
func (g *Gateway) Open(ctx context.Context, id string) (net.Conn, error) {
	g.mu.RLock()
	list := g.sessions[id]
	var sess *yamux.Session
	if len(list) > 0 {
		sess = list[g.spread.Add(1)%uint64(len(list))].sess
	}
	g.mu.RUnlock()
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
	return sessionStream{Stream: st, sess: sess, gw: g}, nil
}

// sessionStream is a stream that knows whether its session still lives, so
// that Kitex's pool drops pooled streams of a session that ended instead of
// failing a call on them.
type sessionStream struct {
	*yamux.Stream
	sess *yamux.Session
	gw   *Gateway
}

// IsActive reports whether the stream's session is still open and its agent
// is not leaving.
func (s sessionStream) IsActive() bool {
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
	ids := b.g.Agents()
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
