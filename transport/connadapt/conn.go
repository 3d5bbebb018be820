package connadapt

import (
	"net"
	"sync/atomic"

	"github.com/cloudwego/gopkg/bufiox"

	"github.com/anyconn/kitex-anyconn/transport/internal/peek"
)

// Conn wraps a net.Conn for Kitex's gonet transport. It provides the bufiox
// reader and writer that gonet type-asserts, reports the remote address the
// caller chose (so that Kitex's connection pool can find the connection again),
// and is safe to close more than once.
type Conn struct {
	net.Conn
	r      *bufiox.DefaultReader
	w      *bufiox.DefaultWriter
	remote net.Addr
	closed atomic.Bool
}

// New wraps c. If remote is nil, RemoteAddr reports c's own remote address,
// or an address of network "unknown" when c reports none (some libraries
// return nil, which would make Kitex panic).
func New(c net.Conn, remote net.Addr) *Conn {
	return &Conn{
		Conn:   c,
		r:      bufiox.NewDefaultReader(c),
		w:      bufiox.NewDefaultWriter(c),
		remote: remote,
	}
}

// Reader returns the buffered reader Kitex's gonet transport decodes from.
func (c *Conn) Reader() *bufiox.DefaultReader { return c.r }

// Writer returns the buffered writer Kitex's gonet transport encodes into.
func (c *Conn) Writer() *bufiox.DefaultWriter { return c.w }

// Read reads through the buffered reader, so that bytes Kitex peeked are not lost.
func (c *Conn) Read(b []byte) (int, error) { return c.r.Read(b) }

// RemoteAddr returns the address given to New, else the wrapped connection's.
// It never returns nil.
func (c *Conn) RemoteAddr() net.Addr {
	if c.remote != nil {
		return c.remote
	}
	if a := c.Conn.RemoteAddr(); a != nil {
		return a
	}
	return Addr{Net: "unknown", Address: "unknown"}
}

// IsActive reports whether the connection has not been closed, here or
// underneath: through an IsActive method of the wrapped connection if it
// has one, else by looking into its socket, without reading, for the
// peer's end of stream (a server or a proxy that closed an idle pooled
// connection). Kitex's pool asks it before reusing a connection.
func (c *Conn) IsActive() bool {
	if c.closed.Load() {
		return false
	}
	if a, ok := c.Conn.(interface{ IsActive() bool }); ok {
		return a.IsActive()
	}
	return peek.Socket(c.Conn) != peek.Gone
}

// Close closes the wrapped connection once; later calls return net.ErrClosed.
func (c *Conn) Close() error {
	if !c.closed.CompareAndSwap(false, true) {
		return net.ErrClosed
	}
	_ = c.r.Release(nil)
	return c.Conn.Close()
}

// Unwrap returns the wrapped connection.
func (c *Conn) Unwrap() net.Conn { return c.Conn }

// Addr is a net.Addr made of a network name and an address string.
type Addr struct {
	Net     string
	Address string
}

// Network returns the network name.
func (a Addr) Network() string { return a.Net }

// String returns the address.
func (a Addr) String() string { return a.Address }

var _ net.Addr = Addr{}
