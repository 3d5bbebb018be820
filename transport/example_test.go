package transport_test

import (
	"context"
	"fmt"
	"log"

	"github.com/cloudwego/kitex/client"
	"github.com/cloudwego/kitex/server"

	"github.com/anyconn/kitex-anyconn/kitex_gen/api"
	"github.com/anyconn/kitex-anyconn/kitex_gen/api/echo"
	"github.com/anyconn/kitex-anyconn/transport"
	"github.com/anyconn/kitex-anyconn/transport/websocket"
)

// echoImpl is any Kitex handler; nothing in it depends on the transport.
type echoImpl struct{}

func (echoImpl) Echo(_ context.Context, req *api.Request) (*api.Response, error) {
	return &api.Response{Message: req.Message}, nil
}

// A Kitex service moves to WebSocket with one config on each side: the
// server listens on ws://host:port/kitex, the client dials it.
func Example_webSocket() {
	// Server: ServerOptions listens at once; ln.Addr() is the bound address.
	sopts, ln, err := transport.ServerOptions(transport.ServerConfig{
		Kind:      transport.WebSocket,
		Addr:      "127.0.0.1:0",
		WebSocket: websocket.ListenerConfig{Path: "/kitex"},
	})
	if err != nil {
		log.Fatal(err)
	}
	// Stop through Run's exit signal: Kitex's Run must not race a Stop.
	exit, stopped := make(chan error, 1), make(chan error, 1)
	svr := echo.NewServer(new(echoImpl), append(sopts, server.WithExitSignal(func() <-chan error { return exit }))...)
	go func() { stopped <- svr.Run() }()
	defer func() { exit <- nil; <-stopped }()

	// Client: the same Kind and path; Close releases its pooled connections.
	ct, err := transport.NewClientTransport(transport.ClientConfig{
		Kind:      transport.WebSocket,
		WebSocket: websocket.DialerConfig{Path: "/kitex"},
	})
	if err != nil {
		log.Fatal(err)
	}
	defer ct.Close()
	cli := echo.MustNewClient("echo", append(ct.Options(), client.WithHostPorts(ln.Addr().String()))...)

	resp, err := cli.Echo(context.Background(), &api.Request{Message: "over websocket"})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(resp.Message)
	// Output: over websocket
}

// The Go standard library's net package instead of netpoll.
func Example_goNet() {
	sopts, ln, err := transport.ServerOptions(transport.ServerConfig{Kind: transport.GoNet, Addr: "127.0.0.1:0"})
	if err != nil {
		log.Fatal(err)
	}
	exit, stopped := make(chan error, 1), make(chan error, 1)
	svr := echo.NewServer(new(echoImpl), append(sopts, server.WithExitSignal(func() <-chan error { return exit }))...)
	go func() { stopped <- svr.Run() }()
	defer func() { exit <- nil; <-stopped }()

	ct, err := transport.NewClientTransport(transport.ClientConfig{Kind: transport.GoNet})
	if err != nil {
		log.Fatal(err)
	}
	defer ct.Close()
	cli := echo.MustNewClient("echo", append(ct.Options(), client.WithHostPorts(ln.Addr().String()))...)

	resp, err := cli.Echo(context.Background(), &api.Request{Message: "over gonet"})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(resp.Message)
	// Output: over gonet
}

// ParseKind turns configuration text into a Kind and says what is allowed.
func ExampleParseKind() {
	k, err := transport.ParseKind("WebSocket")
	fmt.Println(k, err)
	_, err = transport.ParseKind("quic")
	fmt.Println(err)
	// Output:
	// websocket <nil>
	// unknown transport "quic": allowed values are netpoll, gonet, websocket, yamux
}
