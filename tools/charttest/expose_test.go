package charttest

import (
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// httpRoute is the part of Gateway API's HTTPRoute (gateway.networking.k8s.io/v1)
// that the chart renders, with the API's field names: decoded strictly, a
// misspelt or misplaced field fails as with the Kubernetes types. The tools
// module does not import sigs.k8s.io/gateway-api for it.
type httpRoute struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		ParentRefs []struct {
			Group       *string `json:"group,omitempty"`
			Kind        *string `json:"kind,omitempty"`
			Namespace   *string `json:"namespace,omitempty"`
			Name        string  `json:"name"`
			SectionName *string `json:"sectionName,omitempty"`
			Port        *int32  `json:"port,omitempty"`
		} `json:"parentRefs"`
		Hostnames []string `json:"hostnames,omitempty"`
		Rules     []struct {
			Matches []struct {
				Path struct {
					Type  string `json:"type"`
					Value string `json:"value"`
				} `json:"path"`
			} `json:"matches"`
			BackendRefs []struct {
				Name string `json:"name"`
				Port int32  `json:"port"`
			} `json:"backendRefs"`
		} `json:"rules"`
	} `json:"spec"`
}

var ingressSets = []string{
	"transport=websocket", "networkPolicy.enabled=true",
	"echo.ingress.enabled=true", "echo.ingress.className=nginx", "echo.ingress.host=echo.example.com",
	"echo.ingress.tls.enabled=true", "echo.ingress.tls.secretName=echo-example-tls",
	"string:echo.ingress.annotations.nginx\\.ingress\\.kubernetes\\.io/proxy-read-timeout=3600",
}

var httpRouteSets = []string{
	"transport=websocket", "echo.httpRoute.enabled=true",
	"echo.httpRoute.parentRefs[0].name=public", "echo.httpRoute.parentRefs[0].namespace=gateway-system",
	"echo.httpRoute.parentRefs[0].sectionName=https", "echo.httpRoute.hostnames={echo.example.com}",
}

// A release of callers only, for an echo behind an ingress elsewhere: no echo,
// no etcd.
var callerOnlySets = []string{
	"transport=websocket", "echo.enabled=false", "etcd.enabled=false",
	"caller.echoAddresses={wss://echo.example.com/kitex,ws://10.1.2.3:8080/kitex}",
	"caller.websocket.pingInterval=15s", "caller.websocket.pongTimeout=5s", "caller.websocket.maxConnectionAge=0",
	"caller.websocket.headers={X-Tenant: blue,X-Trace: on}",
	"caller.websocket.headersSecret.name=ingress-auth", "caller.websocket.headersSecret.key=auth",
	"caller.proxy.httpsProxy=http://proxy.corp:3128", "caller.proxy.noProxy=.corp",
}

// echoRPCServicePort is the echo Service's rpc port: the backend an Ingress or
// HTTPRoute must name.
func echoRPCServicePort(t *testing.T, r *rendered) corev1.ServicePort {
	t.Helper()
	svc := r.services["demo-echo"]
	if svc == nil {
		t.Fatalf("no echo Service; rendered %v", r.kinds)
	}
	for _, p := range svc.Spec.Ports {
		if p.Name == "rpc" {
			return p
		}
	}
	t.Fatalf("echo Service has no rpc port: %+v", svc.Spec.Ports)
	return corev1.ServicePort{}
}

