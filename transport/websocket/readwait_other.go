//go:build !unix

package websocket

import (
	"net"
	"syscall"
)

// rawConnOf returns nil: reads hold their buffer while they wait.
func rawConnOf(net.Conn) syscall.RawConn { return nil }

// readWait is not used where rawConnOf returns nil.
func (f *leanFrames) readWait() (int, error) { panic("websocket: readWait without a raw connection") }

func (f *leanFrames) readReady(uintptr) bool { return true }
