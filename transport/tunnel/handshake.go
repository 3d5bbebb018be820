// Package tunnel carries Kitex RPC over a yamux reverse tunnel: a server that
// cannot accept connections (behind NAT or a firewall, in another cluster)
// runs an Agent that dials out to a Gateway on the client side, proves itself
// with a shared token, and is then called over streams of that one
// connection.
//
// On the client side the Gateway is an ordinary Kitex dependency: its
// Resolver lists every live agent as an instance (address = the agent's
// identity), its Balancer spreads calls over the agents connected right now,
// and its Dialer opens a yamux stream to the chosen agent, so timeouts,
// retries and load balancing work as on any other transport. A call can
// target one agent with callopt.WithHostPort(identity). On the server side
// the Agent is a net.Listener for server.WithListener.
//
// The handshake, sent by the agent before the yamux session starts:
//
//	"KXTN" | version (1 byte, 1 or 2) | identity length (1 byte) | identity
//	       | token length (2 bytes, big endian) | token
//	       | session slot (1 byte, version 2 only)
//
// and the gateway's answer: status (1 byte: 0 accepted, 1 refused) |
// reason length (1 byte) | reason. Tokens are compared in constant time;
// a refused or silent agent is disconnected and never becomes a session.
//
// An agent may keep several sessions to one gateway (AgentConfig.Sessions),
// numbered by their slot; version 1 is slot 0. A new session in a slot
// replaces the one the gateway had in it.
//
// Streams are opened by the gateway, one per Kitex connection. The only
// stream an agent opens carries the one byte 'L' when it starts leaving
// (besides yamux's GoAway), so that the gateway stops choosing it and stops
// reusing the streams it pooled.
package tunnel

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"regexp"
)

var magic = [4]byte{'K', 'X', 'T', 'N'}

const (
	// noticeLeaving is the one byte an agent sends, on a stream it opens,
	// when it starts leaving.
	noticeLeaving   = 'L'
	protocolVersion = 2 // the newest; version 1 (no slot) is still read
	maxTokenLen     = 4096
	statusAccepted  = 0
	statusRefused   = 1
)

// Sentinel errors callers tell apart with errors.Is.
var (
	// ErrUnknownAgent: no live session has the identity a call asked for.
	ErrUnknownAgent = errors.New("tunnel: no agent connected with this identity")
	// ErrRefused: the gateway refused the agent's handshake (wrong token,
	// invalid identity).
	ErrRefused = errors.New("tunnel: handshake refused by the gateway")
	// ErrBadHandshake: the peer did not speak the tunnel handshake.
	ErrBadHandshake = errors.New("tunnel: bad handshake")
	// ErrClosed: the gateway or agent was closed.
	ErrClosed = errors.New("tunnel: closed")
)

var identityPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)

// ValidIdentity reports whether id can name an agent: 1 to 128 letters,
// digits, '.', '_' or '-', starting with a letter or digit (so a pod name
// fits, and callopt.WithHostPort(id) never mistakes it for a host:port).
func ValidIdentity(id string) bool { return identityPattern.MatchString(id) }

func writeHello(w io.Writer, id, token string, slot int) error {
	if !ValidIdentity(id) {
		return fmt.Errorf("tunnel: invalid agent identity %q", id)
	}
	if len(token) > maxTokenLen {
		return fmt.Errorf("tunnel: token longer than %d bytes", maxTokenLen)
	}
	if slot < 0 || slot >= MaxSessions {
		return fmt.Errorf("tunnel: session slot %d out of 0..%d", slot, MaxSessions-1)
	}
	version := byte(1) // slot 0 stays readable by gateways that know only version 1
	if slot > 0 {
		version = protocolVersion
	}
	b := append(magic[:], version, byte(len(id)))
	b = append(b, id...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(token)))
	b = append(b, token...)
	if version == protocolVersion {
		b = append(b, byte(slot))
	}
	_, err := w.Write(b)
	return err
}

type hello struct {
	id, token string
	slot      int
}

func readHello(r io.Reader) (hello, error) {
	var head [6]byte
	if _, err := io.ReadFull(r, head[:]); err != nil {
		return hello{}, fmt.Errorf("%w: %v", ErrBadHandshake, err)
	}
	if [4]byte(head[:4]) != magic {
		return hello{}, fmt.Errorf("%w: not a tunnel agent (first bytes %q)", ErrBadHandshake, head[:4])
	}
	version := head[4]
	if version != 1 && version != protocolVersion {
		return hello{}, fmt.Errorf("%w: protocol version %d, want 1 or %d", ErrBadHandshake, version, protocolVersion)
	}
	idb := make([]byte, head[5])
	if _, err := io.ReadFull(r, idb); err != nil {
		return hello{}, fmt.Errorf("%w: identity: %v", ErrBadHandshake, err)
	}
	var tl [2]byte
	if _, err := io.ReadFull(r, tl[:]); err != nil {
		return hello{}, fmt.Errorf("%w: token length: %v", ErrBadHandshake, err)
	}
	n := binary.BigEndian.Uint16(tl[:])
	if n > maxTokenLen {
		return hello{}, fmt.Errorf("%w: token of %d bytes", ErrBadHandshake, n)
	}
	tb := make([]byte, n)
	if _, err := io.ReadFull(r, tb); err != nil {
		return hello{}, fmt.Errorf("%w: token: %v", ErrBadHandshake, err)
	}
	h := hello{id: string(idb), token: string(tb)}
	if version == protocolVersion {
		var slot [1]byte
		if _, err := io.ReadFull(r, slot[:]); err != nil {
			return hello{}, fmt.Errorf("%w: session slot: %v", ErrBadHandshake, err)
		}
		if int(slot[0]) >= MaxSessions {
			return hello{}, fmt.Errorf("%w: session slot %d out of 0..%d", ErrBadHandshake, slot[0], MaxSessions-1)
		}
		h.slot = int(slot[0])
	}
	return h, nil
}

func writeAnswer(w io.Writer, status byte, reason string) error {
	if len(reason) > 255 {
		reason = reason[:255]
	}
	_, err := w.Write(append([]byte{status, byte(len(reason))}, reason...))
	return err
}

func readAnswer(r io.Reader) error {
	var head [2]byte
	if _, err := io.ReadFull(r, head[:]); err != nil {
		return fmt.Errorf("%w: no answer: %v", ErrBadHandshake, err)
	}
	reason := make([]byte, head[1])
	if _, err := io.ReadFull(r, reason); err != nil {
		return fmt.Errorf("%w: answer: %v", ErrBadHandshake, err)
	}
	switch head[0] {
	case statusAccepted:
		return nil
	case statusRefused:
		return fmt.Errorf("%w: %s", ErrRefused, reason)
	default:
		return fmt.Errorf("%w: status %d", ErrBadHandshake, head[0])
	}
}

// tokenEqual compares in time that depends on neither token's content nor length.
func tokenEqual(got, want string) bool {
	g, w := sha256.Sum256([]byte(got)), sha256.Sum256([]byte(want))
	return subtle.ConstantTimeCompare(g[:], w[:]) == 1
}

// Handshake connects to the gateway at addr as agent id with token, reads
// the gateway's verdict and disconnects. It returns nil if the gateway
// accepted, an error wrapping ErrRefused if it refused. It is meant for
// checks and tests; an Agent does this itself.
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
	if err := writeHello(c, id, token, 0); err != nil {
		return err
	}
	return readAnswer(c)
}
