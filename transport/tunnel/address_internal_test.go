package tunnel

import "testing"

func TestSameAddress(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		same bool
	}{
		{"10.0.0.7:7000", "10.0.0.7:7000", true},
		{"10.0.0.7:7000", "10.0.0.8:7000", false},
		{"wss://tunnel.example.com/tunnel", "wss://tunnel.example.com:443/tunnel", true},
		{"ws://tunnel.example.com/tunnel", "ws://tunnel.example.com:80/tunnel", true},
		{"ws://tunnel.example.com/tunnel", "wss://tunnel.example.com/tunnel", false},
		{"wss://tunnel.example.com/tunnel", "wss://tunnel.example.com/other", false},
		{"wss://tunnel.example.com:8443/tunnel", "wss://tunnel.example.com/tunnel", false},
		{"tunnel.example.com:443", "wss://tunnel.example.com/", false},
	} {
		if got := sameAddress(tc.a, tc.b); got != tc.same {
			t.Errorf("sameAddress(%q, %q) = %v, want %v", tc.a, tc.b, got, tc.same)
		}
	}
}
