package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// benchTLS holds the certificates of the -tls kinds, made at the bench's
// start (as internal/testutil makes them for the tests): a throwaway CA and
// a server certificate for 127.0.0.1 that it signed. The server side loads
// the PEM files; the client side trusts the CA, so every connection
// verifies the server's certificate as a production client does.
type benchTLS struct {
	certFile, keyFile, caFile string
	server                    tls.Certificate
	pool                      *x509.CertPool
}

// makeTLS makes the CA and the server certificate, valid for a day, and
// writes them as PEM files into dir.
func makeTLS(dir string) (*benchTLS, error) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "kitex-anyconn bench CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		NotBefore:   now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	t := &benchTLS{
		certFile: filepath.Join(dir, "server.crt"), keyFile: filepath.Join(dir, "server.key"), caFile: filepath.Join(dir, "ca.crt"),
		server: tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key},
		pool:   x509.NewCertPool(),
	}
	t.pool.AddCert(ca)
	for _, f := range []struct {
		file, typ string
		der       []byte
	}{{t.certFile, "CERTIFICATE", der}, {t.keyFile, "PRIVATE KEY", keyDER}, {t.caFile, "CERTIFICATE", caDER}} {
		if err := os.WriteFile(f.file, pem.EncodeToMemory(&pem.Block{Type: f.typ, Bytes: f.der}), 0o600); err != nil {
			return nil, err
		}
	}
	return t, nil
}

// serverConfig is the TLS configuration of a server in this process (the
// tunnel gateway of yamux-tls), as tlsconf.Server makes it from the files.
func (t *benchTLS) serverConfig() *tls.Config {
	return &tls.Config{Certificates: []tls.Certificate{t.server}, MinVersion: tls.VersionTLS12}
}

// clientConfig is the TLS configuration of a client in this process (the
// wss:// dialer of websocket-tls): it verifies the server against the CA.
func (t *benchTLS) clientConfig() *tls.Config {
	return &tls.Config{RootCAs: t.pool, MinVersion: tls.VersionTLS12}
}