func TestIngress(t *testing.T) {
	r := render(t, ingressSets...)
	ing := r.ingresses["demo-echo"]
	if ing == nil {
		t.Fatalf("no Ingress demo-echo; rendered %v", r.kinds)
	}
	want(t, "Ingress apiVersion", ing.APIVersion, "networking.k8s.io/v1")
	want(t, "Ingress component", ing.Labels["app.kubernetes.io/component"], "echo")
	want(t, "ingressClassName", *ing.Spec.IngressClassName, "nginx")
	want(t, "annotation (a string)", ing.Annotations["nginx.ingress.kubernetes.io/proxy-read-timeout"], "3600")
	want(t, "TLS entries", len(ing.Spec.TLS), 1)
	want(t, "TLS hosts", ing.Spec.TLS[0].Hosts, []string{"echo.example.com"})
	want(t, "TLS secret", ing.Spec.TLS[0].SecretName, "echo-example-tls")
	want(t, "rules", len(ing.Spec.Rules), 1)
	rule := ing.Spec.Rules[0]
	want(t, "host", rule.Host, "echo.example.com")
	want(t, "paths", len(rule.HTTP.Paths), 1)
	path := rule.HTTP.Paths[0]
	want(t, "path (websocket.path)", path.Path, "/kitex")
	want(t, "pathType", *path.PathType, networkingv1.PathTypePrefix)
	want(t, "backend Service", path.Backend.Service.Name, "demo-echo")
	want(t, "backend port (the Service's rpc port, by name)", path.Backend.Service.Port.Name, echoRPCServicePort(t, r).Name)

	// The controller may reach echo's RPC port: pods of any namespace by default.
	rule8888 := func(r *rendered) []networkingv1.NetworkPolicyIngressRule {
		var rules []networkingv1.NetworkPolicyIngressRule
		for _, in := range r.netpols["demo-echo"].Spec.Ingress {
			if len(in.Ports) == 1 && in.Ports[0].Port.IntValue() == 8888 {
				rules = append(rules, in)
			}
		}
		return rules
	}
	rules := rule8888(r)
	want(t, "echo rpc ingress rules (callers, controller)", len(rules), 2)
	from := rules[1].From
	if len(from) != 1 || from[0].NamespaceSelector == nil || len(from[0].NamespaceSelector.MatchLabels) != 0 || from[0].PodSelector != nil {
		t.Errorf("controller rule from %+v, want every pod of every namespace", from)
	}
	r = render(t, append(slices.Clone(ingressSets),
		"networkPolicy.ingressFrom[0].namespaceSelector.matchLabels.kubernetes\\.io/metadata\\.name=ingress-nginx")...)
	from = rule8888(r)[1].From
	if len(from) != 1 || from[0].NamespaceSelector.MatchLabels["kubernetes.io/metadata.name"] != "ingress-nginx" {
		t.Errorf("controller rule from %+v, want the ingress-nginx namespace", from)
	}

	// Other path, Exact, no class, no TLS.
	r = render(t, "transport=websocket", "websocket.path=/rpc", "echo.ingress.enabled=true", "echo.ingress.pathType=Exact")
	ing = r.ingresses["demo-echo"]
	want(t, "path follows websocket.path", ing.Spec.Rules[0].HTTP.Paths[0].Path, "/rpc")
	want(t, "Exact", *ing.Spec.Rules[0].HTTP.Paths[0].PathType, networkingv1.PathTypeExact)
	if ing.Spec.IngressClassName != nil || len(ing.Spec.TLS) != 0 || ing.Spec.Rules[0].Host != "" || len(ing.Annotations) != 0 {
		t.Errorf("class, TLS, host or annotations rendered without values: %+v", ing)
	}
	r = render(t, "transport=websocket", "echo.ingress.enabled=true", "echo.ingress.path=/public/kitex")
	want(t, "echo.ingress.path", r.ingresses["demo-echo"].Spec.Rules[0].HTTP.Paths[0].Path, "/public/kitex")

	// Off by default, for every transport.
	for _, tr := range transports {
		r := render(t, "transport="+tr)
		if len(r.ingresses) != 0 || len(r.httpRoutes) != 0 {
			t.Errorf("transport %s: an Ingress or HTTPRoute by default: %v", tr, r.kinds)
		}
	}
}

