package tunnel

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
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
	noticeLeaving = 'L'
	// noticeWatch starts the stream an agent opens right after its
	// handshake, on which the gateway tells it its peers.
	noticeWatch     = 'W'
	protocolVersion = 4
	nonceLen        = 32
	macLen          = sha256.Size
	instanceLen     = 16
	// maxKeys bounds the tokens a gateway accepts for one identity (and
	// the proofs it sends).
	maxKeys         = 8
	statusAccepted  = 0
	statusRefused   = 1
	statusChallenge = 2
	// declined is the proof index of an agent that declines a session: it
	// holds every session it wants with this gateway already.
	declined = 0xff
	// maxPeers bounds the gateway names a challenge lists.
	maxPeers      = 64
	exporterLabel = "EXPORTER-kitex-anyconn-tunnel"
)

// MinTokenLength is the shortest token accepted: 22 characters of a random
// alphabet carry at least 128 bits.
const MinTokenLength = 22

// Sentinel errors callers tell apart with errors.Is.
var (
	// ErrUnknownAgent: no live session has the identity a call asked for.
	ErrUnknownAgent = errors.New("tunnel: no agent connected with this identity")
	// ErrRefused: the gateway refused the agent's handshake (wrong token,
	// identity in use or not allowed, another protocol version).
	ErrRefused = errors.New("tunnel: handshake refused by the gateway")
	// ErrBadHandshake: the peer did not speak the tunnel handshake.
	ErrBadHandshake = errors.New("tunnel: bad handshake")
	// ErrGatewayUnauthenticated: the gateway did not prove that it holds
	// the agent's token (an impostor, or a gateway given other tokens).
	// The agent sent nothing it could use and accepted no stream.
	ErrGatewayUnauthenticated = errors.New("tunnel: the gateway did not prove it holds the token")
)

var identityPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)

// ValidIdentity reports whether id can name an agent: 1 to 128 letters,
// digits, '.', '_' or '-', starting with a letter or digit (so a pod name
// fits, and callopt.WithHostPort(id) never mistakes it for a host:port).
func ValidIdentity(id string) bool { return identityPattern.MatchString(id) }

// CheckToken returns an error unless tok is usable as a tunnel token: at
// least MinTokenLength characters, at most 1024, no spaces or control
// characters.
func CheckToken(tok string) error {
	if len(tok) < MinTokenLength {
		return fmt.Errorf("tunnel: a token must have at least %d characters (128 bits of a random alphabet), this one has %d", MinTokenLength, len(tok))
	}
	if len(tok) > 1024 {
		return errors.New("tunnel: a token must have at most 1024 characters")
	}
	for _, r := range tok {
		if r <= ' ' || r == 0x7f {
			return errors.New("tunnel: a token must not contain spaces or control characters")
		}
	}
	return nil
}

// hello is the agent's first message.
type hello struct {
	id    string
	addr  string // the gateway address the agent dialed
	nonce [nonceLen]byte
}

func writeHello(w io.Writer, h hello) error {
	if !ValidIdentity(h.id) {
		return fmt.Errorf("tunnel: invalid agent identity %q", h.id)
	}
	if len(h.addr) > 255 {
		return fmt.Errorf("tunnel: gateway address longer than 255 bytes")
	}
	b := append(magic[:], protocolVersion, byte(len(h.id)))
	b = append(b, h.id...)
	b = append(b, byte(len(h.addr)))
	b = append(b, h.addr...)
	b = append(b, h.nonce[:]...)
	_, err := w.Write(b)
	return err
}

// versionError is a hello of another protocol version.
type versionError struct{ version byte }

func (e versionError) Error() string {
	return fmt.Sprintf("%v: protocol version %d, this gateway speaks version %d (upgrade the agent)", ErrBadHandshake, e.version, protocolVersion)
}

func (e versionError) Unwrap() error { return ErrBadHandshake }

func readHello(r io.Reader) (hello, error) {
	var head [5]byte
	if _, err := io.ReadFull(r, head[:]); err != nil {
		return hello{}, fmt.Errorf("%w: %v", ErrBadHandshake, err)
	}
	if [4]byte(head[:4]) != magic {
		return hello{}, fmt.Errorf("%w: not a tunnel agent (first bytes %q)", ErrBadHandshake, head[:4])
	}
	if head[4] != protocolVersion {
		return hello{}, versionError{head[4]}
	}
	id, err := readShort(r, "identity")
	if err != nil {
		return hello{}, err
	}
	addr, err := readShort(r, "address")
	if err != nil {
		return hello{}, err
	}
	h := hello{id: id, addr: addr}
	if _, err := io.ReadFull(r, h.nonce[:]); err != nil {
		return hello{}, fmt.Errorf("%w: nonce: %v", ErrBadHandshake, err)
	}
	return h, nil
}

