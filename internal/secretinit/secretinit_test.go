package secretinit

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// An API server that keeps Secrets by name, as Kubernetes answers a create:
// 201 for a new name, 409 for a taken one, 403 for a token it refuses. The
// real API server is exercised by the kind e2e (make e2e-kind).
func TestEnsureCreatesOnceAndKeeps(t *testing.T) {
	var mu sync.Mutex
	stored := map[string]map[string]string{}
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.URL.Path != "/api/v1/namespaces/ns1/secrets" {
			http.Error(w, "unexpected "+r.Method+" "+r.URL.Path, http.StatusNotFound)
			return
		}
		if r.Header.Get("Authorization") != "Bearer sa-token" {
			w.WriteHeader(http.StatusForbidden)
			_, _ = w.Write([]byte(`{"kind":"Status","message":"secrets is forbidden: User cannot create resource"}`))
			return
		}
		var s struct {
			Metadata   struct{ Name, Namespace string }
			StringData map[string]string
		}
		if err := json.NewDecoder(r.Body).Decode(&s); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		mu.Lock()
		defer mu.Unlock()
		if _, ok := stored[s.Metadata.Name]; ok {
			w.WriteHeader(http.StatusConflict)
			return
		}
		stored[s.Metadata.Name] = s.StringData
		w.WriteHeader(http.StatusCreated)
	}))
	defer srv.Close()
	c := Cluster{URL: srv.URL, Token: "sa-token", Namespace: "ns1", Client: srv.Client()}
	ctx := context.Background()
	sec := Secret{Name: "demo-tunnel-token", Key: "token"}

	created, err := Ensure(ctx, c, sec)
	if err != nil || !created {
		t.Fatalf("first run: created %v, %v", created, err)
	}
	first := stored["demo-tunnel-token"]["token"]
	if len(first) != 43 || strings.ContainsAny(first, "+/= \n") {
		t.Fatalf("token %q: want 43 characters of unpadded base64url (256 bits)", first)
	}
	created, err = Ensure(ctx, c, sec)
	if err != nil || created || stored["demo-tunnel-token"]["token"] != first {
		t.Fatalf("second run: created %v, %v; the Secret must be kept as it was", created, err)
	}
	c.Token = "wrong"
	if _, err := Ensure(ctx, c, sec); err == nil || !strings.Contains(err.Error(), "forbidden") || !strings.Contains(err.Error(), "403") {
		t.Fatalf("refused: %v, want the API server's status and message", err)
	}
	srv.Client().CloseIdleConnections()
}

func TestInClusterOutsideAPod(t *testing.T) {
	t.Setenv("KUBERNETES_SERVICE_HOST", "")
	if _, err := InCluster(); err == nil || !strings.Contains(err.Error(), "KUBERNETES_SERVICE_HOST") {
		t.Fatalf("outside a pod: %v", err)
	}
}
