package transport_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bytedance/gopkg/cloud/metainfo"
	"github.com/cloudwego/kitex/client"
	"github.com/cloudwego/kitex/client/callopt"
	"github.com/cloudwego/kitex/pkg/endpoint"
	"github.com/cloudwego/kitex/pkg/kerrors"
	"github.com/cloudwego/kitex/pkg/rpcinfo"

	"github.com/anyconn/kitex-anyconn/internal/testutil"
	"github.com/anyconn/kitex-anyconn/kitex_gen/api"
	"github.com/anyconn/kitex-anyconn/kitex_gen/api/echo"
	"github.com/anyconn/kitex-anyconn/transport"
	"github.com/anyconn/kitex-anyconn/transport/tunnel"
	"github.com/anyconn/kitex-anyconn/transport/websocket"
)

// testHandler echoes; a message "block" waits until release is closed or
// the server side gives up.
type testHandler struct {
	blocked chan struct{} // receives one value per blocked call
	release chan struct{}
}

func newTestHandler() *testHandler {
	return &testHandler{blocked: make(chan struct{}, 16), release: make(chan struct{})}
}

func (h *testHandler) Echo(ctx context.Context, req *api.Request) (*api.Response, error) {
	if req.Message == "metainfo" { // what came with the call
		v, _ := metainfo.GetValue(ctx, "TRANSIENT")
		p, _ := metainfo.GetPersistentValue(ctx, "PERSISTENT")
		return &api.Response{Message: "transient=" + v + " persistent=" + p}, nil
	}
	if req.Message == "block" {
		h.blocked <- struct{}{}
		<-h.release
	}
	return &api.Response{Message: req.Message}, nil
}

// fixture is one running server and a client connected to it.
type fixture struct {
	kind       transport.Kind
	addr       string
	rawAddr    string
	dialServer func(ctx context.Context) (net.Conn, error)
	handshake  func(ctx context.Context) error
	handler    *testHandler
	run        *testutil.Runner
	cli        echo.Client
	client     transport.ClientConfig // cli's transport
}

// transportCase sets up one transport: the server's and client's configs,
// and where raw bytes reach the server's listener.
type transportCase struct {
	kind  transport.Kind
	setup func(t testing.TB) caseEnv
}

type caseEnv struct {
	server transport.ServerConfig
	client transport.ClientConfig
	// rawAddr is where a raw TCP or WebSocket client reaches the listener;
	// the server's address if empty.
	rawAddr string
	// dialServer, if set, opens a raw byte stream that reaches the Kitex
	// server itself (through the tunnel); rawDial to rawAddr otherwise.
	dialServer func(ctx context.Context) (net.Conn, error)
	// handshake, for a transport with one (the tunnel's), completes a new
	// handshake with the listener at rawAddr; for WebSocket it is an upgrade.
	handshake func(ctx context.Context) error
}

func cases() []transportCase {
	plain := func(k transport.Kind) transportCase {
		return transportCase{kind: k, setup: func(testing.TB) caseEnv {
			return caseEnv{
				server: transport.ServerConfig{Kind: k, Addr: "127.0.0.1:0"},
				client: transport.ClientConfig{Kind: k},
			}
		}}
	}
	return []transportCase{
		plain(transport.Netpoll), plain(transport.GoNet), plain(transport.WebSocket),
		{kind: transport.Yamux, setup: tunnelEnv},
	}
}

// tunnelEnv starts a gateway and an agent connected to it: the server
// serves on the agent, the client dials through the gateway.
func tunnelEnv(t testing.TB) caseEnv {
	const token = "conformance-token-0123456789"
	// A second agent, which leaves as soon as it has its session.
	handshake := func(ctx context.Context, gw *tunnel.Gateway) error {
		agent, err := tunnel.NewAgent(tunnel.AgentConfig{ID: "agent-2", Token: token})
		if err != nil {
			return err
		}
		defer agent.Shutdown(context.Background())
		agent.SetGateways([]string{gw.Addr().String()})
		for agent.Stats().Sessions == 0 {
			select {
			case <-ctx.Done():
				return fmt.Errorf("no session for a second agent: %w", ctx.Err())
			case <-time.After(10 * time.Millisecond):
			}
		}
		return nil
	}
	gw, err := tunnel.Listen("127.0.0.1:0", tunnel.GatewayConfig{Token: token})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = gw.Close() })
	agent, err := tunnel.NewAgent(tunnel.AgentConfig{ID: "agent-1", Token: token})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = agent.Shutdown(context.Background()) })
	agent.SetGateways([]string{gw.Addr().String()})
	return caseEnv{
		server:  transport.ServerConfig{Kind: transport.Yamux, Listener: agent},
		client:  transport.ClientConfig{Kind: transport.Yamux, Dialer: gw.Dialer()},
		rawAddr: gw.Addr().String(),
		dialServer: func(ctx context.Context) (net.Conn, error) {
			for ctx.Err() == nil && len(gw.Agents()) == 0 {
				time.Sleep(10 * time.Millisecond)
			}
			return gw.Dialer().DialTimeout("tcp", "agent-1", 2*time.Second)
		},
		handshake: func(ctx context.Context) error { return handshake(ctx, gw) },
	}
}

