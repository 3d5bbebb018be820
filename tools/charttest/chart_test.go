// Package charttest checks charts/kitex-anyconn with the pinned helm: lint, the
// schema, and what the rendered manifests say for every transport and for an
// external etcd. Every rendered object is decoded strictly into its Kubernetes
// API type, so a misspelt or misplaced field fails here, not in a cluster.
//
// `make test-chart` builds the pinned tools into bin/ and points KITEX_ANYCONN_TOOLS
// at it. Run alone with `go test ./...` in tools/ after `make tools`.
package charttest

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"sigs.k8s.io/yaml"
)

const (
	release   = "demo"
	namespace = "prod"
)

var transports = []string{"netpoll", "gonet", "websocket", "yamux"}

// root is the repository root; tests run in tools/charttest.
var root = filepath.Join("..", "..")

func chartDir() string { return filepath.Join(root, "charts", "kitex-anyconn") }

// tool returns the path of a pinned tool built into bin/ by `make tools`.
func tool(t *testing.T, name string) string {
	t.Helper()
	dir := os.Getenv("KITEX_ANYCONN_TOOLS")
	if dir == "" {
		dir = filepath.Join(root, "bin")
	}
	p, err := filepath.Abs(filepath.Join(dir, name))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("%s is not built: run `make tools` (or `make test-chart`, which builds it): %v", name, err)
	}
	return p
}

func run(t *testing.T, name string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(tool(t, name), args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if err != nil {
		return out.String(), fmt.Errorf("%s %s: %w\n%s%s", name, strings.Join(args, " "), err, out.String(), errb.String())
	}
	return out.String(), nil
}

// rendered is one release's manifests, typed.
type rendered struct {
	deployments  map[string]*appsv1.Deployment
	statefulsets map[string]*appsv1.StatefulSet
	services     map[string]*corev1.Service
	secrets      map[string]*corev1.Secret
	pods         map[string]*corev1.Pod
	pdbs         map[string]*policyv1.PodDisruptionBudget
	netpols      map[string]*networkingv1.NetworkPolicy
	jobs         map[string]*batchv1.Job
	roles        map[string]*rbacv1.Role
	ingresses    map[string]*networkingv1.Ingress
	httpRoutes   map[string]*httpRoute
	hpas         map[string]*autoscalingv2.HorizontalPodAutoscaler
	others       map[string]map[string]any // kind/name
	kinds        []string                  // kind/name of every object, in order
}

// templateArgs makes each of sets a --set, or with a "string:" prefix a
// --set-string (an annotation such as "3600" must stay a string), with "json:"
// a --set-json (lists of objects), with "values:" a --values file.
func templateArgs(sets []string) []string {
	args := []string{"template", release, chartDir(), "--namespace", namespace}
	for _, s := range sets {
		if v, ok := strings.CutPrefix(s, "string:"); ok {
			args = append(args, "--set-string", v)
		} else if v, ok := strings.CutPrefix(s, "json:"); ok {
			args = append(args, "--set-json", v)
		} else if v, ok := strings.CutPrefix(s, "values:"); ok {
			args = append(args, "--values", v)
		} else {
			args = append(args, "--set", s)
		}
	}
	return args
}

func render(t *testing.T, sets ...string) *rendered {
	t.Helper()
	out, err := run(t, "helm", templateArgs(sets)...)
	if err != nil {
		t.Fatal(err)
	}
	r := &rendered{
		deployments: map[string]*appsv1.Deployment{}, statefulsets: map[string]*appsv1.StatefulSet{},
		services: map[string]*corev1.Service{}, secrets: map[string]*corev1.Secret{}, pods: map[string]*corev1.Pod{},
		pdbs: map[string]*policyv1.PodDisruptionBudget{}, netpols: map[string]*networkingv1.NetworkPolicy{},
		jobs: map[string]*batchv1.Job{}, roles: map[string]*rbacv1.Role{}, ingresses: map[string]*networkingv1.Ingress{},
		httpRoutes: map[string]*httpRoute{}, hpas: map[string]*autoscalingv2.HorizontalPodAutoscaler{},
		others: map[string]map[string]any{},
	}
	for _, doc := range regexp.MustCompile(`(?m)^---\s*$`).Split(out, -1) {
		if strings.TrimSpace(stripComments(doc)) == "" {
			continue
		}
		var head struct {
			Kind     string `json:"kind"`
			Metadata struct {
				Name      string `json:"name"`
				Namespace string `json:"namespace"`
			} `json:"metadata"`
		}
		if err := yaml.Unmarshal([]byte(doc), &head); err != nil {
			t.Fatalf("rendered YAML does not parse: %v\n%s", err, doc)
		}
		key := head.Kind + "/" + head.Metadata.Name
		r.kinds = append(r.kinds, key)
		if head.Metadata.Namespace != namespace && head.Kind != "" {
			t.Errorf("%s: namespace %q, want the release namespace %q", key, head.Metadata.Namespace, namespace)
		}
		name := head.Metadata.Name
		switch head.Kind {
		case "Deployment":
			decodeInto(t, doc, key, name, r.deployments)
		case "StatefulSet":
			decodeInto(t, doc, key, name, r.statefulsets)
		case "Service":
			decodeInto(t, doc, key, name, r.services)
		case "Secret":
			decodeInto(t, doc, key, name, r.secrets)
		case "Pod":
			decodeInto(t, doc, key, name, r.pods)
		case "PodDisruptionBudget":
			decodeInto(t, doc, key, name, r.pdbs)
		case "NetworkPolicy":
			decodeInto(t, doc, key, name, r.netpols)
		case "ServiceAccount":
			decodeInto(t, doc, key, name, map[string]*corev1.ServiceAccount{})
		case "Job":
			decodeInto(t, doc, key, name, r.jobs)
		case "Role":
			decodeInto(t, doc, key, name, r.roles)
		case "RoleBinding":
			decodeInto(t, doc, key, name, map[string]*rbacv1.RoleBinding{})
		case "Ingress":
			decodeInto(t, doc, key, name, r.ingresses)
		case "HTTPRoute":
			decodeInto(t, doc, key, name, r.httpRoutes)
		case "HorizontalPodAutoscaler":
			decodeInto(t, doc, key, name, r.hpas)
		default:
			m := map[string]any{}
			if err := yaml.Unmarshal([]byte(doc), &m); err != nil {
				t.Fatal(err)
			}
			r.others[key] = m
		}
	}
	return r
}

// decodeInto decodes doc strictly (unknown fields fail) into a new T stored
// under name.
func decodeInto[T any](t *testing.T, doc, key, name string, into map[string]*T) {
	t.Helper()
	o := new(T)
	if err := yaml.UnmarshalStrict([]byte(doc), o); err != nil {
		t.Fatalf("%s is not a valid %T: %v\n%s", key, o, err, doc)
	}
	into[name] = o
}

func stripComments(doc string) string {
	var b strings.Builder
	for _, l := range strings.Split(doc, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(l), "#") {
			b.WriteString(l + "\n")
		}
	}
	return b.String()
}

