package charttest

import (
	"encoding/json"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
)

// tiltResult is the part of `tilt alpha tiltfile-result` the tests read.
type tiltResult struct {
	Manifests []struct {
		Name         string
		ImageTargets []struct {
			Selector string `json:"selector"`
		}
		DeployTarget *struct {
			YAML     string `json:"yaml"`
			Forwards struct {
				Forwards []struct {
					LocalPort int `json:"localPort"`
				} `json:"forwards"`
			} `json:"portForwardTemplateSpec"`
		}
		ResourceDependencies []string
		Labels               map[string]string
	}
	Error any
}

// tiltfile evaluates the project's Tiltfile with the pinned Tilt, without a
// cluster, and returns what Tilt would deploy.
func tiltfile(t *testing.T, args ...string) (tiltResult, error) {
	t.Helper()
	abs, err := filepath.Abs(filepath.Join(root, "Tiltfile"))
	if err != nil {
		t.Fatal(err)
	}
	out, err := run(t, "tilt", append([]string{"alpha", "tiltfile-result", "-f", abs, "--"}, args...)...)
	if err != nil {
		return tiltResult{}, err
	}
	var r tiltResult
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("tilt alpha tiltfile-result: %v\n%s", err, out)
	}
	return r, nil
}

func TestTiltfile(t *testing.T) {
	for _, tr := range []string{"", "websocket", "yamux"} {
		var args []string
		if tr != "" {
			args = []string{"--transport=" + tr}
		}
		r, err := tiltfile(t, args...)
		if err != nil {
			t.Fatal(err)
		}
		names := map[string]int{}
		for i, m := range r.Manifests {
			names[m.Name] = i
		}
		keys := make([]string, 0, len(names))
		for k := range names {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		want(t, "Tilt resources", keys, []string{"binaries", "caller", "config", "echo", "etcd", "smoke-test"})

		wantTransport := tr
		if wantTransport == "" {
			wantTransport = "netpoll"
		}
		for _, name := range []string{"echo", "caller", "etcd", "smoke-test"} {
			m := r.Manifests[names[name]]
			if m.DeployTarget == nil {
				t.Fatalf("%s deploys nothing", name)
			}
			if name != "etcd" && !strings.Contains(m.DeployTarget.YAML, "value: "+wantTransport) {
				t.Errorf("%s: the rendered chart does not carry TRANSPORT=%s", name, wantTransport)
			}
			if !slices.Contains(m.ResourceDependencies, map[string]string{"etcd": "config", "smoke-test": "caller"}[name]) &&
				name != "echo" && name != "caller" {
				t.Errorf("%s depends on %v", name, m.ResourceDependencies)
			}
			if len(m.Labels) == 0 {
				t.Errorf("%s has no label (resource group)", name)
			}
		}
		for name, image := range map[string]string{"echo": "kitex-anyconn/echo", "caller": "kitex-anyconn/caller", "etcd": "kitex-anyconn/etcd", "smoke-test": "kitex-anyconn/caller"} {
			m := r.Manifests[names[name]]
			if len(m.ImageTargets) != 1 || m.ImageTargets[0].Selector != image {
				t.Errorf("%s builds %+v, want %s", name, m.ImageTargets, image)
			}
		}
		for name, port := range map[string]int{"echo": 9090, "caller": 9091} {
			m := r.Manifests[names[name]]
			if len(m.DeployTarget.Forwards.Forwards) != 1 || m.DeployTarget.Forwards.Forwards[0].LocalPort != port {
				t.Errorf("%s port forwards %+v, want localhost:%d", name, m.DeployTarget.Forwards.Forwards, port)
			}
			if !slices.Contains(m.ResourceDependencies, "binaries") || !slices.Contains(m.ResourceDependencies, "etcd") {
				t.Errorf("%s depends on %v, want binaries and etcd", name, m.ResourceDependencies)
			}
		}
		cfgYAML := r.Manifests[names["config"]].DeployTarget.YAML
		if !strings.Contains(cfgYAML, "kind: ServiceAccount") {
			t.Error("the ServiceAccount is not in the config resource, which etcd, echo and caller wait for")
		}
		if !strings.Contains(cfgYAML, "kind: NetworkPolicy") {
			t.Error("the NetworkPolicies are not in the config resource")
		}
		if tr == "yamux" && !strings.Contains(cfgYAML, "kind: Secret") {
			t.Error("yamux: the tunnel token Secret is not in the config resource")
		}
	}

	if _, err := tiltfile(t, "--transport=quic"); err == nil || !strings.Contains(err.Error(), "allowed values are netpoll, gonet, websocket, yamux") {
		t.Fatalf("tilt with --transport=quic: %v, want the allowed values", err)
	}
}
