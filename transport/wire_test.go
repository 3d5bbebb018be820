package transport_test

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/apache/thrift/lib/go/thrift"
	xws "golang.org/x/net/websocket"

	"github.com/anyconn/kitex-anyconn/transport"
)

// The wire is standard Thrift: the Apache Thrift Go library, knowing nothing
// of Kitex, calls echo with the binary protocol in a Framed transport, on
// TCP and as one binary WebSocket message, and reads the reply.
func TestApacheThriftClient(t *testing.T) {
	for _, tc := range cases() {
		if tc.kind == transport.Yamux {
			continue // its streams are reached through the tunnel, not an address
		}
		t.Run(string(tc.kind), func(t *testing.T) {
			f := startFixture(t, tc)
			for i, msg := range []string{"", "plain thrift", strings.Repeat("z", 200_000)} {
				seq := int32(i + 1)
				var got string
				if tc.kind == transport.WebSocket {
					got = webSocketThriftCall(t, f.addr, seq, msg)
				} else {
					got = tcpThriftCall(t, f.addr, seq, msg)
				}
				if got != msg {
					t.Fatalf("reply carries %d bytes, want %d", len(got), len(msg))
				}
			}
		})
	}
}

var thriftConf = &thrift.TConfiguration{ConnectTimeout: 2 * time.Second, SocketTimeout: 10 * time.Second}

func tcpThriftCall(t *testing.T, addr string, seq int32, msg string) string {
	sock := thrift.NewTSocketConf(addr, thriftConf)
	if err := sock.Open(); err != nil {
		t.Fatal(err)
	}
	defer sock.Close()
	p := thrift.NewTBinaryProtocolConf(thrift.NewTFramedTransportConf(sock, thriftConf), thriftConf)
	if err := writeEchoCall(p, seq, msg); err != nil {
		t.Fatal(err)
	}
	return readEchoReply(t, p, seq)
}

// webSocketThriftCall frames the call with Apache Thrift into memory, sends
// it as one binary message with golang.org/x/net/websocket's own client, and
// decodes the single binary message that comes back.
func webSocketThriftCall(t *testing.T, addr string, seq int32, msg string) string {
	out := thrift.NewTMemoryBuffer()
	if err := writeEchoCall(thrift.NewTBinaryProtocolConf(thrift.NewTFramedTransportConf(out, thriftConf), thriftConf), seq, msg); err != nil {
		t.Fatal(err)
	}

	cfg, err := xws.NewConfig("ws://"+addr+"/kitex", "http://"+addr)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ws, err := cfg.DialContext(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	if err := xws.Message.Send(ws, out.Bytes()); err != nil {
		t.Fatal(err)
	}
	var reply []byte
	if err := xws.Message.Receive(ws, &reply); err != nil {
		t.Fatal(err)
	}
	in := &thrift.TMemoryBuffer{Buffer: bytes.NewBuffer(reply)}
	p := thrift.NewTBinaryProtocolConf(thrift.NewTFramedTransportConf(in, thriftConf), thriftConf)
	got := readEchoReply(t, p, seq)
	if in.Len() != 0 {
		t.Fatalf("%d bytes after the reply frame: one message must hold one frame", in.Len())
	}
	return got
}

// writeEchoCall writes Echo.echo(Request{message}) field by field, as any
// Thrift implementation would from echo.thrift.
// writeEchoCall writes a framed Echo.echo call (it returns its error rather
// than failing the test, so that other goroutines may use it).
func writeEchoCall(p thrift.TProtocol, seq int32, msg string) error {
	ctx := context.Background()
	steps := []func() error{
		func() error { return p.WriteMessageBegin(ctx, "echo", thrift.CALL, seq) },
		func() error { return p.WriteStructBegin(ctx, "echo_args") },
		func() error { return p.WriteFieldBegin(ctx, "req", thrift.STRUCT, 1) },
		func() error { return p.WriteStructBegin(ctx, "Request") },
		func() error { return p.WriteFieldBegin(ctx, "message", thrift.STRING, 1) },
		func() error { return p.WriteString(ctx, msg) },
		func() error { return p.WriteFieldEnd(ctx) },
		func() error { return p.WriteFieldStop(ctx) },
		func() error { return p.WriteStructEnd(ctx) },
		func() error { return p.WriteFieldEnd(ctx) },
		func() error { return p.WriteFieldStop(ctx) },
		func() error { return p.WriteStructEnd(ctx) },
		func() error { return p.WriteMessageEnd(ctx) },
		func() error { return p.Flush(ctx) },
	}
	for _, step := range steps {
		if err := step(); err != nil {
			return fmt.Errorf("write call: %w", err)
		}
	}
	return nil
}

// readEchoReply reads the REPLY and returns Response.message from the
// result's success field.
func readEchoReply(t *testing.T, p thrift.TProtocol, seq int32) string {
	ctx := context.Background()
	name, typ, gotSeq, err := p.ReadMessageBegin(ctx)
	if err != nil {
		t.Fatalf("read reply: %v", err)
	}
	if name != "echo" || typ != thrift.REPLY || gotSeq != seq {
		t.Fatalf("reply header %q %v %d, want echo REPLY %d", name, typ, gotSeq, seq)
	}
	msg, err := readSuccess(ctx, p)
	if err != nil {
		t.Fatalf("read result: %v", err)
	}
	if err := p.ReadMessageEnd(ctx); err != nil {
		t.Fatal(err)
	}
	return msg
}

func readSuccess(ctx context.Context, p thrift.TProtocol) (string, error) {
	msg := ""
	readMessage := func() (err error) {
		_, err = readStruct(ctx, p, 1, thrift.STRING, func() (err error) {
			msg, err = p.ReadString(ctx)
			return err
		})
		return err
	}
	found, err := readStruct(ctx, p, 0, thrift.STRUCT, readMessage)
	if err == nil && !found {
		err = fmt.Errorf("the result has no success field")
	}
	return msg, err
}

// readStruct reads a struct: read reads field id when it has type typ,
// every other field is skipped. It reports whether the field was there.
func readStruct(ctx context.Context, p thrift.TProtocol, id int16, typ thrift.TType, read func() error) (bool, error) {
	if _, err := p.ReadStructBegin(ctx); err != nil {
		return false, err
	}
	found := false
	for {
		_, t, fid, err := p.ReadFieldBegin(ctx)
		if err != nil {
			return false, err
		}
		if t == thrift.STOP {
			break
		}
		if fid == id && t == typ {
			found = true
			err = read()
		} else {
			err = p.Skip(ctx, t)
		}
		if err != nil {
			return false, err
		}
		if err := p.ReadFieldEnd(ctx); err != nil {
			return false, err
		}
	}
	return found, p.ReadStructEnd(ctx)
}