func (r *rendered) deployment(t *testing.T, name string) *appsv1.Deployment {
	t.Helper()
	d, ok := r.deployments[name]
	if !ok {
		t.Fatalf("no Deployment %s; rendered %v", name, r.kinds)
	}
	return d
}

// env returns a container's environment as a map; values from the downward
// API read "fieldRef:<path>".
func env(c corev1.Container) map[string]string {
	m := map[string]string{}
	for _, e := range c.Env {
		switch {
		case e.ValueFrom != nil && e.ValueFrom.FieldRef != nil:
			m[e.Name] = "fieldRef:" + e.ValueFrom.FieldRef.FieldPath
		default:
			m[e.Name] = e.Value
		}
	}
	return m
}

func portNames(c corev1.Container) []string {
	var names []string
	for _, p := range c.Ports {
		names = append(names, fmt.Sprintf("%s=%d", p.Name, p.ContainerPort))
	}
	return names
}

func want(t *testing.T, what string, got, wantV any) {
	t.Helper()
	if fmt.Sprint(got) != fmt.Sprint(wantV) {
		t.Errorf("%s = %v, want %v", what, got, wantV)
	}
}

// TestLintStrict is `make chart-lint`: helm lint --strict for every transport of
// transport.Kinds, and for the other shapes of values.
func TestLintStrict(t *testing.T) {
	cases := [][]string{{"networkPolicy.enabled=true", "serviceMonitor.enabled=true"}}
	for _, tr := range goKinds(t) {
		cases = append(cases, []string{"transport=" + tr})
	}
	cases = append(cases, externalEtcdSets, tlsSets, ingressSets, httpRouteSets, callerOnlySets, tunnelGatewaySets, tunnelEdgeSets,
		autoscalingSets, conventionSets)
	for _, sets := range cases {
		args := append([]string{"lint", "--strict", chartDir()}, templateArgs(sets)[5:]...)
		out, err := run(t, "helm", args...)
		if err != nil {
			t.Fatalf("helm lint --strict with %v: %v", sets, err)
		}
		if !strings.Contains(out, "0 chart(s) failed") {
			t.Fatalf("helm lint output: %s", out)
		}
	}
}

