package thriftcheck

import (
	"encoding/binary"
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
