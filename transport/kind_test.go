package transport_test

import (
	"errors"
	"testing"

	"github.com/anyconn/kitex-anyconn/transport"
)

// Kinds are matched whatever their case, everywhere.
func TestKindCaseDoesNotChangeTheTransport(t *testing.T) {
	if _, _, err := transport.ServerOptions(transport.ServerConfig{Kind: "Yamux", Addr: "127.0.0.1:0"}); !errors.Is(err, transport.ErrNeedsTunnel) {
		t.Fatalf("Yamux server without a tunnel listener: %v, want ErrNeedsTunnel (and no TCP port)", err)
	}
	if _, err := transport.NewClientTransport(transport.ClientConfig{Kind: "YAMUX"}); !errors.Is(err, transport.ErrNeedsTunnel) {
		t.Fatalf("YAMUX client without a dialer: %v, want ErrNeedsTunnel", err)
	}
	if _, _, err := transport.ServerOptions(transport.ServerConfig{Kind: "quic"}); !errors.Is(err, transport.ErrUnknownKind) {
		t.Fatalf("unknown kind: %v", err)
	}
}
