// Package etcdreg registers Kitex services in etcd and resolves them, in
// the key and value layout of kitex-contrib/registry-etcd
// ("kitex/registry-etcd/<service>/<host:port>" holding JSON with network,
// address, weight and tags), so that registry-etcd's own resolver finds our
// servers and our resolver finds registry-etcd's. Unlike registry-etcd
// v0.3.0, the registration is kept forever: a lost lease (etcd restarted,
// wiped, or unreachable for longer than the TTL) is re-created with backoff,
// the etcd client can be closed, and Deregister revokes the lease.
package etcdreg

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cloudwego/kitex/pkg/registry"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/anyconn/kitex-anyconn/transport"
)

// DefaultPrefix is registry-etcd's key prefix.
const DefaultPrefix = "kitex/registry-etcd"

// Tag keys this project sets on registrations.
const (
	TagTransport = "transport" // netpoll, gonet, websocket or yamux
	TagWSPath    = "ws_path"   // the WebSocket endpoint's HTTP path
	TagWSScheme  = "ws_scheme" // ws or wss
)

// Tags returns the tags of a registration, which are also what a resolver
// for it matches: the transport and, for WebSocket, the endpoint's path and
// scheme (wss with TLS). Both sides build them here, so that they agree.
func Tags(kind transport.Kind, wsPath string, tls bool) map[string]string {
	tags := map[string]string{TagTransport: string(kind)}
	if kind == transport.WebSocket {
		tags[TagWSPath], tags[TagWSScheme] = wsPath, "ws"
		if tls {
			tags[TagWSScheme] = "wss"
		}
	}
	return tags
}

// instance is registry-etcd's JSON value.
type instance struct {
	Network string            `json:"network"`
	Address string            `json:"address"`
	Weight  int               `json:"weight"`
	Tags    map[string]string `json:"tags"`
}

// Key returns the etcd key of service at address.
func Key(prefix, service, address string) string {
	return prefix + "/" + service + "/" + address
}

// RegistryOptions configures a Registry.
type RegistryOptions struct {
	// Prefix is the key prefix; DefaultPrefix if empty.
	Prefix string
	// TTL is the lease TTL; 10 s if zero. A dead instance disappears from
	// etcd at most this long after its last keep-alive.
	TTL time.Duration
	// Advertise is the host:port registered; if empty it is derived from
	// the server's listen address (this host's first non-loopback IPv4
	// address when the listen host is unspecified).
	Advertise string
	// Logger receives registration events; a no-op logger if nil.
	Logger *zap.Logger
}

// Registry is a Kitex registry.Registry backed by etcd. Register returns at
// once and keeps the registration alive in the background, so a server
// starts even while etcd is unreachable; Registered tells whether the
// registration currently exists.
type Registry struct {
	cli  *clientv3.Client
	opts RegistryOptions
	log  *zap.Logger

	mu     sync.Mutex
	key    string
	cancel context.CancelFunc
	done   chan struct{}
	lease  atomic.Int64

	registered   atomic.Bool
	deregistered bool // guarded by mu
}

var _ registry.Registry = (*Registry)(nil)

// NewRegistry returns a Registry that uses cli; the caller keeps owning cli.
func NewRegistry(cli *clientv3.Client, opts RegistryOptions) *Registry {
	if opts.Prefix == "" {
		opts.Prefix = DefaultPrefix
	}
	if opts.TTL <= 0 {
		opts.TTL = 10 * time.Second
	}
	log := opts.Logger
	if log == nil {
		log = zap.NewNop()
	}
	return &Registry{cli: cli, opts: opts, log: log}
}

// Registered reports whether the instance is registered in etcd right now.
func (r *Registry) Registered() bool { return r.registered.Load() }

// Key returns the etcd key of the registration, empty before Register.
func (r *Registry) Key() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.key
}

