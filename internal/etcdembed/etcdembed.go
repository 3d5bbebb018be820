// Package etcdembed runs a single-member etcd server inside the process, for
// tests and for `make run`, on free loopback ports.
package etcdembed

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/url"
	"syscall"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
	"golang.org/x/crypto/bcrypt"
)

// Server is a running embedded etcd.
type Server struct {
	e        *embed.Etcd
	endpoint string
	dir      string
}

// TLS makes the embedded etcd serve clients over TLS.
type TLS struct {
	// CertFile and KeyFile are the server certificate and key.
	CertFile, KeyFile string
	// ClientCAFile, when set, makes etcd require client certificates
	// signed by it.
	ClientCAFile string
}

// Start starts etcd with its data in dir, listening for clients on
// clientAddr (a free loopback port if empty).
func Start(dir, clientAddr string) (*Server, error) {
	return StartTLS(dir, clientAddr, nil)
}

// StartTLS is Start with clients served over TLS when tlsFiles is set.
func StartTLS(dir, clientAddr string, tlsFiles *TLS) (*Server, error) {
	if clientAddr != "" {
		// The client address is the caller's; the peer port is found here
		// and may be taken meanwhile: try a few.
		var s *Server
		var err error
		for range 5 {
			if s, err = start(dir, clientAddr, tlsFiles); !errors.Is(err, syscall.EADDRINUSE) {
				break
			}
		}
		return s, err
	}
	// A port found free may be taken by someone else before etcd binds it:
	// try a few.
	var err error
	for attempt := 0; attempt < 5; attempt++ {
		var addr string
		if addr, err = freeAddr(); err != nil {
			return nil, err
		}
		var s *Server
		if s, err = start(dir, addr, tlsFiles); err == nil {
			return s, nil
		}
		if !errors.Is(err, syscall.EADDRINUSE) {
			return nil, err
		}
	}
	return nil, err
}

func start(dir, clientAddr string, tlsFiles *TLS) (*Server, error) {
	peerAddr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	cfg := embed.NewConfig()
	cfg.Dir = dir
	cfg.Name = "embedded"
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	// Passwords of users added to this etcd (tests, make run) need no real
	// bcrypt cost; the default makes every authentication slow under -race.
	cfg.BcryptCost = uint(bcrypt.MinCost)
	cu := url.URL{Scheme: "http", Host: clientAddr}
	endpoint := clientAddr
	if tlsFiles != nil {
		cu.Scheme = "https"
		endpoint = cu.String()
		cfg.ClientTLSInfo.CertFile, cfg.ClientTLSInfo.KeyFile = tlsFiles.CertFile, tlsFiles.KeyFile
		cfg.ClientTLSInfo.TrustedCAFile = tlsFiles.ClientCAFile
		cfg.ClientTLSInfo.ClientCertAuth = tlsFiles.ClientCAFile != ""
	}
	pu := url.URL{Scheme: "http", Host: peerAddr}
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{cu}, []url.URL{cu}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{pu}, []url.URL{pu}
	cfg.InitialCluster = cfg.Name + "=" + pu.String()
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, fmt.Errorf("start embedded etcd: %w", err)
	}
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		e.Close()
		return nil, fmt.Errorf("embedded etcd failed: %w", err)
	case <-time.After(30 * time.Second):
		e.Close()
		return nil, fmt.Errorf("embedded etcd not ready after 30s")
	}
	return &Server{e: e, endpoint: endpoint, dir: dir}, nil
}

// Endpoint returns the client address: host:port, or https://host:port
// with TLS.
func (s *Server) Endpoint() string { return s.endpoint }

// Dir returns the data directory.
func (s *Server) Dir() string { return s.dir }

// Close stops etcd.
func (s *Server) Close() { s.e.Close() }

func freeAddr() (string, error) { return FreeAddr() }

// FreeAddr returns a loopback address whose port is free now. The port is
// taken below Linux's ephemeral range (32768-60999), from which the kernel
// hands out the local ports of outgoing connections: a port from that range
// may be in use by the time it is bound (seen as a flaky "address already in
// use" while other tests ran), and again when a server comes back on it.
func FreeAddr() (string, error) {
	for range 100 {
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", 20000+rand.IntN(12000)))
		if err != nil {
			continue
		}
		addr := l.Addr().String()
		_ = l.Close()
		return addr, nil
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().String(), nil
}
