package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cloudwego/kitex/client"
	"github.com/cloudwego/kitex/client/callopt"
	"github.com/cloudwego/kitex/pkg/klog"
	"github.com/cloudwego/kitex/server"

	"github.com/anyconn/kitex-anyconn/kitex_gen/api"
	"github.com/anyconn/kitex-anyconn/kitex_gen/api/echo"
	"github.com/anyconn/kitex-anyconn/transport"
	"github.com/anyconn/kitex-anyconn/transport/tunnel"
)

// The child modes: this program started again as `scale <mode> flags...`.

const token = "scale-token-0123456789abcdef0123"

type handler struct{}

func (*handler) Echo(_ context.Context, req *api.Request) (*api.Response, error) {
	return &api.Response{Message: req.Message}, nil
}

// agentID is the identity of the i-th agent of a run.
func agentID(i int) string { return fmt.Sprintf("agent-%d", i) }

// agentSource is the loopback source address agent i dials from: each
// agent its own IP (127.10.0.1 up), as a fleet reaches its gateway from
// many addresses, so that the gateway's per-source handshake limit sees
// what it sees in production.
func agentSource(i int) net.IP {
	return net.IPv4(127, 10+byte(i/(250*250)), byte(i/250%250), byte(i%250+1))
}

// stdinLines delivers this process's standard input lines, and closes the
// channel at EOF: the orchestrator went away or asks us to stop.
func stdinLines() <-chan string {
	ch := make(chan string)
	go func() {
		sc := bufio.NewScanner(os.Stdin)
		for sc.Scan() {
			ch <- sc.Text()
		}
		close(ch)
	}()
	return ch
}

// reply writes a STATS line for the orchestrator.
func reply(v any) {
	b, _ := json.Marshal(v)
	fmt.Printf("STATS %s\n", b)
}

// gatewayStats is what a gateway process tells, at /stats.
type gatewayStats struct {
	Agents            int    `json:"agents"`   // identities with a session now
	Sessions          int    `json:"sessions"` // sessions now
	Accepted          uint64 `json:"accepted"`
	HandshakeFailures uint64 `json:"handshake_failures"` // refused or failed before a session
	Declined          uint64 `json:"declined"`
	HeapBytes         uint64 `json:"heap_bytes"` // HeapInuse + StackInuse, after a GC if asked
	Goroutines        int    `json:"goroutines"`
	AllAgentsNs       int64  `json:"all_agents_unix_ns"`   // first time every expected agent had a session
	AllSessionsNs     int64  `json:"all_sessions_unix_ns"` // first time every expected session was there
	CallsOK           int64  `json:"calls_ok"`
	CallsFailed       int64  `json:"calls_failed"`
	FailedBeforeRound int64  `json:"failed_before_full_round"` // failed calls before the first round where every agent answered
	FullRoundNs       int64  `json:"full_round_unix_ns"`       // end of that round
}

