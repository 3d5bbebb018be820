package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/anyconn/kitex-anyconn/transport/websocket"
)

// connFigures are the idle costs of one transport at one size.
type connFigures struct {
	Kind       string  `json:"transport"`
	Conns      int     `json:"connections"` // asked for
	Open       int     `json:"open"`        // opened
	RSSPerConn float64 `json:"server_rss_bytes_per_connection"`
	ServerRSS  int64   `json:"server_rss_bytes"`
	IdleCPU    float64 `json:"server_idle_cpu_ms_per_s"`
	OpenS      float64 `json:"open_s"` // time to open them all
	GatewayRSS float64 `json:"gateway_rss_bytes_per_session,omitempty"`
	Error      string  `json:"error,omitempty"`
}

// connsConfig is the connections part's settings.
type connsConfig struct {
	settle, idleCPU time.Duration
	sessionCPU      time.Duration // yamux: one keep-alive interval, so that every session pings once
	timeout         time.Duration
}

// measureConns opens n idle connections to a server process of kind and
// reads its memory and CPU.
func measureConns(self, kind string, n int, c connsConfig) (connFigures, error) {
	if kind == "yamux" {
		return measureSessions(self, n, c)
	}
	f := connFigures{Kind: kind, Conns: n}
	srv, err := startProc("server", self, []string{"conns", "-kind", kind}, nil, nil)
	if err != nil {
		return f, err
	}
	defer srv.stop(5 * time.Second)
	addr, err := srv.waitReady(20 * time.Second)
	if err != nil {
		return f, err
	}
	time.Sleep(c.settle / 2)
	before := srv.rss()
	t0 := time.Now()
	conns, err := dialAll(kind, addr, n)
	f.OpenS = time.Since(t0).Seconds()
	defer func() {
		for _, cn := range conns {
			_ = cn.Close()
		}
	}()
	if err != nil {
		f.Error = err.Error()
		// Out of file descriptors here, most likely: give a few back, so
		// that /proc can be read.
		if k := max(0, len(conns)-32); k < len(conns) {
			for _, cn := range conns[k:] {
				_ = cn.Close()
			}
			conns = conns[:k]
		}
	}
	f.Open = len(conns)
	if len(conns) == 0 {
		return f, nil
	}
	time.Sleep(c.settle)
	f.ServerRSS = srv.rss()
	f.RSSPerConn = float64(f.ServerRSS-before) / float64(len(conns))
	f.IdleCPU = cpuWindow(srv, c.idleCPU)
	fmt.Fprintf(os.Stderr, "conns %-9s %6d: %.1f KiB per connection, %.2f ms CPU/s idle, opened in %.2fs %s\n",
		kind, n, f.RSSPerConn/1024, f.IdleCPU, f.OpenS, f.Error)
	return f, nil
}

// dialAll opens n connections to addr, 16 at a time; it stops at the
// first error and returns what it opened.
func dialAll(kind, addr string, n int) ([]net.Conn, error) {
	var (
		mu    sync.Mutex
		conns = make([]net.Conn, 0, n)
		next  atomic.Int64
		stop  atomic.Bool
		first error
		wg    sync.WaitGroup
	)
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() && next.Add(1) <= int64(n) {
				var c net.Conn
				var err error
				if kind == "websocket" {
					ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
					c, err = websocket.Dial(ctx, addr, websocket.DialerConfig{PingInterval: -1})
					cancel()
				} else {
					c, err = net.DialTimeout("tcp", addr, 10*time.Second)
				}
				mu.Lock()
				if err != nil {
					if first == nil {
						first = err
					}
					stop.Store(true)
				} else {
					conns = append(conns, c)
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return conns, first
}

// measureSessions runs n agents of one session each in one process (the
// server side: echo runs there) against a gateway process, and reads the
// agents process's memory and CPU per idle session.
func measureSessions(self string, n int, c connsConfig) (connFigures, error) {
	f := connFigures{Kind: "yamux", Conns: n}
	addr, err := freeAddr()
	if err != nil {
		return f, err
	}
	gw, statsURL, err := startGateway(self, []string{"gateway", "-addr", addr, "-agents", strconv.Itoa(n), "-sessions", "1"})
	if err != nil {
		return f, err
	}
	defer gw.kill()
	agents, err := startProc("agents", self, []string{"agents", "-gateway", addr, "-count", strconv.Itoa(n), "-sessions", "1", "-wait"}, nil, nil)
	if err != nil {
		return f, err
	}
	defer agents.stop(5 * time.Second)
	if _, err := agents.waitReady(60 * time.Second); err != nil {
		return f, err
	}
	time.Sleep(c.settle / 2)
	before, gwBefore := agents.rss(), gw.rss()
	t0 := time.Now()
	if err := agents.send("go"); err != nil {
		return f, err
	}
	st, err := waitStorm(statsURL, t0, c.timeout, false)
	f.OpenS = st.AllSessionsS
	var s gatewayStats
	if gerr := getJSON(statsURL, &s); gerr == nil {
		f.Open = s.Sessions
	}
	if err != nil {
		f.Error = strings.TrimSpace(err.Error())
	}
	if f.Open == 0 {
		return f, nil
	}
	time.Sleep(c.settle)
	f.ServerRSS = agents.rss()
	f.RSSPerConn = float64(f.ServerRSS-before) / float64(f.Open)
	f.GatewayRSS = float64(gw.rss()-gwBefore) / float64(f.Open)
	f.IdleCPU = cpuWindow(agents, c.sessionCPU)
	fmt.Fprintf(os.Stderr, "conns %-9s %6d: %.1f KiB per session (gateway %.1f KiB), %.2f ms CPU/s idle, all up in %.2fs %s\n",
		"yamux", n, f.RSSPerConn/1024, f.GatewayRSS/1024, f.IdleCPU, f.OpenS, f.Error)
	return f, nil
}
