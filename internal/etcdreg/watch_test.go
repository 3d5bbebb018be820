package etcdreg_test

import (
	"context"
	"fmt"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/cloudwego/kitex/pkg/loadbalance"
	"github.com/cloudwego/kitex/pkg/loadbalance/lbcache"
	"github.com/cloudwego/kitex/pkg/rpcinfo"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/anyconn/kitex-anyconn/internal/etcdreg"
	"github.com/anyconn/kitex-anyconn/internal/testutil"
	"github.com/anyconn/kitex-anyconn/internal/testutil/etcdtest"
)

// noResync is a full-read interval no test lasts: what a test sees came
// by the watch (or the read after a reconnection), not by the safety net.
const noResync = time.Hour

// put writes a registration of addr for service echo (tag transport gonet).
func put(t *testing.T, cli *clientv3.Client, addr string) {
	t.Helper()
	v := fmt.Sprintf(`{"network":"tcp","address":%q,"weight":10,"tags":{"transport":"gonet"}}`, addr)
	if _, err := cli.Put(context.Background(), "kitex/registry-etcd/echo/"+addr, v); err != nil {
		t.Fatal(err)
	}
}

func del(t *testing.T, cli *clientv3.Client, addr string) {
	t.Helper()
	if _, err := cli.Delete(context.Background(), "kitex/registry-etcd/echo/"+addr); err != nil {
		t.Fatal(err)
	}
}

// follower records what a watching Resolver's Follow hands out.
type follower struct {
	mu   sync.Mutex
	last []string
	at   time.Time
}

func (f *follower) apply(addrs []string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !slices.Equal(addrs, f.last) {
		f.last, f.at = addrs, time.Now()
	}
}

// waitFor waits until the follower holds want, and returns how long after
// since it changed to it.
func (f *follower) waitFor(t *testing.T, what string, since time.Time, want ...string) time.Duration {
	t.Helper()
	var took time.Duration
	testutil.Eventually(t, what, 10*time.Second, func() bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		took = f.at.Sub(since)
		return slices.Equal(f.last, want)
	})
	return took
}

func watching(t *testing.T, cli *clientv3.Client) (*etcdreg.Resolver, *follower) {
	t.Helper()
	r := etcdreg.NewResolver(cli, "", map[string]string{etcdreg.TagTransport: "gonet"}).Watch(noResync)
	f := &follower{}
	stop := r.Follow(context.Background(), "echo", noResync, zap.NewNop(), "echo", f.apply)
	t.Cleanup(func() {
		stop()
		r.Close()
	})
	return r, f
}

// A watching Resolver sees a registration and a deregistration as etcd
// reports them, with no read between: Resolve is answered from memory.
func TestWatchSeesChangesWithoutReading(t *testing.T) {
	cli := etcdtest.Client(t, etcdtest.Start(t))
	put(t, cli, "10.0.0.1:1")
	r, f := watching(t, cli)
	f.waitFor(t, "the first instance", time.Now(), "10.0.0.1:1")

	at := time.Now()
	put(t, cli, "10.0.0.2:1")
	took := f.waitFor(t, "the registration", at, "10.0.0.1:1", "10.0.0.2:1")
	t.Logf("report: a registration reached Follow %v after the put began", took.Round(time.Microsecond))
	at = time.Now()
	del(t, cli, "10.0.0.1:1")
	took = f.waitFor(t, "the deregistration", at, "10.0.0.2:1")
	t.Logf("report: a deregistration reached Follow %v after the delete began", took.Round(time.Microsecond))

	// Resolve answers from memory: with etcd's client closed it still
	// answers, with the same result each time (Diff's no-change case).
	_ = cli.Close()
	a, err := r.Resolve(context.Background(), "echo")
	b, err2 := r.Resolve(context.Background(), "echo")
	if err != nil || err2 != nil || len(a.Instances) != 1 || a.Instances[0].Address().String() != "10.0.0.2:1" {
		t.Fatalf("Resolve from memory: %v, %v %v", a.Instances, err, err2)
	}
	if _, changed := r.Diff(a.CacheKey, a, b); changed {
		t.Fatal("two answers without a change in between differ")
	}
}

// A watch cut off while etcd changed and was compacted past what it saw
// ends with "compacted"; the Resolver reads in full and misses nothing.
func TestWatchRecoversFromCompaction(t *testing.T) {
	endpoint := etcdtest.Start(t)
	direct := etcdtest.Client(t, endpoint)
	proxy := testutil.StartProxy(t, endpoint)
	put(t, direct, "10.0.0.1:1")
	_, f := watching(t, etcdtest.Client(t, proxy.Addr()))
	f.waitFor(t, "the first instance", time.Now(), "10.0.0.1:1")

	proxy.Freeze() // the watch hears nothing from here
	del(t, direct, "10.0.0.1:1")
	put(t, direct, "10.0.0.2:1")
	put(t, direct, "10.0.0.3:1")
	resp, err := direct.Get(context.Background(), "x")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := direct.Compact(context.Background(), resp.Header.Revision); err != nil {
		t.Fatal(err)
	}
	proxy.Cut() // the watch reconnects, from a revision compacted away
	cut := time.Now()
	took := f.waitFor(t, "the changes made while cut off", cut, "10.0.0.2:1", "10.0.0.3:1")
	t.Logf("report: after a compaction past the watch, the changes were known %v after the connection came back", took.Round(time.Millisecond))
}

