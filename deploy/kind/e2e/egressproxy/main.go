// Command egressproxy is the edge site's only way out in `make e2e-kind`: an
// HTTP forward proxy that serves CONNECT only, the way corporate proxies
// pass HTTPS, and logs one JSON line per tunnel (target, bytes each way,
// duration). With -probe host:port it instead tries one TCP connection and
// exits 0 if it opened, 3 if not: the e2e runs it in the edge cluster to
// show that nothing gets out but through the proxy.
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sync/atomic"
	"time"
)

func main() {
	listen := flag.String("listen", ":3128", "address to serve CONNECT on")
	probe := flag.String("probe", "", "host:port: try one TCP connection (5 s) and exit 0 if it opened, 3 if not")
	flag.Parse()
	if *probe != "" {
		c, err := net.DialTimeout("tcp", *probe, 5*time.Second)
		if err != nil {
			fmt.Printf("probe %s: unreachable: %v\n", *probe, err)
			os.Exit(3)
		}
		_ = c.Close()
		fmt.Printf("probe %s: reachable\n", *probe)
		return
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	logLine(map[string]any{"msg": "egress proxy listening", "listen": ln.Addr().String()})
	for {
		c, err := ln.Accept()
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		go serve(c)
	}
}

func logLine(fields map[string]any) {
	fields["ts"] = time.Now().UTC().Format(time.RFC3339Nano)
	b, _ := json.Marshal(fields)
	fmt.Println(string(b))
}

func serve(c net.Conn) {
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(c)
	req, err := http.ReadRequest(br)
	if err != nil {
		return
	}
	_ = c.SetReadDeadline(time.Time{})
	if req.Method != http.MethodConnect {
		_, _ = io.WriteString(c, "HTTP/1.1 405 Method Not Allowed\r\nAllow: CONNECT\r\nContent-Length: 0\r\n\r\n")
		logLine(map[string]any{"msg": "refused", "method": req.Method, "peer": c.RemoteAddr().String()})
		return
	}
	began := time.Now()
	up, err := net.DialTimeout("tcp", req.Host, 10*time.Second)
	if err != nil {
		_, _ = io.WriteString(c, "HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
		logLine(map[string]any{"msg": "connect failed", "target": req.Host, "peer": c.RemoteAddr().String(), "error": err.Error()})
		return
	}
	defer up.Close()
	_, _ = io.WriteString(c, "HTTP/1.1 200 Connection established\r\n\r\n")
	logLine(map[string]any{"msg": "connect", "target": req.Host, "peer": c.RemoteAddr().String()})
	var out, in atomic.Int64
	done := make(chan struct{})
	go func() {
		n, _ := io.Copy(up, br)
		out.Store(n)
		if tc, ok := up.(*net.TCPConn); ok {
			_ = tc.CloseWrite()
		}
		close(done)
	}()
	n, _ := io.Copy(c, up)
	in.Store(n)
	_ = c.Close()
	<-done
	logLine(map[string]any{"msg": "closed", "target": req.Host, "peer": c.RemoteAddr().String(),
		"bytes_out": out.Load(), "bytes_in": in.Load(), "seconds": time.Since(began).Seconds()})
}