// readShort reads a string of up to 255 bytes after its length byte.
func readShort(r io.Reader, what string) (string, error) {
	var n [1]byte
	if _, err := io.ReadFull(r, n[:]); err != nil {
		return "", fmt.Errorf("%w: %s: %v", ErrBadHandshake, what, err)
	}
	b := make([]byte, n[0])
	if _, err := io.ReadFull(r, b); err != nil {
		return "", fmt.Errorf("%w: %s: %v", ErrBadHandshake, what, err)
	}
	return string(b), nil
}

// challenge is the gateway's name, the names of the gateways it knows
// (its peers, itself included, behind the same addresses or not), and its
// proofs, one per token it accepts for the identity.
type challenge struct {
	nonce [nonceLen]byte
	gateway
	macs [][macLen]byte
}

// gateway is how a gateway names itself and its peers to agents.
type gateway struct {
	name  string
	peers []string
}

// encode appends the name and the peers as the challenge carries them.
func (g gateway) encode(b []byte) []byte {
	b = append(b, byte(len(g.name)))
	b = append(b, g.name...)
	b = append(b, byte(len(g.peers)))
	for _, p := range g.peers {
		b = append(b, byte(len(p)))
		b = append(b, p...)
	}
	return b
}

func readGateway(r io.Reader) (gateway, error) {
	var g gateway
	var err error
	if g.name, err = readShort(r, "gateway name"); err != nil {
		return g, err
	}
	var n [1]byte
	if _, err := io.ReadFull(r, n[:]); err != nil {
		return g, fmt.Errorf("%w: peers: %v", ErrBadHandshake, err)
	}
	if n[0] > maxPeers {
		return g, fmt.Errorf("%w: %d peers", ErrBadHandshake, n[0])
	}
	for range n[0] {
		p, err := readShort(r, "peer")
		if err != nil {
			return g, err
		}
		g.peers = append(g.peers, p)
	}
	return g, nil
}

func writeChallenge(w io.Writer, ch challenge) error {
	b := append([]byte{statusChallenge}, ch.nonce[:]...)
	b = ch.gateway.encode(b)
	b = append(b, byte(len(ch.macs)))
	for _, m := range ch.macs {
		b = append(b, m[:]...)
	}
	_, err := w.Write(b)
	return err
}

func readChallenge(r io.Reader) (challenge, error) {
	var status [1]byte
	if _, err := io.ReadFull(r, status[:]); err != nil {
		if errors.Is(err, io.EOF) {
			return challenge{}, fmt.Errorf("%w: the gateway closed the connection after the hello (a gateway older than protocol version %d does; upgrade it)", ErrBadHandshake, protocolVersion)
		}
		return challenge{}, fmt.Errorf("%w: no answer: %v", ErrBadHandshake, err)
	}
	switch status[0] {
	case statusRefused:
		return challenge{}, readReason(r)
	case statusChallenge:
	default:
		return challenge{}, fmt.Errorf("%w: status %d", ErrBadHandshake, status[0])
	}
	var ch challenge
	var n [1]byte
	if _, err := io.ReadFull(r, ch.nonce[:]); err != nil {
		return challenge{}, fmt.Errorf("%w: challenge: %v", ErrBadHandshake, err)
	}
	var err error
	if ch.gateway, err = readGateway(r); err != nil {
		return challenge{}, err
	}
	if _, err := io.ReadFull(r, n[:]); err != nil {
		return challenge{}, fmt.Errorf("%w: challenge: %v", ErrBadHandshake, err)
	}
	if n[0] == 0 || n[0] > maxKeys {
		return challenge{}, fmt.Errorf("%w: %d proofs", ErrBadHandshake, n[0])
	}
	ch.macs = make([][macLen]byte, n[0])
	for i := range ch.macs {
		if _, err := io.ReadFull(r, ch.macs[i][:]); err != nil {
			return challenge{}, fmt.Errorf("%w: challenge: %v", ErrBadHandshake, err)
		}
	}
	return ch, nil
}

// proof is the agent's answer to the challenge.
type proof struct {
	index    int // of the gateway proof that matched the agent's token; declined: no session wanted
	slot     int // the session slot it opens
	instance [instanceLen]byte
	mac      [macLen]byte
}

func writeProof(w io.Writer, p proof) error {
	if p.index == declined {
		_, err := w.Write([]byte{declined})
		return err
	}
	b := append([]byte{byte(p.index), byte(p.slot)}, p.instance[:]...)
	_, err := w.Write(append(b, p.mac[:]...))
	return err
}

// errDeclined: the agent declined the session (it holds every session it
// wants with this gateway).
var errDeclined = errors.New("tunnel: the agent declined: it is connected to this gateway already")

