package etcdreg_test

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"runtime/debug"
	"strings"
	"testing"
	"time"

	"github.com/cloudwego/kitex/pkg/registry"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/anyconn/kitex-anyconn/internal/etcdembed"
	"github.com/anyconn/kitex-anyconn/internal/etcdreg"
	"github.com/anyconn/kitex-anyconn/internal/testutil"
	"github.com/anyconn/kitex-anyconn/internal/testutil/etcdtest"
	"github.com/anyconn/kitex-anyconn/transport"
)

func TestMain(m *testing.M) {
	testutil.VerifyTestMain(m)
}

func register(t *testing.T, cli *clientv3.Client, addr string, tags map[string]string) *etcdreg.Registry {
	t.Helper()
	reg := etcdreg.NewRegistry(cli, etcdreg.RegistryOptions{TTL: 2 * time.Second})
	tcp, _ := net.ResolveTCPAddr("tcp", addr)
	if err := reg.Register(&registry.Info{ServiceName: "echo", Addr: tcp, Tags: tags}); err != nil {
		t.Fatalf("Register: %v", err)
	}
	t.Cleanup(func() { _ = reg.Deregister(nil) })
	testutil.Eventually(t, "registered", 15*time.Second, reg.Registered)
	return reg
}

func TestRegisterWritesRegistryEtcdLayout(t *testing.T) {
	cli := etcdtest.Client(t, etcdtest.Start(t))
	reg := register(t, cli, "10.1.2.3:8888", map[string]string{etcdreg.TagTransport: "gonet"})

	const key = "kitex/registry-etcd/echo/10.1.2.3:8888"
	if reg.Key() != key {
		t.Fatalf("key %q, want %q", reg.Key(), key)
	}
	resp, err := cli.Get(context.Background(), key)
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("get %s: %v, %d keys", key, err, len(resp.Kvs))
	}
	var v struct {
		Network, Address string
		Weight           int
		Tags             map[string]string
	}
	if err := json.Unmarshal(resp.Kvs[0].Value, &v); err != nil {
		t.Fatal(err)
	}
	if v.Network != "tcp" || v.Address != "10.1.2.3:8888" || v.Weight != 10 || v.Tags["transport"] != "gonet" {
		t.Fatalf("value %s", resp.Kvs[0].Value)
	}
	if resp.Kvs[0].Lease == 0 {
		t.Fatal("registration has no lease: a crashed instance would stay forever")
	}

	if err := reg.Deregister(nil); err != nil {
		t.Fatalf("Deregister: %v", err)
	}
	if resp, _ := cli.Get(context.Background(), key); len(resp.Kvs) != 0 {
		t.Fatal("key still present after Deregister")
	}
	if reg.Registered() {
		t.Fatal("Registered() true after Deregister")
	}
	if err := reg.Deregister(nil); err != nil {
		t.Fatalf("second Deregister: %v", err)
	}
}

func TestResolverKeepsOnlyMatchingTags(t *testing.T) {
	cli := etcdtest.Client(t, etcdtest.Start(t))
	register(t, cli, "10.0.0.1:1", map[string]string{etcdreg.TagTransport: "gonet"})
	register(t, cli, "10.0.0.2:1", map[string]string{etcdreg.TagTransport: "netpoll"})
	register(t, cli, "10.0.0.3:1", map[string]string{etcdreg.TagTransport: "websocket", etcdreg.TagWSPath: "/kitex"})
	register(t, cli, "10.0.0.4:1", map[string]string{etcdreg.TagTransport: "websocket", etcdreg.TagWSPath: "/other"})

	for _, tt := range []struct {
		tags map[string]string
		want string
	}{
		{map[string]string{etcdreg.TagTransport: "gonet"}, "10.0.0.1:1"},
		{map[string]string{etcdreg.TagTransport: "netpoll"}, "10.0.0.2:1"},
		{map[string]string{etcdreg.TagTransport: "websocket", etcdreg.TagWSPath: "/kitex"}, "10.0.0.3:1"},
	} {
		res, err := etcdreg.NewResolver(cli, "", tt.tags).Resolve(context.Background(), "echo")
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Instances) != 1 || res.Instances[0].Address().String() != tt.want {
			t.Fatalf("tags %v resolved %v, want only %s", tt.tags, res.Instances, tt.want)
		}
	}
	res, err := etcdreg.NewResolver(cli, "", map[string]string{etcdreg.TagTransport: "yamux"}).Resolve(context.Background(), "echo")
	if err != nil || len(res.Instances) != 0 {
		t.Fatalf("yamux resolved %v, %v; want nothing and no error", res.Instances, err)
	}
}