func TestEveryTransport(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			r := render(t, "transport="+tr, "networkPolicy.enabled=true")
			echo := r.deployment(t, "demo-echo")
			caller := r.deployment(t, "demo-caller")
			ec, cc := echo.Spec.Template.Spec.Containers[0], caller.Spec.Template.Spec.Containers[0]
			ee, ce := env(ec), env(cc)

			for _, e := range []map[string]string{ee, ce} {
				want(t, "TRANSPORT", e["TRANSPORT"], tr)
				want(t, "ETCD_ENDPOINTS", e["ETCD_ENDPOINTS"], "demo-etcd-0.demo-etcd-headless.prod.svc:2379")
				want(t, "LOG_FORMAT", e["LOG_FORMAT"], "json")
				want(t, "MAX_MESSAGE_BYTES", e["MAX_MESSAGE_BYTES"], "4194304")
				want(t, "HANDSHAKE_TIMEOUT", e["HANDSHAKE_TIMEOUT"], "10s")
				want(t, "MAX_HANDSHAKES", e["MAX_HANDSHAKES"], "1024")
				want(t, "MAX_HANDSHAKES_PER_SOURCE", e["MAX_HANDSHAKES_PER_SOURCE"], "32")
				want(t, "REGISTRY_TTL (echo's, on both)", e["REGISTRY_TTL"], "10s")
			}
			want(t, "echo READ_TIMEOUT", ee["READ_TIMEOUT"], "30s")
			want(t, "echo IDLE_TIMEOUT", ee["IDLE_TIMEOUT"], "10m")
			if tr == "yamux" {
				want(t, "echo TUNNEL_MAX_STREAMS", ee["TUNNEL_MAX_STREAMS"], "1024")
				want(t, "echo TUNNEL_SESSIONS", ee["TUNNEL_SESSIONS"], "4")
			} else if _, ok := ee["TUNNEL_MAX_STREAMS"]; ok {
				t.Errorf("TUNNEL_MAX_STREAMS set with transport %s", tr)
			}
			want(t, "echo SERVICE_NAME", ee["SERVICE_NAME"], "demo-echo")
			want(t, "caller ECHO_SERVICE", ce["ECHO_SERVICE"], "demo-echo")
			want(t, "echo ADMIN_ADDR", ee["ADMIN_ADDR"], ":9090")
			want(t, "caller ADMIN_ADDR", ce["ADMIN_ADDR"], ":9091")
			want(t, "echo DRAIN_DELAY", ee["DRAIN_DELAY"], "5s")
			want(t, "echo image", ec.Image, "kitex-anyconn/echo:0.1.0")
			want(t, "caller image", cc.Image, "kitex-anyconn/caller:0.1.0")

			echoSvc := r.services["demo-echo"]
			if echoSvc == nil {
				t.Fatalf("no echo Service; rendered %v", r.kinds)
			}
			var svcPorts []string
			for _, p := range echoSvc.Spec.Ports {
				svcPorts = append(svcPorts, fmt.Sprintf("%s=%d", p.Name, p.Port))
			}
			echoIngress := r.netpols["demo-echo"].Spec.Ingress
			if tr == "yamux" {
				// echo accepts no RPC connection: no port, no Service port, no ingress rule.
				want(t, "echo container ports", portNames(ec), []string{"admin=9090"})
				want(t, "echo Service ports", svcPorts, []string{"admin=9090"})
				want(t, "caller container ports", portNames(cc), []string{"admin=9091", "tunnel=7000"})
				want(t, "echo TUNNEL_AGENT_ID", ee["TUNNEL_AGENT_ID"], "$(POD_NAME)")
				want(t, "caller TUNNEL_ADVERTISE_ADDR", ce["TUNNEL_ADVERTISE_ADDR"], "$(POD_IP):7000")
				want(t, "TUNNEL_TOKEN_FILE", ee["TUNNEL_TOKEN_FILE"], "/etc/kitex-anyconn/tunnel-token/token")
				want(t, "caller TUNNEL_TOKEN_FILE", ce["TUNNEL_TOKEN_FILE"], ee["TUNNEL_TOKEN_FILE"])
				if _, ok := ee["LISTEN_ADDR"]; ok {
					t.Error("yamux echo must not set LISTEN_ADDR")
				}
				// TLS by default, with the gateway's own certificate: no
				// Secret to mount, and echo verifies nothing but the
				// channel-bound handshake.
				want(t, "echo TUNNEL_TLS", ee["TUNNEL_TLS"], "on")
				want(t, "caller TUNNEL_TLS", ce["TUNNEL_TLS"], "on")
				for _, v := range []string{"TUNNEL_TLS_CA_FILE", "TUNNEL_TLS_CERT_FILE"} {
					if ee[v] != "" || ce[v] != "" {
						t.Errorf("%s set by default", v)
					}
				}
				tokenInitJob(t, r)
				mountsToken(t, echo.Spec.Template.Spec, "demo-tunnel-token")
				mountsToken(t, caller.Spec.Template.Spec, "demo-tunnel-token")
				want(t, "echo ingress rules (admin only)", len(echoIngress), 1)
				egressTo(t, r.netpols["demo-echo"], 7000)
			} else {
				want(t, "echo container ports", portNames(ec), []string{"rpc=8888", "admin=9090"})
				want(t, "echo Service ports", svcPorts, []string{"rpc=8888", "admin=9090"})
				want(t, "caller container ports", portNames(cc), []string{"admin=9091"})
				want(t, "echo LISTEN_ADDR", ee["LISTEN_ADDR"], ":8888")
				want(t, "echo ADVERTISE_ADDR", ee["ADVERTISE_ADDR"], "$(POD_IP):8888")
				if len(r.secrets) != 0 || len(r.jobs) != 0 {
					t.Errorf("secrets or jobs rendered without yamux: %v", r.kinds)
				}
				want(t, "echo ingress rules (admin, rpc)", len(echoIngress), 2)
				want(t, "echo rpc ingress port", echoIngress[1].Ports[0].Port.IntValue(), 8888)
				egressTo(t, r.netpols["demo-caller"], 8888)
			}
			if tr == "websocket" {
				want(t, "echo WS_PATH", ee["WS_PATH"], "/kitex")
				want(t, "caller WS_PATH", ce["WS_PATH"], "/kitex")
				want(t, "rpc appProtocol", *echoSvc.Spec.Ports[0].AppProtocol, "kubernetes.io/ws")
			}
			for _, name := range []string{"POD_IP", "POD_NAME"} {
				want(t, "echo "+name+" comes first", ee[name] != "" && ec.Env[0].Name == "POD_NAME" && ec.Env[1].Name == "POD_IP", true)
			}

			test := r.pods["demo-test-calls"]
			if test == nil {
				t.Fatalf("no helm test pod; rendered %v", r.kinds)
			}
			want(t, "test hook", test.Annotations["helm.sh/hook"], "test")
			want(t, "test restartPolicy", test.Spec.RestartPolicy, corev1.RestartPolicyNever)
			te := env(test.Spec.Containers[0])
			want(t, "test CALL_COUNT", te["CALL_COUNT"], "5")
			want(t, "test TRANSPORT", te["TRANSPORT"], tr)
			want(t, "test image", test.Spec.Containers[0].Image, cc.Image)
		})
	}
}

// tokenInitJob checks the hook Job that makes the tunnel token in the
// cluster: no Secret in the render, a Job on install and upgrade running
// `caller init-secret` for demo-tunnel-token, whose Role may only create
// Secrets.
func tokenInitJob(t *testing.T, r *rendered) {
	t.Helper()
	if len(r.secrets) != 0 {
		t.Errorf("a Secret is rendered: the token would change with every render: %v", r.kinds)
	}
	job := r.jobs["demo-token-init"]
	if job == nil {
		t.Fatalf("no token-init Job: %v", r.kinds)
	}
	want(t, "token-init hook", job.Annotations["helm.sh/hook"], "pre-install,pre-upgrade")
	c := job.Spec.Template.Spec.Containers[0]
	want(t, "token-init args", c.Args, []string{"init-secret"})
	want(t, "token-init image", c.Image, "kitex-anyconn/caller:0.1.0")
	want(t, "token-init SECRET_NAME", env(c)["SECRET_NAME"], "demo-tunnel-token")
	want(t, "token-init SECRET_KEY", env(c)["SECRET_KEY"], "token")
	want(t, "token-init service account", job.Spec.Template.Spec.ServiceAccountName, "demo-token-init")
	role := r.roles["demo-token-init"]
	if role == nil || len(role.Rules) != 1 || !slices.Equal(role.Rules[0].Verbs, []string{"create"}) ||
		!slices.Equal(role.Rules[0].Resources, []string{"secrets"}) {
		t.Errorf("token-init Role %+v, want create on secrets only", role)
	}
}

