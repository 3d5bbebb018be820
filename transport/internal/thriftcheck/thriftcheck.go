// Package thriftcheck bounds what a Thrift message may make a decoder
// reserve: before Kitex decodes a message, the whole frame is read (its
// size already bounded) and every length it declares (strings, binaries,
// containers) is checked against the bytes that are really there. Kitex's
// decoders size buffers from declared lengths and read straight from the
// connection, so a 30-byte request that declares a 256 MiB string would
// otherwise reserve 256 MiB before any of it arrived.
package thriftcheck

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/cloudwego/kitex/pkg/remote"
	"github.com/cloudwego/kitex/pkg/remote/codec"
)

// ErrRefused wraps every message this package refuses.
var ErrRefused = errors.New("thrift message refused")

// maxDepth bounds the nesting of structs and containers.
const maxDepth = 64

// Codec is a Kitex codec that checks each message it decodes (see the
// package documentation) and then hands it to the wrapped codec. It
// accepts Thrift Framed and TTHeader with a binary payload: the two that
// carry their size ahead. Unframed messages, which carry none, are
// refused; so are the other protocols.
type Codec struct {
	remote.Codec
	// Limit is the largest frame accepted, its 4-byte size included.
	Limit int
}

// Decode implements remote.Codec.
func (c Codec) Decode(ctx context.Context, msg remote.Message, in remote.ByteBuffer) error {
	head, err := in.Peek(8)
	if err != nil {
		return err // the wrapped codec would report the same: the peer went away
	}
	size := int64(binary.BigEndian.Uint32(head))
	switch {
	case head[0] == 0x80 || head[0] == 0x82:
		return fmt.Errorf("%w: unframed Thrift (no size ahead): send Framed or TTHeader", ErrRefused)
	case size == 0 || size+4 > int64(c.Limit): // a mesh header's magic (0xffaf) is such a size
		return fmt.Errorf("%w: a frame of %d bytes (at most %d)", ErrRefused, size+4, c.Limit)
	}
	frame, err := in.Peek(int(size) + 4)
	if err != nil {
		return err
	}
	payload := frame[4:]
	if codec.IsTTHeader(head) {
		if payload, err = ttheaderPayload(frame); err != nil {
			return err
		}
	}
	if err := checkMessage(payload); err != nil {
		return fmt.Errorf("%w: %v", ErrRefused, err)
	}
	return c.Codec.Decode(ctx, msg, in)
}

// ttheaderPayload returns the Thrift message of a TTHeader frame, which
// must be binary, framed inside (TTHeaderFramed, and what Kitex writes for
// TTHeader too) or not.
func ttheaderPayload(frame []byte) ([]byte, error) {
	if len(frame) < 15 {
		return nil, fmt.Errorf("%w: a TTHeader frame of %d bytes", ErrRefused, len(frame))
	}
	end := 14 + 4*int(binary.BigEndian.Uint16(frame[12:14]))
	switch {
	case end > len(frame):
		return nil, fmt.Errorf("%w: a TTHeader header longer than its frame", ErrRefused)
	case frame[14] != 0: // protocol ID: 0 binary, 2 compact
		return nil, fmt.Errorf("%w: TTHeader with protocol %d (binary only)", ErrRefused, frame[14])
	}
	payload := frame[end:]
	if len(payload) >= 4 && payload[0] != 0x80 && int64(binary.BigEndian.Uint32(payload)) == int64(len(payload)-4) {
		payload = payload[4:]
	}
	return payload, nil
}

// checkMessage walks a binary-protocol message: every length it declares
// fits in the bytes that follow it.
func checkMessage(b []byte) error {
	r := reader{b: b}
	v, err := r.u32()
	if err != nil {
		return err
	}
	if v&0xffff0000 == 0x80010000 { // strict: version and type, then the name
		if err := r.bytes(); err != nil {
			return err
		}
	} else { // old: the name's length, the name, then the type
		if err := r.skip(int64(int32(v))); err != nil {
			return err
		}
		if err := r.skip(1); err != nil {
			return err
		}
	}
	if err := r.skip(4); err != nil { // sequence ID
		return err
	}
	return r.value(tStruct, 0)
}

// Thrift binary protocol type IDs.
const (
	tBool   = 2
	tByte   = 3
	tDouble = 4
	tI16    = 6
	tI32    = 8
	tI64    = 10
	tString = 11
	tStruct = 12
	tMap    = 13
	tSet    = 14
	tList   = 15
	tUUID   = 16
)

type reader struct {
	b   []byte
	off int
}

func (r *reader) left() int64 { return int64(len(r.b) - r.off) }

func (r *reader) skip(n int64) error {
	if n < 0 || n > r.left() {
		return fmt.Errorf("a length of %d where %d bytes are left", n, r.left())
	}
	r.off += int(n)
	return nil
}

func (r *reader) u8() (byte, error) {
	if r.left() < 1 {
		return 0, errors.New("truncated")
	}
	r.off++
	return r.b[r.off-1], nil
}

func (r *reader) u32() (uint32, error) {
	if r.left() < 4 {
		return 0, errors.New("truncated")
	}
	r.off += 4
	return binary.BigEndian.Uint32(r.b[r.off-4:]), nil
}

// count reads a declared length or element count, which must be at most
// the bytes left divided by the smallest size of one element.
func (r *reader) count(elem int64) (int64, error) {
	v, err := r.u32()
	if err != nil {
		return 0, err
	}
	n := int64(int32(v))
	if n < 0 || n*elem > r.left() {
		return 0, fmt.Errorf("%d elements of at least %d bytes where %d bytes are left", n, elem, r.left())
	}
	return n, nil
}

func (r *reader) bytes() error {
	n, err := r.count(1)
	if err != nil {
		return err
	}
	return r.skip(n)
}

// minSize is the fewest bytes a value of type t takes.
func minSize(t byte) int64 {
	switch t {
	case tDouble, tI64:
		return 8
	case tI32, tString:
		return 4
	case tI16:
		return 2
	case tUUID:
		return 16
	case tMap:
		return 6
	case tSet, tList:
		return 5
	}
	return 1 // bool, byte, struct (its stop)
}

func (r *reader) value(t byte, depth int) error {
	if depth > maxDepth {
		return fmt.Errorf("nested deeper than %d", maxDepth)
	}
	switch t {
	case tBool, tByte:
		return r.skip(1)
	case tI16:
		return r.skip(2)
	case tI32:
		return r.skip(4)
	case tI64, tDouble:
		return r.skip(8)
	case tUUID:
		return r.skip(16)
	case tString:
		return r.bytes()
	case tStruct:
		for {
			ft, err := r.u8()
			if err != nil {
				return err
			}
			if ft == 0 { // stop
				return nil
			}
			if err := r.skip(2); err != nil { // field ID
				return err
			}
			if err := r.value(ft, depth+1); err != nil {
				return err
			}
		}
	case tMap:
		kt, err := r.u8()
		if err != nil {
			return err
		}
		vt, err := r.u8()
		if err != nil {
			return err
		}
		n, err := r.count(minSize(kt) + minSize(vt))
		if err != nil {
			return err
		}
		for range n {
			if err := r.value(kt, depth+1); err != nil {
				return err
			}
			if err := r.value(vt, depth+1); err != nil {
				return err
			}
		}
		return nil
	case tSet, tList:
		et, err := r.u8()
		if err != nil {
			return err
		}
		n, err := r.count(minSize(et))
		if err != nil {
			return err
		}
		for range n {
			if err := r.value(et, depth+1); err != nil {
				return err
			}
		}
		return nil
	}
	return fmt.Errorf("type %d", t)
}
