package discovery

import (
	"crypto/tls"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	grpcbackoff "google.golang.org/grpc/backoff"
)

// EtcdConfig says where etcd is and how to authenticate to it.
type EtcdConfig struct {
	// Endpoints are host:port or URLs.
	Endpoints []string
	// TLS, when set, secures the connection (and may hold a client
	// certificate).
	TLS *tls.Config
	// Username and Password are etcd's user/password authentication.
	Username, Password string
}

// NewEtcdClient returns an etcd client. It does not wait for etcd: a client
// made while etcd is down works once etcd is reachable.
func NewEtcdClient(cfg EtcdConfig, log *zap.Logger) (*clientv3.Client, error) {
	if log == nil {
		log = zap.NewNop()
	}
	endpoints := cfg.Endpoints
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:            endpoints,
		TLS:                  cfg.TLS,
		Username:             cfg.Username,
		Password:             cfg.Password,
		DialTimeout:          5 * time.Second,
		DialKeepAliveTime:    10 * time.Second,
		DialKeepAliveTimeout: 5 * time.Second,
		Logger:               log.Named("etcd").WithOptions(zap.IncreaseLevel(zap.WarnLevel)),
		// gRPC's default reconnection backoff grows to 2 minutes: after a
		// long etcd outage the client would come back long after etcd.
		// Redial at least every 2 s instead.
		DialOptions: []grpc.DialOption{grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           grpcbackoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 2 * time.Second},
			MinConnectTimeout: 5 * time.Second,
		})},
	})
	if err != nil {
		return nil, fmt.Errorf("etcd client for %v: %w", endpoints, err)
	}
	return cli, nil
}
