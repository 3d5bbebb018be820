package etcdreg

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"time"

	"github.com/cenkalti/backoff/v5"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
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
		Endpoints:   endpoints,
		TLS:         cfg.TLS,
		Username:    cfg.Username,
		Password:    cfg.Password,
		DialTimeout: 5 * time.Second,
		// gRPC's default receive cap is 2 GiB: whoever may write the
		// prefix could make one answer that large. Real answers are far
		// below this (MaxInstances entries of a few hundred bytes); a
		// larger one is read again in pages (Resolver.scan).
		MaxCallRecvMsgSize:   MaxRecvBytes,
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

// MaxRecvBytes bounds one answer from etcd.
const MaxRecvBytes = 16 << 20

// Connect returns an etcd client with these settings. Without a user name
// it returns at once: the client connects whenever etcd is reachable. With
// one, etcd must be reached to authenticate, so Connect retries with backoff
// (logging the first failure, then every 30 s) until it succeeds, ctx ends,
// or etcd refuses the credentials, which is returned at once.
func Connect(ctx context.Context, cfg EtcdConfig, log *zap.Logger) (*clientv3.Client, error) {
	if log == nil {
		log = zap.NewNop()
	}
	retry := newBackoff(200*time.Millisecond, 5*time.Second)
	var lastLog time.Time
	for {
		cli, err := NewEtcdClient(cfg, log)
		if err == nil {
			return cli, nil
		}
		if errors.Is(err, rpctypes.ErrAuthFailed) || errors.Is(err, rpctypes.ErrPermissionDenied) {
			return nil, fmt.Errorf("etcd refused user %q: %w", cfg.Username, err)
		}
		if time.Since(lastLog) > 30*time.Second {
			log.Warn("waiting for etcd to authenticate", zap.Strings("etcd", cfg.Endpoints), zap.Error(err))
			lastLog = time.Now()
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("etcd %v: %w", cfg.Endpoints, ctx.Err())
		case <-time.After(retry.NextBackOff()):
		}
	}
}

// jitter is the spread of a retry delay: ±20 % around the doubling value.
const jitter = 0.2

// newBackoff returns the exponential backoff of this package's retry
// loops: about min first, doubling, never above max.
func newBackoff(min, max time.Duration) *backoff.ExponentialBackOff {
	b := &backoff.ExponentialBackOff{InitialInterval: min, RandomizationFactor: jitter, Multiplier: 2,
		MaxInterval: time.Duration(float64(max) / (1 + jitter))}
	b.Reset()
	return b
}
