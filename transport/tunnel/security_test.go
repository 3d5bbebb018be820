package tunnel_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cloudwego/kitex/client"
	"github.com/hashicorp/yamux"

	"github.com/anyconn/kitex-anyconn/internal/testutil"
	"github.com/anyconn/kitex-anyconn/kitex_gen/api"
	"github.com/anyconn/kitex-anyconn/kitex_gen/api/echo"
	"github.com/anyconn/kitex-anyconn/transport"
	"github.com/anyconn/kitex-anyconn/transport/connadapt"
	"github.com/anyconn/kitex-anyconn/transport/tunnel"
)

// A fake gateway (anyone who can put an address where agents look for
// gateways) learns nothing it could replay and cannot call the agent,
// whatever it answers.
func TestFakeGatewayLearnsNothingAndCannotCall(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	a := startAgent(t, "victim", ln.Addr().String())

	garbage := make([]byte, 32+1+32)
	_, _ = rand.Read(garbage)
	answers := map[string][]byte{
		"accepted":          {0, 0},
		"challenge, no key": append([]byte{2}, append(garbage[:33:33], append([]byte{1}, garbage[33:]...)...)...),
	}
	for name, answer := range answers {
		c, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		heard, _ := io.ReadAll(c)
		if len(heard) == 0 {
			t.Fatalf("%s: the agent sent nothing", name)
		}
		if bytes.Contains(heard, []byte(token)) {
			t.Fatalf("%s: the agent sent its token to an unauthenticated gateway: %q", name, heard)
		}
		_ = c.SetDeadline(time.Now().Add(3 * time.Second))
		_, _ = c.Write(answer)
		if err := callThrough(t, c); err == nil {
			t.Fatalf("%s: a fake gateway called the agent", name)
		}
		_ = c.Close()
	}
	if n := a.agent.Stats().Streams; n != 0 {
		t.Fatalf("the agent accepted %d streams from fake gateways", n)
	}
}