// The render is stable: Argo CD and Flux render the chart on every sync
// without reading the cluster, and a token drawn at render time would
// change (and cut every tunnel session) each time.
func TestRenderIsStable(t *testing.T) {
	args := templateArgs([]string{"transport=yamux"})
	first, err := run(t, "helm", args...)
	if err != nil {
		t.Fatal(err)
	}
	second, err := run(t, "helm", args...)
	if err != nil {
		t.Fatal(err)
	}
	if first != second {
		t.Fatal("two renders of the same values differ")
	}
}

// Every pod mounts only the Secret keys it needs, readable by its group
// only: echo never gets the gateway's key, the caller never gets echo's
// WebSocket key, and under mutual TLS echo has its own key pair.
func TestPodsMountOnlyWhatTheyNeed(t *testing.T) {
	type keys = map[string][]string // secret -> keys
	mounted := func(spec corev1.PodSpec, vol string) keys {
		t.Helper()
		got := keys{}
		add := func(secret string, items []corev1.KeyToPath) {
			if len(items) == 0 {
				t.Errorf("volume %s mounts every key of %s; want items", vol, secret)
			}
			for _, it := range items {
				got[secret] = append(got[secret], it.Key)
			}
		}
		for _, v := range spec.Volumes {
			if v.Name != vol {
				continue
			}
			switch {
			case v.Secret != nil:
				if v.Secret.DefaultMode == nil || *v.Secret.DefaultMode != 0o440 {
					t.Errorf("volume %s: defaultMode %v, want 0440", vol, v.Secret.DefaultMode)
				}
				add(v.Secret.SecretName, v.Secret.Items)
			case v.Projected != nil:
				if v.Projected.DefaultMode == nil || *v.Projected.DefaultMode != 0o440 {
					t.Errorf("volume %s: defaultMode %v, want 0440", vol, v.Projected.DefaultMode)
				}
				for _, src := range v.Projected.Sources {
					add(src.Secret.Name, src.Secret.Items)
				}
			}
		}
		return got
	}
	r := render(t, tlsSets...)
	echo, caller := r.deployment(t, "demo-echo").Spec.Template.Spec, r.deployment(t, "demo-caller").Spec.Template.Spec
	want(t, "echo tunnel-tls", mounted(echo, "tunnel-tls"), keys{"gw-tls": {"ca.crt"}, "agent-tls": {"tls.crt", "tls.key"}})
	want(t, "caller tunnel-tls", mounted(caller, "tunnel-tls"), keys{"gw-tls": {"tls.crt", "tls.key", "ca.crt"}})
	want(t, "echo tunnel-token", mounted(echo, "tunnel-token"), keys{"shared-token": {"token"}})
	want(t, "caller agent-tokens", mounted(caller, "agent-tokens"), keys{"per-agent": {"tokens"}})
	want(t, "echo agent-tokens", mounted(echo, "agent-tokens"), keys{})

	r = render(t, "transport=websocket", "websocket.tls.enabled=true", "websocket.tls.existingSecret=echo-tls")
	echo, caller = r.deployment(t, "demo-echo").Spec.Template.Spec, r.deployment(t, "demo-caller").Spec.Template.Spec
	want(t, "echo ws-tls", mounted(echo, "ws-tls"), keys{"echo-tls": {"tls.crt", "tls.key"}})
	want(t, "caller ws-tls", mounted(caller, "ws-tls"), keys{"echo-tls": {"ca.crt"}})

	r = render(t, externalEtcdSets...)
	want(t, "etcd-tls", mounted(r.deployment(t, "demo-echo").Spec.Template.Spec, "etcd-tls"), keys{"etcd-client": {"ca.crt", "tls.crt", "tls.key"}})
}

func mountsToken(t *testing.T, spec corev1.PodSpec, secret string) {
	t.Helper()
	for _, v := range spec.Volumes {
		if v.Secret != nil && v.Secret.SecretName == secret {
			for _, m := range spec.Containers[0].VolumeMounts {
				if m.Name == v.Name && m.ReadOnly && m.MountPath == "/etc/kitex-anyconn/tunnel-token" {
					return
				}
			}
		}
	}
	t.Errorf("secret %s is not mounted read-only at /etc/kitex-anyconn/tunnel-token: %+v", secret, spec.Volumes)
}

func egressTo(t *testing.T, np *networkingv1.NetworkPolicy, port int) {
	t.Helper()
	for _, e := range np.Spec.Egress {
		for _, p := range e.Ports {
			if p.Port.IntValue() == port && len(e.To) == 1 && e.To[0].PodSelector != nil {
				return
			}
		}
	}
	t.Errorf("NetworkPolicy %s allows no egress to pods on port %d: %+v", np.Name, port, np.Spec.Egress)
}

