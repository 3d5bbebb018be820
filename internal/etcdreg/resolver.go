package etcdreg

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cloudwego/kitex/pkg/discovery"
	"github.com/cloudwego/kitex/pkg/rpcinfo"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Resolver is a Kitex discovery.Resolver that reads instances from etcd and
// keeps only those whose tags carry every key and value of Tags.
type Resolver struct {
	cli    *clientv3.Client
	prefix string
	tags   map[string]string
	name   string

	w *watching // nil unless Watch was called

	keepLast time.Duration
	mu       sync.Mutex
	last     map[string]lastResult // by service, while keepLast > 0

	log     *zap.Logger
	ignored map[string]bool // keys logged as ignored, at most maxIgnoredLogged; under mu
	// ignoredOverflow: the line saying more are ignored was logged; under mu
	ignoredOverflow bool
}

// Bounds on what a Resolver takes from etcd: anyone who may write the
// prefix must not make callers dial other networks, hold unbounded memory
// or wait on a huge answer.
const (
	// MaxInstances is the most instances one Resolve returns; the first by
	// key are kept.
	MaxInstances = 1024
	// MaxEntryBytes is the largest registration value read; a larger one
	// is ignored.
	MaxEntryBytes = 4096
	// maxScanned bounds the keys one Resolve reads, valid or not.
	maxScanned = 4 * MaxInstances
	// maxIgnoredLogged bounds the keys remembered as logged.
	maxIgnoredLogged = 1024
)

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
	r := &Resolver{cli: cli, prefix: prefix, tags: tags, log: zap.NewNop(), ignored: map[string]bool{}}
	r.name = r.buildName()
	return r
}

