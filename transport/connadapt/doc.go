// Package connadapt lets any stream-oriented net.Conn carry Kitex RPC on
// Kitex's gonet transport.
//
// Kitex's gonet transport reads and writes through bufiox buffers that it
// finds by type-asserting the connection, and its long-connection pool finds
// its own connections again by their remote address. A connection from a
// WebSocket library or a multiplexed stream satisfies neither out of the box:
// calls fail, or every call dials a new connection. Conn fixes both, and
// Dialer turns any dial function into a Kitex remote.Dialer that returns such
// connections.
package connadapt