// TestSecureWorkloads checks every pod the chart makes: non-root, read-only root,
// no privilege escalation, no capabilities, RuntimeDefault seccomp, no API token,
// probes on the admin port, and a grace period that covers echo's drain.
func TestSecureWorkloads(t *testing.T) {
	for _, tr := range transports {
		r := render(t, "transport="+tr)
		specs := podSpecs(r)
		want(t, "workloads", len(specs), map[bool]int{false: 4, true: 5}[tr == "yamux"])
		for name, spec := range specs {
			psc := spec.SecurityContext
			if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot || psc.SeccompProfile == nil ||
				psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
				t.Errorf("%s: pod security context %+v", name, psc)
			}
			// Only the token-init Job talks to the API server (to create
			// the token Secret, with its own ServiceAccount).
			if name == "Job/demo-token-init" {
				want(t, name+" service account", spec.ServiceAccountName, "demo-token-init")
			} else if spec.AutomountServiceAccountToken == nil || *spec.AutomountServiceAccountToken {
				t.Errorf("%s mounts a service account token", name)
			}
			for _, c := range spec.Containers {
				sc := c.SecurityContext
				if sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
					sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
					sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) {
					t.Errorf("%s/%s: container security context %+v", name, c.Name, sc)
				}
				if c.Resources.Requests.Memory().IsZero() || c.Resources.Limits.Memory().IsZero() {
					t.Errorf("%s/%s: no memory request or limit", name, c.Name)
				}
				if strings.HasPrefix(name, "Deployment/") {
					if c.LivenessProbe == nil || c.LivenessProbe.HTTPGet.Path != "/healthz" || c.LivenessProbe.HTTPGet.Port.String() != "admin" ||
						c.ReadinessProbe == nil || c.ReadinessProbe.HTTPGet.Path != "/readyz" || c.ReadinessProbe.HTTPGet.Port.String() != "admin" {
						t.Errorf("%s: probes %+v %+v", name, c.LivenessProbe, c.ReadinessProbe)
					}
				}
			}
		}
		grace := *r.deployment(t, "demo-echo").Spec.Template.Spec.TerminationGracePeriodSeconds
		want(t, "echo grace period (5s drain + 5s shutdown + 5)", grace, 15)
	}
	r := render(t, "echo.drainDelaySeconds=20", "echo.shutdownTimeoutSeconds=10")
	want(t, "echo grace period follows the drain", *r.deployment(t, "demo-echo").Spec.Template.Spec.TerminationGracePeriodSeconds, 35)
	want(t, "DRAIN_DELAY", env(r.deployment(t, "demo-echo").Spec.Template.Spec.Containers[0])["DRAIN_DELAY"], "20s")
}

var externalEtcdSets = []string{
	"etcd.enabled=false",
	"externalEtcd.endpoints={https://etcd-0.db:2379,https://etcd-1.db:2379}",
	"externalEtcd.tls.enabled=true", "externalEtcd.tls.existingSecret=etcd-client",
	"externalEtcd.tls.clientCert=true", "externalEtcd.tls.serverName=etcd.db",
	"externalEtcd.auth.username=kitex", "externalEtcd.auth.existingSecret=etcd-password",
}

func TestExternalEtcd(t *testing.T) {
	r := render(t, externalEtcdSets...)
	if len(r.statefulsets) != 0 {
		t.Fatalf("etcd StatefulSet rendered with etcd.enabled=false: %v", r.kinds)
	}
	for _, k := range r.kinds {
		if strings.Contains(k, "etcd") {
			t.Errorf("%s rendered with etcd.enabled=false", k)
		}
	}
	for _, name := range []string{"demo-echo", "demo-caller"} {
		spec := r.deployment(t, name).Spec.Template.Spec
		e := env(spec.Containers[0])
		want(t, name+" ETCD_ENDPOINTS", e["ETCD_ENDPOINTS"], "https://etcd-0.db:2379,https://etcd-1.db:2379")
		want(t, name+" ETCD_CA_FILE", e["ETCD_CA_FILE"], "/etc/kitex-anyconn/etcd-tls/ca.crt")
		want(t, name+" ETCD_CERT_FILE", e["ETCD_CERT_FILE"], "/etc/kitex-anyconn/etcd-tls/tls.crt")
		want(t, name+" ETCD_KEY_FILE", e["ETCD_KEY_FILE"], "/etc/kitex-anyconn/etcd-tls/tls.key")
		want(t, name+" ETCD_SERVER_NAME", e["ETCD_SERVER_NAME"], "etcd.db")
		want(t, name+" ETCD_USERNAME", e["ETCD_USERNAME"], "kitex")
		want(t, name+" ETCD_PASSWORD_FILE", e["ETCD_PASSWORD_FILE"], "/etc/kitex-anyconn/etcd-auth/password")
		secrets := map[string]string{}
		for _, v := range spec.Volumes {
			if v.Secret != nil {
				secrets[v.Name] = v.Secret.SecretName
			}
		}
		want(t, name+" secret volumes", secrets, map[string]string{"etcd-tls": "etcd-client", "etcd-auth": "etcd-password"})
	}
}

var tlsSets = []string{
	"transport=yamux", "tunnel.tls.enabled=true", "tunnel.tls.existingSecret=gw-tls",
	"tunnel.tls.mutual=true", "tunnel.tls.clientSecret=agent-tls", "tunnel.token.existingSecret=shared-token",
	"tunnel.agentTokens.existingSecret=per-agent",
}

