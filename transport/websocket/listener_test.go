package websocket_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
	xws "golang.org/x/net/websocket"

	"github.com/anyconn/kitex-anyconn/internal/testutil"
	"github.com/anyconn/kitex-anyconn/transport/websocket"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

type rejections struct {
	mu       sync.Mutex
	statuses []int
}

func (r *rejections) record(_ *http.Request, status int, _ error) {
	r.mu.Lock()
	r.statuses = append(r.statuses, status)
	r.mu.Unlock()
}

func (r *rejections) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.statuses)
}

func listen(t testing.TB, cfg websocket.ListenerConfig) *websocket.Listener {
	t.Helper()
	l, err := websocket.Listen("127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	return l
}

// acceptEcho accepts connections and echoes their bytes until the listener closes.
func acceptEcho(t testing.TB, l net.Listener) { serverConns(t, l, true) }

func TestNonWebSocketRequestsGetHTTPErrors(t *testing.T) {
	var rej rejections
	l := listen(t, websocket.ListenerConfig{OnReject: rej.record})
	acceptEcho(t, l)
	base := "http://" + l.Addr().String()
	for _, tt := range []struct {
		method, path string
		want         int
	}{
		{http.MethodGet, "/kitex", http.StatusUpgradeRequired},
		{http.MethodGet, "/", http.StatusNotFound},
		{http.MethodPost, "/kitex", http.StatusMethodNotAllowed},
	} {
		req, _ := http.NewRequest(tt.method, base+tt.path, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", tt.method, tt.path, err)
		}
		resp.Body.Close()
		if resp.StatusCode != tt.want {
			t.Fatalf("%s %s: status %d, want %d", tt.method, tt.path, resp.StatusCode, tt.want)
		}
	}
	http.DefaultClient.CloseIdleConnections()
	if rej.count() != 3 {
		t.Fatalf("OnReject called %d times, want 3", rej.count())
	}
	// Still serving WebSocket.
	roundTrip(t, l.Addr().String(), websocket.DialerConfig{})
}

func roundTrip(t testing.TB, addr string, cfg websocket.DialerConfig) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := websocket.Dial(ctx, addr, cfg)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("echo: %q, %v", buf, err)
	}
}

func TestOriginPolicy(t *testing.T) {
	var rej rejections
	l := listen(t, websocket.ListenerConfig{AllowedOrigins: []string{"https://app.example.com"}, OnReject: rej.record})
	acceptEcho(t, l)
	addr := l.Addr().String()
	for _, origin := range []string{"", "http://" + addr, "HTTPS://APP.EXAMPLE.COM"} {
		roundTrip(t, addr, websocket.DialerConfig{Origin: origin})
	}
	if rej.count() != 0 {
		t.Fatalf("allowed origins were rejected %d times", rej.count())
	}
	for _, origin := range []string{"https://evil.example", "http://localhost:1", "http://app.example.com"} {
		cfg, _ := xws.NewConfig("ws://"+addr+"/kitex", origin)
		if ws, err := xws.DialConfig(cfg); err == nil {
			ws.Close()
			t.Fatalf("origin %q was accepted", origin)
		}
	}
	if rej.count() != 3 {
		t.Fatalf("OnReject called %d times for 3 bad origins", rej.count())
	}

	all := listen(t, websocket.ListenerConfig{AllowedOrigins: []string{"*"}})
	acceptEcho(t, all)
	roundTrip(t, all.Addr().String(), websocket.DialerConfig{Origin: "https://anything.example"})
}

func TestAcceptAfterClose(t *testing.T) {
	l, err := websocket.Listen("127.0.0.1:0", websocket.ListenerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { _, err := l.Accept(); done <- err }()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Accept after Close: %v, want net.ErrClosed", err)
	}
	if err := l.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

func TestDialHonoursTimeout(t *testing.T) {
	// A TCP server that accepts and never answers the upgrade.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	serverConns(t, ln, false) // accepted and held, never answered
	d := websocket.NewDialer(websocket.DialerConfig{})
	start := time.Now()
	_, err = d.DialTimeout("tcp", ln.Addr().String(), 200*time.Millisecond)
	if err == nil {
		t.Fatal("dial to a silent server succeeded")
	}
	if elapsed := time.Since(start); elapsed > 3*time.Second {
		t.Fatalf("dial with a 200ms timeout took %v", elapsed)
	}
}

// A length-prefixed frame written in pieces arrives as one binary message.
func TestOneMessagePerFrame(t *testing.T) {
	l := listen(t, websocket.ListenerConfig{})
	addr := l.Addr().String()
	payload := bytes.Repeat([]byte("k"), 100_000)
	frame := binary.BigEndian.AppendUint32(nil, uint32(len(payload)))
	frame = append(frame, payload...)

	sent := make(chan error, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			sent <- err
			return
		}
		defer c.Close()
		for off := 0; off < len(frame); off += 4096 {
			end := min(off+4096, len(frame))
			if _, err := c.Write(frame[off:end]); err != nil {
				sent <- err
				return
			}
		}
		// Wait for the client to finish reading before closing.
		_, _ = c.Read(make([]byte, 1))
		sent <- nil
	}()

	cfg, _ := xws.NewConfig("ws://"+addr+"/kitex", "http://"+addr)
	ws, err := xws.DialConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var msg []byte
	if err := xws.Message.Receive(ws, &msg); err != nil {
		t.Fatal(err)
	}
	ws.Close()
	if !bytes.Equal(msg, frame) {
		t.Fatalf("first message has %d bytes, want the whole %d-byte frame", len(msg), len(frame))
	}
	if err := <-sent; err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(l.Path(), "/") {
		t.Fatal("Path")
	}
}