// Register starts keeping info registered. It fails only for invalid info
// or a second registration.
func (r *Registry) Register(info *registry.Info) error {
	if info == nil || info.ServiceName == "" || info.Addr == nil {
		return errors.New("discovery: register needs a service name and an address")
	}
	addr := r.opts.Advertise
	if addr == "" {
		var err error
		if addr, err = AdvertiseAddr(info.Addr.String()); err != nil {
			return err
		}
	}
	weight := info.Weight
	if weight <= 0 {
		weight = 10
	}
	val, err := json.Marshal(instance{Network: "tcp", Address: addr, Weight: weight, Tags: info.Tags})
	if err != nil {
		return fmt.Errorf("discovery: encode registration: %w", err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.deregistered {
		return nil // shutting down before Kitex's delayed Register: stay out
	}
	if r.cancel != nil {
		return errors.New("discovery: already registered")
	}
	r.key = Key(r.opts.Prefix, info.ServiceName, addr)
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel, r.done = cancel, make(chan struct{})
	go r.keep(ctx, r.key, string(val), r.done)
	return nil
}

// keep registers key and keeps its lease alive; when the lease is lost it
// registers again, with backoff, until ctx ends.
func (r *Registry) keep(ctx context.Context, key, val string, done chan struct{}) {
	defer close(done)
	// Retries (backoff plus one attempt's timeout) stay within one TTL, so
	// that a registration comes back within a TTL of etcd coming back.
	retry := newBackoff(200*time.Millisecond, min(5*time.Second, r.opts.TTL/2))
	failures := 0
	for ctx.Err() == nil {
		err := r.registerOnce(ctx, key, val)
		if err == nil {
			failures = 0
			retry.Reset()
			r.registered.Store(true)
			r.log.Info("registered in etcd", zap.String("key", key), zap.Duration("ttl", r.opts.TTL))
			err = r.keepAlive(ctx, key, val)
			r.registered.Store(false)
			if ctx.Err() != nil {
				return
			}
			r.log.Warn("etcd registration lost; registering again", zap.String("key", key), zap.Error(err))
			continue
		}
		failures++
		if failures == 1 || failures%10 == 0 {
			r.log.Warn("etcd registration failed; retrying", zap.String("key", key), zap.Int("attempt", failures), zap.Error(err))
		}
		select {
		case <-ctx.Done():
		case <-time.After(retry.NextBackOff()):
		}
	}
}

func (r *Registry) registerOnce(ctx context.Context, key, val string) error {
	ctx, cancel := context.WithTimeout(ctx, min(3*time.Second, max(r.opts.TTL/2, 500*time.Millisecond)))
	defer cancel()
	ttl := int64(r.opts.TTL / time.Second)
	if ttl < 1 {
		ttl = 1
	}
	lease, err := r.cli.Grant(ctx, ttl)
	if err != nil {
		return fmt.Errorf("grant lease: %w", err)
	}
	if _, err := r.cli.Put(ctx, key, val, clientv3.WithLease(lease.ID)); err != nil {
		rctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, _ = r.cli.Revoke(rctx, lease.ID) // or it lives on until its TTL
		return fmt.Errorf("put %s: %w", key, err)
	}
	r.lease.Store(int64(lease.ID))
	return nil
}

// keepAlive renews the current lease until it is lost or ctx ends, and
// writes the key again (on the same lease) whenever it is deleted while
// the lease lives: by an operator, or by anyone with write access to the
// prefix. Without that the instance would stay out of discovery, its
// lease alive and its /readyz ready, until it restarts.
func (r *Registry) keepAlive(ctx context.Context, key, val string) error {
	lease := clientv3.LeaseID(r.lease.Load())
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ch, err := r.cli.KeepAlive(ctx, lease)
	if err != nil {
		return err
	}
	watch := r.cli.Watch(clientv3.WithRequireLeader(ctx), key)
	for {
		select {
		case _, ok := <-ch:
			if !ok {
				return errors.New("lease keep-alive ended")
			}
		case w, ok := <-watch:
			if !ok {
				watch = nil // the watch ended with ctx; the keep-alive tells the rest
				continue
			}
			for _, ev := range w.Events {
				if ev.Type != clientv3.EventTypeDelete {
					continue
				}
				r.registered.Store(false)
				pctx, stop := context.WithTimeout(ctx, 3*time.Second)
				_, err := r.cli.Put(pctx, key, val, clientv3.WithLease(lease))
				stop()
				if err != nil {
					return fmt.Errorf("registration deleted, and writing it again failed: %w", err)
				}
				r.registered.Store(true)
				r.log.Warn("etcd registration deleted while serving; written again", zap.String("key", key))
			}
		}
	}
}

// Deregister deletes the registration and revokes its lease, once; later
// calls do nothing.
func (r *Registry) Deregister(*registry.Info) error {
	r.mu.Lock()
	cancel, done, key := r.cancel, r.done, r.key
	r.cancel, r.done, r.deregistered = func() {}, nil, true
	r.mu.Unlock()
	if done == nil {
		return nil
	}
	cancel()
	<-done
	ctx, stop := context.WithTimeout(context.Background(), 3*time.Second)
	defer stop()
	_, err := r.cli.Delete(ctx, key)
	if lease := clientv3.LeaseID(r.lease.Load()); lease != 0 {
		_, _ = r.cli.Revoke(ctx, lease)
	}
	if err != nil {
		return fmt.Errorf("discovery: delete %s: %w", key, err)
	}
	r.log.Info("deregistered from etcd", zap.String("key", key))
	return nil
}

// AdvertiseAddr turns a listen address into one that others can dial: an
// unspecified host becomes this host's first non-loopback IPv4 address.
func AdvertiseAddr(listen string) (string, error) {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return "", fmt.Errorf("discovery: listen address %q: %w", listen, err)
	}
	if ip := net.ParseIP(host); host != "" && (ip == nil || !ip.IsUnspecified()) {
		return listen, nil
	}
	ip, err := localIPv4()
	if err != nil {
		return "", err
	}
	return net.JoinHostPort(ip, port), nil
}

func localIPv4() (string, error) {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return "", fmt.Errorf("discovery: list interface addresses: %w", err)
	}
	for _, a := range addrs {
		if ipn, ok := a.(*net.IPNet); ok && !ipn.IP.IsLoopback() && ipn.IP.To4() != nil {
			return ipn.IP.String(), nil
		}
	}
	return "127.0.0.1", nil
}