// KeepLast bridges an emptied etcd for a while, then lets the emptiness show.
func TestResolverKeepLast(t *testing.T) {
	cli := etcdtest.Client(t, etcdtest.Start(t))
	reg := register(t, cli, "10.0.0.1:1", map[string]string{etcdreg.TagTransport: "gonet"})
	r := etcdreg.NewResolver(cli, "", map[string]string{etcdreg.TagTransport: "gonet"}).KeepLast(500 * time.Millisecond)
	count := func() int {
		res, err := r.Resolve(context.Background(), "echo")
		if err != nil {
			t.Fatal(err)
		}
		return len(res.Instances)
	}
	if n := count(); n != 1 {
		t.Fatalf("resolved %d instances, want 1", n)
	}
	// Time without an answer (etcd unreachable) does not use the window up.
	time.Sleep(600 * time.Millisecond)
	if err := reg.Deregister(nil); err != nil { // a live registration would write itself again
		t.Fatal(err)
	}
	if n := count(); n != 1 {
		t.Fatalf("right after etcd emptied: %d instances, want the last one kept", n)
	}
	time.Sleep(300 * time.Millisecond)
	if n := count(); n != 1 {
		t.Fatalf("300ms after etcd emptied: %d instances, want the last one kept", n)
	}
	time.Sleep(300 * time.Millisecond)
	if n := count(); n != 0 {
		t.Fatalf("after KeepLast passed: %d instances, want none", n)
	}
}

// A lease lost behind the registry's back (etcd restarted without its data,
// or the lease expired while etcd was unreachable) is registered again.
func TestRegistrationComesBackAfterLeaseLoss(t *testing.T) {
	cli := etcdtest.Client(t, etcdtest.Start(t))
	reg := register(t, cli, "10.9.9.9:1", map[string]string{etcdreg.TagTransport: "gonet"})
	resp, err := cli.Get(context.Background(), reg.Key())
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("get: %v", err)
	}
	if _, err := cli.Revoke(context.Background(), clientv3.LeaseID(resp.Kvs[0].Lease)); err != nil {
		t.Fatalf("revoke: %v", err)
	}
	testutil.Eventually(t, "registered again", 15*time.Second, func() bool {
		resp, err := cli.Get(context.Background(), reg.Key())
		return err == nil && len(resp.Kvs) == 1 && reg.Registered()
	})
}

