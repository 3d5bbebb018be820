package websocket

import (
	"bytes"
	"errors"
	"io"
	"net"
	"sync"
	"time"

	"golang.org/x/net/http/httpguts"
)

// front reads the requests of plain (ws://) connections before the HTTP
// server does, and upgrades the ordinary WebSocket upgrade request itself:
// a GET of the path, HTTP/1.1, a Host, Upgrade, Connection and a version
// 13 key, no Origin and no subprotocol, headers within one read buffer.
// Such a request costs no goroutine, reader, writer, request or header map
// of the HTTP server's, which would all be garbage after the upgrade: an
// idle WebSocket connection's memory then comes close to a plain TCP
// connection's. Every other request, and anything the front is not sure
// of, goes to the HTTP server with the bytes read so far, and is served
// (refused, logged and reported) as before.
type front struct {
	l    *Listener
	ln   net.Listener // the limitListener
	line []byte       // the request line the front upgrades
	rest chan net.Conn

	mu     sync.Mutex
	conns  map[net.Conn]struct{} // connections whose request the front reads
	closed bool
	wg     sync.WaitGroup

	loopDone chan struct{}
	failed   chan struct{} // the accept loop stopped on err
	err      error
}

func newFront(l *Listener, ln net.Listener) *front {
	return &front{
		l:        l,
		ln:       ln,
		line:     []byte("GET " + l.cfg.Path + " HTTP/1.1\r\n"),
		rest:     make(chan net.Conn),
		conns:    make(map[net.Conn]struct{}),
		loopDone: make(chan struct{}),
		failed:   make(chan struct{}),
	}
}

// acceptLoop accepts connections, as the HTTP server's own loop would, and
// reads each one's request in a goroutine of its own.
func (f *front) acceptLoop() {
	defer close(f.loopDone)
	var delay time.Duration
	for {
		c, err := f.ln.Accept()
		if err != nil {
			select {
			case <-f.l.done:
				return
			default:
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Temporary() { //nolint:staticcheck // as net/http's Serve does
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				f.l.srv.ErrorLog.Printf("http: Accept error: %v; retrying in %v", err, delay)
				select {
				case <-time.After(delay):
				case <-f.l.done:
					return
				}
				continue
			}
			f.err = err
			close(f.failed)
			return
		}
		delay = 0
		f.mu.Lock()
		if f.closed {
			f.mu.Unlock()
			_ = c.Close()
			continue
		}
		f.conns[c] = struct{}{}
		f.wg.Add(1)
		f.mu.Unlock()
		go f.serve(c)
	}
}

// close stops the accept loop and closes the connections whose request
// is still being read, and waits for their goroutines.
func (f *front) close() {
	_ = f.ln.Close()
	<-f.loopDone
	f.mu.Lock()
	f.closed = true
	for c := range f.conns {
		_ = c.Close()
	}
	f.mu.Unlock()
	f.wg.Wait()
}

// leave takes c out of the front's set; false if the front is closed (and
// has closed c).
func (f *front) leave(c net.Conn) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.conns, c)
	return !f.closed
}

var crlf = []byte("\r\n")

// serve reads c's request into a borrowed buffer, and upgrades it or
// passes it on.
func (f *front) serve(c net.Conn) {
	defer f.wg.Done()
	buf := readBufs.Get().(*[readBufSize]byte)
	defer readBufs.Put(buf)
	n := 0
	for {
		m, err := c.Read(buf[n:])
		n += m
		got := buf[:n]
		if k := min(n, len(f.line)); !bytes.Equal(got[:k], f.line[:k]) {
			f.toHTTP(c, got) // another request, or not HTTP: the HTTP server answers it
			return
		}
		if end := bytes.Index(got, []byte("\r\n\r\n")); end >= 0 {
			f.upgrade(c, got, end+2)
			return
		}
		switch {
		case err != nil && n > 0 && errors.Is(err, io.EOF):
			f.toHTTP(c, got) // cut short: the HTTP server answers as it does
			return
		case err != nil:
			if f.leave(c) {
				_ = c.Close() // closed, or out of handshake time, before a whole request
			}
			return
		case n == len(buf):
			f.toHTTP(c, got) // longer than the front reads
			return
		}
	}
}

// toHTTP hands c to the HTTP server, which reads got first.
func (f *front) toHTTP(c net.Conn, got []byte) {
	if !f.leave(c) {
		return
	}
	rc := &replayConn{Conn: c, pending: append([]byte(nil), got...)}
	select {
	case f.rest <- rc:
	case <-f.l.done:
		_ = c.Close()
	case <-f.failed:
		_ = c.Close()
	}
}

