// Command rogue plays an attacker pod in the kind e2e (deploy/kind/e2e, yamux
// transport). It registers itself in etcd as a tunnel gateway of SERVICE, as a
// caller's gateway would, and listens as one, to see what echo's agents give
// away to a gateway that does not hold the tunnel token. A protocol v3 agent
// sends its hello only, finds that the gateway's proof is wrong and hangs up:
// no token, no stream, no call.
//
// Environment: ETCD_ENDPOINTS (e2e-etcd:2379), SERVICE (e2e-echo-tunnel),
// POD_IP, LISTEN (default :7000), DURATION (default 40s).
//
// After DURATION (or SIGTERM) it prints one JSON line on stdout and exits 0;
// the e2e runner judges it (only the runner knows the token). It exits
// non-zero only when it cannot set itself up.
package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/yamux"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/anyconn/kitex-anyconn/internal/etcdreg"
	"github.com/anyconn/kitex-anyconn/transport/tunnel"
)

// capture bounds what is kept of the bytes the agents send (all connections).
const capture = 4 << 10

// report is the one JSON line printed at the end.
type report struct {
	EtcdWrite      string `json:"etcd_write"`      // "ok" or the error
	Connections    int    `json:"connections"`     // accepted from agents
	BytesReceived  int    `json:"bytes_received"`  // what they sent (inside TLS)
	ReceivedSample string `json:"received_sample"` // %q of the first 200 bytes of it
	ReceivedB64    string `json:"received_b64"`    // the first 4 KiB of it, base64
	TLSConnections int    `json:"tls_connections"` // TLS handshakes completed with our certificate
	StreamsOpened  int    `json:"streams_opened"`  // yamux streams the agents accepted
	Replies        int    `json:"replies"`         // streams on which a reply byte came back
}

type rogue struct {
	tls *tls.Config

	mu       sync.Mutex
	rep      report
	received []byte // the first `capture` bytes the agents sent
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "rogue:", err)
		os.Exit(1)
	}
}

func run() error {
	endpoints, service, podIP := os.Getenv("ETCD_ENDPOINTS"), os.Getenv("SERVICE"), os.Getenv("POD_IP")
	if endpoints == "" || service == "" || podIP == "" {
		return errors.New("ETCD_ENDPOINTS, SERVICE and POD_IP are required")
	}
	listen := envOr("LISTEN", ":7000")
	_, port, err := net.SplitHostPort(listen)
	if err != nil {
		return fmt.Errorf("LISTEN: %w", err)
	}
	duration, err := time.ParseDuration(envOr("DURATION", "40s"))
	if err != nil {
		return fmt.Errorf("DURATION: %w", err)
	}
	// A certificate made in memory, as any impostor can (the same kind a
	// real gateway makes for itself by default).
	tlsConf, err := tunnel.SelfSignedTLS()
	if err != nil {
		return err
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints: strings.Split(endpoints, ","), DialTimeout: 5 * time.Second, Logger: zap.NewNop(),
	})
	if err != nil {
		return fmt.Errorf("etcd client: %w", err)
	}
	defer cli.Close()
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}

	ctx, cancel := context.WithTimeout(context.Background(), duration)
	defer cancel()
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, os.Interrupt)
	defer stop()

	// The fake gateway listens first, so that it answers as soon as the
	// agents find it in etcd.
	r := &rogue{tls: tlsConf}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		r.accept(ctx, ln, &wg)
	}()

	// Then it announces itself where the agents look for gateways.
	addr := net.JoinHostPort(podIP, port)
	lease, err := register(ctx, cli, service, addr)
	r.mu.Lock()
	r.rep.EtcdWrite = "ok"
	if err != nil {
		r.rep.EtcdWrite = err.Error()
	}
	r.mu.Unlock()

	<-ctx.Done()
	wg.Wait() // the listener and every connection close with ctx
	if lease != 0 {
		rctx, rcancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, _ = cli.Revoke(rctx, lease) // leave no fake gateway behind
		rcancel()
	}

	r.mu.Lock()
	defer r.mu.Unlock()
	r.rep.ReceivedSample = fmt.Sprintf("%q", r.received[:min(200, len(r.received))])
	r.rep.ReceivedB64 = base64.StdEncoding.EncodeToString(r.received)
	return json.NewEncoder(os.Stdout).Encode(r.rep)
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// register writes addr into etcd as a tunnel gateway of service, in the
// layout callers use (internal/etcdreg), on a lease of 30 s. Where the
// chart's NetworkPolicies are enforced, etcd is out of a stranger's reach and
// this times out after 5 s.
func register(ctx context.Context, cli *clientv3.Client, service, addr string) (clientv3.LeaseID, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	val, err := json.Marshal(map[string]any{
		"network": "tcp", "address": addr, "weight": 10,
		"tags": map[string]string{etcdreg.TagTransport: "yamux"},
	})
	if err != nil {
		return 0, err
	}
	lease, err := cli.Grant(ctx, 30)
	if err != nil {
		return 0, err
	}
	_, err = cli.Put(ctx, etcdreg.Key(etcdreg.DefaultPrefix, service, addr), string(val), clientv3.WithLease(lease.ID))
	return lease.ID, err
}

// accept serves every connection until ctx ends.
func (r *rogue) accept(ctx context.Context, ln net.Listener, wg *sync.WaitGroup) {
	stop := context.AfterFunc(ctx, func() { _ = ln.Close() })
	defer stop()
	for {
		c, err := ln.Accept()
		if err != nil {
			return // closed at the end
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.serve(ctx, c)
		}()
	}
}

