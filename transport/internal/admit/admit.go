// Package admit bounds the connections that are still in their handshake,
// in all and per source address, so that one client cannot hold every
// handshake slot of a listener and starve the others.
package admit

import (
	"errors"
	"net"
	"net/netip"
	"sync"
)

// Errors naming the limit a refused connection hit.
var (
	// ErrTooMany: the listener's handshakes in progress are at their limit.
	ErrTooMany = errors.New("too many handshakes in progress")
	// ErrTooManyFromSource: this source address's handshakes in progress
	// are at their limit.
	ErrTooManyFromSource = errors.New("too many handshakes in progress from this source address")
)

// Limiter counts handshakes in progress. Its methods are safe for
// concurrent use.
type Limiter struct {
	max, perSource int

	mu       sync.Mutex
	total    int
	bySource map[netip.Addr]int
}

// New returns a Limiter admitting max handshakes at once, at most perSource
// of them from one source IP address (max if perSource is zero or larger).
func New(max, perSource int) *Limiter {
	if perSource <= 0 || perSource > max {
		perSource = max
	}
	return &Limiter{max: max, perSource: perSource, bySource: make(map[netip.Addr]int)}
}

// Acquire takes a slot for a connection from peer. It returns the function
// that gives the slot back (call it once, when the handshake ends either
// way), or ErrTooMany or ErrTooManyFromSource.
func (l *Limiter) Acquire(peer net.Addr) (release func(), err error) {
	src := source(peer)
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.total >= l.max {
		return nil, ErrTooMany
	}
	if l.bySource[src] >= l.perSource {
		return nil, ErrTooManyFromSource
	}
	l.total++
	l.bySource[src]++
	var once sync.Once
	return func() { once.Do(func() { l.release(src) }) }, nil
}

func (l *Limiter) release(src netip.Addr) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.total--
	if l.bySource[src]--; l.bySource[src] <= 0 {
		delete(l.bySource, src)
	}
}

// InProgress returns the handshakes in progress now.
func (l *Limiter) InProgress() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.total
}

// PerSource returns the limit per source address.
func (l *Limiter) PerSource() int { return l.perSource }

// source is the IP address of peer (IPv4-mapped IPv6 as IPv4); peers
// without one (pipes, unix sockets) share the zero address.
func source(peer net.Addr) netip.Addr {
	if peer == nil {
		return netip.Addr{}
	}
	if ta, ok := peer.(*net.TCPAddr); ok {
		if ip, ok := netip.AddrFromSlice(ta.IP); ok {
			return ip.Unmap()
		}
	}
	if ap, err := netip.ParseAddrPort(peer.String()); err == nil {
		return ap.Addr().Unmap()
	}
	return netip.Addr{}
}
