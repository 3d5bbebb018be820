package testutil

import (
	"errors"
	"net"
	"time"
)

// ReadUntilError reads and discards what c sends for at most d and returns
// the error that ended reading: a timeout (see IsTimeout) if c stayed open,
// io.EOF or a reset if the peer closed it.
func ReadUntilError(c net.Conn, d time.Duration) error {
	_ = c.SetReadDeadline(time.Now().Add(d))
	buf := make([]byte, 1024)
	for {
		if _, err := c.Read(buf); err != nil {
			return err
		}
	}
}

// IsTimeout reports whether err is a network timeout.
func IsTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
