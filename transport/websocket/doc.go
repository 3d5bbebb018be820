// Package websocket carries Kitex RPC over WebSocket (RFC 6455), for
// networks where only HTTP(S) passes: through reverse proxies, ingress
// controllers and HTTP CONNECT proxies. The handshakes and the framing are
// the package's own (golang.org/x/net/websocket's framing remains for
// comparison in the tests).
//
// On the server, a Listener upgrades requests on one path and hands each
// WebSocket connection to Kitex through server.WithListener. On ws:// it
// reads a plain upgrade request itself and keeps nothing of the handshake;
// every other request goes to its HTTP server, which answers, refuses or
// upgrades it. On the client, NewDialer returns a dialer for
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
