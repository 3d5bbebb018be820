package main

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/anyconn/kitex-anyconn/bench/internal/sysinfo"
	"github.com/anyconn/kitex-anyconn/transport"
	"github.com/anyconn/kitex-anyconn/transport/tunnel"
	"github.com/anyconn/kitex-anyconn/transport/websocket"
)

// idleConns is how many idle connections the memory figure opens.
const idleConns = 1000

// idleSessions is how many extra agents the idle-session figure runs.
const idleSessions = 200

// idleCPUWindow is how long the server's CPU time is read while all those
// connections or sessions are idle (shorter with -quick).
var idleCPUWindow = 5 * time.Second

// idleFigures are what an idle server costs.
type idleFigures struct {
	RSSPerConn float64 `json:"rss_bytes_per_connection"` // yamux: per tunnel session
	CPUPerSec  float64 `json:"cpu_ms_per_second"`        // with every connection open and idle
}

// idleCPU returns the server's CPU time per second over idleCPUWindow, in ms.
func idleCPU(srv *server) float64 {
	before := srv.cpu()
	time.Sleep(idleCPUWindow)
	return float64((srv.cpu() - before).Milliseconds()) / idleCPUWindow.Seconds()
}

// idleCosts measures the server's resident memory per idle connection of
// kind (for yamux: per idle tunnel session, agent side) and its CPU time
// while they are all idle.
func idleCosts(bin, kind string) (idleFigures, error) {
	if kind == "yamux" {
		return idleSessionCosts(bin)
	}
	srv, err := startServer(bin, "-kind", kind)
	if err != nil {
		return idleFigures{}, err
	}
	defer srv.stop()
	time.Sleep(300 * time.Millisecond)
	before := srv.rss()
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			_ = c.Close()
		}
	}()
	for i := 0; i < idleConns; i++ {
		var c net.Conn
		if kind == string(transport.WebSocket) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			c, err = websocket.Dial(ctx, srv.addr, websocket.DialerConfig{})
			cancel()
		} else {
			c, err = net.DialTimeout("tcp", srv.addr, 5*time.Second)
		}
		if err != nil {
			return idleFigures{}, fmt.Errorf("idle connection %d: %w", i, err)
		}
		conns = append(conns, c)
	}
	time.Sleep(time.Second)
	rss := float64(srv.rss()-before) / idleConns
	return idleFigures{RSSPerConn: rss, CPUPerSec: idleCPU(srv)}, nil
}

func idleSessionCosts(bin string) (idleFigures, error) {
	gw, err := tunnel.Listen("127.0.0.1:0", tunnel.GatewayConfig{Token: "bench-token-0123456789abcdef"})
	if err != nil {
		return idleFigures{}, err
	}
	defer gw.Close()
	var cpu float64 // of the last call, the one with every session open
	rss := func(agents int) (int64, error) {
		srv, err := startServer(bin, "-kind", "yamux", "-gateway", gw.Addr().String(), "-agents", strconv.Itoa(agents))
		if err != nil {
			return 0, err
		}
		defer srv.stop()
		for deadline := time.Now().Add(20 * time.Second); len(gw.Agents()) < agents; time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				return 0, fmt.Errorf("%d of %d agents connected", len(gw.Agents()), agents)
			}
		}
		time.Sleep(time.Second)
		rss := srv.rss()
		cpu = idleCPU(srv)
		return rss, nil
	}
	one, err := rss(1)
	if err != nil {
		return idleFigures{}, err
	}
	for deadline := time.Now().Add(10 * time.Second); len(gw.Agents()) > 0 && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	many, err := rss(1 + idleSessions)
	if err != nil {
		return idleFigures{}, err
	}
	return idleFigures{RSSPerConn: float64(many-one) / idleSessions, CPUPerSec: cpu}, nil
}

// rss returns the server's resident set size in bytes.
func (s *server) rss() int64 { return sysinfo.RSS(s.cmd.Process.Pid) }
