// Package websocket carries Kitex RPC over WebSocket (RFC 6455) using
// golang.org/x/net/websocket, for networks where only HTTP(S) passes.
//
// On the server, a Listener runs an HTTP server that upgrades requests on one
// path and hands each WebSocket connection to Kitex through
// server.WithListener. On the client, NewDialer returns a dialer for
// client.WithDialer. The wire is standard: binary messages whose payload is
// the Thrift byte stream (Framed or TTHeader), one message per Kitex frame,
// so any WebSocket client that sends framed binary Thrift can call a Kitex
// server behind a Listener.
package websocket
