package transport

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/cloudwego/kitex/pkg/remote"
	"github.com/cloudwego/netpoll"
)

// drainListener closes, ExitWaitTime after the listener is closed, every
// connection it accepted that is still open. Kitex's gonet server stops
// accepting and waits for its connections to end, but never closes one
// itself; without this a client's pooled connection would keep a stopped
// server's goroutines alive until the client gave up on it.
//
// Its connections also cap every read deadline at idle from now: Kitex's
// gonet server waits for the next request until max(2 min, its idle time).
//
// With maxConns set, a connection accepted while maxConns are open is
// closed at once and reported to refused. (Kitex's own connection limiter
// counts such a connection for ever on its gonet server, which never tells
// it that the connection it refused is gone.)
type drainListener struct {
	net.Listener
	grace    time.Duration
	idle     time.Duration
	maxConns int
	refused  func()
	write    time.Duration // each Write's deadline from its start; none if zero

	mu     sync.Mutex
	conns  map[*drainConn]struct{}
	closed bool
}

func newDrainListener(ln net.Listener, grace, idle time.Duration) *drainListener {
	return &drainListener{Listener: ln, grace: grace, idle: idle, conns: make(map[*drainConn]struct{})}
}

func (l *drainListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		dc := &drainConn{Conn: c, l: l}
		l.mu.Lock()
		if l.closed {
			l.mu.Unlock()
			_ = c.Close()
			return nil, net.ErrClosed
		}
		if l.maxConns > 0 && len(l.conns) >= l.maxConns {
			l.mu.Unlock()
			_ = c.Close()
			l.refused()
			continue
		}
		l.conns[dc] = struct{}{}
		l.mu.Unlock()
		return dc, nil
	}
}

func (l *drainListener) Close() error {
	err := l.Listener.Close()
	l.mu.Lock()
	first := !l.closed
	l.closed = true
	l.mu.Unlock()
	if first {
		time.AfterFunc(l.grace, l.closeAll)
	}
	return err
}

func (l *drainListener) closeAll() {
	l.mu.Lock()
	conns := make([]*drainConn, 0, len(l.conns))
	for c := range l.conns {
		conns = append(conns, c)
	}
	l.mu.Unlock()
	for _, c := range conns {
		_ = c.Close()
	}
}

type drainConn struct {
	net.Conn
	l    *drainListener
	once sync.Once
}

// SetReadDeadline sets t, or idle from now if t is later.
func (c *drainConn) SetReadDeadline(t time.Time) error {
	if limit := time.Now().Add(c.l.idle); !t.IsZero() && t.After(limit) {
		t = limit
	}
	return c.Conn.SetReadDeadline(t)
}

// Write writes p within the listener's write timeout: a peer that does
// not read its replies fails the write, and Kitex closes the connection
// and frees what it held.
func (c *drainConn) Write(p []byte) (int, error) {
	if c.l.write > 0 {
		_ = c.Conn.SetWriteDeadline(time.Now().Add(c.l.write))
	}
	return c.Conn.Write(p)
}

func (c *drainConn) Close() error {
	err := net.ErrClosed
	c.once.Do(func() {
		c.l.mu.Lock()
		delete(c.l.conns, c)
		c.l.mu.Unlock()
		err = c.Conn.Close()
	})
	return err
}

