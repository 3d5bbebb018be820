package admit_test

import (
	"errors"
	"net"
	"testing"

	"github.com/anyconn/kitex-anyconn/transport/internal/admit"
)

func addr(s string) net.Addr { a, _ := net.ResolveTCPAddr("tcp", s); return a }

func TestLimits(t *testing.T) {
	l := admit.New(4, 2)
	var held []func()
	for i := 0; i < 2; i++ {
		r, err := l.Acquire(addr("10.0.0.1:1000"))
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, r)
	}
	if _, err := l.Acquire(addr("10.0.0.1:1001")); !errors.Is(err, admit.ErrTooManyFromSource) {
		t.Fatalf("third from one source: %v; want ErrTooManyFromSource", err)
	}
	// The same address as IPv4-mapped IPv6 is the same source.
	if _, err := l.Acquire(addr("[::ffff:10.0.0.1]:1002")); !errors.Is(err, admit.ErrTooManyFromSource) {
		t.Fatalf("IPv4-mapped form: %v; want ErrTooManyFromSource", err)
	}
	for _, a := range []string{"10.0.0.2:1", "10.0.0.3:1"} {
		r, err := l.Acquire(addr(a))
		if err != nil {
			t.Fatalf("another source: %v", err)
		}
		held = append(held, r)
	}
	if _, err := l.Acquire(addr("10.0.0.4:1")); !errors.Is(err, admit.ErrTooMany) {
		t.Fatalf("fifth in all: %v; want ErrTooMany", err)
	}
	held[0]()
	held[0]() // a second release is a no-op
	if l.InProgress() != 3 {
		t.Fatalf("in progress %d after one release; want 3", l.InProgress())
	}
	if _, err := l.Acquire(addr("10.0.0.1:1003")); err != nil {
		t.Fatalf("after a release the source has room again: %v", err)
	}
	if admit.New(8, 0).PerSource() != 8 {
		t.Fatal("perSource 0 must mean the overall limit")
	}
}