func TestTLSAndExistingSecrets(t *testing.T) {
	r := render(t, tlsSets...)
	if len(r.secrets) != 0 || len(r.jobs) != 0 {
		t.Errorf("a token secret or its Job was rendered although tunnel.token.existingSecret is set: %v", r.kinds)
	}
	echo := r.deployment(t, "demo-echo").Spec.Template.Spec
	caller := r.deployment(t, "demo-caller").Spec.Template.Spec
	ee, ce := env(echo.Containers[0]), env(caller.Containers[0])
	want(t, "echo verifies the gateway", ee["TUNNEL_TLS_CA_FILE"], "/etc/kitex-anyconn/tunnel-tls/ca.crt")
	want(t, "echo expects the gateway name", ee["TUNNEL_TLS_SERVER_NAME"], "demo-caller")
	want(t, "echo client certificate", ee["TUNNEL_TLS_CERT_FILE"], "/etc/kitex-anyconn/tunnel-tls/tls.crt")
	want(t, "gateway certificate", ce["TUNNEL_TLS_CERT_FILE"], "/etc/kitex-anyconn/tunnel-tls/tls.crt")
	want(t, "gateway requires client certificates", ce["TUNNEL_TLS_CA_FILE"], "/etc/kitex-anyconn/tunnel-tls/ca.crt")
	want(t, "gateway per-agent tokens", ce["TUNNEL_AGENT_TOKENS_FILE"], "/etc/kitex-anyconn/agent-tokens/tokens")
	want(t, "echo identity under mutual TLS (*.demo-echo)", ee["TUNNEL_AGENT_ID"], "$(POD_NAME).demo-echo")
	if _, ok := ee["TUNNEL_AGENT_TOKENS_FILE"]; ok {
		t.Error("echo reads the per-agent tokens")
	}

	r = render(t, "transport=websocket", "websocket.tls.enabled=true", "websocket.tls.existingSecret=echo-tls",
		"websocket.allowedOrigins={https://a.example,https://b.example}")
	ee = env(r.deployment(t, "demo-echo").Spec.Template.Spec.Containers[0])
	ce = env(r.deployment(t, "demo-caller").Spec.Template.Spec.Containers[0])
	want(t, "echo TLS_CERT_FILE", ee["TLS_CERT_FILE"], "/etc/kitex-anyconn/ws-tls/tls.crt")
	want(t, "echo WS_ALLOWED_ORIGINS", ee["WS_ALLOWED_ORIGINS"], "https://a.example,https://b.example")
	want(t, "caller TLS_CA_FILE", ce["TLS_CA_FILE"], "/etc/kitex-anyconn/ws-tls/ca.crt")
	want(t, "caller TLS_SERVER_NAME", ce["TLS_SERVER_NAME"], "demo-echo")
	want(t, "wss appProtocol", *r.services["demo-echo"].Spec.Ports[0].AppProtocol, "kubernetes.io/wss")
}

func TestOptionsAndOverrides(t *testing.T) {
	r := render(t, "image.registry=ghcr.io/acme", "image.tag=1.2.3", "echo.image.digest=sha256:"+strings.Repeat("a", 64),
		"imagePullSecrets[0].name=regcred", "echo.replicas=3", "caller.extraEnv[0].name=CALL_MESSAGE",
		"caller.extraEnv[0].value=hi", "serviceMonitor.enabled=true", "serviceMonitor.labels.release=prom",
		"etcd.persistence.enabled=false", "fullnameOverride=kx", "echo.pdb.minAvailable=2")
	echo := r.deployment(t, "kx-echo")
	want(t, "digest wins", echo.Spec.Template.Spec.Containers[0].Image, "ghcr.io/acme/kitex-anyconn/echo@sha256:"+strings.Repeat("a", 64))
	want(t, "registry and tag", r.deployment(t, "kx-caller").Spec.Template.Spec.Containers[0].Image, "ghcr.io/acme/kitex-anyconn/caller:1.2.3")
	want(t, "pull secret", echo.Spec.Template.Spec.ImagePullSecrets[0].Name, "regcred")
	want(t, "replicas", *echo.Spec.Replicas, 3)
	want(t, "rolling update never drops below replicas", echo.Spec.Strategy.RollingUpdate.MaxUnavailable.IntValue(), 0)
	callerEnv := r.deployment(t, "kx-caller").Spec.Template.Spec.Containers[0].Env
	want(t, "extraEnv comes last (and wins)", callerEnv[len(callerEnv)-1].Name+"="+callerEnv[len(callerEnv)-1].Value, "CALL_MESSAGE=hi")
	want(t, "PDB minAvailable", r.pdbs["kx-echo"].Spec.MinAvailable.IntValue(), 2)
	if r.pdbs["kx-echo"].Spec.MaxUnavailable != nil {
		t.Error("PDB sets both minAvailable and maxUnavailable")
	}
	sts := r.statefulsets["kx-etcd"]
	if sts == nil || len(sts.Spec.VolumeClaimTemplates) != 0 || sts.Spec.Template.Spec.Volumes[0].EmptyDir == nil {
		t.Errorf("etcd without persistence must use an emptyDir: %+v", sts)
	}
	for _, c := range []string{"echo", "caller", "etcd"} {
		sm, ok := r.others["ServiceMonitor/kx-"+c]
		if !ok {
			t.Fatalf("no ServiceMonitor for %s: %v", c, r.kinds)
		}
		labels := sm["metadata"].(map[string]any)["labels"].(map[string]any)
		want(t, c+" ServiceMonitor release label", labels["release"], "prom")
	}

	r = render(t, "transport=yamux", "limits.maxMessageBytes=16777216", "limits.maxHandshakes=8", "limits.maxHandshakesPerSource=4",
		"limits.readTimeout=5s", "limits.idleTimeout=1h", "limits.tunnelMaxStreams=64", "limits.handshakeTimeout=3s",
		"limits.writeTimeout=2m", "limits.maxConnections=250000", "caller.protocol=framed")
	ee, ce := env(r.deployment(t, "demo-echo").Spec.Template.Spec.Containers[0]), env(r.deployment(t, "demo-caller").Spec.Template.Spec.Containers[0])
	for name, e := range map[string]map[string]string{"echo": ee, "caller": ce} {
		want(t, name+" MAX_MESSAGE_BYTES (no exponent)", e["MAX_MESSAGE_BYTES"], "16777216")
		want(t, name+" MAX_HANDSHAKES", e["MAX_HANDSHAKES"], "8")
		want(t, name+" MAX_HANDSHAKES_PER_SOURCE", e["MAX_HANDSHAKES_PER_SOURCE"], "4")
		want(t, name+" HANDSHAKE_TIMEOUT", e["HANDSHAKE_TIMEOUT"], "3s")
	}
	want(t, "READ_TIMEOUT", ee["READ_TIMEOUT"], "5s")
	want(t, "IDLE_TIMEOUT", ee["IDLE_TIMEOUT"], "1h")
	want(t, "TUNNEL_MAX_STREAMS", ee["TUNNEL_MAX_STREAMS"], "64")
	want(t, "WRITE_TIMEOUT", ee["WRITE_TIMEOUT"], "2m")
	want(t, "MAX_CONNECTIONS (no exponent)", ee["MAX_CONNECTIONS"], "250000")
	want(t, "CALL_PROTOCOL", ce["CALL_PROTOCOL"], "framed")
	if _, ok := ce["MAX_CONNECTIONS"]; ok {
		t.Error("the caller is given MAX_CONNECTIONS, which only echo reads")
	}

	r = render(t)
	sts = r.statefulsets["demo-etcd"]
	if len(sts.Spec.VolumeClaimTemplates) != 1 || sts.Spec.VolumeClaimTemplates[0].Spec.Resources.Requests.Storage().String() != "1Gi" {
		t.Errorf("etcd persistence by default: %+v", sts.Spec.VolumeClaimTemplates)
	}
	if len(r.netpols) != 3 || len(r.others) != 0 {
		t.Errorf("by default, want the three NetworkPolicies and no ServiceMonitor: %v", r.kinds)
	}
}