// A registration deleted while its lease lives (by an operator, or by
// anyone who may write the prefix) is written again at once: the instance
// does not stay out of discovery while its /readyz says ready.
func TestDeletedRegistrationIsWrittenAgain(t *testing.T) {
	cli := etcdtest.Client(t, etcdtest.Start(t))
	reg := register(t, cli, "10.9.9.8:1", map[string]string{etcdreg.TagTransport: "gonet"})
	// A caller alongside resolves every 20 ms, as the services' callers
	// do (keeping the last instances over an empty answer): it must never
	// be left without the instance.
	// Both kinds: one that reads etcd at each Resolve, and one that
	// watches (it sees each deletion at once).
	r := etcdreg.NewResolver(cli, "", nil).KeepLast(etcdreg.KeepLastFor(2 * time.Second))
	w := etcdreg.NewResolver(cli, "", nil).KeepLast(etcdreg.KeepLastFor(2 * time.Second)).Watch(time.Hour)
	defer w.Close()
	for _, r := range []*etcdreg.Resolver{r, w} {
		if res, err := r.Resolve(context.Background(), "echo"); err != nil || len(res.Instances) != 1 {
			t.Fatalf("before any deletion: %v, %v", res.Instances, err)
		}
	}
	stop := make(chan struct{})
	missed := make(chan int)
	go func() {
		n := 0
		defer func() { missed <- n }()
		for {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			for _, r := range []*etcdreg.Resolver{r, w} {
				if res, err := r.Resolve(context.Background(), "echo"); err != nil || len(res.Instances) != 1 {
					n++
				}
			}
		}
	}()
	before := testutil.HeapMiB()
	for i := range 3 {
		if _, err := cli.Delete(context.Background(), reg.Key()); err != nil {
			t.Fatal(err)
		}
		deleted := time.Now()
		testutil.Eventually(t, fmt.Sprintf("written again after deletion %d", i+1), 5*time.Second, func() bool {
			resp, err := cli.Get(context.Background(), reg.Key())
			return err == nil && len(resp.Kvs) == 1 && resp.Kvs[0].Lease != 0 && reg.Registered()
		})
		t.Logf("report: registration deleted while serving: written again after %v", time.Since(deleted).Round(time.Millisecond))
	}
	close(stop)
	t.Logf("report: heap %.1f MiB before 3 deletions, %.1f MiB after", before, testutil.HeapMiB())
	if n := <-missed; n != 0 {
		t.Fatalf("a caller resolving alongside found no instance %d times", n)
	}
}

// Register returns at once even while etcd is unreachable, and the
// registration appears when etcd does.
func TestRegisterWhileEtcdDown(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	cli := etcdtest.Client(t, addr)
	reg := etcdreg.NewRegistry(cli, etcdreg.RegistryOptions{TTL: 2 * time.Second})
	tcp, _ := net.ResolveTCPAddr("tcp", "10.0.0.9:1")
	start := time.Now()
	if err := reg.Register(&registry.Info{ServiceName: "echo", Addr: tcp}); err != nil {
		t.Fatalf("Register with etcd down: %v", err)
	}
	t.Cleanup(func() { _ = reg.Deregister(nil) })
	if time.Since(start) > time.Second || reg.Registered() {
		t.Fatal("Register blocked or claims success while etcd is down")
	}
	time.Sleep(500 * time.Millisecond)
	srv, err := etcdembed.Start(t.TempDir(), addr)
	if err != nil {
		t.Fatalf("start etcd at %s: %v", addr, err)
	}
	t.Cleanup(srv.Close)
	testutil.Eventually(t, "registered once etcd is up", 15*time.Second, reg.Registered)
	if err := reg.Deregister(nil); err != nil { // while etcd still runs
		t.Fatal(err)
	}
}

// Kitex registers a second after Run: a Register that comes after a
// Deregister (SIGTERM in that second) must keep the instance out, quietly.
func TestRegisterAfterDeregisterStaysOut(t *testing.T) {
	cli := etcdtest.Client(t, etcdtest.Start(t))
	reg := etcdreg.NewRegistry(cli, etcdreg.RegistryOptions{TTL: 2 * time.Second})
	if err := reg.Deregister(nil); err != nil {
		t.Fatal(err)
	}
	tcp, _ := net.ResolveTCPAddr("tcp", "10.0.0.5:1")
	if err := reg.Register(&registry.Info{ServiceName: "echo", Addr: tcp}); err != nil {
		t.Fatalf("Register after Deregister: %v, want nil", err)
	}
	time.Sleep(300 * time.Millisecond)
	resp, err := cli.Get(context.Background(), "kitex/registry-etcd/echo/", clientv3.WithPrefix())
	if err != nil || len(resp.Kvs) != 0 || reg.Registered() {
		t.Fatalf("registered after Deregister: %v keys, %v", len(resp.Kvs), err)
	}
}