func startFixture(t testing.TB, tc transportCase, extra ...client.Option) *fixture {
	t.Helper()
	return startFixtureWith(t, tc, nil, extra...)
}

// startFixtureWith is startFixture with the server's config changed by
// serverCfg (if not nil) before the server starts.
func startFixtureWith(t testing.TB, tc transportCase, serverCfg func(*transport.ServerConfig), extra ...client.Option) *fixture {
	t.Helper()
	env := tc.setup(t)
	scfg := env.server
	scfg.ExitWaitTime = time.Second
	if serverCfg != nil {
		serverCfg(&scfg)
	}
	sopts, ln, err := transport.ServerOptions(scfg)
	if err != nil {
		t.Fatalf("ServerOptions(%s): %v", tc.kind, err)
	}
	h := newTestHandler()
	run := testutil.NewRunner()
	svr := echo.NewServer(h, append(sopts, run.Option())...)
	f := &fixture{kind: tc.kind, addr: ln.Addr().String(), rawAddr: env.rawAddr, handler: h, run: run, client: env.client}
	if f.rawAddr == "" {
		f.rawAddr = f.addr
	}
	f.dialServer = env.dialServer
	if f.dialServer == nil {
		f.dialServer = func(ctx context.Context) (net.Conn, error) { return rawDial(ctx, f.kind, f.rawAddr) }
	}
	f.handshake = env.handshake
	if f.handshake == nil && f.kind == transport.WebSocket {
		f.handshake = func(ctx context.Context) error {
			c, err := f.dialServer(ctx)
			if err == nil {
				err = c.Close()
			}
			return err
		}
	}
	run.Run(svr)
	t.Cleanup(func() { f.stop(t) })

	ct, err := transport.NewClientTransport(env.client)
	if err != nil {
		t.Fatalf("NewClient(%s): %v", tc.kind, err)
	}
	t.Cleanup(func() { _ = ct.Close() })
	opts := append(ct.Options(),
		client.WithHostPorts(f.addr),
		client.WithRPCTimeout(10*time.Second),
		client.WithConnectTimeout(2*time.Second),
	)
	f.cli, err = echo.NewClient("echo", append(opts, extra...)...)
	if err != nil {
		t.Fatalf("NewClient: %v", err)
	}
	waitServing(t, f)
	return f
}

// waitServing calls until the server answers: Run starts the server asynchronously.
func waitServing(t testing.TB, f *fixture) {
	t.Helper()
	testutil.Eventually(t, fmt.Sprintf("the %s server at %s answering", f.kind, f.addr), 10*time.Second, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, err := f.cli.Echo(ctx, &api.Request{Message: "ping"})
		return err == nil
	})
}

func (f *fixture) stop(t testing.TB) {
	select {
	case <-f.handler.release:
	default:
		close(f.handler.release)
	}
	f.run.Stop()
	select {
	case <-f.run.Stopped():
		if err := f.run.Err(); err != nil && !strings.Contains(err.Error(), "deadline") {
			t.Errorf("stop %s server: %v", f.kind, err)
		}
	case <-time.After(10 * time.Second):
		t.Errorf("%s server did not return from Run after Stop", f.kind)
	}
}

