//go:build unix

package peek

import (
	"errors"
	"net"
	"syscall"
)

// Socket reports, without reading or waiting, what the socket under c holds:
// bytes not yet read, the peer's end of stream, or nothing (live and idle).
func Socket(c net.Conn) State {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return Unknown
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return Gone
	}
	st := Unknown
	var b [1]byte
	err = rc.Read(func(fd uintptr) bool {
		n, _, rerr := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		switch {
		case n > 0:
			st = Data
		case rerr == nil:
			st = Gone // 0 bytes: the peer closed
		case errors.Is(rerr, syscall.EAGAIN), errors.Is(rerr, syscall.EWOULDBLOCK), errors.Is(rerr, syscall.EINTR):
			st = Nothing
		default:
			st = Gone // reset, or another socket error
		}
		return true // never wait for readiness
	})
	if err != nil {
		return Gone // closed here
	}
	return st
}
