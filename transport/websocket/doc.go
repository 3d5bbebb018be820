// Package websocket carries Kitex RPC over WebSocket (RFC 6455), for
// networks where only HTTP(S) passes: through reverse proxies, ingress
// controllers and HTTP CONNECT proxies. The server's handshake is
// golang.org/x/net/websocket's; the client's and the framing are the
// package's own.
//
// On the server, a Listener runs an HTTP server that upgrades requests on one
// path and hands each WebSocket connection to Kitex through
// server.WithListener. On the client, NewDialer returns a dialer for
// client.WithDialer. The wire is standard: binary messages whose payload is
// the Thrift byte stream (Framed or TTHeader), one message per Kitex frame,
// so any WebSocket client that sends framed binary Thrift can call a Kitex
// server behind a Listener.
//
// The dialer's connections stay healthy in a pool behind proxies: they ping
// while idle, retire after a maximum age, and report through IsActive when
// the peer or a proxy closed them, so that Kitex never hands such a
// connection to a call.
package websocket