// TestRejected checks that mistakes stop `helm install` with a message that
// names the value.
func TestRejected(t *testing.T) {
	cases := []renderFails{
		{[]string{"transport=quic"}, "netpoll"},
		{[]string{"transport=NetPoll"}, "transport"},
		{[]string{"echo.replicass=3"}, "replicass"},
		{[]string{"echo.replicas=two"}, "replicas"},
		{[]string{"tunnel.port=70000"}, "port"},
		{[]string{"discovery.refresh=2"}, "refresh"},
		{[]string{"log.level=loud"}, "level"},
		{[]string{"limits.maxMessageBytes=100"}, "maxMessageBytes"},
		{[]string{"limits.maxHandshakes=0"}, "maxHandshakes"},
		{[]string{"limits.idleTimeout=soon"}, "idleTimeout"},
		{[]string{"limits.tunnelMaxStreams=0"}, "tunnelMaxStreams"},
		{[]string{"limits.writeTimeout=30"}, "writeTimeout"},
		{[]string{"caller.protocol=binary"}, "protocol"},
		{[]string{"limits.maxConnections=-1"}, "maxConnections"},
		{[]string{"limits.maxHandshakesPerSource=0"}, "maxHandshakesPerSource"},
		{[]string{"tunnel.sessions=17"}, "sessions"},
		{[]string{"etcd.enabled=false"}, "externalEtcd.endpoints"},
		{[]string{"echo.terminationGracePeriodSeconds=8"}, "drainDelaySeconds + shutdownTimeoutSeconds + 1 = 11"},
		{[]string{"transport=websocket", "websocket.tls.enabled=true"}, "websocket.tls.existingSecret"},
		{[]string{"transport=yamux", "tunnel.tls.mutual=true"}, "tunnel.tls.existingSecret"},
		{[]string{"transport=yamux", "tunnel.tls.mutual=true", "tunnel.tls.existingSecret=gw"}, "tunnel.tls.clientSecret"},
		{[]string{"transport=yamux", "tunnel.tls.enabled=false", "tunnel.tls.mutual=true"}, "tunnel.tls.enabled"},
		{[]string{"limits.maxHandshakesPerSource=2000"}, "limits.maxHandshakesPerSource=2000 must not exceed limits.maxHandshakes=1024"},
		{[]string{"etcd.enabled=false", "externalEtcd.endpoints={a:2379}", "externalEtcd.auth.username=u"}, "externalEtcd.auth.existingSecret"},
		// Exposing echo, and callers with echoAddresses.
		{[]string{"transport=websocket", "echo.ingress.enabled=true", "echo.ingress.pathType=ImplementationSpecific"}, "/echo/ingress/pathType"},
		{[]string{"transport=websocket", "echo.ingress.enabled=true", "echo.ingress.host=Echo_Example"}, "/echo/ingress/host"},
		{[]string{"transport=websocket", "echo.ingress.enabled=true", "echo.ingress.path=kitex"}, "/echo/ingress/path"},
		{[]string{"transport=websocket", "echo.ingress.enabled=true", "echo.ingress.annotations.timeout=3600"}, "annotations/timeout"},
		{[]string{"transport=websocket", "echo.ingress.enabled=true", "echo.ingress.tls.secretName=Not_A_Name"}, "/echo/ingress/tls/secretName"},
		{[]string{"transport=websocket", "echo.ingress.enabled=true", "echo.ingress.tls.enabled=true"}, "echo.ingress.tls.enabled needs echo.ingress.host"},
		{[]string{"transport=websocket", "echo.ingress.enabled=true", "echo.enabled=false"}, "echo.ingress.enabled needs echo.enabled"},
		{[]string{"transport=websocket", "echo.ingress.tlss=true"}, "tlss"},
		{[]string{"transport=websocket", "echo.httpRoute.enabled=true"}, "/echo/httpRoute/parentRefs"},
		{[]string{"transport=websocket", "echo.httpRoute.enabled=true", "echo.httpRoute.parentRefs[0].namespace=gw"}, "missing property 'name'"},
		{[]string{"transport=websocket", "echo.httpRoute.enabled=true", "echo.httpRoute.parentRefs[0].name=gw", "echo.httpRoute.parentRefs[0].listener=https"}, "'listener' not allowed"},
		{[]string{"transport=websocket", "echo.httpRoute.enabled=true", "echo.httpRoute.parentRefs[0].name=gw", "echo.httpRoute.hostnames={Echo_Example}"}, "/echo/httpRoute/hostnames/0"},
		{[]string{"caller.echoAddresses={echo.example.com}"}, "/caller/echoAddresses/0"},
		{[]string{"caller.echoAddresses={https://echo.example.com/kitex}"}, "/caller/echoAddresses/0"},
		{[]string{"caller.echoAddresses={ws://echo.example.com/kitex}"}, "ws://echo.example.com/kitex is a URL, for a transport over HTTP (websocket)"},
		{[]string{"transport=yamux", "caller.echoAddresses={echo.example.com:8888}"}, "caller.echoAddresses is not for transport=yamux"},
		{[]string{"etcd.enabled=false", "caller.echoAddresses={echo.example.com:8888}"}, "externalEtcd.endpoints"},
		{[]string{"etcd.enabled=false", "echo.enabled=false"}, "externalEtcd.endpoints"},
		{[]string{"transport=websocket", "caller.websocket.pingInterval=20"}, "/caller/websocket/pingInterval"},
		{[]string{"transport=websocket", "caller.websocket.pongTimeout=0"}, "/caller/websocket/pongTimeout"},
		{[]string{"transport=websocket", "caller.websocket.maxConnectionAge=ten"}, "/caller/websocket/maxConnectionAge"},
		{[]string{"transport=websocket", "echo.websocket.pingInterval=often"}, "/echo/websocket/pingInterval"},
		{[]string{"transport=websocket", "caller.websocket.headers={Authorization}"}, "/caller/websocket/headers/0"},
		{[]string{"transport=websocket", "caller.websocket.headers={Bad Name: x}"}, "/caller/websocket/headers/0"},
		{[]string{"transport=websocket", "caller.websocket.headersSecret.name=Bad_Secret"}, "/caller/websocket/headersSecret/name"},
		{[]string{"transport=websocket", "caller.proxy.httpsProxy=socks5://p:1080"}, "/caller/proxy/httpsProxy"},
		{[]string{"transport=websocket", "caller.proxy.noProxy={a,b}"}, "/caller/proxy/noProxy"},
		{[]string{"networkPolicy.ingressFrom=anyone"}, "/networkPolicy/ingressFrom"},
	}
	wantRenderErrors(t, cases)
}

