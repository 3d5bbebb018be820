package etcdreg

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cloudwego/kitex/pkg/discovery"
	"github.com/cloudwego/kitex/pkg/loadbalance"
	"github.com/cloudwego/kitex/pkg/loadbalance/lbcache"
	"github.com/cloudwego/kitex/pkg/rpcinfo"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc/connectivity"
)

// Balance returns the balancer options with which Kitex clients of r use
// lb (client.WithLoadBalancer(lb, Balance(...))), and, if r watches, makes
// their balancer take each change of service's instances as r sees it:
// Kitex's balancer re-reads a resolver only on its own timer (every
// RefreshInterval), and reading a watching r more often would cost CPU for
// nothing between changes. The clients then share one balancer cache
// (opts.Cacheable), refreshed at each change until r is closed; its own
// timer is left at an hour, since r's full reads (Watch's resync) come as
// changes too.
func (r *Resolver) Balance(service string, lb loadbalance.Loadbalancer, expire time.Duration) *lbcache.Options {
	if r.w == nil { // Kitex's own refresh (every 5 s), nothing pushed
		return &lbcache.Options{ExpireInterval: expire}
	}
	opts := lbcache.Options{RefreshInterval: time.Hour, ExpireInterval: expire, Cacheable: true}
	factory := lbcache.NewBalancerFactory(r, lb, opts) // the clients' own, shared
	target := rpcinfo.NewEndpointInfo(service, "", nil, nil)
	r.w.mu.Lock()
	defer r.w.mu.Unlock()
	r.w.goLocked(func() {
		changed := r.changes(service)
		for changed != nil { // nil once closed
			select {
			case <-r.w.ctx.Done():
				return
			case <-changed:
			}
			// The next change's signal before this refresh reads: a change
			// during the refresh then makes another.
			changed = r.changes(service)
			// Get makes the balancer if no client has yet (or it expired).
			if bl, err := factory.Get(r.w.ctx, target); err == nil {
				bl.Refresh()
			}
		}
	})
	return &opts
}

// readTimeout bounds one read of etcd (see Resolver.get).
const readTimeout = 3 * time.Second

// watchers numbers the watching Resolvers of the process.
var watchers atomic.Int64

// watching is what a watching Resolver keeps: one feed per service.
type watching struct {
	resync time.Duration
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu    sync.Mutex
	feeds map[string]*feed
}

// feed follows one service: a full read, then etcd's watch of its prefix
// from the read's revision, until the watch ends, etcd is reconnected or
// resync has passed; then again.
type feed struct {
	ready chan struct{} // closed once the first read is done, successful or not
	poke  chan struct{} // (1) read in full now: the connection to etcd is back

	mu      sync.Mutex
	entries map[string]entry
	res     discovery.Result
	err     error         // of the last read, until one succeeds
	changed chan struct{} // closed when res changes, then replaced
}

// Watch makes r follow etcd instead of reading it at every Resolve: per
// service, one read in full, then a watch of its prefix from that read's
// revision, so a registration or deregistration is known within
// milliseconds and Resolve answers from memory. Every resync, and whenever
// the connection to etcd comes back, r reads in full again and watches
// anew from there: a watch that ended (compaction, lost leader), or one
// left behind by an etcd restarted without its data, misses nothing for
// longer than that. Close stops it. It returns r.
func (r *Resolver) Watch(resync time.Duration) *Resolver {
	// Its own name: Kitex shares balancer caches between resolvers of one
	// name, and this one's answers are its own state, not etcd's.
	r.name = fmt.Sprintf("%s#watch-%d", r.buildName(), watchers.Add(1))
	ctx, cancel := context.WithCancel(context.Background())
	r.w = &watching{resync: resync, ctx: ctx, cancel: cancel, feeds: map[string]*feed{}}
	r.w.mu.Lock()
	defer r.w.mu.Unlock()
	r.w.goLocked(func() { r.w.pokeOnReconnect(r.cli) })
	return r
}

// Close stops what Watch started, and waits for it. It may be called more
// than once, and on a Resolver that does not watch.
func (r *Resolver) Close() {
	if r.w != nil {
		r.w.mu.Lock() // no goroutine starts once Wait may run
		r.w.cancel()
		r.w.mu.Unlock()
		r.w.wg.Wait()
	}
}

// goLocked runs fn in a goroutine that Close waits for, unless r is
// closed. Called with w.mu held.
func (w *watching) goLocked(fn func()) bool {
	if w.ctx.Err() != nil {
		return false
	}
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		fn()
	}()
	return true
}

