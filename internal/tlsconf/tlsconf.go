// Package tlsconf builds tls.Configs from PEM files named in the configuration.
package tlsconf

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
)

// Server returns a server config with the certificate in certFile and
// keyFile. With clientCAFile set, clients must present a certificate signed
// by one of its CAs (mutual TLS).
func Server(certFile, keyFile, clientCAFile string) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("load certificate %s and key %s: %w", certFile, keyFile, err)
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if err := RequireClientCerts(cfg, clientCAFile); err != nil {
		return nil, err
	}
	return cfg, nil
}

// RequireClientCerts makes cfg require client certificates signed by one of
// the CAs in caFile (mutual TLS); it leaves cfg as it is if caFile is empty.
func RequireClientCerts(cfg *tls.Config, caFile string) error {
	if caFile == "" {
		return nil
	}
	pool, err := loadPool(caFile)
	if err != nil {
		return err
	}
	cfg.ClientCAs, cfg.ClientAuth = pool, tls.RequireAndVerifyClientCert
	return nil
}

// Client returns a client config that trusts the CAs in caFile (the system
// roots if empty), expects serverName (the dialed host if empty), and
// presents the certificate in certFile and keyFile if they are set.
func Client(caFile, certFile, keyFile, serverName string) (*tls.Config, error) {
	cfg := &tls.Config{ServerName: serverName, MinVersion: tls.VersionTLS12}
	if caFile != "" {
		pool, err := loadPool(caFile)
		if err != nil {
			return nil, err
		}
		cfg.RootCAs = pool
	}
	if certFile != "" {
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, fmt.Errorf("load client certificate %s and key %s: %w", certFile, keyFile, err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

// loadPool returns a pool of the PEM certificates in file.
func loadPool(file string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("read CA file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("CA file %s holds no PEM certificate", file)
	}
	return pool, nil
}
