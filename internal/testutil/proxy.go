package testutil

import (
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Proxy is a TCP proxy on loopback whose connections a test can cut,
// freeze or slow down.
type Proxy struct {
	ln      net.Listener
	tmu     sync.Mutex
	targets []string // one chosen at random per connection, under tmu
	mu      sync.Mutex
	conns   map[net.Conn]*linkState // shared by both directions of a connection
	wg      sync.WaitGroup
	idle    atomic.Int64 // IdleTimeout, in nanoseconds
}

type linkState struct {
	frozen atomic.Bool
	delay  atomic.Int64 // added before forwarding each chunk, in nanoseconds
	last   atomic.Int64 // when a chunk last passed, either way (Unix nanoseconds)
}

// StartProxy forwards a loopback port to target until the test ends.
func StartProxy(t testing.TB, target string) *Proxy {
	t.Helper()
	return StartBalancer(t, target)
}

// StartBalancer forwards a loopback port until the test ends, each
// connection to one of targets chosen at random, the way kube-proxy
// spreads the connections to a Service over its endpoints.
func StartBalancer(t testing.TB, targets ...string) *Proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &Proxy{ln: ln, targets: targets, conns: map[net.Conn]*linkState{}}
	p.wg.Add(1)
	go p.serve()
	t.Cleanup(func() {
		_ = ln.Close()
		p.Cut()
		p.wg.Wait()
	})
	return p
}

// SetTargets replaces the targets new connections go to (a Service whose
// endpoints changed); connections already made stay.
func (p *Proxy) SetTargets(targets ...string) {
	p.tmu.Lock()
	defer p.tmu.Unlock()
	p.targets = targets
}

// Addr returns the proxy's address.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Cut closes every connection through the proxy; new ones are still accepted.
func (p *Proxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		_ = c.Close()
		delete(p.conns, c)
	}
}

// Freeze makes every connection through the proxy silently drop what it
// carries from now on, in both directions, without closing anything (a
// peer that vanished, a cable pulled). New connections are not frozen.
func (p *Proxy) Freeze() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, st := range p.conns {
		st.frozen.Store(true)
	}
}

// Slow makes every connection through the proxy wait d before forwarding
// each chunk it reads, in both directions (a congested or distant link).
// New connections are not slowed.
func (p *Proxy) Slow(d time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, st := range p.conns {
		st.delay.Store(int64(d))
	}
}

// IdleTimeout makes the proxy close a connection that carried nothing, in
// either direction, for d (as nginx's proxy_timeout and load balancers'
// idle timeouts do), existing connections and new ones; 0 turns it off.
func (p *Proxy) IdleTimeout(d time.Duration) { p.idle.Store(int64(d)) }

func (p *Proxy) serve() {
	defer p.wg.Done()
	for {
		in, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.tmu.Lock()
		target := p.targets[rand.IntN(len(p.targets))] //nolint:gosec // spreading, not security
		p.tmu.Unlock()
		out, err := net.Dial("tcp", target)
		if err != nil {
			_ = in.Close()
			continue
		}
		st := new(linkState)
		st.last.Store(time.Now().UnixNano())
		p.mu.Lock()
		p.conns[in], p.conns[out] = st, st
		p.mu.Unlock()
		p.wg.Add(2)
		go p.pipe(in, out, st)
		go p.pipe(out, in, st)
	}
}

func (p *Proxy) pipe(dst, src net.Conn, st *linkState) {
	defer p.wg.Done()
	buf := make([]byte, 32<<10)
	for {
		idle := time.Duration(p.idle.Load())
		var deadline time.Time
		if idle > 0 {
			deadline = time.Unix(0, st.last.Load()).Add(idle)
		}
		_ = src.SetReadDeadline(deadline)
		n, err := src.Read(buf)
		if d := time.Duration(st.delay.Load()); n > 0 && d > 0 {
			time.Sleep(d)
		}
		if n > 0 && !st.frozen.Load() {
			st.last.Store(time.Now().UnixNano())
			if _, werr := dst.Write(buf[:n]); werr != nil {
				break
			}
		}
		if err != nil {
			if IsTimeout(err) && time.Since(time.Unix(0, st.last.Load())) < time.Duration(p.idle.Load()) {
				continue // the other direction was busy
			}
			break
		}
	}
	_ = dst.Close()
	_ = src.Close()
}