// callThrough runs a yamux session as a gateway would over c and makes one
// Echo call on it.
func callThrough(t *testing.T, c net.Conn) error {
	sess, err := yamux.Client(c, nil)
	if err != nil {
		return err
	}
	defer sess.Close()
	ct, err := transport.NewClientTransport(transport.ClientConfig{Kind: transport.Yamux, Dialer: connadapt.Dialer{
		Dial: func(context.Context, string, string) (net.Conn, error) { return sess.OpenStream() },
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer ct.Close()
	cli, err := echo.NewClient("echo", append(ct.Options(), client.WithHostPorts("127.0.0.1:1"),
		client.WithRPCTimeout(time.Second))...)
	if err != nil {
		t.Fatal(err)
	}
	_, err = cli.Echo(context.Background(), &api.Request{Message: "stolen"})
	return err
}

// A handshake recorded on the wire and replayed later opens no session.
func TestRecordedHandshakeReplayFails(t *testing.T) {
	gw := startGateway(t, "127.0.0.1:0")
	rec := startRecorder(t, gw.Addr().String())
	a := startAgent(t, "recorded", rec.addr())
	waitAgents(t, gw, 1)
	a.stop()
	waitAgents(t, gw, 0)
	before := gw.Stats().SessionsAccepted

	c, err := net.Dial("tcp", gw.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, _ = c.Write(rec.sent())
	_ = testutil.ReadUntilError(c, 2*time.Second)
	if n := gw.Stats().SessionsAccepted - before; n != 0 || len(gw.Agents()) != 0 {
		t.Fatalf("a replayed handshake opened %d sessions (agents %v)", n, gw.Agents())
	}
}

// recorder relays TCP connections to a target and keeps what the first
// client sent.
type recorder struct {
	ln  net.Listener
	mu  sync.Mutex
	buf bytes.Buffer
	wg  sync.WaitGroup
}

func startRecorder(t *testing.T, target string) *recorder {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &recorder{ln: ln}
	var conns []net.Conn
	var cmu sync.Mutex
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		for first := true; ; first = false {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", target)
			if err != nil {
				_ = c.Close()
				continue
			}
			cmu.Lock()
			conns = append(conns, c, up)
			cmu.Unlock()
			var w io.Writer = up
			if first {
				w = io.MultiWriter(up, r)
			}
			r.wg.Add(2)
			go func() { defer r.wg.Done(); _, _ = io.Copy(w, c); _ = up.Close() }()
			go func() { defer r.wg.Done(); _, _ = io.Copy(c, up); _ = c.Close() }()
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		cmu.Lock()
		for _, c := range conns {
			_ = c.Close()
		}
		cmu.Unlock()
		r.wg.Wait()
	})
	return r
}

func (r *recorder) addr() string { return r.ln.Addr().String() }

func (r *recorder) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.buf.Write(p)
}

func (r *recorder) sent() []byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return bytes.Clone(r.buf.Bytes())
}

// Under mutual TLS an agent is who its certificate says: a certificate
// for one identity cannot register as another.
func TestCertificateBindsIdentity(t *testing.T) {
	ca := testutil.NewCA(t)
	gw := mutualTLSGateway(t, ca)
	addr := gw.Addr().String()
	certA := ca.Issue(t, "agent-a", x509.ExtKeyUsageClientAuth)
	thief := startAgentWith(t, tunnel.AgentConfig{ID: "agent-b", TLSConfig: &tls.Config{RootCAs: ca.Pool, Certificates: []tls.Certificate{certA}}}, addr)
	startAgentWith(t, tunnel.AgentConfig{ID: "agent-a", TLSConfig: &tls.Config{RootCAs: ca.Pool, Certificates: []tls.Certificate{certA}}}, addr)
	waitAgents(t, gw, 1)
	testutil.Eventually(t, "two refused attempts of the agent with another's certificate", 5*time.Second, func() bool { return thief.agent.Stats().Failures >= 2 })
	if ids := gw.Agents(); len(ids) != 1 || ids[0] != "agent-a" {
		t.Fatalf("agents %v; want only agent-a (a certificate for agent-a registered as agent-b?)", ids)
	}
}

// Connections from one address that hold handshake slots (silent, and
// dialing again as soon as they are closed) do not starve agents elsewhere.
// The gateway has 64 slots, not the default 1,024: the point is more
// connections than slots, and a thousand re-dialing at once would only
// measure the machine.
func TestOneSourceCannotStarveHandshakes(t *testing.T) {
	const slots = 64
	gw, err := tunnel.Listen("127.0.0.1:0", tunnel.GatewayConfig{Token: token, HandshakeTimeout: 500 * time.Millisecond, MaxHandshakes: slots})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = gw.Close() })
	addr := gw.Addr().String()
	testutil.HoldHandshakes(t, addr, slots+32, nil)
	var failures []error
	const tries = 30
	for range tries {
		if err := rawHandshake(addr, "legit", token); err != nil {
			failures = append(failures, err)
		}
	}
	if len(failures) != 0 {
		t.Fatalf("%d of %d handshakes from 127.0.0.1 failed while 127.0.0.2 held the slots: %v", len(failures), tries, failures)
	}
}

