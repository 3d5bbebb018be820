package websocket_test

import (
	"context"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/anyconn/kitex-anyconn/internal/testutil"
	"github.com/anyconn/kitex-anyconn/transport/websocket"
)

// serverConns accepts connections of l until the test ends, echoing what
// they carry if echo, and sends each on the channel it returns (dropped if
// 16 are waiting there).
func serverConns(t testing.TB, l net.Listener, echo bool) <-chan net.Conn {
	out := make(chan net.Conn, 16)
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns []net.Conn
	)
	t.Cleanup(func() {
		_ = l.Close()
		mu.Lock()
		for _, c := range conns {
			_ = c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			select {
			case out <- c:
			default:
			}
			if echo {
				wg.Add(1)
				go func() { defer wg.Done(); defer c.Close(); _, _ = io.Copy(c, c) }()
			}
		}
	}()
	return out
}

func dial(t *testing.T, addr string, cfg websocket.DialerConfig) *websocket.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := websocket.Dial(ctx, addr, cfg)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// echoOnce writes msg on c as one length-prefixed frame, as Kitex does,
// and reads it back.
func echoOnce(c net.Conn, msg string) error {
	frame := append([]byte{0, 0, 0, byte(len(msg))}, msg...)
	if _, err := c.Write(frame); err != nil {
		return err
	}
	got := make([]byte, len(frame))
	if _, err := io.ReadFull(c, got); err != nil {
		return err
	}
	if string(got[4:]) != msg {
		return io.ErrUnexpectedEOF
	}
	return nil
}

// A pooled connection whose server closed it is reported inactive before
// any call is handed to it, without a read.
func TestClosedByThePeerIsNotActive(t *testing.T) {
	l := listen(t, websocket.ListenerConfig{})
	conns := serverConns(t, l, true)
	c := dial(t, l.Addr().String(), websocket.DialerConfig{PingInterval: -1})
	if err := echoOnce(c, "one"); err != nil {
		t.Fatal(err)
	}
	if !c.IsActive() {
		t.Fatal("an open idle connection is reported inactive")
	}
	_ = (<-conns).Close()
	testutil.Eventually(t, "the closed connection reported inactive", 5*time.Second, func() bool { return !c.IsActive() })
}

// Behind a proxy that closes connections idle for 300 ms, pings every
// 100 ms keep an idle connection open; without pings the proxy closes it,
// and IsActive says so.
func TestPingsKeepAnIdleProxyOpen(t *testing.T) {
	l := listen(t, websocket.ListenerConfig{})
	serverConns(t, l, true)
	proxy := testutil.StartProxy(t, l.Addr().String())
	proxy.IdleTimeout(300 * time.Millisecond)

	pinged := dial(t, proxy.Addr(), websocket.DialerConfig{PingInterval: 100 * time.Millisecond})
	silent := dial(t, proxy.Addr(), websocket.DialerConfig{PingInterval: -1})
	for _, c := range []*websocket.Conn{pinged, silent} {
		if err := echoOnce(c, "first"); err != nil {
			t.Fatal(err)
		}
	}
	testutil.Eventually(t, "the proxy closing the silent connection", 5*time.Second, func() bool { return !silent.IsActive() })
	time.Sleep(time.Second) // idle for three of the proxy's timeouts
	if !pinged.IsActive() {
		t.Fatal("the pinged connection was closed by the idle proxy")
	}
	if err := echoOnce(pinged, "after a second idle"); err != nil {
		t.Fatalf("the pinged connection after a second idle: %v", err)
	}
}

// A server that never answers pings (it never reads) gets its connection
// dropped after PingInterval + PongTimeout, while idle.
func TestUnansweredPingsDropTheConnection(t *testing.T) {
	l := listen(t, websocket.ListenerConfig{})
	serverConns(t, l, false) // accepted, never read: pings stay unanswered
	c := dial(t, l.Addr().String(), websocket.DialerConfig{PingInterval: 100 * time.Millisecond, PongTimeout: 100 * time.Millisecond})
	if !c.IsActive() {
		t.Fatal("inactive at once")
	}
	testutil.Eventually(t, "the unanswered connection reported inactive", 5*time.Second, func() bool { return !c.IsActive() })
}

// MaxConnectionAge retires an idle connection, never one under a call.
func TestMaxConnectionAgeRetiresIdleConnections(t *testing.T) {
	l := listen(t, websocket.ListenerConfig{})
	serverConns(t, l, false) // no answer: the call below stays in flight
	c := dial(t, l.Addr().String(), websocket.DialerConfig{MaxConnectionAge: 200 * time.Millisecond})
	if !c.IsActive() {
		t.Fatal("inactive at once")
	}
	if _, err := c.Write([]byte{0, 0, 0, 1, 'x'}); err != nil { // a call starts
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond) // past the age, +10 % jitter at most
	if !c.IsActive() {
		t.Fatal("retired under a call")
	}

	idle := dial(t, l.Addr().String(), websocket.DialerConfig{MaxConnectionAge: 200 * time.Millisecond})
	testutil.Eventually(t, "the idle connection retired", 5*time.Second, func() bool { return !idle.IsActive() })
}

// A call on a connection that its server closed while it was idle goes
// out on a fresh connection: nothing of it was written yet.
func TestCallOnAConnectionClosedWhileIdleIsRedialed(t *testing.T) {
	l := listen(t, websocket.ListenerConfig{})
	conns := serverConns(t, l, true)
	c := dial(t, l.Addr().String(), websocket.DialerConfig{PingInterval: -1})
	if err := echoOnce(c, "one"); err != nil {
		t.Fatal(err)
	}
	_ = (<-conns).Close()
	time.Sleep(1100 * time.Millisecond) // idle past staleAfter (1 s)
	if err := echoOnce(c, "two"); err != nil {
		t.Fatalf("the call after the server closed the idle connection: %v", err)
	}
	select {
	case <-conns:
	case <-time.After(time.Second):
		t.Fatal("no second connection was dialed")
	}
}
