package etcdreg

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/cloudwego/kitex/pkg/discovery"
	"github.com/cloudwego/kitex/pkg/rpcinfo"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// Resolver is a Kitex discovery.Resolver that reads instances from etcd and
// keeps only those whose tags carry every key and value of Tags.
type Resolver struct {
	cli    *clientv3.Client
	prefix string
	tags   map[string]string
	name   string

	keepLast time.Duration
	mu       sync.Mutex
	last     map[string]lastResult // by service, while keepLast > 0
}

type lastResult struct {
	res        discovery.Result
	emptySince time.Time // first empty answer since res; zero if none
}

var _ discovery.Resolver = (*Resolver)(nil)

// NewResolver returns a Resolver using cli (which the caller keeps owning),
// keeping instances whose tags include tags. prefix is DefaultPrefix if empty.
func NewResolver(cli *clientv3.Client, prefix string, tags map[string]string) *Resolver {
	if prefix == "" {
		prefix = DefaultPrefix
	}
	r := &Resolver{cli: cli, prefix: prefix, tags: tags}
	r.name = r.buildName()
	return r
}

// KeepLastFor returns how long a caller should keep the instances it knew
// when etcd answers with none, for services registered with lease ttl: an
// instance notices that its lease is gone at its next keep-alive (within
// ttl/3) and registers again within a retry (at most min(5 s, ttl/2)
// apart); half a TTL more covers a slow etcd. At least 15 s.
func KeepLastFor(ttl time.Duration) time.Duration {
	return max(15*time.Second, ttl+ttl/2)
}

// KeepLast makes an empty answer from etcd fall back to the last instances
// seen, for up to d after the first empty answer: after etcd is restarted
// with its data wiped, the services register again within a lease TTL, and
// the callers meanwhile keep calling the instances they knew instead of
// failing. The time etcd was unreachable before does not count. It returns r.
func (r *Resolver) KeepLast(d time.Duration) *Resolver {
	r.keepLast = d
	r.last = map[string]lastResult{}
	return r
}

// Target returns the service name to resolve.
func (r *Resolver) Target(_ context.Context, target rpcinfo.EndpointInfo) string {
	return target.ServiceName()
}

// Resolve lists the service's matching instances. An etcd error is
// returned as an error (Kitex then keeps the instances it knew); a service
// with no matching instance gives an empty, error-free result.
func (r *Resolver) Resolve(ctx context.Context, service string) (discovery.Result, error) {
	resp, err := r.cli.Get(ctx, r.prefix+"/"+service+"/", clientv3.WithPrefix())
	if err != nil {
		return discovery.Result{}, fmt.Errorf("discovery: list %s in etcd: %w", service, err)
	}
	res := discovery.Result{Cacheable: true, CacheKey: r.Name() + "/" + service}
	for _, kv := range resp.Kvs {
		var in instance
		if err := json.Unmarshal(kv.Value, &in); err != nil || in.Address == "" {
			continue // not a registration we can use
		}
		if !r.matches(in.Tags) {
			continue
		}
		network := in.Network
		if network == "" {
			network = "tcp"
		}
		res.Instances = append(res.Instances, discovery.NewInstance(network, in.Address, in.Weight, in.Tags))
	}
	if r.keepLast > 0 {
		r.mu.Lock()
		defer r.mu.Unlock()
		now := time.Now()
		l, ok := r.last[service]
		switch {
		case len(res.Instances) > 0:
			r.last[service] = lastResult{res: res}
		case !ok:
		case l.emptySince.IsZero():
			l.emptySince = now
			r.last[service] = l
			return l.res, nil
		case now.Sub(l.emptySince) < r.keepLast:
			return l.res, nil
		}
	}
	return res, nil
}

func (r *Resolver) matches(tags map[string]string) bool {
	for k, v := range r.tags {
		if tags[k] != v {
			return false
		}
	}
	return true
}

// Diff computes the change between two results.
func (r *Resolver) Diff(cacheKey string, prev, next discovery.Result) (discovery.Change, bool) {
	return discovery.DefaultDiff(cacheKey, prev, next)
}

// Name identifies the resolver, tags included: Kitex shares balancer caches
// between resolvers of the same name.
func (r *Resolver) Name() string { return r.name }

func (r *Resolver) buildName() string {
	keys := make([]string, 0, len(r.tags))
	for k := range r.tags {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	b.WriteString("etcd:" + r.prefix)
	for _, k := range keys {
		b.WriteString("|" + k + "=" + r.tags[k])
	}
	return b.String()
}

// Follow resolves service every refresh until ctx ends and hands apply the
// sorted addresses of its instances each time; it logs what changed.
// While etcd is unreachable, apply is not called: the last list stays.
func (r *Resolver) Follow(ctx context.Context, service string, refresh time.Duration, log *zap.Logger, what string, apply func([]string)) {
	tick := time.NewTicker(refresh)
	defer tick.Stop()
	var last []string
	for {
		rctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		res, err := r.Resolve(rctx, service)
		cancel()
		if err == nil {
			addrs := make([]string, 0, len(res.Instances))
			for _, in := range res.Instances {
				addrs = append(addrs, in.Address().String())
			}
			sort.Strings(addrs)
			if !slices.Equal(addrs, last) {
				log.Info(what, zap.String("service", service), zap.Strings("addresses", addrs))
				last = addrs
			}
			apply(addrs)
		} else if ctx.Err() == nil {
			log.Warn("cannot list "+what+" in etcd; keeping the current ones", zap.Error(err))
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}