// changes returns a channel closed at the next change of service's
// instances (nil if r does not watch).
func (r *Resolver) changes(service string) <-chan struct{} {
	if r.w == nil {
		return nil
	}
	f := r.w.feed(r, service)
	if f == nil {
		return nil
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.changed
}

// feed returns the service's feed, started at the first call (nil for a
// service first asked for once r is closed).
func (w *watching) feed(r *Resolver, service string) *feed {
	w.mu.Lock()
	defer w.mu.Unlock()
	f := w.feeds[service]
	if f == nil {
		nf := &feed{ready: make(chan struct{}), poke: make(chan struct{}, 1), changed: make(chan struct{})}
		if w.goLocked(func() { r.run(w.ctx, service, nf) }) {
			f = nf
			w.feeds[service] = f
		}
	}
	return f
}

// resolve answers from the service's feed.
func (w *watching) resolve(ctx context.Context, r *Resolver, service string) (discovery.Result, error) {
	f := w.feed(r, service)
	if f == nil {
		return discovery.Result{}, errors.New("resolver closed")
	}
	select {
	case <-f.ready: // a closed r still answers with what it knew
	default:
		select {
		case <-f.ready:
		case <-ctx.Done():
			return discovery.Result{}, ctx.Err()
		case <-w.ctx.Done(): // closed before the first read ended
			return discovery.Result{}, errors.New("resolver closed")
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.res, f.err
}

// pokeOnReconnect makes every feed read in full when the connection to
// etcd becomes ready again: a watch resumed on an etcd restarted without
// its data would wait for revisions it will not see for a long time.
func (w *watching) pokeOnReconnect(cli *clientv3.Client) {
	conn := cli.ActiveConnection()
	state := conn.GetState()
	for conn.WaitForStateChange(w.ctx, state) {
		// Ready now, after any other state (Ready to Ready: it was lost
		// and found again between two looks).
		next := conn.GetState()
		if next == connectivity.Ready {
			w.mu.Lock()
			for _, f := range w.feeds {
				select {
				case f.poke <- struct{}{}:
				default:
				}
			}
			w.mu.Unlock()
		}
		state = next
	}
}

// run keeps f up to date until ctx ends.
func (r *Resolver) run(ctx context.Context, service string, f *feed) {
	prefix := r.prefix + "/" + service + "/"
	retry := newBackoff(100*time.Millisecond, 2*time.Second)
	var lastLog time.Time
	warn := func(msg string, err error) { // the first, then every 30 s
		if time.Since(lastLog) > 30*time.Second {
			r.log.Warn(msg, zap.String("service", service), zap.Error(err))
			lastLog = time.Now()
		}
	}
	for {
		select { // a poke before this read is answered by it
		case <-f.poke:
		default:
		}
		entries, rev, err := r.readEntries(ctx, service) // each read within readTimeout
		if ctx.Err() != nil {
			return
		}
		f.read(r, service, entries, err)
		if err == nil {
			started := time.Now()
			err = r.watch(ctx, prefix, rev, f, service)
			if ctx.Err() != nil {
				return
			}
			if err == nil || time.Since(started) > time.Second {
				retry.Reset()
			}
			if err == nil {
				continue
			}
			warn("discovery: etcd watch ended; reading in full again", err)
		} else {
			warn("discovery: cannot read instances in etcd; keeping the last ones", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-f.poke:
			retry.Reset()
		case <-time.After(retry.NextBackOff()):
		}
	}
}

// watch applies etcd's events on prefix after rev to f. It returns nil when
// it is time to read in full again (resync, or a poke), and the error that
// ended the watch otherwise.
func (r *Resolver) watch(ctx context.Context, prefix string, rev int64, f *feed, service string) error {
	// Without a leader, a member's watch would be silent: end it instead.
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	wch := r.cli.Watch(wctx, prefix, clientv3.WithPrefix(), clientv3.WithRev(rev+1))
	resync := time.NewTimer(r.w.resync)
	defer resync.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-resync.C:
			return nil
		case <-f.poke:
			return nil
		case wr, ok := <-wch:
			switch {
			case !ok:
				return errors.New("watch channel closed")
			case wr.Err() != nil:
				return wr.Err()
			case wr.Canceled:
				return errors.New("watch canceled")
			}
			f.apply(r, service, wr.Events)
		}
	}
}

// read sets f from a full read (or its error).
func (f *feed) read(r *Resolver, service string, entries map[string]entry, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	select {
	case <-f.ready:
	default:
		defer close(f.ready)
	}
	if err != nil {
		if f.entries == nil { // never read: Resolve fails until a read succeeds
			f.err = err
		}
		return
	}
	if f.entries != nil && maps.EqualFunc(f.entries, entries, func(a, b entry) bool { return a.raw == b.raw }) {
		return
	}
	f.entries, f.err = entries, nil
	f.publish(r, service)
}

// apply sets f from watch events.
func (f *feed) apply(r *Resolver, service string, events []*clientv3.Event) {
	f.mu.Lock()
	defer f.mu.Unlock()
	changed := false
	for _, ev := range events {
		key := string(ev.Kv.Key)
		old, had := f.entries[key]
		if ev.Type == mvccpb.DELETE {
			delete(f.entries, key)
			changed = changed || had
			continue
		}
		e, ok := r.parse(ev.Kv)
		switch {
		case !ok:
			delete(f.entries, key)
			changed = changed || had
		case had && old.raw == e.raw:
		case !had && len(f.entries) >= maxScanned:
			r.ignore(key, fmt.Sprintf("more than %d entries", maxScanned))
		default:
			f.entries[key] = e
			changed = true
		}
	}
	if changed {
		f.publish(r, service)
	}
}

// publish makes f's result from its entries and tells the followers; under
// f.mu.
func (f *feed) publish(r *Resolver, service string) {
	f.res = r.result(service, f.entries)
	close(f.changed)
	f.changed = make(chan struct{})
}