// An etcd restarted without its data (a new revision history, lower than
// what the watch saw) is read in full as soon as the client reconnects:
// a watch resumed from the old revision would wait for revisions that do
// not come.
func TestWatchRecoversFromAnEtcdRestartedEmpty(t *testing.T) {
	first := etcdtest.Start(t)
	direct := etcdtest.Client(t, first)
	for i := range 20 { // a revision history the new etcd will not reach soon
		put(t, direct, fmt.Sprintf("10.0.0.1:%d", i+1))
	}
	for i := range 19 {
		del(t, direct, fmt.Sprintf("10.0.0.1:%d", i+2))
	}
	// The client reaches etcd through a proxy, which moves to the new etcd
	// (the same address, as far as the client can tell).
	proxy := testutil.StartProxy(t, first)
	_, f := watching(t, etcdtest.Client(t, proxy.Addr()))
	f.waitFor(t, "the first instance", time.Now(), "10.0.0.1:1")

	second := etcdtest.Start(t)
	proxy.SetTargets(second)
	proxy.Cut()
	at := time.Now()
	put(t, etcdtest.Client(t, second), "10.0.0.2:1")
	took := f.waitFor(t, "the new etcd's registration", at, "10.0.0.2:1")
	t.Logf("report: after etcd restarted empty, its registration was known %v after the put began", took.Round(time.Millisecond))
}

// Kitex's balancer, whose own timer re-reads a resolver only every hour
// here, takes a watching Resolver's change at once: Balance refreshes the
// balancer cache the clients share.
func TestBalanceRefreshesKitexBalancerAtEachChange(t *testing.T) {
	cli := etcdtest.Client(t, etcdtest.Start(t))
	put(t, cli, "10.0.0.1:1")
	r := etcdreg.NewResolver(cli, "", map[string]string{etcdreg.TagTransport: "gonet"}).Watch(noResync)
	t.Cleanup(r.Close)
	lb := loadbalance.NewWeightedRoundRobinBalancer()
	opts := r.Balance("echo", lb, time.Hour)
	if opts.RefreshInterval < time.Hour || !opts.Cacheable {
		t.Fatalf("options %+v: the balancer's own timer should not matter, and its cache must be shared", *opts)
	}
	// What client.WithLoadBalancer(lb, opts) makes a Kitex client use.
	bl, err := lbcache.NewBalancerFactory(r, lb, *opts).Get(context.Background(), rpcinfo.NewEndpointInfo("echo", "", nil, nil))
	if err != nil {
		t.Fatal(err)
	}
	instances := func() []string {
		res, _ := bl.GetResult()
		var addrs []string
		for _, in := range res.Instances {
			addrs = append(addrs, in.Address().String())
		}
		slices.Sort(addrs)
		return addrs
	}
	if got := instances(); !slices.Equal(got, []string{"10.0.0.1:1"}) {
		t.Fatalf("balancer starts with %v", got)
	}
	put(t, cli, "10.0.0.2:1")
	testutil.Eventually(t, "the balancer has the new instance", 10*time.Second, func() bool {
		return slices.Equal(instances(), []string{"10.0.0.1:1", "10.0.0.2:1"})
	})
	del(t, cli, "10.0.0.1:1")
	testutil.Eventually(t, "the balancer lets the deleted instance go", 10*time.Second, func() bool {
		return slices.Equal(instances(), []string{"10.0.0.2:1"})
	})
	// The picker follows too: every pick is the remaining instance.
	picker := bl.GetPicker()
	for range 3 {
		if in := picker.Next(context.Background(), nil); in == nil || in.Address().String() != "10.0.0.2:1" {
			t.Fatalf("picked %v after the deletion", in)
		}
	}
}

// A Resolve waiting for the first read of etcd ends when the Resolver is
// closed (Kitex's balancer resolves without a deadline), and a closed
// Resolver that never read answers at once.
func TestCloseEndsAResolveWaitingForItsFirstRead(t *testing.T) {
	// An etcd that never answers: a listener that accepts and says nothing.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{ln.Addr().String()}, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	r := etcdreg.NewResolver(cli, "", nil).Watch(noResync)
	done := make(chan error, 1)
	go func() {
		_, err := r.Resolve(context.Background(), "echo")
		done <- err
	}()
	time.Sleep(100 * time.Millisecond) // Resolve waits for the first read
	r.Close()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("Resolve of a closed Resolver succeeded")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Resolve still waits for a first read that Close ended")
	}
	if _, err := r.Resolve(context.Background(), "echo"); err == nil {
		t.Fatal("a closed Resolver answered")
	}
}