func TestHTTPRoute(t *testing.T) {
	r := render(t, httpRouteSets...)
	route := r.httpRoutes["demo-echo"]
	if route == nil {
		t.Fatalf("no HTTPRoute demo-echo; rendered %v", r.kinds)
	}
	want(t, "HTTPRoute apiVersion", route.APIVersion, "gateway.networking.k8s.io/v1")
	want(t, "HTTPRoute namespace", route.Namespace, namespace)
	want(t, "parentRefs", len(route.Spec.ParentRefs), 1)
	p := route.Spec.ParentRefs[0]
	if p.Name != "public" || p.Namespace == nil || *p.Namespace != "gateway-system" || p.SectionName == nil || *p.SectionName != "https" {
		t.Errorf("parentRef %+v, want public in gateway-system, section https", p)
	}
	want(t, "hostnames", route.Spec.Hostnames, []string{"echo.example.com"})
	want(t, "rules", len(route.Spec.Rules), 1)
	rule := route.Spec.Rules[0]
	want(t, "match", len(rule.Matches), 1)
	want(t, "path match", rule.Matches[0].Path.Type+" "+rule.Matches[0].Path.Value, "PathPrefix /kitex")
	want(t, "backendRefs", len(rule.BackendRefs), 1)
	want(t, "backend Service", rule.BackendRefs[0].Name, "demo-echo")
	want(t, "backend port (the Service's rpc port)", rule.BackendRefs[0].Port, echoRPCServicePort(t, r).Port)

	r = render(t, append(slices.Clone(httpRouteSets), "echo.httpRoute.path=/edge", "echo.httpRoute.annotations.team=rpc")...)
	route = r.httpRoutes["demo-echo"]
	want(t, "echo.httpRoute.path", route.Spec.Rules[0].Matches[0].Path.Value, "/edge")
	want(t, "annotation", route.Annotations["team"], "rpc")
}

// Exposing echo through an Ingress or an HTTPRoute needs a transport over
// HTTP: the schema says so, and the templates too when the schema is skipped.
func TestExposureNeedsHTTP(t *testing.T) {
	for _, sets := range [][]string{
		{"echo.ingress.enabled=true"},
		{"transport=yamux", "echo.httpRoute.enabled=true", "echo.httpRoute.parentRefs[0].name=gw"},
	} {
		_, err := run(t, "helm", templateArgs(sets)...)
		if err == nil || !strings.Contains(err.Error(), "/transport") || !strings.Contains(err.Error(), "websocket") {
			t.Errorf("helm template with %v: want the schema to name transport and websocket, got %v", sets, err)
		}
		_, err = run(t, "helm", append(templateArgs(sets), "--skip-schema-validation")...)
		if err == nil || !strings.Contains(err.Error(), "needs a transport over HTTP (websocket): transport=") {
			t.Errorf("helm template --skip-schema-validation with %v: want the template's message, got %v", sets, err)
		}
	}
}

