//go:build !unix

package peek

import "net"

// Socket cannot look into the socket on this platform.
func Socket(net.Conn) State { return Unknown }
