package etcdreg

import (
	"net"
	"strconv"
	"testing"
)

// FuzzParseInstance feeds arbitrary registration values to the resolver's
// parser: whatever is in etcd, an instance it accepts is TCP at a host and
// a port in 1-65535, from a value of at most MaxEntryBytes. `make test`
// runs the seeds; `go test -fuzz FuzzParseInstance ./internal/etcdreg`
// explores.
func FuzzParseInstance(f *testing.F) {
	f.Add([]byte(`{"network":"tcp","address":"10.0.0.1:8888","weight":10,"tags":{"transport":"gonet"}}`))
	f.Add([]byte(`{"network":"unix","address":"/run/docker.sock"}`))
	f.Add([]byte(`{"network":"tcp","address":"10.0.0.1"}`))
	f.Add([]byte(`{"network":"tcp","address":"10.0.0.1:99999"}`))
	f.Add([]byte(`{"network":"tcp","address":"[::1]:80/x"}`))
	f.Add([]byte(`{"address":":80"}`))
	f.Add([]byte(`{"network":"tcp","address":"a:1","weight":-1}`))
	f.Add([]byte(`{"network":"tcp","address":"a:1","tags":{"ws_scheme":"http"}}`))
	f.Add([]byte(`not json`))
	f.Fuzz(func(t *testing.T, v []byte) {
		in, why := parseInstance(v)
		if why != "" {
			return
		}
		if len(v) > MaxEntryBytes {
			t.Fatalf("accepted a value of %d bytes", len(v))
		}
		if in.Network != "" && in.Network != "tcp" {
			t.Fatalf("accepted network %q", in.Network)
		}
		host, port, err := net.SplitHostPort(in.Address)
		p, perr := strconv.Atoi(port)
		if err != nil || host == "" || perr != nil || p < 1 || p > 65535 {
			t.Fatalf("accepted address %q", in.Address)
		}
	})
}