// runGateway is the gateway mode: a tunnel gateway, and a Kitex client
// that calls every expected agent in turn (with -call), as a caller
// hosting the gateway does.
func runGateway(args []string) error {
	fs := flag.NewFlagSet("gateway", flag.ExitOnError)
	addr := fs.String("addr", "127.0.0.1:0", "listen address")
	agents := fs.Int("agents", 0, "agents expected (agent-0 ...)")
	sessions := fs.Int("sessions", 1, "sessions expected per agent")
	call := fs.Bool("call", false, "call every agent in turn, one call every -every")
	every := fs.Duration("every", 2*time.Millisecond, "time between calls")
	maxHS := fs.Int("max-handshakes", 0, "GatewayConfig.MaxHandshakes (default if 0)")
	maxHSSource := fs.Int("max-handshakes-per-source", 0, "GatewayConfig.MaxHandshakesPerSource (default if 0)")
	withTLS := fs.Bool("tls", false, "the tunnel's TLS (a self-signed certificate)")
	_ = fs.Parse(args)
	klog.SetLevel(klog.LevelFatal)
	raiseFileLimit()
	log := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	cfg := tunnel.GatewayConfig{Token: token, Logger: log, MaxHandshakes: *maxHS, MaxHandshakesPerSource: *maxHSSource}
	if *withTLS {
		tc, err := tunnel.SelfSignedTLS()
		if err != nil {
			return err
		}
		cfg.TLSConfig = tc
	}
	gw, err := tunnel.Listen(*addr, cfg)
	if err != nil {
		return err
	}
	defer gw.Close()
	var st struct {
		mu                sync.Mutex
		allAgents, allSes int64
		ok, failed        atomic.Int64
		failedBefore      int64
		fullRound         int64
	}
	// Watch for the moment every expected agent and session is there.
	go func() {
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for range tick.C {
			s := gw.Stats()
			n := len(gw.Agents())
			now := time.Now().UnixNano()
			st.mu.Lock()
			if st.allAgents == 0 && n >= *agents {
				st.allAgents = now
			}
			if st.allSes == 0 && s.Sessions >= *agents**sessions {
				st.allSes = now
			}
			done := st.allAgents != 0 && st.allSes != 0
			st.mu.Unlock()
			if done {
				return
			}
		}
	}()
	if *call && *agents > 0 {
		ct, err := transport.NewClientTransport(transport.ClientConfig{Kind: transport.Yamux, Dialer: gw.Dialer()})
		if err != nil {
			return err
		}
		defer ct.Close()
		cli, err := echo.NewClient("echo", append(ct.Options(), client.WithRPCTimeout(2*time.Second))...)
		if err != nil {
			return err
		}
		go func() {
			tick := time.NewTicker(*every)
			defer tick.Stop()
			for {
				allOK := true
				for i := 0; i < *agents; i++ {
					<-tick.C
					id := agentID(i)
					_, err := cli.Echo(context.Background(), &api.Request{Message: id}, callopt.WithHostPort(id))
					if err != nil {
						st.failed.Add(1)
						allOK = false
					} else {
						st.ok.Add(1)
					}
				}
				st.mu.Lock()
				if allOK && st.fullRound == 0 {
					st.fullRound, st.failedBefore = time.Now().UnixNano(), st.failed.Load()
				}
				st.mu.Unlock()
			}
		}()
	}
	http.HandleFunc("/stats", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("gc") != "" {
			runtime.GC()
		}
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		s := gw.Stats()
		st.mu.Lock()
		out := gatewayStats{Agents: len(gw.Agents()), Sessions: s.Sessions, Accepted: s.SessionsAccepted,
			HandshakeFailures: s.HandshakeFailures, Declined: s.Declined, HeapBytes: ms.HeapInuse + ms.StackInuse,
			Goroutines: runtime.NumGoroutine(), AllAgentsNs: st.allAgents, AllSessionsNs: st.allSes,
			CallsOK: st.ok.Load(), CallsFailed: st.failed.Load(), FailedBeforeRound: st.failedBefore, FullRoundNs: st.fullRound}
		st.mu.Unlock()
		_ = json.NewEncoder(w).Encode(out)
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	go func() { _ = http.Serve(ln, nil) }()
	fmt.Println("READY", gw.Addr(), ln.Addr())
	for range stdinLines() {
	}
	return nil
}

// agentStats is what an agents process tells.
type agentStats struct {
	Agents     int    `json:"agents"`
	Sessions   int    `json:"sessions"`
	Reconnects uint64 `json:"reconnects"`
	Failures   uint64 `json:"failures"`
	Streams    uint64 `json:"streams"`
	Closed     int    `json:"closed"` // agents whose listener returned an error: given up
}

// runAgents is the agents mode: -count tunnel agents (identities from
// -first), each with its own sessions and its own source address, served
// by one Kitex echo server through a listener that takes the streams of
// all of them. With -wait, the agents dial only after a "go" line.
func runAgents(args []string) error {
	fs := flag.NewFlagSet("agents", flag.ExitOnError)
	gateway := fs.String("gateway", "", "gateway address")
	first := fs.Int("first", 0, "index of the first agent")
	count := fs.Int("count", 1, "agents in this process")
	sessions := fs.Int("sessions", 1, "AgentConfig.Sessions")
	wait := fs.Bool("wait", false, "dial only after a \"go\" line on standard input")
	bmin := fs.Duration("backoff-min", 0, "AgentConfig.BackoffMin (default if 0)")
	bmax := fs.Duration("backoff-max", 0, "AgentConfig.BackoffMax (default if 0)")
	withTLS := fs.Bool("tls", false, "the tunnel's TLS (the gateway's certificate is self-signed: not verified, the handshake is bound to the TLS session)")
	oneSource := fs.Bool("one-source", false, "every agent dials from 127.0.0.1 (a fleet behind one NAT address)")
	_ = fs.Parse(args)
	klog.SetLevel(klog.LevelFatal)
	raiseFileLimit()
	log := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	fan := newFanIn()
	var agents []*tunnel.Agent
	for i := *first; i < *first+*count; i++ {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: agentSource(i)}}
		if *oneSource {
			d.LocalAddr = nil
		}
		cfg := tunnel.AgentConfig{ID: agentID(i), Token: token, Sessions: *sessions,
			BackoffMin: *bmin, BackoffMax: *bmax, Logger: log, Dial: d.DialContext}
		if *withTLS {
			cfg.TLSConfig = &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13} //nolint:gosec // see SelfSignedTLS
		}
		a, err := tunnel.NewAgent(cfg)
		if err != nil {
			return err
		}
		agents = append(agents, a)
		fan.add(a)
	}
	opts, _, err := transport.ServerOptions(transport.ServerConfig{Kind: transport.Yamux, Listener: fan})
	if err != nil {
		return err
	}
	svr := echo.NewServer(new(handler), opts...)
	go func() { _ = svr.Run() }()
	start := func() {
		for _, a := range agents {
			a.SetGateways([]string{*gateway})
		}
	}
	if !*wait {
		start()
	}
	fmt.Println("READY", len(agents))
	for l := range stdinLines() {
		switch l {
		case "go":
			start()
		case "stats":
			var s agentStats
			s.Agents, s.Closed = len(agents), int(fan.closed.Load())
			for _, a := range agents {
				as := a.Stats()
				s.Sessions += as.Sessions
				s.Reconnects += as.Reconnects
				s.Failures += as.Failures
				s.Streams += as.Streams
			}
			reply(s)
		}
	}
	// Leave without a drain: the run is over.
	os.Exit(0)
	return nil
}

