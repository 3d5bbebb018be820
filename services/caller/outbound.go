package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/cloudwego/kitex/client"
	"github.com/cloudwego/kitex/pkg/discovery"
	"github.com/cloudwego/kitex/pkg/loadbalance"
	"github.com/cloudwego/kitex/pkg/loadbalance/lbcache"
	"github.com/cloudwego/kitex/pkg/rpcinfo"

	"github.com/anyconn/kitex-anyconn/internal/app"
	"github.com/anyconn/kitex-anyconn/internal/config"
	"github.com/anyconn/kitex-anyconn/internal/etcdreg"
	"github.com/anyconn/kitex-anyconn/internal/tlsconf"
	"github.com/anyconn/kitex-anyconn/transport"
	"github.com/anyconn/kitex-anyconn/transport/websocket"
)

// outbounds says, per transport, how the caller finds and reaches echo
// instances: the one place in the caller where the transports differ.
// Every transport.Kinds() has an entry (a test checks it).
var outbounds = map[transport.Kind]func(config.Caller, *app.Runtime) (*outbound, error){
	transport.Netpoll:   etcdOutbound,
	transport.GoNet:     etcdOutbound,
	transport.WebSocket: etcdOutbound,
	transport.Yamux:     tunnelOutbound,
}

// outbound is how the caller finds and reaches echo instances.
type outbound struct {
	transport   transport.ClientConfig
	opts        []client.Option
	hasInstance func(context.Context) error // nil if at least one instance is known
	noInstance  string                      // why a call found no instance
	close       func()
}

// clientConfig is the client's transport configuration for cfg, TLS files
// loaded. The WebSocket settings are read by that transport only.
func clientConfig(cfg config.Caller) (transport.ClientConfig, error) {
	ccfg := transport.ClientConfig{Kind: cfg.Transport, MaxMessageBytes: cfg.MaxMessageBytes, Protocol: cfg.CallProtocol}
	ccfg.WebSocket = websocket.DialerConfig{
		Path:             cfg.WSPath,
		Header:           cfg.WSHeaders,
		Proxy:            websocket.ProxyFromEnvironment(),
		PingInterval:     cfg.WSPingInterval,
		PongTimeout:      cfg.WSPongTimeout,
		MaxConnectionAge: cfg.WSMaxConnectionAge,
	}
	if cfg.WSPingInterval == 0 {
		ccfg.WebSocket.PingInterval = -1 // WS_PING_INTERVAL=0: none
	}
	if cfg.TLSCAFile != "" { // config allows it with websocket only
		tc, err := tlsconf.Client(cfg.TLSCAFile, "", "", cfg.TLSServerName)
		if err != nil {
			return ccfg, fmt.Errorf("TLS_CA_FILE: %w", err)
		}
		ccfg.WebSocket.TLSConfig = tc
	}
	return ccfg, nil
}

// balancer is how often the client's load balancer re-reads the instances
// of a resolver that does not change by itself.
func balancer(cfg config.Caller) *lbcache.Options {
	return &lbcache.Options{RefreshInterval: cfg.DiscoveryRefresh, ExpireInterval: 10 * cfg.DiscoveryRefresh}
}

// wantedTags are the tags of the echo instances the caller can call: those
// registered with its transport (and WebSocket path and TLS).
func wantedTags(cfg config.Caller) map[string]string {
	return etcdreg.Tags(cfg.Transport, cfg.WSPath, cfg.TLSCAFile != "")
}

// etcdOutbound discovers echo instances of the caller's transport in etcd.
func etcdOutbound(cfg config.Caller, rt *app.Runtime) (*outbound, error) {
	ccfg, err := clientConfig(cfg)
	if err != nil {
		return nil, err
	}
	// An emptied etcd (restarted with its data wiped) does not stop the
	// calls: the instances known last stay in use while echo registers again
	// (echo notices its lost lease and registers again within about its
	// REGISTRY_TTL, which the caller reads too). Changes come by etcd's
	// watch; DISCOVERY_REFRESH is how often the instances are read in full.
	resolver := etcdreg.NewResolver(rt.Etcd, "", wantedTags(cfg)).WithLogger(rt.Log).
		KeepLast(etcdreg.KeepLastFor(cfg.RegistryTTL)).Watch(cfg.DiscoveryRefresh)
	lb := loadbalance.NewWeightedRoundRobinBalancer()
	noInstance := fmt.Sprintf("no %s instance with transport %s found in etcd", cfg.EchoService, cfg.Transport)
	return &outbound{
		transport: ccfg,
		opts: []client.Option{
			client.WithResolver(resolver),
			client.WithLoadBalancer(lb, resolver.Balance(cfg.EchoService, lb, 10*cfg.DiscoveryRefresh)),
		},
		hasInstance: func(ctx context.Context) error {
			res, err := resolver.Resolve(ctx, cfg.EchoService)
			if err != nil {
				return err
			}
			if len(res.Instances) == 0 {
				return errors.New(noInstance)
			}
			return nil
		},
		noInstance: noInstance,
		close:      resolver.Close,
	}, nil
}

// staticOutbound calls the instances of ECHO_ADDRESSES, without etcd (a
// caller outside the cluster, through an ingress or a load balancer).
func staticOutbound(cfg config.Caller, _ *app.Runtime) (*outbound, error) {
	ccfg, err := clientConfig(cfg)
	if err != nil {
		return nil, err
	}
	instances := make([]discovery.Instance, 0, len(cfg.EchoAddresses))
	for _, a := range cfg.EchoAddresses {
		instances = append(instances, discovery.NewInstance("tcp", a, discovery.DefaultWeight, nil))
	}
	resolver := discovery.SynthesizedResolver{
		TargetFunc: func(context.Context, rpcinfo.EndpointInfo) string { return "ECHO_ADDRESSES" },
		ResolveFunc: func(context.Context, string) (discovery.Result, error) {
			return discovery.Result{Cacheable: true, CacheKey: "ECHO_ADDRESSES", Instances: instances}, nil
		},
		NameFunc: func() string { return "static" },
	}
	return &outbound{
		transport: ccfg,
		opts: []client.Option{
			client.WithResolver(resolver),
			client.WithLoadBalancer(loadbalance.NewWeightedRoundRobinBalancer(), balancer(cfg)),
		},
		hasInstance: func(context.Context) error { return nil },
		noInstance:  "no instance in ECHO_ADDRESSES",
		close:       func() {},
	}, nil
}
