package websocket

import (
	"context"
	"errors"
	"math/rand/v2"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/anyconn/kitex-anyconn/transport/internal/peek"
)

// Defaults of DialerConfig's keep-alive.
const (
	// DefaultPingInterval is well under the shortest idle timeout of common
	// proxies and load balancers (30 s).
	DefaultPingInterval = 20 * time.Second
	// DefaultPongTimeout is how long a pong may take.
	DefaultPongTimeout = 10 * time.Second
)

// staleAfter is how long a connection must have been idle for the first
// write of a call to look into the socket first (and dial again if the
// peer has closed it): idle timeouts of proxies cut idle connections.
const staleAfter = time.Second

// pendingWait bounds the reading of frames that arrived while the
// connection was idle (a pong, a ping, a close): they are there already.
const pendingWait = 50 * time.Millisecond

// health is the client side's watch over one pooled connection: the
// pings, the maximum age and the check before reuse. Kitex's pool asks
// IsActive before it hands a connection to a call.
type health struct {
	c        *Conn
	lean     *leanFrames
	raw      net.Conn // the TCP connection (under TLS with wss://)
	redial   func(context.Context) (frames, net.Conn, error)
	interval time.Duration // 0: no pings
	pongWait time.Duration
	retireAt time.Time // zero: no maximum age

	// mu is held by Read, the pinger and a redial: whoever reads frames.
	mu      sync.Mutex
	inCall  atomic.Bool  // a request was written and its reply not read yet
	dead    atomic.Bool  // found closed, broken or silent
	lastUse atomic.Int64 // when the last call ended (Unix nanoseconds)
	pingAt  time.Time    // unanswered ping's time, under mu
	pongs   uint64       // pong count when it was sent, under mu
	timer   *time.Timer
	stopped atomic.Bool
}

func newHealth(c *Conn, lean *leanFrames, raw net.Conn, cfg DialerConfig, redial func(context.Context) (frames, net.Conn, error)) *health {
	h := &health{c: c, lean: lean, raw: raw, redial: redial, interval: cfg.PingInterval, pongWait: cfg.PongTimeout}
	switch {
	case h.interval == 0:
		h.interval = DefaultPingInterval
	case h.interval < 0:
		h.interval = 0
	}
	if h.pongWait <= 0 {
		h.pongWait = DefaultPongTimeout
	}
	if age := cfg.MaxConnectionAge; age > 0 {
		// ±10 %, so that connections made together are not retired together.
		age += time.Duration((rand.Float64()*0.2 - 0.1) * float64(age)) //nolint:gosec // jitter
		h.retireAt = time.Now().Add(age)
	}
	h.lastUse.Store(time.Now().UnixNano())
	if h.interval > 0 {
		h.timer = time.AfterFunc(time.Hour, h.tick)
		h.timer.Reset(h.interval) // after the assignment, which tick reads
	}
	return h
}

// active reports whether the connection may carry a call: not retired,
// not found dead, and with nothing but pings, pongs and close frames
// (handled here) waiting in its socket.
func (h *health) active() bool {
	if h.dead.Load() {
		return false
	}
	if h.inCall.Load() || !h.mu.TryLock() {
		return true // in use: the call finds out, and it is not retired under it
	}
	if !h.retireAt.IsZero() && time.Now().After(h.retireAt) {
		h.mu.Unlock()
		return false
	}
	defer h.mu.Unlock()
	return h.checkLocked()
}

// checkLocked reads what waits in the socket of an idle connection: a
// control frame is handled, end of stream or unexpected data make the
// connection dead. Called with mu held.
func (h *health) checkLocked() bool {
	defer h.lean.release()
	for !h.dead.Load() {
		if h.lean.buffered() == 0 {
			switch peek.Socket(h.raw) {
			case peek.Nothing, peek.Unknown:
				return true
			case peek.Gone:
				h.dead.Store(true)
				return false
			}
		}
		_ = h.lean.conn.SetReadDeadline(time.Now().Add(pendingWait))
		err := h.lean.peek(2) // a frame's first bytes, not consumed
		if err == nil {
			err = h.lean.nextFrame()
		} else if errors.Is(err, os.ErrDeadlineExceeded) {
			// What arrived was no frame, such as a TLS session ticket
			// (read and handled by crypto/tls): nothing to do.
			_ = h.lean.conn.SetReadDeadline(time.Time{})
			return true
		}
		_ = h.lean.conn.SetReadDeadline(time.Time{})
		if err != nil || h.lean.remain > 0 { // closed, or a reply that no call asked for
			h.dead.Store(true)
		}
	}
	return false
}

// startCall is called by the first write of a request. If the connection
// has been idle for staleAfter and its peer has closed it since, nothing of
// the request went out yet: it dials again in its place.
func (h *health) startCall() error {
	h.inCall.Store(true)
	if time.Since(time.Unix(0, h.lastUse.Load())) < staleAfter {
		return nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.checkLocked() {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), DefaultHandshakeTimeout)
	defer cancel()
	f, raw, err := h.redial(ctx)
	if err != nil {
		return err
	}
	// The dead connection is replaced under the same Conn, which Kitex's
	// pool holds: the call goes out on the fresh one. The old one is closed
	// without a close frame: its peer is gone.
	_ = h.raw.Close()
	h.c.f, h.lean, h.raw = f, f.(*leanFrames), raw
	h.dead.Store(false)
	h.pingAt = time.Time{}
	if h.timer != nil && !h.stopped.Load() {
		h.timer.Reset(h.interval) // tick stops re-arming once it finds the connection dead
	}
	return nil
}

// endRead is called after every read of a call's reply.
func (h *health) endRead() {
	if h.lean.messageDone() {
		h.inCall.Store(false)
		h.lastUse.Store(time.Now().UnixNano())
	}
}

// tick pings a connection idle for interval, and marks it dead when that
// ping got no pong within pongWait. A connection in use is left alone: its
// calls show whether it works.
func (h *health) tick() {
	if h.stopped.Load() || h.dead.Load() {
		return
	}
	next := h.interval
	if !h.inCall.Load() && h.mu.TryLock() {
		next = h.pingLocked()
		h.mu.Unlock()
	}
	if !h.stopped.Load() && !h.dead.Load() {
		h.timer.Reset(next)
	}
}

// pingLocked does tick's work with mu held and returns when to tick next.
func (h *health) pingLocked() time.Duration {
	if !h.checkLocked() { // reads the pong, if it came
		return 0
	}
	now := time.Now()
	if !h.pingAt.IsZero() {
		if h.lean.pongs.Load() != h.pongs {
			h.pingAt = time.Time{} // answered
		} else if waited := now.Sub(h.pingAt); waited < h.pongWait {
			return min(h.pongWait-waited, h.interval)
		} else {
			h.dead.Store(true) // no pong: the pool drops it, unused
			return 0
		}
	}
	idle := now.Sub(time.Unix(0, max(h.lastUse.Load(), h.lean.lastRead.Load())))
	if idle < h.interval {
		return h.interval - idle
	}
	h.pingAt, h.pongs = now, h.lean.pongs.Load()
	_ = h.lean.conn.SetWriteDeadline(now.Add(h.pongWait))
	err := h.lean.write(opPing, nil)
	_ = h.lean.conn.SetWriteDeadline(time.Time{})
	if err != nil {
		h.dead.Store(true)
		return 0
	}
	return min(h.interval, h.pongWait)
}

// stop ends the pings.
func (h *health) stop() {
	h.stopped.Store(true)
	if h.timer != nil {
		h.timer.Stop()
	}
}