// serve plays a gateway to one agent connection, as far as an attacker
// without the token can.
func (r *rogue) serve(ctx context.Context, raw net.Conn) {
	defer raw.Close()
	stop := context.AfterFunc(ctx, func() { _ = raw.Close() })
	defer stop()
	_ = raw.SetDeadline(time.Now().Add(10 * time.Second))
	r.count(func(rep *report) { rep.Connections++ })

	// 0x16 is a TLS handshake record, a ClientHello: the agents skip
	// verifying the gateway's certificate, so ours is taken and whatever
	// they send next can be read in clear.
	br := bufio.NewReader(raw)
	first, err := br.Peek(1)
	if err != nil {
		return
	}
	var c net.Conn = &peekedConn{Conn: raw, r: br}
	if first[0] == 0x16 {
		tc := tls.Server(c, r.tls)
		if err := tc.HandshakeContext(ctx); err != nil {
			return
		}
		r.count(func(rep *report) { rep.TLSConnections++ })
		c = tc
	}
	t := &tap{Conn: c}
	var sess *yamux.Session
	defer func() {
		if sess != nil {
			_ = sess.Close() // waits for its reader: t is ours again
		}
		r.record(t)
	}()

	// The agent speaks first: its hello.
	if err := readHello(t); err != nil {
		return
	}
	// Answer like a v3 gateway (transport/tunnel/handshake.go): status 2
	// (challenge) | our nonce (32) | 1 proof | HMAC(token, transcript). Without
	// the token the proof can only be made up.
	ch := make([]byte, 1+32+1+32)
	ch[0], ch[33] = 2, 1
	_, _ = rand.Read(ch[1:33])
	_, _ = rand.Read(ch[34:])
	if _, err := t.Write(ch); err != nil {
		return
	}
	t.mark = t.n // from here on: what the agent sends to a gateway it should not trust

	// Carry on as if the agent had accepted: be the yamux client (the
	// gateway's side), open a stream and send a framed Thrift echo call.
	cfg := yamux.DefaultConfig()
	cfg.EnableKeepAlive = false
	cfg.LogOutput = io.Discard
	if sess, err = yamux.Client(t, cfg); err != nil {
		return
	}
	st, err := sess.Open()
	if err != nil {
		return
	}
	_ = st.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := st.Write(echoCall()); err != nil {
		return
	}
	if n, _ := st.Read(make([]byte, 1)); n > 0 {
		r.count(func(rep *report) { rep.Replies++ })
	}
}

func (r *rogue) count(f func(*report)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	f(&r.rep)
}

// record adds what one connection received to the report.
func (r *rogue) record(t *tap) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.rep.BytesReceived += t.n
	r.received = append(r.received, t.got[:min(len(t.got), capture-len(r.received))]...)
	if t.mark > 0 {
		r.rep.StreamsOpened += acks(t.got[min(t.mark, len(t.got)):])
	}
}

// readHello reads a v3 hello as a gateway does: "KXTN" | version | slot |
// len | identity | len | address | nonce (32).
func readHello(r io.Reader) error {
	head := make([]byte, 7)
	if _, err := io.ReadFull(r, head); err != nil {
		return err
	}
	if string(head[:4]) != "KXTN" {
		return fmt.Errorf("not a tunnel hello: %q", head)
	}
	id := make([]byte, int(head[6])+1) // the identity and the address's length
	if _, err := io.ReadFull(r, id); err != nil {
		return err
	}
	_, err := io.ReadFull(r, make([]byte, int(id[len(id)-1])+32)) // the address and the nonce
	return err
}

// echoCall is a framed Thrift binary call of Echo.echo(Request{message: "rogue"}).
func echoCall() []byte {
	b := binary.BigEndian.AppendUint32(nil, 0x80010001) // binary protocol, version 1, CALL
	b = binary.BigEndian.AppendUint32(b, 4)
	b = append(b, "echo"...)
	b = binary.BigEndian.AppendUint32(b, 1) // sequence id
	b = append(b, 12, 0, 1)                 // field 1 (req): struct
	b = append(b, 11, 0, 1)                 // field 1 (message): string
	b = binary.BigEndian.AppendUint32(b, 5)
	b = append(b, "rogue"...)
	b = append(b, 0, 0) // end of Request, end of the arguments
	return append(binary.BigEndian.AppendUint32(nil, uint32(len(b))), b...)
}

// acks counts the yamux frames in b (what the agent sent after the fake
// challenge) that acknowledge a stream: the agent accepted a stream from us.
func acks(b []byte) int {
	const headerSize, typeData, typeWindowUpdate, flagACK = 12, 0, 1, 2
	n := 0
	for len(b) >= headerSize {
		typ, flags, length := b[1], binary.BigEndian.Uint16(b[2:4]), binary.BigEndian.Uint32(b[8:12])
		if flags&flagACK != 0 && (typ == typeData || typ == typeWindowUpdate) {
			n++
		}
		b = b[headerSize:]
		if typ == typeData {
			b = b[min(int(length), len(b)):]
		}
	}
	return n
}

// peekedConn reads through the bufio.Reader that peeked at the first byte.
type peekedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *peekedConn) Read(b []byte) (int, error) { return c.r.Read(b) }

// tap keeps what the agent sends on a connection. It is read by one
// goroutine at a time (serve, then the yamux session's reader).
type tap struct {
	net.Conn
	n    int    // bytes received
	got  []byte // the first `capture` of them
	mark int    // n when the fake challenge was sent
}

func (t *tap) Read(b []byte) (int, error) {
	n, err := t.Conn.Read(b)
	t.n += n
	t.got = append(t.got, b[:min(n, capture-len(t.got))]...)
	return n, err
}
