package thriftcheck

import (
	"encoding/binary"
	"encoding/hex"
	"testing"
)

// call is a strict binary echo call whose message field declares n bytes
// and carries them.
func call(declared uint32, carried int) []byte {
	var b []byte
	b = binary.BigEndian.AppendUint32(b, 0x80010001)
	b = binary.BigEndian.AppendUint32(b, 4)
	b = append(b, "echo"...)
	b = binary.BigEndian.AppendUint32(b, 1)
	b = append(b, tStruct, 0, 1, tString, 0, 1)
	b = binary.BigEndian.AppendUint32(b, declared)
	b = append(b, make([]byte, carried)...)
	return append(b, 0, 0) // stops
}

func TestCheckMessage(t *testing.T) {
	list := func(elem byte, n uint32, carried int) []byte {
		b := call(0, 0)
		b = b[:len(b)-2]                 // inside the request struct, after its string field
		b = append(b, tList, 0, 2, elem) // field 2: a list
		b = binary.BigEndian.AppendUint32(b, n)
		return append(append(b, make([]byte, carried)...), 0, 0)
	}
	for _, tc := range []struct {
		name string
		msg  []byte
		ok   bool
	}{
		{"a real call", call(5, 5), true},
		{"an empty string", call(0, 0), true},
		{"a string declaring more than is there", call(256<<20, 5), false},
		{"a negative length", call(0xffffffff, 0), false},
		{"a list of i64 declaring more than is there", list(tI64, 1000, 16), false},
		{"a list of i64 that fits", list(tI64, 2, 16), true},
		{"truncated", call(5, 5)[:20], false},
		{"an unknown type", append(call(0, 0)[:len(call(0, 0))-2], 99, 0, 1), false},
	} {
		if err := checkMessage(tc.msg); (err == nil) != tc.ok {
			t.Errorf("%s: %v, want ok %v", tc.name, err, tc.ok)
		}
	}
}

// FuzzCheckMessage: any bytes give an answer, never a panic or a loop
// longer than the input allows.
func FuzzCheckMessage(f *testing.F) {
	f.Add(call(5, 5))
	f.Add(call(256<<20, 5))
	f.Add([]byte{0x80, 0x01, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, tMap, 0, 1, tStruct, tStruct, 0x7f, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		_ = checkMessage(b)
	})
}

// ttheader wraps msg in a TTHeader frame with a 4-byte header (binary
// protocol, no transforms, padding), framed inside or not.
func ttheader(msg []byte, framedInside bool) []byte {
	if framedInside {
		msg = append(binary.BigEndian.AppendUint32(nil, uint32(len(msg))), msg...)
	}
	var b []byte
	b = append(b, 0x10, 0x00, 0, 0)         // magic, flags
	b = binary.BigEndian.AppendUint32(b, 1) // sequence
	b = binary.BigEndian.AppendUint16(b, 1) // header size: 4 bytes
	b = append(b, 0 /* binary */, 0, 0, 0)  // no transforms, padding
	b = append(b, msg...)
	return append(binary.BigEndian.AppendUint32(nil, uint32(len(b))), b...)
}

// A TTHeader frame as Kitex v0.16.3's client writes it (TTHeader, echo
// with "x"): a header with info, then the message framed inside.
const kitexTTHeaderCall = "000000671000000000000001000f0000010001000369736e00044563686f" +
	"1000060016000131000100066672616d6564000300000014000000060004" +
	"6563686f000900046563686f00000000001d80010001000000046563686f" +
	"000000010c00010b000100000001780000"

func TestTTHeaderPayload(t *testing.T) {
	kitex, err := hex.DecodeString(kitexTTHeaderCall)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		frame []byte
		ok    bool
	}{
		{"Kitex's own TTHeader call", kitex, true},
		{"a binary message", ttheader(call(5, 5), false), true},
		{"a binary message framed inside", ttheader(call(5, 5), true), true},
		{"a string declaring more than is there", ttheader(call(256<<20, 5), false), false},
		{"the same, framed inside", ttheader(call(256<<20, 5), true), false},
	} {
		payload, err := ttheaderPayload(tc.frame)
		if err == nil {
			err = checkMessage(payload)
		}
		if (err == nil) != tc.ok {
			t.Errorf("%s: %v, want ok %v", tc.name, err, tc.ok)
		}
	}
}