// Echo registers with the tags the caller resolves with: one function
// builds them for both.
func TestTags(t *testing.T) {
	for _, c := range []struct {
		kind transport.Kind
		tls  bool
		want map[string]string
	}{
		{transport.Netpoll, false, map[string]string{"transport": "netpoll"}},
		{transport.Yamux, true, map[string]string{"transport": "yamux"}},
		{transport.WebSocket, false, map[string]string{"transport": "websocket", "ws_path": "/kitex", "ws_scheme": "ws"}},
		{transport.WebSocket, true, map[string]string{"transport": "websocket", "ws_path": "/kitex", "ws_scheme": "wss"}},
	} {
		if got := etcdreg.Tags(c.kind, "/kitex", c.tls); !maps.Equal(got, c.want) {
			t.Errorf("Tags(%s, tls %v) = %v, want %v", c.kind, c.tls, got, c.want)
		}
	}
}

// Poisoned discovery: entries that anyone who may write the prefix can
// put there. The resolver returns only TCP instances at a host:port, at
// most MaxInstances of them, ignores oversized values, and logs each
// ignored key once.
func TestResolverIgnoresPoisonedEntries(t *testing.T) {
	cli := etcdtest.Client(t, etcdtest.Start(t))
	register(t, cli, "10.0.0.1:1", map[string]string{etcdreg.TagTransport: "gonet"})
	ctx := context.Background()
	put := func(key, val string) {
		t.Helper()
		if _, err := cli.Put(ctx, etcdreg.DefaultPrefix+"/echo/"+key, val); err != nil {
			t.Fatal(err)
		}
	}
	tags := `"tags":{"transport":"gonet"}`
	put("unix", `{"network":"unix","address":"/run/docker.sock",`+tags+`}`)
	put("noport", `{"network":"tcp","address":"10.6.6.6",`+tags+`}`)
	put("bigport", `{"network":"tcp","address":"10.6.6.6:99999",`+tags+`}`)
	put("path", `{"network":"tcp","address":"10.6.6.6:1/x",`+tags+`}`)
	put("huge", `{"network":"tcp","address":"10.6.6.7:1",`+tags+`,"pad":"`+strings.Repeat("x", 64<<10)+`"}`)
	put("badscheme", `{"network":"tcp","address":"10.6.6.8:1","tags":{"transport":"gonet","ws_scheme":"http"}}`)
	// More valid-looking entries than a resolve returns, written in batches.
	for i := 0; i < etcdreg.MaxInstances+100; i += 100 {
		ops := make([]clientv3.Op, 0, 100)
		for j := i; j < i+100; j++ {
			ops = append(ops, clientv3.OpPut(fmt.Sprintf("%s/echo/10.7.%d.%d:1", etcdreg.DefaultPrefix, j/250, j%250),
				fmt.Sprintf(`{"network":"tcp","address":"10.7.%d.%d:1",%s}`, j/250, j%250, tags)))
		}
		if _, err := cli.Txn(ctx).Then(ops...).Commit(); err != nil {
			t.Fatal(err)
		}
	}
	core, logs := observer.New(zap.WarnLevel)
	r := etcdreg.NewResolver(cli, "", map[string]string{etcdreg.TagTransport: "gonet"}).WithLogger(zap.New(core))
	before := testutil.HeapMiB()
	peak := testutil.WatchHeap()
	defer func() {
		t.Logf("report: %d poisoned and surplus entries: heap %.1f MiB before 2 resolves, at most %.1f MiB during (etcd runs in this process)", etcdreg.MaxInstances+106, before, peak())
	}()
	for range 2 {
		res, err := r.Resolve(ctx, "echo")
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Instances) != etcdreg.MaxInstances {
			t.Fatalf("%d instances, want the cap, %d", len(res.Instances), etcdreg.MaxInstances)
		}
		found := false
		for _, in := range res.Instances {
			addr := in.Address()
			if addr.Network() != "tcp" || strings.HasPrefix(addr.String(), "10.6.") {
				t.Fatalf("a poisoned entry was resolved: %s %s", addr.Network(), addr)
			}
			found = found || addr.String() == "10.0.0.1:1"
		}
		if !found {
			t.Fatal("the real instance is missing")
		}
	}
	ignored := map[string]int{}
	for _, e := range logs.FilterMessage("discovery: etcd entry ignored").All() {
		ignored[e.ContextMap()["key"].(string)]++
	}
	for _, k := range []string{"unix", "noport", "bigport", "path", "huge", "badscheme"} {
		if n := ignored[etcdreg.DefaultPrefix+"/echo/"+k]; n != 1 {
			t.Errorf("entry %s logged %d times as ignored, want once over two resolves", k, n)
		}
	}
}

