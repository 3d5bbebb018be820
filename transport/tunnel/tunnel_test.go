package tunnel_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/cloudwego/kitex/client"
	"github.com/cloudwego/kitex/client/callopt"
	"github.com/cloudwego/kitex/pkg/loadbalance/lbcache"

	"github.com/anyconn/kitex-anyconn/internal/testutil"
	"github.com/anyconn/kitex-anyconn/kitex_gen/api"
	"github.com/anyconn/kitex-anyconn/kitex_gen/api/echo"
	"github.com/anyconn/kitex-anyconn/transport"
	"github.com/anyconn/kitex-anyconn/transport/tunnel"
)

func TestMain(m *testing.M) {
	testutil.VerifyTestMain(m)
}

const token = "s3cret-token-for-the-tests-0123"

// whoami answers with its agent's identity and the message.
type whoami struct {
	id      string
	blocked chan struct{}
	release chan struct{}
}

func (w *whoami) Echo(_ context.Context, req *api.Request) (*api.Response, error) {
	if req.Message == "block" {
		w.blocked <- struct{}{}
		<-w.release
	}
	return &api.Response{Message: w.id + ":" + req.Message}, nil
}

func startGateway(t testing.TB, addr string) *tunnel.Gateway {
	t.Helper()
	gw, err := tunnel.Listen(addr, tunnel.GatewayConfig{Token: token, HandshakeTimeout: 500 * time.Millisecond, KeepAliveInterval: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = gw.Close() })
	return gw
}

// agentServer is an agent with a Kitex echo server on it.
type agentServer struct {
	agent   *tunnel.Agent
	handler *whoami
	run     *testutil.Runner
}

func startAgent(t testing.TB, id string, gateways ...string) *agentServer {
	t.Helper()
	return startAgentWith(t, tunnel.AgentConfig{ID: id}, gateways...)
}