// A peer that keeps failing its handshake gets a few log lines, not one
// per attempt.
func TestRefusalLogsAreSampled(t *testing.T) {
	log, logs := testutil.NewLogs(slog.LevelWarn)
	gw, err := tunnel.Listen("127.0.0.1:0", tunnel.GatewayConfig{Token: token, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	defer gw.Close()
	const attempts = 200
	for range attempts {
		_ = rawHandshake(gw.Addr().String(), "guesser", "wrong-token-wrong-token-wrong")
	}
	n := logs.Len()
	t.Logf("%d refused handshakes, %d warning lines", attempts, n)
	if n == 0 || n > 3 {
		t.Fatalf("%d warning lines for %d refused handshakes, want 1 to 3", n, attempts)
	}
}

// A second agent that claims an identity in use, with only the shared
// token, does not take it over from the live agent; once that agent is
// gone, the identity is free at once (a restarted pod reconnects).
func TestLiveIdentityIsNotTakenOver(t *testing.T) {
	gw := startGateway(t, "127.0.0.1:0")
	addr := gw.Addr().String()
	first := startAgent(t, "twin", addr)
	waitAgents(t, gw, 1)
	second := startAgent(t, "twin", addr)
	testutil.Eventually(t, "three refused attempts of the second agent", 5*time.Second, func() bool { return second.agent.Stats().Failures >= 3 })
	if st := first.agent.Stats(); st.Sessions != 1 || st.Reconnects != 0 {
		t.Fatalf("the live agent lost its identity to a second one: %+v (second %+v)", st, second.agent.Stats())
	}
	first.stop()
	began := time.Now()
	testutil.Eventually(t, "the identity free for the second agent once the first left", 5*time.Second, func() bool { return second.agent.Stats().Sessions == 1 })
	t.Logf("identity taken over %v after its agent had left", time.Since(began).Round(time.Millisecond))
}

// Per-agent tokens bind an identity: only its own token opens it, its
// token opens no other, the shared token no longer opens it, and removing
// a token from the file (re-read while the gateway runs) closes the
// sessions it opened. Two tokens for one identity make a rotation.
func TestAgentTokensFile(t *testing.T) {
	dir := t.TempDir()
	const tokA1, tokA2, tokB = "token-of-agent-a-number-1", "token-of-agent-a-number-2", "token-of-agent-b-number-1"
	agents := filepath.Join(dir, "agents")
	write := func(file, content string) {
		t.Helper()
		if err := os.WriteFile(file+".tmp", []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(file+".tmp", file); err != nil { // atomic, like a Secret volume
			t.Fatal(err)
		}
	}
	write(agents, "# identity token\nagent-a "+tokA1+"\nagent-b "+tokB+"\n")
	gw, err := tunnel.Listen("127.0.0.1:0", tunnel.GatewayConfig{Token: token, AgentTokensFile: agents,
		ReloadInterval: 20 * time.Millisecond, HandshakeTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = gw.Close() })
	addr := gw.Addr().String()
	for _, c := range []struct{ id, tok string }{{"agent-a", token}, {"agent-a", tokB}, {"agent-b", tokA1}} {
		if err := rawHandshake(addr, c.id, c.tok); !errors.Is(err, tunnel.ErrGatewayUnauthenticated) {
			t.Fatalf("%s with another's token: %v, want ErrGatewayUnauthenticated", c.id, err)
		}
	}
	if err := rawHandshake(addr, "agent-c", token); err != nil {
		t.Fatalf("an identity without its own token, with the shared one: %v", err)
	}

	aFile := filepath.Join(dir, "a")
	write(aFile, tokA1+"\n")
	a := startAgentWith(t, tunnel.AgentConfig{ID: "agent-a", TokenFile: aFile}, addr)
	// agent-c's probe may still be listed for a moment: wait for agent-a
	// itself, connected with tokA1, before the file changes.
	testutil.Eventually(t, "agent-a connected, alone", 15*time.Second, func() bool {
		return a.agent.Stats().Sessions == 1 && slices.Equal(gw.Agents(), []string{"agent-a"})
	})
	// Rotation: the new token next to the old, the agent moves to it, the
	// old goes. The session opened with the old token is closed, and the
	// agent comes back with the new one.
	write(agents, "agent-a "+tokA1+"\nagent-a "+tokA2+"\nagent-b "+tokB+"\n")
	write(aFile, tokA2+"\n")
	time.Sleep(100 * time.Millisecond)
	if st := a.agent.Stats(); st.Reconnects != 0 {
		t.Fatalf("adding a token cut the session: %+v", st)
	}
	write(agents, "agent-a "+tokA2+"\nagent-b "+tokB+"\n")
	waitRedial(t, a, 0, "the session of a removed token")
	waitAgents(t, gw, 1)
	// Revocation: agent-a's line removed, its session closed, no way back.
	write(agents, "agent-b "+tokB+"\n")
	testutil.Eventually(t,
		"the revoked agent's session closed and its attempts refused", 5*time.Second, func() bool { return len(gw.Agents()) == 0 && a.agent.Stats().Failures >= 2 })
	// A file that no longer parses keeps the tokens in force.
	write(agents, "agent-b short\n")
	time.Sleep(100 * time.Millisecond)
	if err := rawHandshake(addr, "agent-b", tokB); err != nil {
		t.Fatalf("after a broken reload: %v", err)
	}
}

// A new instance of an agent with a per-agent token takes its identity
// over at once, even while the old one still answers (a pod replaced
// before the old one's connection died).
func TestBoundIdentityIsTakenOverByNewInstance(t *testing.T) {
	dir := t.TempDir()
	const tok = "token-of-the-restarted-one"
	agents := filepath.Join(dir, "agents")
	if err := os.WriteFile(agents, []byte("pod-0 "+tok+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	log, logs := testutil.NewLogs(slog.LevelWarn)
	gw, err := tunnel.Listen("127.0.0.1:0", tunnel.GatewayConfig{AgentTokensFile: agents, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = gw.Close() })
	tokFile := filepath.Join(dir, "tok")
	if err := os.WriteFile(tokFile, []byte(tok), 0o600); err != nil {
		t.Fatal(err)
	}
	old := startAgentWith(t, tunnel.AgentConfig{ID: "pod-0", TokenFile: tokFile}, gw.Addr().String())
	waitAgents(t, gw, 1)
	old.agent.SetGateways(nil) // the old one will not come back
	startAgentWith(t, tunnel.AgentConfig{ID: "pod-0", TokenFile: tokFile}, gw.Addr().String())
	testutil.Eventually(t, "the new instance taking the identity over", 5*time.Second, func() bool { return old.agent.Stats().Sessions == 0 })
	taken := logs.Containing("identity taken over")
	if len(taken) != 1 || taken[0].Attrs["peer"].String() == "" || taken[0].Attrs["previous_peer"].String() == "" {
		t.Fatalf("takeover logged as %v, want one line naming both peers", taken)
	}
}

// A gateway that knows its address refuses a handshake relayed to it from
// another address (an impostor registered in discovery that forwards the
// bytes), even without TLS.
func TestRelayedHandshakeRefused(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gw, err := tunnel.NewGateway(ln, tunnel.GatewayConfig{Token: token, Addresses: []string{ln.Addr().String()}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = gw.Close() })
	if err := rawHandshake(gw.Addr().String(), "direct", token); err != nil {
		t.Fatalf("direct handshake: %v", err)
	}
	relay := startRecorder(t, gw.Addr().String())
	if err := rawHandshake(relay.addr(), "relayed", token); !errors.Is(err, tunnel.ErrRefused) {
		t.Fatalf("relayed handshake: %v, want ErrRefused", err)
	}
}

// A man in the middle that terminates TLS towards the agent and opens its
// own TLS to the gateway (the agent does not verify the gateway's
// self-signed certificate) cannot get through: the proofs are bound to
// each TLS session.
func TestTLSManInTheMiddleFails(t *testing.T) {
	gwTLS, err := tunnel.SelfSignedTLS()
	if err != nil {
		t.Fatal(err)
	}
	gw, err := tunnel.Listen("127.0.0.1:0", tunnel.GatewayConfig{Token: token, TLSConfig: gwTLS, HandshakeTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = gw.Close() })
	insecure := &tls.Config{InsecureSkipVerify: true}
	startAgentWith(t, tunnel.AgentConfig{ID: "direct", TLSConfig: insecure}, gw.Addr().String())
	waitAgents(t, gw, 1)
	if got, err := call(newClient(t, gw), "tls"); err != nil || got != "direct:tls" {
		t.Fatalf("call over the self-signed gateway: %q, %v", got, err)
	}

	mitmTLS, err := tunnel.SelfSignedTLS()
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", mitmTLS)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { _ = ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := tls.Dial("tcp", gw.Addr().String(), insecure)
			if err != nil {
				_ = c.Close()
				continue
			}
			wg.Add(2)
			go func() { defer wg.Done(); _, _ = io.Copy(up, c); _ = up.Close() }()
			go func() { defer wg.Done(); _, _ = io.Copy(c, up); _ = c.Close() }()
		}
	}()
	victim, err := tunnel.NewAgent(tunnel.AgentConfig{ID: "victim", Token: token, TLSConfig: insecure, BackoffMin: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	victim.SetGateways([]string{ln.Addr().String()})
	testutil.Eventually(t, "two failed attempts through the man in the middle", 5*time.Second, func() bool { return victim.Stats().Failures >= 2 })
	_ = victim.Shutdown(context.Background())
	if st := victim.Stats(); st.Failures < 2 || st.Sessions != 0 || st.Reconnects != 0 {
		t.Fatalf("agent behind a TLS man in the middle: %+v", st)
	}
	if ids := gw.Agents(); len(ids) != 1 {
		t.Fatalf("agents %v, want only the direct one", ids)
	}
}

// Old agents and short tokens are refused with a clear reason.
func TestVersionAndTokenLength(t *testing.T) {
	gw := startGateway(t, "127.0.0.1:0")
	c, err := net.Dial("tcp", gw.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, _ = c.Write([]byte("KXTN\x01\x01a\x00\x1f" + token)) // a version 1 agent
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	answer, _ := io.ReadAll(c)
	if len(answer) < 2 || answer[0] != 1 || !bytes.Contains(answer, []byte("protocol version 1 is not accepted")) {
		t.Fatalf("a version 1 hello got %q", answer)
	}
	if _, err := tunnel.Listen("127.0.0.1:0", tunnel.GatewayConfig{Token: "short-token"}); err == nil {
		t.Fatal("a gateway accepted an 11-character token")
	}
	if _, err := tunnel.NewAgent(tunnel.AgentConfig{ID: "a", Token: "short-token"}); err == nil {
		t.Fatal("an agent accepted an 11-character token")
	}
}

// A plaintext gateway and a plaintext agent each warn once, at start,
// naming the risk, however many sessions they make; over TLS neither does.
func TestPlaintextWarnsOnce(t *testing.T) {
	for _, secure := range []bool{false, true} {
		log, logs := testutil.NewLogs(slog.LevelWarn)
		var gwTLS, agentTLS *tls.Config
		if secure {
			var err error
			if gwTLS, err = tunnel.SelfSignedTLS(); err != nil {
				t.Fatal(err)
			}
			agentTLS = &tls.Config{InsecureSkipVerify: true} //nolint:gosec // authenticated by the channel-bound handshake
		}
		var addrs []string
		var gws []*tunnel.Gateway
		for range 2 {
			gw, err := tunnel.Listen("127.0.0.1:0", tunnel.GatewayConfig{Token: token, TLSConfig: gwTLS, Logger: log})
			if err != nil {
				t.Fatal(err)
			}
			defer gw.Close()
			gws, addrs = append(gws, gw), append(addrs, gw.Addr().String())
		}
		a := startAgentWith(t, tunnel.AgentConfig{ID: "plain", TLSConfig: agentTLS, Logger: log}, addrs...)
		for _, gw := range gws {
			waitAgents(t, gw, 1)
		}
		a.stop()
		warned := logs.Containing("plaintext")
		switch {
		case secure && len(warned) != 0:
			t.Fatalf("TLS tunnel warned: %v", warned)
		case !secure && len(warned) != 3: // two gateways, one agent
			t.Fatalf("plaintext: %d warnings, want one per gateway and one for the agent: %v", len(warned), warned)
		case !secure && !strings.Contains(warned[0].Message, "take over a session"):
			t.Fatalf("the warning does not name the risk: %q", warned[0].Message)
		}
	}
}
