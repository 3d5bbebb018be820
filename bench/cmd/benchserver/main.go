// Command benchserver is the server side of `make bench`: one process that
// serves echo on one transport, or the raw TCP floor (a length-prefixed echo
// with no RPC), or that raw echo over tunnel streams. It prints
// "READY <address>" once it serves and runs until its standard input closes
// or it gets SIGTERM.
package main

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"runtime/pprof"
	"syscall"

	"github.com/cloudwego/kitex/pkg/klog"
	"github.com/cloudwego/kitex/server"
	"go.uber.org/zap"

	"github.com/anyconn/kitex-anyconn/internal/obs"
	"github.com/anyconn/kitex-anyconn/internal/tlsconf"
	"github.com/anyconn/kitex-anyconn/kitex_gen/api"
	"github.com/anyconn/kitex-anyconn/kitex_gen/api/echo"
	"github.com/anyconn/kitex-anyconn/transport"
	"github.com/anyconn/kitex-anyconn/transport/tunnel"
)

type handler struct{}

func (*handler) Echo(_ context.Context, req *api.Request) (*api.Response, error) {
	return &api.Response{Message: req.Message}, nil
}

func main() {
	kind := flag.String("kind", "gonet", "raw, yamux-raw (raw over a tunnel stream), netpoll, gonet, websocket or yamux")
	addr := flag.String("addr", "127.0.0.1:0", "listen address (not yamux)")
	gateway := flag.String("gateway", "", "yamux: the gateway to dial")
	token := flag.String("token", "bench-token-0123456789abcdef", "yamux: the tunnel token")
	id := flag.String("id", "bench-agent", "yamux: the agent identity")
	agents := flag.Int("agents", 1, "yamux: agents to run (identities <id>, <id>-1, ...), for the idle-session memory figure")
	sessions := flag.Int("sessions", 1, "yamux: sessions per gateway")
	cpuProfile := flag.String("cpuprofile", "", "write a CPU profile (pprof) of the whole run to this file")
	certFile := flag.String("tls-cert", "", "websocket: serve wss:// with this certificate (PEM; with -tls-key)")
	keyFile := flag.String("tls-key", "", "websocket: the key of -tls-cert (PEM)")
	caFile := flag.String("tls-ca", "", "yamux: reach the gateway over TLS, verifying its certificate against this CA (PEM)")
	flag.Parse()
	klog.SetLevel(klog.LevelWarn)
	var tc tlsFiles
	var err error
	if *certFile != "" {
		if tc.server, err = tlsconf.Server(*certFile, *keyFile, ""); err != nil {
			fmt.Fprintln(os.Stderr, "benchserver:", err)
			os.Exit(1)
		}
	}
	if *caFile != "" {
		if tc.agent, err = tlsconf.Client(*caFile, "", "", ""); err != nil {
			fmt.Fprintln(os.Stderr, "benchserver:", err)
			os.Exit(1)
		}
	}
	if err := profiled(*cpuProfile, func() error { return run(*kind, *addr, *gateway, *token, *id, *agents, *sessions, tc) }); err != nil {
		fmt.Fprintln(os.Stderr, "benchserver:", err)
		os.Exit(1)
	}
}

// profiled runs f, with a CPU profile written to path if path is set.
func profiled(path string, f func() error) error {
	if path == "" {
		return f()
	}
	out, err := os.Create(path)
	if err != nil {
		return err
	}
	defer out.Close()
	if err := pprof.StartCPUProfile(out); err != nil {
		return err
	}
	defer pprof.StopCPUProfile()
	return f()
}

// tlsFiles are the TLS configurations of the flags: the WebSocket server's
// (wss://) and the tunnel agent's (TLS to the gateway), each nil if not set.
type tlsFiles struct {
	server, agent *tls.Config
}

func run(kind, addr, gateway, token, id string, agents, sessions int, tc tlsFiles) error {
	stop := make(chan struct{})
	go func() { _, _ = io.Copy(io.Discard, os.Stdin); close(stop) }()
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)

	if kind == "raw" || kind == "yamux-raw" {
		var ln net.Listener
		var err error
		if kind == "raw" {
			ln, err = net.Listen("tcp", addr)
		} else {
			ln, err = newAgent(id, token, gateway, sessions, tc.agent)
		}
		if err != nil {
			return err
		}
		go serveRaw(ln)
		fmt.Println("READY", ln.Addr())
		select {
		case <-stop:
		case <-sig:
		}
		return ln.Close()
	}

	cfg := transport.ServerConfig{Kind: transport.Kind(kind), Addr: addr}
	cfg.WebSocket.TLSConfig = tc.server
	if kind == string(transport.Yamux) {
		agent, err := newAgent(id, token, gateway, sessions, tc.agent)
		if err != nil {
			return err
		}
		cfg.Listener = agent
		for i := 1; i < agents; i++ {
			extra, err := newAgent(fmt.Sprintf("%s-%d", id, i), token, gateway, 1, tc.agent)
			if err != nil {
				return err
			}
			defer extra.Close()
		}
	}
	opts, bound, err := transport.ServerOptions(cfg)
	if err != nil {
		return err
	}
	// Traced as echo is when the OTEL_* variables ask for it (bench's
	// gonet-traced); nothing otherwise.
	tracing, err := obs.NewTracing(context.Background(), obs.TracingConfig{Service: "benchserver", Transport: kind})
	if err != nil {
		return err
	}
	defer tracing.Stop(zap.NewNop())
	exit := make(chan error, 1)
	svr := echo.NewServer(new(handler), append(append(opts, server.WithExitSignal(func() <-chan error { return exit })), tracing.ServerOptions()...)...)
	done := make(chan error, 1)
	go func() { done <- svr.Run() }()
	fmt.Println("READY", bound.Addr())
	select {
	case <-stop:
	case <-sig:
	case err := <-done:
		return err
	}
	exit <- nil
	<-done
	return nil
}

// newAgent returns a tunnel agent that dials gateway, over TLS if tc is set.
func newAgent(id, token, gateway string, sessions int, tc *tls.Config) (*tunnel.Agent, error) {
	agent, err := tunnel.NewAgent(tunnel.AgentConfig{ID: id, Token: token, Sessions: sessions, TLSConfig: tc})
	if err != nil {
		return nil, err
	}
	agent.SetGateways([]string{gateway})
	return agent, nil
}

// serveRaw echoes length-prefixed frames: 4 bytes big-endian length, then
// the payload, back as they came.
func serveRaw(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			var head [4]byte
			buf := make([]byte, 64<<10)
			var out []byte
			for {
				if _, err := io.ReadFull(c, head[:]); err != nil {
					return
				}
				n := int(binary.BigEndian.Uint32(head[:]))
				if n > len(buf) {
					buf = make([]byte, n)
				}
				if _, err := io.ReadFull(c, buf[:n]); err != nil {
					return
				}
				out = append(append(out[:0], head[:]...), buf[:n]...)
				if _, err := c.Write(out); err != nil {
					return
				}
			}
		}()
	}
}
