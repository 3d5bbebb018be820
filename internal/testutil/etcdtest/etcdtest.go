// Package etcdtest starts the embedded etcd for tests (apart from testutil,
// so that tests which need no etcd do not depend on the etcd server).
package etcdtest

import (
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/anyconn/kitex-anyconn/internal/etcdembed"
	"github.com/anyconn/kitex-anyconn/internal/etcdreg"
)

// Start starts an embedded etcd for the test and returns its endpoint;
// it stops when the test ends.
func Start(t testing.TB) string {
	t.Helper()
	srv, err := etcdembed.Start(t.TempDir(), "")
	if err != nil {
		t.Fatalf("embedded etcd: %v", err)
	}
	t.Cleanup(srv.Close)
	return srv.Endpoint()
}

// Client returns a client of endpoint, closed when the test ends.
func Client(t testing.TB, endpoint string) *clientv3.Client {
	t.Helper()
	cli, err := etcdreg.NewEtcdClient(etcdreg.EtcdConfig{Endpoints: []string{endpoint}}, nil)
	if err != nil {
		t.Fatalf("etcd client: %v", err)
	}
	t.Cleanup(func() { _ = cli.Close() })
	return cli
}