// netpollDrain does for netpoll what drainListener does for gonet. netpoll
// accepts on the listener's file descriptor itself, so connections are
// tracked through Kitex's inbound handler chain, and the listener (which
// netpoll uses as is, because it has Fd) only tells when the server stops.
//
// It also closes connections that received nothing for idle: netpoll's own
// "idle timeout" is only the TCP keep-alive period. A sweep runs every
// idle/4 while connections are open, and not at all otherwise.
//
// With maxConns set, a connection opened while maxConns are open is closed
// at once and reported to refused, as drainListener does.
//
// With maxUnread set, it bounds what a connection has sent that the server
// has not read yet. netpoll reads a socket as soon as it is readable, into
// a buffer without limit, whatever the handler is doing: a client that
// pipelines requests and does not read the replies (so that a reply's
// write blocks) had the server buffer all it sent, 1 GiB in under a second
// on loopback. The other transports read a request only when the last
// reply is written. So while a connection is busy (a request read within
// the last write timeout, or unread bytes), a watch checks every
// unreadEvery how much each connection holds unread, and closes one that
// holds more than maxUnread.
type netpollDrain struct {
	grace     time.Duration
	idle      time.Duration
	write     time.Duration // netpoll's write timeout of each connection; none if zero
	maxConns  int           // none if zero
	maxUnread int           // bytes a connection may hold unread; none if zero
	refused   func()
	overread  func(peer net.Addr, unread int)
	log       *slog.Logger
	mu        sync.Mutex
	conns     map[net.Conn]*atomic.Int64 // last read, in Unix nanoseconds
	sweep     *time.Timer                // nil while no sweep is scheduled
	watch     *time.Timer                // the unread watch; nil while stopped
	watching  atomic.Bool                // watch != nil, for OnRead without the lock
	once      sync.Once
}

// unreadEvery is how often the unread bytes of busy netpoll connections are
// checked. Between two checks, a client can send what the network carries in
// that time (about 25 MiB on loopback) beyond maxUnread.
const unreadEvery = 20 * time.Millisecond

// errOverMaxConnections refuses a connection over MaxConnections. It wraps
// netpoll's ErrConnClosed so that Kitex closes the connection without an
// error line of its own for each: refusals are logged sampled, by refused.
var errOverMaxConnections = fmt.Errorf("transport: MaxConnections are open: %w", netpoll.ErrConnClosed)

func (d *netpollDrain) OnActive(ctx context.Context, conn net.Conn) (context.Context, error) {
	last := new(atomic.Int64)
	last.Store(time.Now().UnixNano())
	d.mu.Lock()
	if d.maxConns > 0 && len(d.conns) >= d.maxConns {
		d.mu.Unlock()
		d.refused()
		return ctx, errOverMaxConnections
	}
	d.conns[conn] = last
	if d.sweep == nil {
		d.sweep = time.AfterFunc(d.idle/4, d.closeIdle)
	}
	d.mu.Unlock()
	if nc, ok := conn.(interface{ SetWriteTimeout(time.Duration) error }); ok && d.write > 0 {
		_ = nc.SetWriteTimeout(d.write)
	}
	return context.WithValue(ctx, lastReadKey{}, last), nil
}

// lastReadKey holds, in a connection's context, its last read time.
type lastReadKey struct{}

func (d *netpollDrain) OnInactive(ctx context.Context, conn net.Conn) context.Context {
	d.mu.Lock()
	delete(d.conns, conn)
	d.mu.Unlock()
	return ctx
}

func (d *netpollDrain) OnRead(ctx context.Context, _ net.Conn) (context.Context, error) {
	if last, ok := ctx.Value(lastReadKey{}).(*atomic.Int64); ok {
		last.Store(time.Now().UnixNano())
	}
	if d.maxUnread > 0 && !d.watching.Load() {
		d.mu.Lock()
		if d.watch == nil {
			d.watching.Store(true)
			d.watch = time.AfterFunc(unreadEvery, d.checkUnread)
		}
		d.mu.Unlock()
	}
	return ctx, nil
}

// busyFor is how long after its last read a connection is watched even
// with nothing unread: its reply may still be blocked in a write (up to the
// write timeout), while netpoll keeps reading what it is sent.
func (d *netpollDrain) busyFor() time.Duration {
	if d.write > 0 {
		return d.write + time.Second
	}
	return d.idle
}

// checkUnread closes the connections that hold more than maxUnread bytes
// unread, and checks again after unreadEvery while a connection is busy.
func (d *netpollDrain) checkUnread() {
	busySince := time.Now().Add(-d.busyFor()).UnixNano()
	busy := func(c net.Conn, last *atomic.Int64) bool { return last.Load() >= busySince || unread(c) > 0 }
	var over []net.Conn
	d.mu.Lock()
	keep := false
	for c, last := range d.conns {
		if unread(c) > d.maxUnread {
			over = append(over, c)
		} else if !keep && busy(c, last) {
			keep = true
		}
	}
	if !keep {
		// Stop, unless a read came in meanwhile: OnRead records its time
		// before it looks at watching, so one that saw the watch running
		// is found here.
		d.watching.Store(false)
		for c, last := range d.conns {
			if keep = busy(c, last); keep {
				d.watching.Store(true)
				break
			}
		}
	}
	if keep {
		d.watch.Reset(unreadEvery)
	} else {
		d.watch = nil
	}
	d.mu.Unlock()
	for _, c := range over {
		d.overread(c.RemoteAddr(), unread(c))
		shutdownBusy(c)
		_ = c.Close()
	}
}