func TestConformance(t *testing.T) {
	for _, tc := range cases() {
		t.Run(string(tc.kind), func(t *testing.T) {
			t.Run("RoundTrip", func(t *testing.T) { testRoundTrip(t, tc) })
			t.Run("MessageSizes", func(t *testing.T) { testMessageSizes(t, tc) })
			t.Run("Concurrent64", func(t *testing.T) { testConcurrent(t, tc) })
			t.Run("Deadline", func(t *testing.T) { testDeadline(t, tc) })
			t.Run("ServerClosedMidCall", func(t *testing.T) { testServerClosedMidCall(t, tc) })
			t.Run("GarbageThenServe", func(t *testing.T) { testGarbage(t, tc) })
			t.Run("Metainfo", func(t *testing.T) { testMetainfo(t, tc) })
			t.Run("GracefulCloseSignal", func(t *testing.T) { testGracefulCloseSignal(t, tc) })
		})
	}
}

// withProtocol returns tc with its client calling with p.
func withProtocol(tc transportCase, p transport.Protocol) transportCase {
	setup := tc.setup
	tc.setup = func(t testing.TB) caseEnv {
		env := setup(t)
		env.client.Protocol = p
		return env
	}
	return tc
}

// Metainfo the caller sets (transient and persistent, as trace context
// and request IDs travel) reaches the handler with TTHeader, the default,
// and not with Framed, which has no header.
func testMetainfo(t *testing.T, tc transportCase) {
	ctx := metainfo.WithValue(context.Background(), "TRANSIENT", "t1")
	ctx = metainfo.WithPersistentValue(ctx, "PERSISTENT", "p1")
	for _, c := range []struct {
		protocol transport.Protocol
		want     string
	}{
		{"", "transient=t1 persistent=p1"},
		{transport.Framed, "transient= persistent="},
	} {
		f := startFixture(t, withProtocol(tc, c.protocol))
		resp, err := f.cli.Echo(ctx, &api.Request{Message: "metainfo"})
		if err != nil {
			t.Fatalf("protocol %q: %v", c.protocol, err)
		}
		if resp.Message != c.want {
			t.Errorf("protocol %q: the handler saw %q, want %q", c.protocol, resp.Message, c.want)
		}
	}
}

// testGracefulCloseSignal stops the server while a call holds it open,
// and calls meanwhile: with TTHeader a reply from the stopping server tells
// the client to let its connection go (Kitex's "crrst"), so that callers
// move to other instances instead of failing on a closed connection. A
// leaving tunnel agent also tells its gateway at once, which stops reusing
// its pooled streams and offering it (tunnel.ErrUnknownAgent): whichever
// comes first moves the callers, so on yamux either is the signal.
func testGracefulCloseSignal(t *testing.T, tc transportCase) {
	var reset atomic.Int64
	// A wide stop window (the server waits for the held call up to its
	// exit wait time), so that a loaded machine still gets a call in.
	f := startFixtureWith(t, tc, func(c *transport.ServerConfig) { c.ExitWaitTime = 5 * time.Second }, client.WithMiddleware(func(next endpoint.Endpoint) endpoint.Endpoint {
		return func(ctx context.Context, req, resp any) error {
			err := next(ctx, req, resp)
			if v, ok := rpcinfo.GetRPCInfo(ctx).To().Tag(rpcinfo.ConnResetTag); ok && v == "1" && err == nil {
				reset.Add(1)
			}
			return err
		}
	}))
	held := make(chan error, 1)
	go func() {
		_, err := f.cli.Echo(context.Background(), &api.Request{Message: "block"}, callopt.WithRPCTimeout(30*time.Second))
		held <- err
	}()
	<-f.handler.blocked
	// A second connection, idle in the pool while the first is held.
	if _, err := f.cli.Echo(context.Background(), &api.Request{Message: "pooled"}); err != nil {
		t.Fatal(err)
	}
	go f.run.Stop()
	// Call on the pooled connection until a reply says the server is closing.
	deadline := time.Now().Add(4 * time.Second)
	agentLeft := false
	for reset.Load() == 0 && !agentLeft && time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		_, err := f.cli.Echo(ctx, &api.Request{Message: "during the stop"})
		cancel()
		agentLeft = tc.kind == transport.Yamux && errors.Is(err, tunnel.ErrUnknownAgent)
		time.Sleep(2 * time.Millisecond)
	}
	close(f.handler.release)
	if err := <-held; err != nil {
		t.Errorf("the call held during the stop: %v", err)
	}
	if reset.Load() == 0 && !agentLeft {
		t.Fatal("no reply from the stopping server carried its close signal")
	}
}

func testRoundTrip(t *testing.T, tc transportCase) {
	f := startFixture(t, tc)
	resp, err := f.cli.Echo(context.Background(), &api.Request{Message: "hello " + string(tc.kind)})
	if err != nil {
		t.Fatalf("Echo: %v", err)
	}
	if want := "hello " + string(tc.kind); resp.Message != want {
		t.Fatalf("Echo returned %q, want %q", resp.Message, want)
	}
}

