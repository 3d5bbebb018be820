// Package transport chooses what carries a Kitex service's RPCs: netpoll
// (Kitex's default), gonet (the Go standard library), WebSocket, or a yamux
// reverse tunnel. A service picks a Kind, passes the options from
// ServerOptions or NewClientTransport to Kitex, and its handlers, middleware, load
// balancing, retries and timeouts stay the same on every transport.
//
// Every transport speaks standard Thrift: Framed (or TTHeader) binary on TCP,
// and the same bytes inside binary WebSocket messages.
package transport
