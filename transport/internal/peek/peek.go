// Package peek looks into a socket without reading from it: whether the
// peer closed an idle pooled connection, so that it is not handed to a call.
package peek

// State is what a socket holds.
type State int

// The states Socket reports.
const (
	Unknown State = iota // the connection or the platform cannot tell
	Nothing              // open, nothing to read
	Data                 // bytes wait to be read
	Gone                 // closed by the peer, or broken
)