// upgrade upgrades c if its request (got[:end]: the request line and the
// header lines, each ending with CRLF, then an empty line) is one the front
// serves, and passes it to the HTTP server otherwise. What follows the
// request's empty line came behind it.
func (f *front) upgrade(c net.Conn, got []byte, end int) {
	head, rest := got[:end], got[end+2:]
	var host, upgrade, connection, key, version []byte
	seen := 0
	for lines := head[len(f.line):]; len(lines) > 0; {
		i := bytes.Index(lines, crlf)
		hl := lines[:i]
		lines = lines[i+2:]
		colon := bytes.IndexByte(hl, ':')
		if colon <= 0 || !isToken(hl[:colon]) || !isFieldValue(hl[colon+1:]) {
			f.toHTTP(c, got) // malformed (or folded): the HTTP server refuses it
			return
		}
		name, value := hl[:colon], bytes.Trim(hl[colon+1:], " \t")
		var field *[]byte
		var bit int
		switch {
		case foldEq(name, "Host"):
			field, bit = &host, 1
		case foldEq(name, "Upgrade"):
			field, bit = &upgrade, 2
		case foldEq(name, "Connection"):
			field, bit = &connection, 4
		case foldEq(name, "Sec-WebSocket-Key"):
			field, bit = &key, 8
		case foldEq(name, "Sec-WebSocket-Version"):
			field, bit = &version, 16
		case foldEq(name, "Origin"), foldEq(name, "Sec-WebSocket-Protocol"), foldEq(name, "Content-Length"),
			foldEq(name, "Transfer-Encoding"), foldEq(name, "Expect"):
			bit = -1
		}
		if bit < 0 || seen&bit != 0 {
			f.toHTTP(c, got) // an origin to check, a body, a repeated field…: the HTTP server's case
			return
		}
		if field != nil {
			*field, seen = value, seen|bit
		}
	}
	var accept [28]byte
	if seen != 31 || !httpguts.ValidHostHeader(string(host)) || !hasToken(upgrade, "websocket") ||
		!hasToken(connection, "upgrade") || string(version) != "13" || !acceptKey(accept[:], string(key)) {
		f.toHTTP(c, got) // the HTTP server refuses it, and says why
		return
	}
	var pending []byte
	if len(rest) > 0 {
		pending = append(pending, rest...) // frames sent right behind the request
	}
	if !f.leave(c) {
		return
	}
	sc, ok := c.(*slotConn)
	if !ok {
		f.l.handOff(c, accept[:], "", pending, c.RemoteAddr())
		return
	}
	sc.leave()
	f.l.handOff(sc.Conn, accept[:], "", pending, sc.RemoteAddr())
}

// hasToken reports whether the comma-separated list v contains token
// (compared without regard to case).
func hasToken(v []byte, token string) bool {
	for len(v) > 0 {
		t := v
		if i := bytes.IndexByte(v, ','); i >= 0 {
			t, v = v[:i], v[i+1:]
		} else {
			v = nil
		}
		if foldEq(bytes.Trim(t, " \t"), token) {
			return true
		}
	}
	return false
}

// foldEq reports whether b equals s without regard to ASCII case.
func foldEq(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range len(b) {
		x, y := b[i], s[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

// isToken reports whether b is an HTTP token (a valid field name).
func isToken(b []byte) bool {
	for _, c := range b {
		if !httpguts.IsTokenRune(rune(c)) {
			return false
		}
	}
	return len(b) > 0
}

// isFieldValue reports whether b holds no control character but tabs.
func isFieldValue(b []byte) bool {
	for _, c := range b {
		if (c < ' ' && c != '\t') || c == 0x7f {
			return false
		}
	}
	return true
}

// replayConn is a connection passed on to the HTTP server: its reads
// return what the front read first.
type replayConn struct {
	net.Conn
	pending []byte
}

func (c *replayConn) Read(p []byte) (int, error) {
	if len(c.pending) == 0 {
		return c.Conn.Read(p)
	}
	n := copy(p, c.pending)
	if c.pending = c.pending[n:]; len(c.pending) == 0 {
		c.pending = nil
	}
	return n, nil
}

// restListener is the HTTP server's listener behind the front: the
// connections the front passes on.
type restListener struct {
	f      *front
	once   sync.Once
	closed chan struct{}
}

func (r *restListener) Accept() (net.Conn, error) {
	select {
	case c := <-r.f.rest:
		return c, nil
	case <-r.closed:
		return nil, net.ErrClosed
	case <-r.f.failed:
		return nil, r.f.err
	}
}

func (r *restListener) Close() error {
	r.once.Do(func() { close(r.closed) })
	return nil
}

func (r *restListener) Addr() net.Addr { return r.f.ln.Addr() }
