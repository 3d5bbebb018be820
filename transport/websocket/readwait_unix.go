//go:build unix

package websocket

import (
	"errors"
	"io"
	"net"
	"os"
	"syscall"
)

// rawConnOf returns the file descriptor access of c when c is a plain TCP
// connection, which a read may use directly; nil for anything else (TLS,
// wrappers with buffers of their own).
func rawConnOf(c net.Conn) syscall.RawConn {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return nil
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return nil
	}
	return rc
}

// readWait reads what conn has received into the read buffer, borrowing
// the buffer only once bytes are there: the runtime's poller waits for them
// (within conn's read deadline) as for an ordinary read, with the same
// system calls, and nothing is held meanwhile.
func (f *leanFrames) readWait() (int, error) {
	f.rn, f.rsysErr = 0, nil
	if err := f.rc.Read(f.onRead); err != nil {
		var oe *net.OpError
		if errors.As(err, &oe) {
			err = oe.Err
		}
		return 0, &net.OpError{Op: "read", Net: "tcp", Source: f.conn.LocalAddr(), Addr: f.conn.RemoteAddr(), Err: err}
	}
	switch {
	case f.rsysErr != nil:
		return 0, &net.OpError{Op: "read", Net: "tcp", Source: f.conn.LocalAddr(), Addr: f.conn.RemoteAddr(),
			Err: os.NewSyscallError("read", f.rsysErr)}
	case f.rn == 0:
		return 0, io.EOF
	}
	return f.rn, nil
}

// readReady is readWait's callback (f.onRead): it reads once, and returns
// false (wait for readiness) with the buffer given back when nothing was
// there.
func (f *leanFrames) readReady(fd uintptr) bool {
	borrowed := f.buf == nil
	f.borrow()
	var n int
	var err error
	for {
		n, err = syscall.Read(int(fd), f.buf[f.w:])
		if err != syscall.EINTR {
			break
		}
	}
	if err == syscall.EAGAIN {
		if borrowed {
			readBufs.Put(f.buf)
			f.buf = nil
		}
		return false
	}
	if err != nil {
		n = 0
	}
	f.rn, f.rsysErr = n, err
	return true
}