// startAgentWith starts an agent from cfg (token and test timings filled
// in) with a Kitex echo server on it.
func startAgentWith(t testing.TB, cfg tunnel.AgentConfig, gateways ...string) *agentServer {
	t.Helper()
	id := cfg.ID
	cfg.Token, cfg.BackoffMin, cfg.BackoffMax = token, 20*time.Millisecond, 200*time.Millisecond
	if cfg.KeepAliveInterval == 0 {
		cfg.KeepAliveInterval = time.Second
	}
	agent, err := tunnel.NewAgent(cfg)
	if err != nil {
		t.Fatal(err)
	}
	agent.SetGateways(gateways)
	sopts, _, err := transport.ServerOptions(transport.ServerConfig{Kind: transport.Yamux, Listener: agent, ExitWaitTime: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	h := &whoami{id: id, blocked: make(chan struct{}, 4), release: make(chan struct{})}
	a := &agentServer{agent: agent, handler: h}
	a.run = testutil.NewRunner()
	a.run.Run(echo.NewServer(h, append(sopts, a.run.Option())...))
	t.Cleanup(func() { a.stop() })
	return a
}

func (a *agentServer) stop() {
	select {
	case <-a.handler.release:
	default:
		close(a.handler.release)
	}
	a.run.Stop()
	<-a.run.Stopped()
	_ = a.agent.Shutdown(context.Background())
}

func newClient(t testing.TB, gw *tunnel.Gateway, opts ...client.Option) echo.Client {
	t.Helper()
	ct, err := transport.NewClientTransport(transport.ClientConfig{Kind: transport.Yamux, Dialer: gw.Dialer()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ct.Close() })
	cli, err := echo.NewClient("echo", append(append(ct.Options(),
		client.WithResolver(gw.Resolver()),
		client.WithLoadBalancer(gw.Balancer(), &lbcache.Options{RefreshInterval: time.Second, ExpireInterval: time.Minute}),
		client.WithRPCTimeout(5*time.Second),
	), opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	return cli
}

func waitAgents(t testing.TB, gw *tunnel.Gateway, n int) {
	t.Helper()
	waitAgentsWithin(t, gw, n, 15*time.Second)
}

// waitAgentsWithin fails unless the gateway lists n agents within d.
func waitAgentsWithin(t testing.TB, gw *tunnel.Gateway, n int, d time.Duration) {
	t.Helper()
	testutil.Eventually(t, fmt.Sprintf("the gateway listing %d agents", n), d, func() bool { return len(gw.Agents()) == n })
}

func call(cli echo.Client, msg string, opts ...callopt.Option) (string, error) {
	resp, err := cli.Echo(context.Background(), &api.Request{Message: msg}, opts...)
	if err != nil {
		return "", err
	}
	return resp.Message, nil
}

// answeredBy makes n calls and fails unless agent id answers every one.
func answeredBy(t *testing.T, cli echo.Client, id, msg string, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		if got, err := call(cli, msg); err != nil || got != id+":"+msg {
			t.Fatalf("call %d: %q, %v; want %s to answer", i, got, err, id)
		}
	}
}

// answeredEventually calls until agent id answers or the deadline passes.
func answeredEventually(t *testing.T, cli echo.Client, id, msg string, deadline time.Time) {
	t.Helper()
	for {
		got, err := call(cli, msg)
		if err == nil && got == id+":"+msg {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no call answered by %s before the deadline: %q, %v", id, got, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestCallTargetsAgentByIdentity(t *testing.T) {
	gw := startGateway(t, "127.0.0.1:0")
	startAgent(t, "alpha", gw.Addr().String())
	startAgent(t, "beta", gw.Addr().String())
	waitAgents(t, gw, 2)
	cli := newClient(t, gw)
	for _, id := range []string{"alpha", "beta", "alpha"} {
		got, err := call(cli, "hi", callopt.WithHostPort(id))
		if err != nil || got != id+":hi" {
			t.Fatalf("call to %s: %q, %v", id, got, err)
		}
	}
	start := time.Now()
	_, err := call(cli, "hi", callopt.WithHostPort("gamma"))
	if err == nil || !errors.Is(err, tunnel.ErrUnknownAgent) {
		t.Fatalf("call to an unknown agent: %v, want ErrUnknownAgent", err)
	}
	if time.Since(start) > 2*time.Second {
		t.Fatalf("call to an unknown agent took %v; it must fail at once", time.Since(start))
	}
}

func TestHundredAgentsBalanced(t *testing.T) {
	gw := startGateway(t, "127.0.0.1:0")
	const agents, rounds = 100, 5
	for i := 0; i < agents; i++ {
		startAgent(t, fmt.Sprintf("agent-%03d", i), gw.Addr().String())
	}
	waitAgents(t, gw, agents)
	if st := gw.Stats(); st.Sessions != agents {
		t.Fatalf("gateway reports %d sessions, want %d", st.Sessions, agents)
	}
	cli := newClient(t, gw)
	hits := map[string]int{}
	for i := 0; i < agents*rounds; i++ {
		got, err := call(cli, "x")
		if err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
		hits[got]++
	}
	if len(hits) != agents {
		t.Fatalf("calls reached %d agents, want %d", len(hits), agents)
	}
	for id, n := range hits {
		if n < rounds-1 || n > rounds+1 {
			t.Fatalf("%s got %d of %d calls: not balanced", id, n, agents*rounds)
		}
	}
}

func TestRefusedAgentsAndBadPeers(t *testing.T) {
	gw := startGateway(t, "127.0.0.1:0")
	addr := gw.Addr().String()
	good := startAgent(t, "good", addr)
	waitAgents(t, gw, 1)

	// The gateway proves itself first: an agent with another token stops
	// there, and a forged proof is refused.
	for _, tok := range []string{"wrong-token-wrong-token-wrong", ""} {
		if err := rawHandshake(addr, "good", tok); !errors.Is(err, tunnel.ErrGatewayUnauthenticated) {
			t.Fatalf("token %q: %v, want ErrGatewayUnauthenticated", tok, err)
		}
	}
	// A real agent with a wrong token keeps failing (with backoff) and never
	// counts a session.
	impostor, err := tunnel.NewAgent(tunnel.AgentConfig{ID: "good", Token: "wrong-token-wrong-token-wrong", BackoffMin: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	impostor.SetGateways([]string{addr})
	testutil.Eventually(t, "two failures of an agent with a wrong token", 10*time.Second, func() bool { return impostor.Stats().Failures >= 2 })
	_ = impostor.Shutdown(context.Background())
	if st := impostor.Stats(); st.Sessions != 0 || st.Reconnects != 0 {
		t.Fatalf("agent with a wrong token counted sessions: %+v", st)
	}
	refusedByAgent := gw.Stats().HandshakeFailures

	// Garbage, and a handshake that never finishes: both closed by the gateway.
	for _, payload := range [][]byte{[]byte("GET / HTTP/1.1\r\n\r\n"), nil} {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		if payload != nil {
			_, _ = c.Write(payload)
		}
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Read(make([]byte, 64)); err == nil || testutil.IsTimeout(err) {
			t.Fatalf("gateway kept a bad peer's connection open (payload %q): %v", payload, err)
		}
		c.Close()
	}
	if st := gw.Stats(); st.HandshakeFailures != refusedByAgent+2 || refusedByAgent < 4 {
		t.Fatalf("handshake failures %d (%d before the bad peers), want 2 + at least 4", st.HandshakeFailures, refusedByAgent)
	}
	// The impostors did not take over "good", and the gateway still serves.
	if ids := gw.Agents(); len(ids) != 1 || ids[0] != "good" {
		t.Fatalf("agents %v", ids)
	}
	cli := newClient(t, gw)
	if got, err := call(cli, "still"); err != nil || got != "good:still" {
		t.Fatalf("after refusals: %q, %v", got, err)
	}
	if good.agent.Stats().Reconnects != 0 {
		t.Fatal("the legitimate agent lost its session")
	}
}

// rawHandshake connects as an agent with token and returns the gateway's verdict.
func rawHandshake(addr, id, tok string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return tunnel.Handshake(ctx, addr, id, tok)
}

func TestGatewayRestart(t *testing.T) {
	gw := startGateway(t, "127.0.0.1:0")
	addr := gw.Addr().String()
	a := startAgent(t, "survivor", addr)
	waitAgents(t, gw, 1)
	if got, err := call(newClient(t, gw), "before"); err != nil || got != "survivor:before" {
		t.Fatalf("before restart: %q, %v", got, err)
	}
	_ = gw.Close()

	gw2 := startGateway(t, addr)
	waitAgents(t, gw2, 1)
	if got, err := call(newClient(t, gw2), "after"); err != nil || got != "survivor:after" {
		t.Fatalf("after restart: %q, %v", got, err)
	}
	if a.agent.Stats().Reconnects < 1 {
		t.Fatal("agent does not count the reconnect")
	}
}

// proxiedAgent starts a gateway and an agent that reaches it through a
// proxy that the test can cut, freeze or slow, and a client of the gateway.
func proxiedAgent(t *testing.T, id string) (*tunnel.Gateway, *testutil.Proxy, *agentServer, echo.Client) {
	t.Helper()
	gw := startGateway(t, "127.0.0.1:0")
	proxy := testutil.StartProxy(t, gw.Addr().String())
	a := startAgent(t, id, proxy.Addr())
	waitAgents(t, gw, 1)
	return gw, proxy, a, newClient(t, gw)
}

func TestConnectionCutMidCall(t *testing.T) {
	gw, proxy, a, cli := proxiedAgent(t, "cut")

	const inflight = 3
	errs := make(chan error, inflight)
	var wg sync.WaitGroup
	for i := 0; i < inflight; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := call(cli, "block", callopt.WithRPCTimeout(30*time.Second))
			errs <- err
		}()
	}
	for i := 0; i < inflight; i++ {
		select {
		case <-a.handler.blocked:
		case <-time.After(10 * time.Second):
			t.Fatal("calls never reached the agent")
		}
	}
	cut := time.Now()
	proxy.Cut()
	wg.Wait()
	close(errs)
	for err := range errs {
		if err == nil {
			t.Fatal("a call in flight when the tunnel was cut succeeded")
		}
	}
	if waited := time.Since(cut); waited > 5*time.Second {
		t.Fatalf("calls in flight took %v to fail after the cut; they must fail fast", waited)
	}
	close(a.handler.release)
	waitAgents(t, gw, 1)
	answeredEventually(t, cli, "cut", "again", time.Now().Add(10*time.Second))
}

// A session that ends leaves the instance list at once.
func TestDroppedSessionLeavesAtOnce(t *testing.T) {
	gw := startGateway(t, "127.0.0.1:0")
	startAgent(t, "stays", gw.Addr().String())
	leaving := startAgent(t, "leaves", gw.Addr().String())
	waitAgents(t, gw, 2)
	cli := newClient(t, gw)
	leaving.stop()
	waitAgents(t, gw, 1)
	answeredBy(t, cli, "stays", "x", 20)
}

// Streams pooled before a session ended are not reused after the agent
// reconnects: every call succeeds at once.
func TestNoStaleStreamsAfterReconnect(t *testing.T) {
	gw := startGateway(t, "127.0.0.1:0")
	proxy := testutil.StartProxy(t, gw.Addr().String())
	a := startAgent(t, "fresh", proxy.Addr())
	waitAgents(t, gw, 1)
	cli := newClient(t, gw)
	concurrently := func(n int) error {
		errs := make(chan error, n)
		for i := 0; i < n; i++ {
			go func() { _, err := call(cli, "x"); errs <- err }()
		}
		for i := 0; i < n; i++ {
			if err := <-errs; err != nil {
				return err
			}
		}
		return nil
	}
	if err := concurrently(8); err != nil { // fills the pool with streams
		t.Fatal(err)
	}
	proxy.Cut()
	testutil.Eventually(t, "the agent reconnected", 10*time.Second, func() bool { return a.agent.Stats().Reconnects >= 1 && len(gw.Agents()) == 1 })
	if err := concurrently(8); err != nil {
		t.Fatalf("a call after the reconnect failed on a stale pooled stream: %v", err)
	}
}

// A gateway that leaves the agent's list keeps its working session: calls
// in flight are not cut because discovery missed it once.
func TestRemovedGatewayKeepsLiveSession(t *testing.T) {
	gw := startGateway(t, "127.0.0.1:0")
	a := startAgent(t, "keeper", gw.Addr().String())
	waitAgents(t, gw, 1)
	a.agent.SetGateways(nil)
	time.Sleep(200 * time.Millisecond)
	if got, err := call(newClient(t, gw), "still"); err != nil || got != "keeper:still" {
		t.Fatalf("call after the gateway left the list: %q, %v", got, err)
	}
}

// Close does not wait for a peer that never finishes its handshake.
func TestGatewayCloseDoesNotWaitForHandshakes(t *testing.T) {
	gw, err := tunnel.Listen("127.0.0.1:0", tunnel.GatewayConfig{Token: token, HandshakeTimeout: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.Dial("tcp", gw.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	time.Sleep(100 * time.Millisecond)
	start := time.Now()
	_ = gw.Close()
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("Close took %v waiting for a silent peer", d)
	}
}

// An agent that leaves while the client has streams to it pooled: the
// gateway hears it at once, stops choosing it and stops reusing those
// streams, so when the agent's server stops after its drain no call fails.
func TestLeaveMovesPooledCallsAway(t *testing.T) {
	gw := startGateway(t, "127.0.0.1:0")
	addr := gw.Addr().String()
	a := startAgent(t, "a", addr)
	startAgent(t, "b", addr)
	waitAgents(t, gw, 2)
	cli := newClient(t, gw)
	for i := 0; i < 20; i++ { // streams to both agents are now pooled
		if _, err := call(cli, "warm"); err != nil {
			t.Fatal(err)
		}
	}
	a.agent.Leave()
	waitAgentsWithin(t, gw, 1, 5*time.Second) // agent a is no longer listed
	// From now on every call goes to b, over new or pooled streams...
	answeredBy(t, cli, "b", "x", 20)
	// ...and a's server stopping (the end of its drain) costs nothing.
	// (The client's pool still holds a's idle streams; as echo does, give
	// the sessions a bounded time to end.)
	a.run.Stop()
	<-a.run.Stopped()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	_ = a.agent.Shutdown(ctx)
	cancel()
	answeredBy(t, cli, "b", "y", 20)
}

// A tunnel connection that goes silent (packets dropped, no reset): yamux
// keep-alive (1 s in these tests) detects it on both sides, the gateway
// forgets the session, the agent dials again, and calls resume.
func TestFrozenConnectionIsDetected(t *testing.T) {
	_, proxy, a, cli := proxiedAgent(t, "frozen")
	if got, err := call(cli, "before"); err != nil || got != "frozen:before" {
		t.Fatalf("before the freeze: %q, %v", got, err)
	}
	reconnects := a.agent.Stats().Reconnects
	frozen := time.Now()
	proxy.Freeze()
	detected := waitRedial(t, a, reconnects, "a frozen connection")
	answeredEventually(t, cli, "frozen", "after", time.Now().Add(15*time.Second))
	t.Logf("report: tunnel connection frozen: detected and redialed %s later (keep-alive 1 s), calls resumed %s after the freeze",
		detected.Round(10*time.Millisecond), time.Since(frozen).Round(10*time.Millisecond))
}

// waitRedial waits (up to 15 s) until the agent has reconnected since it
// counted reconnects, and returns how long that took.
func waitRedial(t *testing.T, a *agentServer, reconnects uint64, what string) time.Duration {
	t.Helper()
	start := time.Now()
	testutil.Eventually(t, "the agent reconnected ("+what+")", 15*time.Second, func() bool { return a.agent.Stats().Reconnects != reconnects })
	return time.Since(start)
}

// TestSlowConnection: a tunnel connection that turns slow (200 ms added to
// every chunk, less than the 1 s keep-alive) keeps its session and its calls
// succeed, only slower; one that turns slower than the keep-alive allows
// (3 s) is detected and redialed, and calls resume.
func TestSlowConnection(t *testing.T) {
	_, proxy, a, cli := proxiedAgent(t, "slow")
	answeredBy(t, cli, "slow", "before", 3)
	reconnects := a.agent.Stats().Reconnects

	proxy.Slow(200 * time.Millisecond)
	for i := 0; i < 5; i++ {
		start := time.Now()
		answeredBy(t, cli, "slow", "slowed", 1)
		if d := time.Since(start); d < 400*time.Millisecond {
			t.Fatalf("a call over the slowed link took %v, under its 400 ms round trip: the link is not slowed", d)
		}
	}
	if got := a.agent.Stats().Reconnects; got != reconnects {
		t.Fatalf("a link slowed below the keep-alive was redialed (%d reconnects)", got-reconnects)
	}

	slowed := time.Now()
	proxy.Slow(3 * time.Second)
	detected := waitRedial(t, a, reconnects, "a link slowed to 3 s per chunk")
	answeredEventually(t, cli, "slow", "after", time.Now().Add(15*time.Second))
	t.Logf("report: tunnel link slowed by 200 ms per chunk: session kept, calls answered; slowed by 3 s: redialed %s later (keep-alive 1 s), calls resumed %s after",
		detected.Round(10*time.Millisecond), time.Since(slowed).Round(10*time.Millisecond))
}

// TestMaxStreamsPerSession: streams beyond the agent's MaxStreams are closed
// at once and counted; the streams within it, and later ones, are served.
func TestMaxStreamsPerSession(t *testing.T) {
	gw := startGateway(t, "127.0.0.1:0")
	a := startAgentWith(t, tunnel.AgentConfig{ID: "limited", MaxStreams: 2}, gw.Addr().String())
	waitAgents(t, gw, 1)
	open := func() net.Conn {
		c, err := gw.Dialer().DialTimeout("tcp", "limited", time.Second)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		return c
	}
	first, second := open(), open()
	third := open()
	if err := testutil.ReadUntilError(third, 2*time.Second); testutil.IsTimeout(err) {
		t.Fatal("a third stream was served with MaxStreams 2")
	}
	for _, c := range []net.Conn{first, second} {
		if err := testutil.ReadUntilError(c, 200*time.Millisecond); !testutil.IsTimeout(err) {
			t.Fatalf("a stream within MaxStreams was closed: %v", err)
		}
	}
	if got := a.agent.Stats().Refused; got != 1 {
		t.Fatalf("Stats().Refused = %d, want 1", got)
	}
	_, _ = first.Close(), second.Close()
	cli := newClient(t, gw)
	answeredEventually(t, cli, "limited", "after the limit", time.Now().Add(5*time.Second))
}

// TestSessionsPerGateway: an agent with Sessions 4 keeps four sessions to
// its gateway, which lists it once and spreads streams over them; a lost
// session is redialed; leaving removes the agent.
func TestSessionsPerGateway(t *testing.T) {
	gw := startGateway(t, "127.0.0.1:0")
	var mu sync.Mutex
	var conns []net.Conn
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		if err == nil {
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
		return c, err
	}
	a := startAgentWith(t, tunnel.AgentConfig{ID: "multi", Sessions: 4, Dial: dial}, gw.Addr().String())
	waitAgents(t, gw, 1)
	sessions := func(n int) {
		t.Helper()
		testutil.Eventually(t,
			fmt.Sprintf("%d sessions on both sides", n), 10*time.Second, func() bool { return gw.Stats().Sessions == n && a.agent.Stats().Sessions == n })
	}
	sessions(4)
	if got := gw.Agents(); len(got) != 1 || got[0] != "multi" {
		t.Fatalf("Agents() = %v, want [multi]", got)
	}
	// Streams open over the sessions in turn: 8 streams, 2 on each of the
	// 4 sessions (a stream's remote address is its session's connection).
	perSession := map[string]int{}
	for i := 0; i < 8; i++ {
		c, err := gw.Open(context.Background(), "multi")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		perSession[c.RemoteAddr().String()]++
	}
	if len(perSession) != 4 {
		t.Fatalf("8 streams went over %d sessions, want all 4: %v", len(perSession), perSession)
	}
	for addr, n := range perSession {
		if n != 2 {
			t.Fatalf("session %s carries %d of 8 streams, want 2 (in turn): %v", addr, n, perSession)
		}
	}
	cli := newClient(t, gw)
	answeredBy(t, cli, "multi", "over four sessions", 20)

	// A lost session costs at most the calls in flight on it.
	accepted := gw.Stats().SessionsAccepted
	mu.Lock()
	_ = conns[0].Close()
	mu.Unlock()
	testutil.Eventually(t, "the lost session redialed", 10*time.Second, func() bool { return gw.Stats().SessionsAccepted > accepted })
	sessions(4)
	answeredBy(t, cli, "multi", "after a session was lost", 20)

	a.agent.Leave()
	waitAgentsWithin(t, gw, 0, 5*time.Second)
}