// fanIn is one net.Listener over many agents: a Kitex server for all.
type fanIn struct {
	ch     chan net.Conn
	done   chan struct{}
	once   sync.Once
	addr   net.Addr
	closed atomic.Int64
}

func newFanIn() *fanIn {
	return &fanIn{ch: make(chan net.Conn), done: make(chan struct{})}
}

func (f *fanIn) add(a *tunnel.Agent) {
	if f.addr == nil {
		f.addr = a.Addr()
	}
	go func() {
		for {
			c, err := a.Accept()
			if err != nil {
				f.closed.Add(1)
				return
			}
			select {
			case f.ch <- c:
			case <-f.done:
				_ = c.Close()
				return
			}
		}
	}()
}

func (f *fanIn) Accept() (net.Conn, error) {
	select {
	case c := <-f.ch:
		return c, nil
	case <-f.done:
		return nil, net.ErrClosed
	}
}

func (f *fanIn) Close() error {
	f.once.Do(func() { close(f.done) })
	return nil
}

func (f *fanIn) Addr() net.Addr { return f.addr }

// runConns is the conns mode: an echo server on one transport, for the
// idle-connection figures.
func runConns(args []string) error {
	fs := flag.NewFlagSet("conns", flag.ExitOnError)
	kind := fs.String("kind", "gonet", "netpoll, gonet or websocket")
	_ = fs.Parse(args)
	klog.SetLevel(klog.LevelFatal)
	raiseFileLimit()
	opts, bound, err := transport.ServerOptions(transport.ServerConfig{Kind: transport.Kind(*kind), Addr: "127.0.0.1:0"})
	if err != nil {
		return err
	}
	exit := make(chan error, 1)
	svr := echo.NewServer(new(handler), append(opts, server.WithExitSignal(func() <-chan error { return exit }))...)
	go func() { _ = svr.Run() }()
	fmt.Println("READY", bound.Addr())
	for range stdinLines() {
	}
	os.Exit(0)
	return nil
}
