package connadapt

import (
	"context"
	"fmt"
	"net"
	"time"

	"github.com/cloudwego/kitex/pkg/remote"
)

// DialFunc opens a stream connection to address. It must honour ctx's deadline.
type DialFunc func(ctx context.Context, network, address string) (net.Conn, error)

// Dialer is a Kitex remote.Dialer (for client.WithDialer) built on a DialFunc.
// Every connection it returns is a *Conn whose RemoteAddr is exactly the
// network and address Kitex asked for, which keeps Kitex's long-connection
// pool reusing connections.
type Dialer struct {
	Dial DialFunc
}

var _ remote.Dialer = Dialer{}

// DialTimeout implements remote.Dialer. A timeout of zero or less means no timeout.
func (d Dialer) DialTimeout(network, address string, timeout time.Duration) (net.Conn, error) {
	ctx := context.Background()
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	c, err := d.Dial(ctx, network, address)
	if err != nil {
		return nil, fmt.Errorf("dial %s %s: %w", network, address, err)
	}
	return New(c, Addr{Net: network, Address: address}), nil
}
