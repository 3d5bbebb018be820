// Command egressproxy is the edge site's only way out in `make e2e-kind`: an
// HTTP forward proxy that serves CONNECT only, the way corporate proxies
// pass HTTPS, and logs one JSON line per tunnel (target, bytes each way,
// duration). With -probe host:port it instead tries one TCP connection and
// exits 0 if it opened, 3 if not: the e2e runs it in the edge cluster to
// show that nothing gets out but through the proxy.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/anyconn/kitex-anyconn/internal/connectproxy"
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
	proxy := connectproxy.Proxy{
		OnConnect: func(target, peer string) {
			logLine(map[string]any{"msg": "connect", "target": target, "peer": peer})
		},
		OnClose: func(target, peer string, out, in int64, took time.Duration) {
			logLine(map[string]any{"msg": "closed", "target": target, "peer": peer, "bytes_out": out, "bytes_in": in, "seconds": took.Seconds()})
		},
		OnRefuse: func(peer, reason string) {
			logLine(map[string]any{"msg": "refused", "peer": peer, "reason": reason})
		},
	}
	for {
		c, err := ln.Accept()
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		go proxy.ServeConn(c)
	}
}

func logLine(fields map[string]any) {
	fields["ts"] = time.Now().UTC().Format(time.RFC3339Nano)
	b, _ := json.Marshal(fields)
	fmt.Println(string(b))
}