func readProof(r io.Reader) (proof, error) {
	var b [2 + instanceLen + macLen]byte
	if _, err := io.ReadFull(r, b[:1]); err != nil {
		return proof{}, fmt.Errorf("%w: proof: %v", ErrBadHandshake, err)
	}
	if b[0] == declined {
		return proof{index: declined}, errDeclined
	}
	if _, err := io.ReadFull(r, b[1:]); err != nil {
		return proof{}, fmt.Errorf("%w: proof: %v", ErrBadHandshake, err)
	}
	p := proof{index: int(b[0]), slot: int(b[1])}
	if p.slot >= MaxSessions {
		return proof{}, fmt.Errorf("%w: session slot %d out of 0..%d", ErrBadHandshake, p.slot, MaxSessions-1)
	}
	copy(p.instance[:], b[2:])
	copy(p.mac[:], b[2+instanceLen:])
	return p, nil
}

func writeAnswer(w io.Writer, status byte, reason string) error {
	if len(reason) > 255 {
		reason = reason[:255]
	}
	_, err := w.Write(append([]byte{status, byte(len(reason))}, reason...))
	return err
}

func readAnswer(r io.Reader) error {
	var status [1]byte
	if _, err := io.ReadFull(r, status[:]); err != nil {
		return fmt.Errorf("%w: no answer: %v", ErrBadHandshake, err)
	}
	switch status[0] {
	case statusAccepted:
		var n [1]byte
		if _, err := io.ReadFull(r, n[:]); err != nil || n[0] != 0 {
			return fmt.Errorf("%w: answer", ErrBadHandshake)
		}
		return nil
	case statusRefused:
		return readReason(r)
	default:
		return fmt.Errorf("%w: status %d", ErrBadHandshake, status[0])
	}
}

// readReason reads a refusal's reason and returns it as an ErrRefused.
func readReason(r io.Reader) error {
	reason, err := readShort(r, "reason")
	if err != nil {
		return err
	}
	return fmt.Errorf("%w: %s", ErrRefused, reason)
}

// transcript is what both proofs sign.
func transcript(h hello, ch challenge, binding []byte) []byte {
	b := []byte("KXTN4")
	b = append(b, byte(len(h.id)))
	b = append(b, h.id...)
	b = append(b, byte(len(h.addr)))
	b = append(b, h.addr...)
	b = append(b, h.nonce[:]...)
	b = append(b, ch.nonce[:]...)
	b = ch.gateway.encode(b)
	b = append(b, byte(len(binding)))
	return append(b, binding...)
}

func gatewayMAC(key []byte, t []byte) [macLen]byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte("KXTN4 gateway"))
	m.Write(t)
	return [macLen]byte(m.Sum(nil))
}

func agentMAC(key []byte, t []byte, index, slot int, instance [instanceLen]byte) [macLen]byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte("KXTN4 agent"))
	m.Write(t)
	m.Write([]byte{byte(index), byte(slot)})
	m.Write(instance[:])
	return [macLen]byte(m.Sum(nil))
}

// channelBinding returns keying material exported from c's TLS session, or
// nil on a plain connection.
func channelBinding(c net.Conn) ([]byte, error) {
	tc, ok := c.(*tls.Conn)
	if !ok {
		return nil, nil
	}
	cs := tc.ConnectionState()
	b, err := cs.ExportKeyingMaterial(exporterLabel, nil, 32)
	if err != nil {
		return nil, fmt.Errorf("tls: cannot bind the handshake to the TLS session (%v); use TLS 1.3, or TLS 1.2 with extended master secret", err)
	}
	return b, nil
}

func random(b []byte) {
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand does not fail on supported platforms
	}
}

// agentHandshake runs the agent's side of the handshake on c (TLS, if any,
// done). Once the gateway has proven itself, choose picks the session slot
// to open with it, or declines (ok false: errDeclined is returned). It
// returns the gateway's name and peers, and the slot, once the gateway has
// accepted.
func agentHandshake(c net.Conn, h hello, token string, instance [instanceLen]byte,
	choose func(gateway) (slot int, ok bool)) (gateway, int, error) {
	random(h.nonce[:])
	binding, err := channelBinding(c)
	if err != nil {
		return gateway{}, 0, err
	}
	if err := writeHello(c, h); err != nil {
		return gateway{}, 0, err
	}
	ch, err := readChallenge(c)
	if err != nil {
		return gateway{}, 0, err
	}
	t := transcript(h, ch, binding)
	want := gatewayMAC([]byte(token), t)
	index := -1
	for i, m := range ch.macs {
		if hmac.Equal(m[:], want[:]) {
			index = i
		}
	}
	if index < 0 {
		return gateway{}, 0, ErrGatewayUnauthenticated
	}
	slot, ok := choose(ch.gateway)
	if !ok {
		_ = writeProof(c, proof{index: declined})
		return ch.gateway, 0, errDeclined
	}
	p := proof{index: index, slot: slot, instance: instance, mac: agentMAC([]byte(token), t, index, slot, instance)}
	err = writeProof(c, p)
	if err == nil {
		err = readAnswer(c)
	}
	return ch.gateway, slot, err
}
