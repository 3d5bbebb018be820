package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/anyconn/kitex-anyconn/transport/tunnel"
	"github.com/anyconn/kitex-anyconn/transport/websocket"
)

// idleConns is how many idle connections the memory figure opens.
const idleConns = 1000

// idleSessions is how many extra agents the idle-session figure runs.
const idleSessions = 200

// idleMemory returns the server's resident memory per idle connection of
// kind (for yamux: per idle tunnel session, agent side).
func idleMemory(bin, kind string) (float64, error) {
	if kind == "yamux" {
		return idleSessionMemory(bin)
	}
	srv, err := startServer(bin, "-kind", kind)
	if err != nil {
		return 0, err
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
		if strings.HasPrefix(kind, "websocket") {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			c, err = websocket.Dial(ctx, srv.addr, websocket.DialerConfig{XNetFraming: kind == "websocket-xnet"})
			cancel()
		} else {
			c, err = net.DialTimeout("tcp", srv.addr, 5*time.Second)
		}
		if err != nil {
			return 0, fmt.Errorf("idle connection %d: %w", i, err)
		}
		conns = append(conns, c)
	}
	time.Sleep(time.Second)
	return float64(srv.rss()-before) / idleConns, nil
}

func idleSessionMemory(bin string) (float64, error) {
	gw, err := tunnel.Listen("127.0.0.1:0", tunnel.GatewayConfig{Token: "bench"})
	if err != nil {
		return 0, err
	}
	defer gw.Close()
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
		return srv.rss(), nil
	}
	one, err := rss(1)
	if err != nil {
		return 0, err
	}
	for deadline := time.Now().Add(10 * time.Second); len(gw.Agents()) > 0 && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	many, err := rss(1 + idleSessions)
	if err != nil {
		return 0, err
	}
	return float64(many-one) / idleSessions, nil
}

// rss returns the server's resident set size in bytes.
func (s *server) rss() int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", s.cmd.Process.Pid))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "VmRSS:") {
			f := strings.Fields(l)
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb * 1024
		}
	}
	return 0
}
