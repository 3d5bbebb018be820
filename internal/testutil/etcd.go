package testutil

import (
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/anyconn/kitex-anyconn/internal/discovery"
	"github.com/anyconn/kitex-anyconn/internal/etcdembed"
)

// StartEtcd starts an embedded etcd for the test and returns its endpoint;
// it stops when the test ends.
func StartEtcd(t testing.TB) string {
	t.Helper()
	srv, err := etcdembed.Start(t.TempDir(), "")
	if err != nil {
		t.Fatalf("embedded etcd: %v", err)
	}
	t.Cleanup(srv.Close)
	return srv.Endpoint()
}

// EtcdClient returns a client of endpoint, closed when the test ends.
func EtcdClient(t testing.TB, endpoint string) *clientv3.Client {
	t.Helper()
	cli, err := discovery.NewEtcdClient(discovery.EtcdConfig{Endpoints: []string{endpoint}}, nil)
	if err != nil {
		t.Fatalf("etcd client: %v", err)
	}
	t.Cleanup(func() { _ = cli.Close() })
	return cli
}