func testMessageSizes(t *testing.T, tc transportCase) {
	f := startFixture(t, tc)
	for _, size := range []int{0, 1, 1024, 16 << 10, 1 << 20} {
		msg := strings.Repeat("x", size)
		resp, err := f.cli.Echo(context.Background(), &api.Request{Message: msg})
		if err != nil {
			t.Fatalf("Echo of %d bytes: %v", size, err)
		}
		if resp.Message != msg {
			t.Fatalf("Echo of %d bytes returned %d bytes", size, len(resp.Message))
		}
	}
}

func testConcurrent(t *testing.T, tc transportCase) {
	f := startFixture(t, tc)
	const callers, calls = 64, 20
	var wg sync.WaitGroup
	errs := make(chan error, callers)
	for i := 0; i < callers; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			for j := 0; j < calls; j++ {
				msg := fmt.Sprintf("caller %d call %d", i, j)
				resp, err := f.cli.Echo(context.Background(), &api.Request{Message: msg})
				if err != nil {
					errs <- err
					return
				}
				if resp.Message != msg {
					errs <- fmt.Errorf("got %q, want %q", resp.Message, msg)
					return
				}
			}
		}(i)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func testDeadline(t *testing.T, tc transportCase) {
	f := startFixture(t, tc)
	start := time.Now()
	_, err := f.cli.Echo(context.Background(), &api.Request{Message: "block"}, callopt.WithRPCTimeout(200*time.Millisecond))
	if !errors.Is(err, kerrors.ErrRPCTimeout) {
		t.Fatalf("blocked call returned %v, want ErrRPCTimeout", err)
	}
	// The handler blocks until the test ends; 10 s is the client's default.
	if elapsed := time.Since(start); elapsed > 5*time.Second {
		t.Fatalf("call with a 200ms timeout returned after %v", elapsed)
	}
	// The connection of the timed-out call is discarded; the next call works.
	if _, err := f.cli.Echo(context.Background(), &api.Request{Message: "after"}); err != nil {
		t.Fatalf("call after a timeout: %v", err)
	}
}

func testServerClosedMidCall(t *testing.T, tc transportCase) {
	f := startFixture(t, tc)
	done := make(chan error, 1)
	go func() {
		_, err := f.cli.Echo(context.Background(), &api.Request{Message: "block"}, callopt.WithRPCTimeout(60*time.Second))
		done <- err
	}()
	select {
	case <-f.handler.blocked:
	case <-time.After(10 * time.Second):
		t.Fatal("call never reached the handler")
	}
	f.run.Stop()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("call in flight while the server stopped returned no error")
		}
	case <-time.After(30 * time.Second):
		t.Fatal("call in flight while the server stopped hung")
	}
}

func testGarbage(t *testing.T, tc transportCase) {
	f := startFixture(t, tc)
	garbage := []byte("\x00\x00\x00\x10this is not thrift at all\r\n\r\n")
	for i := 0; i < 3; i++ {
		sendGarbage(t, tc.kind, f.rawAddr, garbage)
	}
	resp, err := f.cli.Echo(context.Background(), &api.Request{Message: "still serving"})
	if err != nil || resp.Message != "still serving" {
		t.Fatalf("after garbage: %v, %v", resp, err)
	}
}

// sendGarbage writes garbage on a new connection and waits until the server
// closes it (or a bounded time passes).
func sendGarbage(t *testing.T, kind transport.Kind, addr string, garbage []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := rawDial(ctx, kind, addr)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	defer c.Close()
	if _, err := c.Write(garbage); err != nil {
		t.Fatalf("write garbage: %v", err)
	}
	if err := testutil.ReadUntilError(c, 5*time.Second); testutil.IsTimeout(err) {
		t.Fatalf("server kept a connection that sent garbage open")
	}
}

// rawDial opens a raw byte stream to a server's listener: TCP, or a
// WebSocket connection for the WebSocket transport.
func rawDial(ctx context.Context, kind transport.Kind, addr string) (net.Conn, error) {
	if kind == transport.WebSocket {
		return websocket.Dial(ctx, addr, websocket.DialerConfig{})
	}
	return (&net.Dialer{}).DialContext(ctx, "tcp", addr)
}
