package tunnel

import (
	"context"
	"net"
)

// What the external tests (package tunnel_test) use of the package's
// internals.

// Handshake connects to the gateway at addr (plain TCP) as agent id with
// token, runs the handshake and disconnects. It returns nil if the gateway
// accepted, an error wrapping ErrRefused if it refused, and
// ErrGatewayUnauthenticated if it did not prove it holds the token.
func Handshake(ctx context.Context, addr, id, token string) error {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	var instance [instanceLen]byte
	random(instance[:])
	_, _, err = agentHandshake(c, hello{id: id, addr: addr}, token, instance, func(gateway) (int, bool) { return 0, true })
	return err
}
