// Package secretinit creates a Kubernetes Secret holding a random token
// unless it exists already: the Helm chart's hook Job runs it (`caller
// init-secret`) so that the tunnel token is made once, in the cluster, and
// never changes with a render (`helm template`, Argo CD and Flux render
// without reading the cluster, so a token made at render time would change
// at every sync).
//
// It speaks to the API server from inside a pod, with the pod's service
// account, over the REST API: one POST, where 409 Conflict means the Secret
// is there and is kept as it is.
package secretinit

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// TokenBytes is the entropy of a generated token: 32 random bytes, written
// as 43 characters of unpadded base64url.
const TokenBytes = 32

// ServiceAccountDir is where Kubernetes mounts a pod's service account.
const ServiceAccountDir = "/var/run/secrets/kubernetes.io/serviceaccount"

// Cluster is how to reach the API server.
type Cluster struct {
	// URL is the API server's base URL, such as https://10.96.0.1:443.
	URL string
	// Token is the bearer token of the service account.
	Token string
	// Namespace is where the Secret goes.
	Namespace string
	// Client makes the requests; it must trust the API server.
	Client *http.Client
}

// InCluster returns the Cluster of the pod this runs in: the API server from
// KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT, the token, CA and
// namespace from the mounted service account.
func InCluster() (Cluster, error) {
	host, port := os.Getenv("KUBERNETES_SERVICE_HOST"), os.Getenv("KUBERNETES_SERVICE_PORT")
	if host == "" || port == "" {
		return Cluster{}, fmt.Errorf("not in a Kubernetes pod: KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are not set")
	}
	read := func(name string) ([]byte, error) {
		b, err := os.ReadFile(filepath.Join(ServiceAccountDir, name))
		if err != nil {
			return nil, fmt.Errorf("service account not mounted (automountServiceAccountToken): %w", err)
		}
		return b, nil
	}
	token, err := read("token")
	if err != nil {
		return Cluster{}, err
	}
	ns, err := read("namespace")
	if err != nil {
		return Cluster{}, err
	}
	ca, err := read("ca.crt")
	if err != nil {
		return Cluster{}, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca) {
		return Cluster{}, fmt.Errorf("%s/ca.crt holds no PEM certificate", ServiceAccountDir)
	}
	return Cluster{
		URL:       "https://" + net.JoinHostPort(host, port),
		Token:     strings.TrimSpace(string(token)),
		Namespace: strings.TrimSpace(string(ns)),
		Client: &http.Client{
			Timeout:   30 * time.Second,
			Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}},
		},
	}, nil
}

// Secret names the Secret to make.
type Secret struct {
	Name   string
	Key    string
	Labels map[string]string
}

// Ensure creates the Secret with a random token under its key unless a
// Secret of that name exists, which is kept untouched. It reports whether
// it created one.
func Ensure(ctx context.Context, c Cluster, s Secret) (created bool, err error) {
	if s.Name == "" || s.Key == "" {
		return false, fmt.Errorf("secretinit: a Secret name and key are required")
	}
	raw := make([]byte, TokenBytes)
	if _, err := rand.Read(raw); err != nil {
		return false, err
	}
	body, err := json.Marshal(map[string]any{
		"apiVersion": "v1",
		"kind":       "Secret",
		"type":       "Opaque",
		"metadata":   map[string]any{"name": s.Name, "namespace": c.Namespace, "labels": s.Labels},
		"stringData": map[string]string{s.Key: base64.RawURLEncoding.EncodeToString(raw)},
	})
	if err != nil {
		return false, err
	}
	url := fmt.Sprintf("%s/api/v1/namespaces/%s/secrets", strings.TrimRight(c.URL, "/"), c.Namespace)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return false, err
	}
	req.Header.Set("Authorization", "Bearer "+c.Token)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	resp, err := c.Client.Do(req)
	if err != nil {
		return false, fmt.Errorf("secretinit: create Secret %s/%s: %w", c.Namespace, s.Name, err)
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	switch resp.StatusCode {
	case http.StatusCreated:
		return true, nil
	case http.StatusConflict:
		return false, nil
	default:
		var status struct{ Message string }
		if json.Unmarshal(msg, &status) != nil || status.Message == "" {
			status.Message = strings.TrimSpace(string(msg))
		}
		return false, fmt.Errorf("secretinit: create Secret %s/%s: %s: %s", c.Namespace, s.Name, resp.Status, status.Message)
	}
}