// Entries whose values add up to more than the client takes in one answer
// (MaxRecvBytes): the resolver reads them in pages, holding one page at a
// time, and still finds the valid instances among them. One read failed
// before, and a caller that started then had no instance at all.
func TestResolverReadsAnOversizedAnswerInPages(t *testing.T) {
	cli := etcdtest.Client(t, etcdtest.Start(t))
	ctx := context.Background()
	register(t, cli, "10.0.0.1:1", map[string]string{etcdreg.TagTransport: "gonet"})
	big := `{"network":"tcp","address":"10.6.6.6:1","tags":{"transport":"gonet"},"pad":"` + strings.Repeat("x", 1<<20) + `"}`
	const bigs = 24 // 24 MiB, over the 16 MiB cap
	for i := range bigs {
		if _, err := cli.Put(ctx, fmt.Sprintf("%s/echo/10.5.0.%d:1", etcdreg.DefaultPrefix, i), big); err != nil {
			t.Fatal(err)
		}
		// A valid entry between the big ones.
		register(t, cli, fmt.Sprintf("10.5.0.%d:2", i), map[string]string{etcdreg.TagTransport: "gonet"})
	}
	core, logs := observer.New(zap.WarnLevel)
	r := etcdreg.NewResolver(cli, "", map[string]string{etcdreg.TagTransport: "gonet"}).WithLogger(zap.New(core))
	// Collect often, so that the samples are close to what is held. etcd
	// runs in this process: what it builds for each answer counts too.
	defer debug.SetGCPercent(debug.SetGCPercent(5))
	before := testutil.HeapMiB()
	peak := testutil.WatchHeap()
	for range 3 {
		res, err := r.Resolve(ctx, "echo")
		if err != nil {
			t.Fatalf("resolve with %d MiB of entries: %v", bigs, err)
		}
		if len(res.Instances) != bigs+1 {
			t.Fatalf("%d instances, want the %d valid ones", len(res.Instances), bigs+1)
		}
	}
	during := peak()
	t.Logf("report: %d entries of 1 MiB under the prefix: heap %.0f MiB before, at most %.0f MiB during 3 resolves (etcd runs in this process)", bigs, before, during)
	if n := logs.FilterMessage("discovery: etcd answer too large, read in pages").Len(); n != 1 {
		t.Errorf("%d lines about the oversized answer over 3 resolves, want 1", n)
	}
	if n := logs.FilterMessage("discovery: etcd entry ignored").Len(); n != bigs {
		t.Errorf("%d entries logged as ignored, want the %d big ones, once each", n, bigs)
	}

	// A watching Resolver reads the same way in full, then follows more
	// big entries as etcd reports them, one event at a time.
	w := etcdreg.NewResolver(cli, "", map[string]string{etcdreg.TagTransport: "gonet"}).Watch(time.Hour)
	defer w.Close()
	count := func() int {
		res, err := w.Resolve(ctx, "echo")
		if err != nil {
			t.Fatalf("watching resolver: %v", err)
		}
		return len(res.Instances)
	}
	if n := count(); n != bigs+1 {
		t.Fatalf("watching: %d instances, want the %d valid ones", n, bigs+1)
	}
	for i := range 4 {
		if _, err := cli.Put(ctx, fmt.Sprintf("%s/echo/10.7.0.%d:1", etcdreg.DefaultPrefix, i), big); err != nil {
			t.Fatal(err)
		}
	}
	register(t, cli, "10.7.0.9:2", map[string]string{etcdreg.TagTransport: "gonet"})
	testutil.Eventually(t, "the watch sees the entry written after 4 MiB of others", 10*time.Second, func() bool { return count() == bigs+2 })
}