// TestEnvNamesAreRead checks that every variable the chart sets is one the
// services read: a typo in the chart would otherwise be silently ignored.
func TestEnvNamesAreRead(t *testing.T) {
	src, err := os.ReadFile(filepath.Join(root, "internal", "config", "config.go"))
	if err != nil {
		t.Fatal(err)
	}
	set := map[string]bool{}
	for _, sets := range [][]string{{"transport=websocket", "websocket.tls.enabled=true", "websocket.tls.existingSecret=s"}, tlsSets, externalEtcdSets,
		callerOnlySets, {"transport=websocket", "echo.websocket.pingInterval=30s", "caller.proxy.httpProxy=http://p:3128"},
		tunnelGatewaySets, tunnelEdgeSets} {
		r := render(t, sets...)
		for _, d := range r.deployments {
			for _, e := range d.Spec.Template.Spec.Containers[0].Env {
				set[e.Name] = true
			}
		}
	}
	for name := range set {
		if name == "POD_NAME" || name == "POD_IP" {
			continue // inputs for $(…) expansion in other variables
		}
		if name == "HTTPS_PROXY" || name == "HTTP_PROXY" || name == "NO_PROXY" {
			continue // the standard variables, read by golang.org/x/net/http/httpproxy (websocket.ProxyFromEnvironment)
		}
		if !strings.Contains(string(src), `"`+name+`"`) {
			t.Errorf("the chart sets %s, which the services do not read", name)
		}
	}
	if len(set) < 30 {
		t.Fatalf("only %d variables seen; the renders above should set more", len(set))
	}
}

// TestChartREADMEFresh checks that the chart README's values table is what
// helm-docs makes from values.yaml (`make chart-docs` regenerates it).
func TestChartREADMEFresh(t *testing.T) {
	out, err := run(t, "helm-docs", "--dry-run", "--chart-search-root", filepath.Join(root, "charts"),
		"--template-files", "README.md.gotmpl", "--sort-values-order", "file")
	if err != nil {
		t.Fatal(err)
	}
	have, err := os.ReadFile(filepath.Join(chartDir(), "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(out) != strings.TrimSpace(string(have)) {
		t.Fatalf("charts/kitex-anyconn/README.md is stale: run `make chart-docs`.\nhelm-docs makes:\n%s", out)
	}
	for _, key := range []string{"transport", "tunnel.token.existingSecret", "externalEtcd.auth.username", "echo.drainDelaySeconds",
		"echo.ingress.annotations", "echo.httpRoute.parentRefs", "caller.echoAddresses", "caller.websocket.headersSecret.name",
		"networkPolicy.ingressFrom", "tunnel.websocket.enabled", "tunnel.service.nodePorts.tunnel", "tunnel.ingress.annotations",
		"tunnel.publicAddresses", "echo.tunnel.gateways", "echo.tunnel.wsCA.existingSecret", "echo.proxy.httpsProxy",
		"networkPolicy.tunnelFrom", "networkPolicy.echoGatewaysTo"} {
		if !strings.Contains(string(have), "| "+key+" |") {
			t.Errorf("README table lacks %s", key)
		}
	}
}

// renderFails is a variant that must not render, and what its error names.
type renderFails struct {
	sets []string
	msg  string
}

// wantRenderErrors fails t unless each case's render fails with an error
// that mentions its msg.
func wantRenderErrors(t *testing.T, cases []renderFails) {
	t.Helper()
	for _, c := range cases {
		out, err := run(t, "helm", templateArgs(c.sets)...)
		if err == nil {
			t.Errorf("helm template with %v succeeded, want an error; rendered %d bytes", c.sets, len(out))
			continue
		}
		if !strings.Contains(err.Error(), c.msg) {
			t.Errorf("helm template with %v: error does not mention %q: %v", c.sets, c.msg, err)
		}
	}
}