func TestCallerWithEchoAddresses(t *testing.T) {
	r := render(t, callerOnlySets...)
	for _, k := range r.kinds {
		if strings.Contains(k, "etcd") || strings.Contains(k, "-echo") {
			t.Errorf("%s rendered for callers only, with echoAddresses and etcd.enabled=false", k)
		}
	}
	spec := r.deployment(t, "demo-caller").Spec.Template.Spec
	ce := env(spec.Containers[0])
	want(t, "ECHO_ADDRESSES", ce["ECHO_ADDRESSES"], "wss://echo.example.com/kitex,ws://10.1.2.3:8080/kitex")
	for name := range ce {
		if strings.HasPrefix(name, "ETCD_") {
			t.Errorf("the caller gets %s with echoAddresses", name)
		}
	}
	want(t, "WS_PING_INTERVAL", ce["WS_PING_INTERVAL"], "15s")
	want(t, "WS_PONG_TIMEOUT", ce["WS_PONG_TIMEOUT"], "5s")
	want(t, "WS_MAX_CONNECTION_AGE (0 from --set, an int)", ce["WS_MAX_CONNECTION_AGE"], "0")
	want(t, "WS_HEADERS", ce["WS_HEADERS"], "X-Tenant: blue\nX-Trace: on")
	want(t, "WS_HEADERS_FILE", ce["WS_HEADERS_FILE"], "/etc/kitex-anyconn/ws-headers/headers")
	want(t, "HTTPS_PROXY", ce["HTTPS_PROXY"], "http://proxy.corp:3128")
	want(t, "NO_PROXY", ce["NO_PROXY"], ".corp")
	if _, ok := ce["HTTP_PROXY"]; ok {
		t.Error("HTTP_PROXY set although caller.proxy.httpProxy is empty")
	}
	if _, ok := ce["TLS_SERVER_NAME"]; ok {
		t.Error("TLS_SERVER_NAME set without websocket.tls")
	}
	// The readiness probe is the caller's own /readyz (ready at once with
	// ECHO_ADDRESSES), nothing that waits for etcd.
	want(t, "readiness", spec.Containers[0].ReadinessProbe.HTTPGet.Path, "/readyz")
	want(t, "volumes (the headers Secret only)", len(spec.Volumes), 1)
	v := spec.Volumes[0]
	if v.Name != "ws-headers" || v.Secret == nil || v.Secret.SecretName != "ingress-auth" || *v.Secret.DefaultMode != 0o440 ||
		len(v.Secret.Items) != 1 || v.Secret.Items[0].Key != "auth" || v.Secret.Items[0].Path != "headers" {
		t.Errorf("headers volume %+v, want items auth -> headers of ingress-auth, mode 0440", v)
	}
	m := spec.Containers[0].VolumeMounts
	if len(m) != 1 || m[0].Name != "ws-headers" || !m[0].ReadOnly || m[0].MountPath != "/etc/kitex-anyconn/ws-headers" {
		t.Errorf("headers mount %+v", m)
	}

	// The helm test pod calls the same addresses.
	test := r.pods["demo-test-calls"]
	if test == nil {
		t.Fatalf("no helm test pod for callers with echoAddresses; rendered %v", r.kinds)
	}
	want(t, "test ECHO_ADDRESSES", env(test.Spec.Containers[0])["ECHO_ADDRESSES"], ce["ECHO_ADDRESSES"])

	// Egress: DNS, and the addresses' ports (80 and 443 for URLs without one,
	// the proxy's) anywhere; no etcd.
	np := r.netpols["demo-caller"]
	if np == nil {
		t.Fatalf("no caller NetworkPolicy; rendered %v", r.kinds)
	}
	want(t, "caller egress rules (DNS, echoAddresses)", len(np.Spec.Egress), 2)
	ports := egressPorts(np.Spec.Egress[1])
	want(t, "echoAddresses egress ports", ports, []int{443, 8080, 3128})
	want(t, "echoAddresses egress to anywhere", len(np.Spec.Egress[1].To), 0)
	r = render(t, append(slices.Clone(callerOnlySets), "networkPolicy.echoAddressesTo[0].ipBlock.cidr=203.0.113.10/32")...)
	to := r.netpols["demo-caller"].Spec.Egress[1].To
	if len(to) != 1 || to[0].IPBlock == nil || to[0].IPBlock.CIDR != "203.0.113.10/32" {
		t.Errorf("echoAddresses egress to %+v, want 203.0.113.10/32", to)
	}

	// With echo and an external etcd behind TLS: echo keeps etcd, the callers
	// get none of it.
	r = render(t, append(slices.Clone(externalEtcdSets), "transport=websocket", "caller.echoAddresses={demo-echo:8888}",
		"websocket.tls.enabled=true", "websocket.tls.existingSecret=echo-tls")...)
	echo, caller := r.deployment(t, "demo-echo").Spec.Template.Spec, r.deployment(t, "demo-caller").Spec.Template.Spec
	want(t, "echo ETCD_ENDPOINTS", env(echo.Containers[0])["ETCD_ENDPOINTS"], "https://etcd-0.db:2379,https://etcd-1.db:2379")
	ce = env(caller.Containers[0])
	var vols []string
	for _, v := range caller.Volumes {
		vols = append(vols, v.Name)
	}
	want(t, "caller volumes (no etcd Secret)", vols, []string{"ws-tls"})
	if _, ok := ce["ETCD_CA_FILE"]; ok {
		t.Error("the caller gets ETCD_CA_FILE with echoAddresses")
	}
	want(t, "caller TLS_CA_FILE", ce["TLS_CA_FILE"], "/etc/kitex-anyconn/ws-tls/ca.crt")
	if name, ok := ce["TLS_SERVER_NAME"]; ok {
		t.Errorf("TLS_SERVER_NAME=%s with echoAddresses: want the dialed host's name", name)
	}
	var egressPorts []int
	for _, e := range r.netpols["demo-caller"].Spec.Egress {
		for _, p := range e.Ports {
			egressPorts = append(egressPorts, p.Port.IntValue())
		}
	}
	want(t, "caller egress ports (DNS, echoAddresses; no etcd)", egressPorts, []int{53, 53, 8888})
	r = render(t, "transport=websocket", "caller.echoAddresses={wss://echo.example.com}", "websocket.tls.enabled=true",
		"websocket.tls.existingSecret=echo-tls", "websocket.tls.serverName=echo.internal")
	want(t, "TLS_SERVER_NAME when given", env(r.deployment(t, "demo-caller").Spec.Template.Spec.Containers[0])["TLS_SERVER_NAME"], "echo.internal")

	// host:port addresses with netpoll and gonet; no WS_* variable there.
	for _, tr := range []string{"netpoll", "gonet"} {
		r := render(t, "transport="+tr, "caller.echoAddresses={echo.example.com:8888}", "caller.websocket.pingInterval=5s",
			"caller.websocket.headersSecret.name=h", "caller.proxy.httpsProxy=http://p:3128")
		spec := r.deployment(t, "demo-caller").Spec.Template.Spec
		ce := env(spec.Containers[0])
		want(t, tr+" ECHO_ADDRESSES", ce["ECHO_ADDRESSES"], "echo.example.com:8888")
		for name := range ce {
			if strings.HasPrefix(name, "WS_") || strings.HasSuffix(name, "_PROXY") {
				t.Errorf("transport %s: %s set", tr, name)
			}
		}
		if len(spec.Volumes) != 0 {
			t.Errorf("transport %s: volumes %+v", tr, spec.Volumes)
		}
	}
}