// unread is how many bytes netpoll has read from c that Kitex has not.
func unread(c net.Conn) int {
	if r, ok := c.(interface{ Reader() netpoll.Reader }); ok {
		return r.Reader().Len()
	}
	return 0
}

// closeIdle closes the connections that read nothing for idle, and
// schedules the next sweep if connections remain.
func (d *netpollDrain) closeIdle() {
	cutoff := time.Now().Add(-d.idle).UnixNano()
	var idle []net.Conn
	d.mu.Lock()
	for c, last := range d.conns {
		if last.Load() < cutoff {
			idle = append(idle, c)
		}
	}
	if len(d.conns) > len(idle) {
		d.sweep.Reset(d.idle / 4)
	} else {
		d.sweep = nil
	}
	d.mu.Unlock()
	for _, c := range idle {
		d.log.Debug("closing a connection idle for too long", slog.Duration("idle_timeout", d.idle), slog.String("peer", c.RemoteAddr().String()))
		_ = c.Close()
	}
}

func (d *netpollDrain) OnMessage(ctx context.Context, _, _ remote.Message) (context.Context, error) {
	return ctx, nil
}

func (d *netpollDrain) stopped() {
	d.once.Do(func() {
		time.AfterFunc(d.grace, func() {
			d.mu.Lock()
			conns := make([]net.Conn, 0, len(d.conns))
			for c := range d.conns {
				conns = append(conns, c)
			}
			d.mu.Unlock()
			for _, c := range conns {
				shutdownBusy(c)
				_ = c.Close()
			}
		})
	})
}

type netpollListener struct {
	netpoll.Listener
	orig  net.Listener // the listener whose descriptor netpoll duplicated
	d     *netpollDrain
	close *sync.Once
}

// Close stops accepting. netpoll v0.7.2's own Close closes its duplicate
// descriptor twice (syscall.Close, then the os.File that holds it), so a
// socket that another goroutine opens in between loses its descriptor (seen
// as a WebSocket listener of the same process refusing connections). So the
// duplicate is shut down instead, which ends netpoll's accept loop and frees
// the port, the original listener is closed, and the duplicate is left to
// its os.File, which closes it once when it is collected.
func (l netpollListener) Close() error {
	var err error
	l.close.Do(func() {
		l.d.stopped()
		_ = syscall.Shutdown(l.Fd(), syscall.SHUT_RDWR)
		err = l.orig.Close()
	})
	return err
}

// netpollDrained returns the listener and inbound handler that close a
// netpoll server's remaining connections d.grace after it stops, and
// apply d's other bounds. d's fields are set but for its state.
func netpollDrained(ln net.Listener, d *netpollDrain) (net.Listener, remote.InboundHandler, error) {
	nl, err := netpoll.ConvertListener(ln)
	if err != nil {
		return nil, nil, err
	}
	d.conns = make(map[net.Conn]*atomic.Int64)
	return netpollListener{Listener: nl, orig: ln, d: d, close: new(sync.Once)}, d, nil
}

// shutdownBusy shuts the socket of a netpoll connection down in both
// directions. netpoll defers closing a connection whose request is still
// being handled until the handler returns; shutdown(2) tells the client at
// once, so that its call fails instead of waiting for its timeout.
func shutdownBusy(c net.Conn) {
	nc, ok := c.(interface {
		IsActive() bool
		Fd() int
	})
	if !ok || !nc.IsActive() {
		return // already closing: its descriptor may be gone
	}
	_ = syscall.Shutdown(nc.Fd(), syscall.SHUT_RDWR)
}