// Close returns promptly even while a write is stuck on a peer that stopped reading.
func TestCloseWithStuckWrite(t *testing.T) {
	l := listen(t, websocket.ListenerConfig{})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	client, err := websocket.Dial(ctx, l.Addr().String(), websocket.DialerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close() // never reads
	srv, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	chunk := make([]byte, 1<<20)
	stuck := make(chan struct{})
	var writes atomic.Int64
	go func() {
		defer close(stuck)
		for {
			if _, err := srv.Write(chunk); err != nil {
				return
			}
			writes.Add(1)
		}
	}()
	// The writer writes without pause: once no write has completed for
	// 200 ms, one is blocked on the full socket buffers.
	last, since := int64(-1), time.Now()
	testutil.Eventually(t, "a write stuck for 200 ms on a peer that reads nothing", 10*time.Second, func() bool {
		if n := writes.Load(); n != last {
			last, since = n, time.Now()
			return false
		}
		return time.Since(since) > 200*time.Millisecond
	})
	closed := make(chan struct{})
	go func() { _ = srv.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("Close blocked behind a stuck write")
	}
	<-stuck
}

// TestUnfinishedHandshakesAreBounded: a client that never finishes its
// upgrade request is cut after HandshakeTimeout, and at most MaxHandshakes
// such clients are held at once; upgraded connections do not count.
func TestUnfinishedHandshakesAreBounded(t *testing.T) {
	var mu sync.Mutex
	var refused []error
	l := listen(t, websocket.ListenerConfig{
		HandshakeTimeout: 300 * time.Millisecond,
		MaxHandshakes:    2,
		OnRefuse: func(_ net.Addr, reason error) {
			mu.Lock()
			refused = append(refused, reason)
			mu.Unlock()
		},
	})
	acceptEcho(t, l)
	// Upgraded connections leave their slot: three at once still work.
	for i := 0; i < 3; i++ {
		c, err := websocket.Dial(context.Background(), l.Addr().String(), websocket.DialerConfig{})
		if err != nil {
			t.Fatalf("upgrade %d with MaxHandshakes 2: %v", i, err)
		}
		defer c.Close()
	}
	stall := func() net.Conn {
		c, err := net.Dial("tcp", l.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		if _, err := io.WriteString(c, "GET /kitex HTTP/1.1\r\nHost: x\r\n"); err != nil {
			t.Fatal(err)
		}
		return c
	}
	a, b := stall(), stall()
	time.Sleep(50 * time.Millisecond) // let the server accept both
	start := time.Now()
	third := stall()
	if err := testutil.ReadUntilError(third, 2*time.Second); testutil.IsTimeout(err) || time.Since(start) > 200*time.Millisecond {
		t.Fatalf("a third unfinished handshake was held (%v after %v); MaxHandshakes is 2", err, time.Since(start))
	}
	for _, c := range []net.Conn{a, b} {
		if err := testutil.ReadUntilError(c, 3*time.Second); testutil.IsTimeout(err) {
			t.Fatal("an unfinished handshake outlived HandshakeTimeout (300ms) by 3 s")
		}
	}
	if d := time.Since(start); d < 200*time.Millisecond {
		t.Fatalf("unfinished handshakes were cut after %v, before HandshakeTimeout (300ms)", d)
	}
	mu.Lock()
	if len(refused) != 1 || !errors.Is(refused[0], websocket.ErrTooManyHandshakes) {
		t.Errorf("OnRefuse got %v, want one ErrTooManyHandshakes", refused)
	}
	mu.Unlock()
	// The slots are free again.
	c, err := websocket.Dial(context.Background(), l.Addr().String(), websocket.DialerConfig{})
	if err != nil {
		t.Fatalf("upgrade after the stalled handshakes ended: %v", err)
	}
	_ = c.Close()
}

// TestOneSourceCannotStarveHandshakes: a client at 127.0.0.2 that keeps more
// unfinished handshakes open than the listener has slots (re-dialing each
// one the listener closes) does not keep 127.0.0.1 from upgrading. The
// listener has 64 slots, not the default 1,024: the point is more
// connections than slots, and a thousand re-dialing at once would only
// measure the machine.
func TestOneSourceCannotStarveHandshakes(t *testing.T) {
	const slots = 64
	var refusedFromSource atomic.Int64
	log, logs := testutil.NewLogs(slog.LevelWarn)
	l := listen(t, websocket.ListenerConfig{Logger: log, MaxHandshakes: slots, OnRefuse: func(_ net.Addr, reason error) {
		if errors.Is(reason, websocket.ErrTooManyHandshakesFromSource) {
			refusedFromSource.Add(1)
		}
	}})
	acceptEcho(t, l)
	addr := l.Addr().String()
	testutil.HoldHandshakes(t, addr, slots+32, []byte("GET /kitex HTTP/1.1\r\nHost: x\r\n"))
	var failures []error
	const tries = 30
	for range tries {
		c, err := websocket.Dial(context.Background(), addr, websocket.DialerConfig{})
		if err != nil {
			failures = append(failures, err)
			continue
		}
		_ = c.Close()
	}
	if len(failures) != 0 {
		t.Fatalf("%d of %d upgrades from 127.0.0.1 failed while 127.0.0.2 held the slots: %v", len(failures), tries, failures)
	}
	refused := refusedFromSource.Load()
	if refused == 0 {
		t.Fatal("no connection from 127.0.0.2 was refused for its source")
	}
	// A client repeats refusals at will: they are logged sampled.
	if n := len(logs.Containing("websocket: connection refused")); n == 0 || n > 2 {
		t.Fatalf("%d log lines for %d refused connections, want 1 or 2 (sampled)", n, refused)
	}
	t.Logf("%d connections refused for their source, %d log lines", refused, logs.Len())
}

// The lean framing and x/net's own interoperate both ways, with messages
// from empty to 200 KiB (16- and 64-bit lengths), so the wire is the same.
func TestFramingsInteroperate(t *testing.T) {
	for _, tc := range []struct {
		name                   string
		serverXNet, clientXNet bool
	}{
		{"lean client, x/net server", true, false},
		{"x/net client, lean server", false, true},
		{"lean both", false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			lcfg, dcfg := websocket.ListenerConfig{}, websocket.DialerConfig{}
			if tc.serverXNet {
				lcfg = websocket.XNetFraming(lcfg)
			}
			if tc.clientXNet {
				dcfg = websocket.XNetDialer(dcfg)
			}
			l := listen(t, lcfg)
			acceptEcho(t, l)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			c, err := websocket.Dial(ctx, l.Addr().String(), dcfg)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			for _, n := range []int{1, 125, 126, 65535, 65536, 200 << 10} {
				msg := bytes.Repeat([]byte{byte(n)}, n)
				if _, err := c.Write(msg); err != nil {
					t.Fatal(err)
				}
				got := make([]byte, n)
				if _, err := io.ReadFull(c, got); err != nil || !bytes.Equal(got, msg) {
					t.Fatalf("%d bytes: echoed %d bytes, %v", n, len(got), err)
				}
			}
		})
	}
}

// A client that sends its first frame in the same write as its upgrade
// request (before the 101) is served: the frame waits in the HTTP server's
// buffer and is read from there.
func TestFrameRightBehindTheUpgrade(t *testing.T) {
	l := listen(t, websocket.ListenerConfig{})
	acceptEcho(t, l)
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	key := []byte{1, 2, 3, 4}
	payload := []byte("pipelined")
	frame := append([]byte{0x82, 0x80 | byte(len(payload))}, key...)
	for i, b := range payload {
		frame = append(frame, b^key[i%4])
	}
	if _, err := c.Write(append([]byte(upgrade), frame...)); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: %v, %v", resp, err)
	}
	head := make([]byte, 2)
	if _, err := io.ReadFull(br, head); err != nil || head[0] != 0x82 || int(head[1]) != len(payload) {
		t.Fatalf("reply frame header %x, %v; want an unmasked binary frame of %d bytes", head, err, len(payload))
	}
	got := make([]byte, len(payload))
	if _, err := io.ReadFull(br, got); err != nil || string(got) != string(payload) {
		t.Fatalf("echoed %q, %v; want %q", got, err, payload)
	}
}

