package websocket

import (
	"net/http"
	"net/url"
	"testing"
)

func TestSameOrigin(t *testing.T) {
	for _, tc := range []struct {
		origin, host, forwarded string
		want                    bool
	}{
		{"https://app.example", "app.example:443", "", true},
		{"http://app.example", "app.example", "", true},
		{"http://app.example:8080", "APP.example:8080", "", true},
		{"https://app.example", "app.example:80", "", false},
		{"https://app.example", "10.0.0.7:8888", "app.example", true},
		{"https://app.example", "10.0.0.7:8888", "other.example, app.example:443", true},
		{"https://evil.example", "10.0.0.7:8888", "app.example", false},
		{"http://[::1]:80", "[::1]", "", true},
	} {
		u, _ := url.Parse(tc.origin)
		r := &http.Request{Host: tc.host, Header: http.Header{}}
		if tc.forwarded != "" {
			r.Header.Set("X-Forwarded-Host", tc.forwarded)
		}
		if got := sameOrigin(u, r); got != tc.want {
			t.Errorf("origin %s, Host %s, X-Forwarded-Host %q: same origin %v; want %v", tc.origin, tc.host, tc.forwarded, got, tc.want)
		}
	}
}