// echo.websocket.pingInterval is echo's WS_PING_INTERVAL, with websocket only.
func TestEchoPings(t *testing.T) {
	r := render(t, "transport=websocket", "echo.websocket.pingInterval=25s")
	want(t, "echo WS_PING_INTERVAL", env(r.deployment(t, "demo-echo").Spec.Template.Spec.Containers[0])["WS_PING_INTERVAL"], "25s")
	if _, ok := env(r.deployment(t, "demo-caller").Spec.Template.Spec.Containers[0])["WS_PING_INTERVAL"]; ok {
		t.Error("echo.websocket.pingInterval set the caller's WS_PING_INTERVAL")
	}
	for _, sets := range [][]string{{"transport=websocket"}, {"transport=gonet", "echo.websocket.pingInterval=25s"}} {
		if _, ok := env(render(t, sets...).deployment(t, "demo-echo").Spec.Template.Spec.Containers[0])["WS_PING_INTERVAL"]; ok {
			t.Errorf("echo WS_PING_INTERVAL set with %v", sets)
		}
	}
}

// egressPorts returns the port numbers of an egress rule.
func egressPorts(rule networkingv1.NetworkPolicyEgressRule) []int {
	var ports []int
	for _, p := range rule.Ports {
		ports = append(ports, p.Port.IntValue())
	}
	return ports
}