// A connection that keeps sending ordinary HTTP requests (each of which
// restarts net/http's own timeouts) still leaves HandshakeTimeout after it
// was accepted, and frees its handshake slot.
func TestHandshakeSlotIsBoundedFromAccept(t *testing.T) {
	l := listen(t, websocket.ListenerConfig{HandshakeTimeout: 300 * time.Millisecond, MaxHandshakes: 1})
	acceptEcho(t, l)
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	began := time.Now()
	br := bufio.NewReader(c)
	for time.Since(began) < 3*time.Second {
		if _, err := io.WriteString(c, "GET /not-here HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
			break
		}
		_ = c.SetReadDeadline(time.Now().Add(time.Second))
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			break
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		time.Sleep(50 * time.Millisecond)
	}
	held := time.Since(began)
	if held >= 3*time.Second || held < 200*time.Millisecond {
		t.Fatalf("a connection sending requests every 50 ms was held %v; HandshakeTimeout is 300ms", held)
	}
	t.Logf("a connection sending requests every 50 ms was closed after %v", held.Round(time.Millisecond))
	// Its slot (the only one) is free again.
	ws, err := websocket.Dial(context.Background(), l.Addr().String(), websocket.DialerConfig{})
	if err != nil {
		t.Fatalf("upgrade after the hog was closed: %v", err)
	}
	_ = ws.Close()
}