// WithLogger makes r log each etcd entry it ignores (once per key). It
// returns r.
func (r *Resolver) WithLogger(log *zap.Logger) *Resolver {
	r.log = log
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
// with no matching instance gives an empty, error-free result. A watching
// Resolver (Watch) answers from memory, and an error only until its first
// read of etcd succeeds.
func (r *Resolver) Resolve(ctx context.Context, service string) (discovery.Result, error) {
	var res discovery.Result
	var err error
	if r.w != nil {
		res, err = r.w.resolve(ctx, r, service)
	} else {
		res, err = r.read(ctx, service)
	}
	if err != nil {
		return discovery.Result{}, fmt.Errorf("discovery: list %s in etcd: %w", service, err)
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

// read lists the service's matching instances with one read of etcd.
func (r *Resolver) read(ctx context.Context, service string) (discovery.Result, error) {
	entries, _, err := r.readEntries(ctx, service)
	if err != nil {
		return discovery.Result{}, err
	}
	return r.result(service, entries), nil
}

// entry is one valid registration of a matching instance.
type entry struct {
	key string
	raw string // the value as read: an equal one is no change
	in  discovery.Instance
}

// readEntries reads the service's matching instances, and the revision of
// etcd at which they were read.
func (r *Resolver) readEntries(ctx context.Context, service string) (map[string]entry, int64, error) {
	entries := map[string]entry{}
	rev, err := r.scan(ctx, r.prefix+"/"+service+"/", func(kv *mvccpb.KeyValue) {
		if e, ok := r.parse(kv); ok {
			entries[e.key] = e
		}
	})
	return entries, rev, err
}

// parse returns the entry of kv if it is a valid registration with the
// wanted tags; an invalid one is logged (once per key).
func (r *Resolver) parse(kv *mvccpb.KeyValue) (entry, bool) {
	in, why := parseInstance(kv.Value)
	if why != "" {
		r.ignore(string(kv.Key), why)
		return entry{}, false
	}
	if !r.matches(in.Tags) {
		return entry{}, false
	}
	return entry{key: string(kv.Key), raw: string(kv.Value), in: discovery.NewInstance("tcp", in.Address, in.Weight, in.Tags)}, true
}

// result is the Kitex result of entries: the first MaxInstances by key.
func (r *Resolver) result(service string, entries map[string]entry) discovery.Result {
	keys := slices.Sorted(maps.Keys(entries))
	res := discovery.Result{Cacheable: true, CacheKey: r.Name() + "/" + service, Instances: make([]discovery.Instance, 0, min(len(keys), MaxInstances))}
	for _, k := range keys {
		if len(res.Instances) == MaxInstances {
			r.ignore(k, fmt.Sprintf("more than %d instances", MaxInstances))
			continue
		}
		res.Instances = append(res.Instances, entries[k].in)
	}
	return res
}

// scan calls each with the first maxScanned keys under prefix, in key
// order. Usually one read does; but values made huge by whoever may write
// the prefix can make that answer larger than the client takes
// (MaxRecvBytes). Then the keys are read alone, and the values in pages of
// pageKeys, a page that is still too large key by key, and a key whose
// value alone is too large is ignored: the valid entries are still found,
// and no more than one page is held at a time.
func (r *Resolver) scan(ctx context.Context, prefix string, each func(*mvccpb.KeyValue)) (rev int64, err error) {
	resp, err := r.get(ctx, prefix, clientv3.WithPrefix(), clientv3.WithLimit(maxScanned))
	if !tooLarge(err) {
		if err != nil {
			return 0, err
		}
		for _, kv := range resp.Kvs {
			each(kv)
		}
		return resp.Header.Revision, nil
	}
	keys, err := r.get(ctx, prefix, clientv3.WithPrefix(), clientv3.WithLimit(maxScanned), clientv3.WithKeysOnly())
	if err != nil {
		return 0, err
	}
	// The pages are read at the keys' revision: together they are one
	// snapshot, which a watch can follow from.
	rev = keys.Header.Revision
	r.warnOnce("discovery: etcd answer too large, read in pages", prefix, fmt.Sprintf("its entries make more than %d bytes", MaxRecvBytes))
	for i := 0; i < len(keys.Kvs); i += pageKeys {
		page := keys.Kvs[i:min(i+pageKeys, len(keys.Kvs))]
		end := clientv3.GetPrefixRangeEnd(prefix)
		if i+pageKeys < len(keys.Kvs) {
			end = string(keys.Kvs[i+pageKeys].Key)
		}
		resp, err := r.get(ctx, string(page[0].Key), clientv3.WithRange(end), clientv3.WithLimit(pageKeys), clientv3.WithRev(rev))
		if err == nil {
			for _, kv := range resp.Kvs {
				each(kv)
			}
			continue
		}
		if !tooLarge(err) {
			return 0, err
		}
		for _, k := range page {
			resp, err := r.get(ctx, string(k.Key), clientv3.WithRev(rev))
			switch {
			case tooLarge(err):
				r.ignore(string(k.Key), fmt.Sprintf("value of more than %d bytes", MaxRecvBytes))
			case err != nil:
				return 0, err
			case len(resp.Kvs) == 1:
				each(resp.Kvs[0])
			}
		}
	}
	return rev, nil
}

// get is one read of etcd within readTimeout: a full read of a large
// service takes several (scan's pages), each with its own time.
func (r *Resolver) get(ctx context.Context, key string, opts ...clientv3.OpOption) (*clientv3.GetResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, readTimeout)
	defer cancel()
	return r.cli.Get(ctx, key, opts...)
}

// pageKeys is how many values scan reads at once when one read is too
// large: below MaxRecvBytes with etcd's default largest value (1.5 MiB).
const pageKeys = 8

// tooLarge says whether err is an answer over the client's receive cap.
func tooLarge(err error) bool {
	return status.Code(err) == codes.ResourceExhausted
}

// parseInstance decodes a registration value, or says why it is not one
// this project can dial: anything but TCP to a host and port.
func parseInstance(v []byte) (instance, string) {
	var in instance
	switch {
	case len(v) > MaxEntryBytes:
		return in, fmt.Sprintf("value of %d bytes (at most %d)", len(v), MaxEntryBytes)
	case json.Unmarshal(v, &in) != nil:
		return in, "not a registration (JSON)"
	case in.Network != "" && in.Network != "tcp":
		return in, fmt.Sprintf("network %q (only tcp)", clip(in.Network))
	}
	host, port, err := net.SplitHostPort(in.Address)
	if p, perr := strconv.Atoi(port); err != nil || host == "" || perr != nil || p < 1 || p > 65535 ||
		len(host) > 253 || strings.ContainsAny(host, " /\t\r\n") {
		return in, fmt.Sprintf("address %q (want host:port)", clip(in.Address))
	}
	if in.Weight < 0 {
		return in, fmt.Sprintf("weight %d", in.Weight)
	}
	if p, ok := in.Tags[TagWSPath]; ok && !strings.HasPrefix(p, "/") {
		return in, fmt.Sprintf("%s %q (want a path)", TagWSPath, clip(p))
	}
	if sc, ok := in.Tags[TagWSScheme]; ok && sc != "ws" && sc != "wss" {
		return in, fmt.Sprintf("%s %q (want ws or wss)", TagWSScheme, clip(sc))
	}
	return in, ""
}

// clip shortens peer-written text for a log line.
func clip(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}

// ignore logs an ignored entry, once per key. At most maxIgnoredLogged
// keys are remembered; after them one line says that more are ignored
// without a line each, so a flood of entries bounds both memory and log.
func (r *Resolver) ignore(key, why string) {
	r.warnOnce("discovery: etcd entry ignored", key, why)
}

// warnOnce logs msg about key once (at most maxIgnoredLogged keys).
func (r *Resolver) warnOnce(msg, key, why string) {
	r.mu.Lock()
	seen, full := r.ignored[key], len(r.ignored) >= maxIgnoredLogged
	switch {
	case !seen && !full:
		r.ignored[key] = true
	case !seen && full && !r.ignoredOverflow:
		r.ignoredOverflow = true
		r.mu.Unlock()
		r.log.Warn("discovery: more etcd entries ignored; they are no longer logged one by one", zap.Int("logged", maxIgnoredLogged))
		return
	default:
		seen = true
	}
	r.mu.Unlock()
	if !seen {
		r.log.Warn(msg, zap.String("key", clip(key)), zap.String("reason", why))
	}
}

func (r *Resolver) matches(tags map[string]string) bool {
	for k, v := range r.tags {
		if tags[k] != v {
			return false
		}
	}
	return true
}

// Diff computes the change between two results. A watching Resolver hands
// out the same result until something changes: the same instances are no
// change, without comparing them.
func (r *Resolver) Diff(cacheKey string, prev, next discovery.Result) (discovery.Change, bool) {
	if len(prev.Instances) == len(next.Instances) && (len(prev.Instances) == 0 || &prev.Instances[0] == &next.Instances[0]) {
		return discovery.Change{}, false
	}
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

// Follow hands apply the sorted addresses of service's instances, in the
// background until ctx ends or stop is called (which waits for it): at
// once, then at each change a watching Resolver sees, and every refresh;
// it logs what changed. While etcd is unreachable, apply is not called:
// the last list stays.
func (r *Resolver) Follow(ctx context.Context, service string, refresh time.Duration, log *zap.Logger, what string, apply func([]string)) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.follow(ctx, service, refresh, log, what, apply)
	}()
	return func() {
		cancel()
		<-done
	}
}

func (r *Resolver) follow(ctx context.Context, service string, refresh time.Duration, log *zap.Logger, what string, apply func([]string)) {
	tick := time.NewTicker(refresh)
	defer tick.Stop()
	var last []string
	for {
		// The change signal before reading: a change during the read is
		// not missed. Each read of etcd is within readTimeout.
		changed := r.changes(service)
		res, err := r.Resolve(ctx, service)
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
		case <-changed:
		case <-tick.C:
		}
	}
}
