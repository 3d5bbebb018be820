package charttest

import (
	"fmt"
	"path"
	"slices"
	"strconv"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
)

// The callers' release, its gateways exposed to agents elsewhere: over
// WebSocket too, a NodePort Service with fixed ports, an Ingress with TLS,
// one more public address, and the ingress controller's namespace let in.
var tunnelGatewaySets = []string{
	"transport=yamux", "networkPolicy.enabled=true",
	"tunnel.websocket.enabled=true",
	"tunnel.service.enabled=true", "tunnel.service.type=NodePort",
	"tunnel.service.nodePorts.tunnel=30700", "tunnel.service.nodePorts.websocket=30780",
	"string:tunnel.service.annotations.team=rpc",
	"tunnel.ingress.enabled=true", "tunnel.ingress.className=nginx", "tunnel.ingress.host=tunnel.example.com",
	"tunnel.ingress.tls.enabled=true", "tunnel.ingress.tls.secretName=tunnel-example-tls",
	"string:tunnel.ingress.annotations.nginx\\.ingress\\.kubernetes\\.io/proxy-read-timeout=3600",
	"tunnel.publicAddresses={203.0.113.10:30700}",
	"networkPolicy.tunnelFrom[0].namespaceSelector.matchLabels.kubernetes\\.io/metadata\\.name=ingress-nginx",
}

// An edge release: echo only, dialing the gateways of a release elsewhere
// through a forward proxy, the Ingress's CA given; no callers, no etcd.
var tunnelEdgeSets = []string{
	"transport=yamux", "networkPolicy.enabled=true", "caller.enabled=false", "etcd.enabled=false",
	"echo.tunnel.gateways={wss://tunnel.example.com/tunnel,203.0.113.10:30700}",
	"tunnel.token.existingSecret=callers-token",
	"echo.tunnel.wsCA.existingSecret=tunnel-ca",
	"echo.proxy.httpsProxy=http://proxy.corp:3128", "echo.proxy.noProxy=.corp\\,10.0.0.0/8",
}

// servicePorts returns a Service's ports as name=targetPort/port/nodePort,
// nodePort "-" when unset.
func servicePorts(svc *corev1.Service) []string {
	var ports []string
	for _, p := range svc.Spec.Ports {
		ports = append(ports, fmt.Sprintf("%s=%s/%d/%s", p.Name, p.TargetPort.String(), p.Port, itoa(p.NodePort)))
	}
	return ports
}

// itoa is i in decimal, "-" for 0 (unset).
func itoa(i int32) string {
	if i == 0 {
		return "-"
	}
	return strconv.Itoa(int(i))
}

// tunnelIngressRules returns the caller NetworkPolicy's ingress rules on the
// tunnel port, 7000.
func tunnelIngressRules(t *testing.T, r *rendered) []networkingv1.NetworkPolicyIngressRule {
	t.Helper()
	np := r.netpols["demo-caller"]
	if np == nil {
		t.Fatalf("no caller NetworkPolicy; rendered %v", r.kinds)
	}
	var rules []networkingv1.NetworkPolicyIngressRule
	for _, in := range np.Spec.Ingress {
		for _, p := range in.Ports {
			if p.Port.IntValue() == 7000 {
				rules = append(rules, in)
				break
			}
		}
	}
	return rules
}

func rulePorts(in networkingv1.NetworkPolicyIngressRule) []int {
	var ports []int
	for _, p := range in.Ports {
		ports = append(ports, p.Port.IntValue())
	}
	return ports
}

func TestTunnelGatewayExposed(t *testing.T) {
	r := render(t, tunnelGatewaySets...)
	caller := r.deployment(t, "demo-caller").Spec.Template.Spec.Containers[0]
	ce := env(caller)
	want(t, "TUNNEL_WS_LISTEN_ADDR", ce["TUNNEL_WS_LISTEN_ADDR"], ":7080")
	want(t, "TUNNEL_WS_PATH", ce["TUNNEL_WS_PATH"], "/tunnel")
	want(t, "TUNNEL_PUBLIC_ADDRESSES (the given one, then the Ingress URL)", ce["TUNNEL_PUBLIC_ADDRESSES"],
		"203.0.113.10:30700,wss://tunnel.example.com/tunnel")
	want(t, "TUNNEL_LISTEN_ADDR (the raw port still)", ce["TUNNEL_LISTEN_ADDR"], ":7000")
	want(t, "caller container ports", portNames(caller), []string{"admin=9091", "tunnel=7000", "tunnel-ws=7080"})

	// The Service in front of every caller's gateway.
	svc := r.services["demo-tunnel"]
	if svc == nil {
		t.Fatalf("no Service demo-tunnel; rendered %v", r.kinds)
	}
	want(t, "tunnel Service type", svc.Spec.Type, corev1.ServiceTypeNodePort)
	want(t, "tunnel Service selects the callers", svc.Spec.Selector, r.services["demo-caller"].Spec.Selector)
	want(t, "tunnel Service selector component", svc.Spec.Selector["app.kubernetes.io/component"], "caller")
	want(t, "tunnel Service ports (name=targetPort/port/nodePort)", servicePorts(svc),
		[]string{"tunnel=tunnel/7000/30700", "tunnel-ws=tunnel-ws/7080/30780"})
	want(t, "tunnel-ws appProtocol", *svc.Spec.Ports[1].AppProtocol, "kubernetes.io/ws")
	want(t, "tunnel Service annotation", svc.Annotations["team"], "rpc")
	// Its own component label: the caller ServiceMonitor (component caller)
	// does not pick it up, it has no admin port.
	want(t, "tunnel Service component label", svc.Labels["app.kubernetes.io/component"], "tunnel")
	for _, p := range svc.Spec.Ports {
		if !slices.Contains(portNames(caller), p.TargetPort.String()+"="+itoa(p.Port)) {
			t.Errorf("tunnel Service port %s targets %s, which the caller container does not name with port %d: %v",
				p.Name, p.TargetPort.String(), p.Port, portNames(caller))
		}
	}

	// The Ingress: the gateways' WebSocket endpoint behind that Service.
	ing := r.ingresses["demo-tunnel"]
	if ing == nil {
		t.Fatalf("no Ingress demo-tunnel; rendered %v", r.kinds)
	}
	want(t, "Ingress apiVersion", ing.APIVersion, "networking.k8s.io/v1")
	want(t, "ingressClassName", *ing.Spec.IngressClassName, "nginx")
	want(t, "annotation (a string)", ing.Annotations["nginx.ingress.kubernetes.io/proxy-read-timeout"], "3600")
	want(t, "TLS entries", len(ing.Spec.TLS), 1)
	want(t, "TLS hosts", ing.Spec.TLS[0].Hosts, []string{"tunnel.example.com"})
	want(t, "TLS secret", ing.Spec.TLS[0].SecretName, "tunnel-example-tls")
	want(t, "rules", len(ing.Spec.Rules), 1)
	want(t, "host", ing.Spec.Rules[0].Host, "tunnel.example.com")
	want(t, "paths", len(ing.Spec.Rules[0].HTTP.Paths), 1)
	p := ing.Spec.Rules[0].HTTP.Paths[0]
	want(t, "path (tunnel.websocket.path)", p.Path, "/tunnel")
	want(t, "pathType", *p.PathType, networkingv1.PathTypePrefix)
	want(t, "backend Service", p.Backend.Service.Name, "demo-tunnel")
	want(t, "backend port (the Service's tunnel-ws port, by name)", p.Backend.Service.Port.Name, svc.Spec.Ports[1].Name)
	if _, ok := r.ingresses["demo-echo"]; ok {
		t.Error("echo's Ingress rendered with tunnel.ingress")
	}

	// NetworkPolicy: echo pods on 7000 as before, and tunnelFrom on both
	// tunnel ports.
	rules := tunnelIngressRules(t, r)
	want(t, "caller ingress rules on the tunnel port (echo, tunnelFrom)", len(rules), 2)
	want(t, "echo rule ports", rulePorts(rules[0]), []int{7000})
	if len(rules[0].From) != 1 || rules[0].From[0].PodSelector == nil ||
		rules[0].From[0].PodSelector.MatchLabels["app.kubernetes.io/component"] != "echo" {
		t.Errorf("first tunnel rule from %+v, want this release's echo pods", rules[0].From)
	}
	want(t, "tunnelFrom rule ports", rulePorts(rules[1]), []int{7000, 7080})
	if from := rules[1].From; len(from) != 1 || from[0].NamespaceSelector == nil ||
		from[0].NamespaceSelector.MatchLabels["kubernetes.io/metadata.name"] != "ingress-nginx" || from[0].PodSelector != nil {
		t.Errorf("tunnelFrom rule from %+v, want the ingress-nginx namespace", from)
	}
	// echo of the same release still dials the callers' pods (etcd).
	egressTo(t, r.netpols["demo-echo"], 7000)
	want(t, "echo ETCD_ENDPOINTS (etcd discovery in the callers' release)",
		env(r.deployment(t, "demo-echo").Spec.Template.Spec.Containers[0])["ETCD_ENDPOINTS"], "demo-etcd-0.demo-etcd-headless.prod.svc:2379")

	// tunnelFrom empty: from anywhere once exposed.
	var noFrom []string
	for _, s := range tunnelGatewaySets {
		if !strings.HasPrefix(s, "networkPolicy.tunnelFrom") {
			noFrom = append(noFrom, s)
		}
	}
	rules = tunnelIngressRules(t, render(t, noFrom...))
	want(t, "rules without tunnelFrom", len(rules), 2)
	if len(rules) == 2 && rules[1].From != nil {
		t.Errorf("exposed gateways without tunnelFrom: from %+v, want any source", rules[1].From)
	}
	// tunnelFrom without exposure (agents through caller.service, say): the
	// raw port only, from those peers.
	rules = tunnelIngressRules(t, render(t, "transport=yamux", "networkPolicy.tunnelFrom[0].ipBlock.cidr=198.51.100.0/24"))
	want(t, "rules with tunnelFrom only", len(rules), 2)
	if len(rules) == 2 {
		want(t, "tunnelFrom-only ports", rulePorts(rules[1]), []int{7000})
		if len(rules[1].From) != 1 || rules[1].From[0].IPBlock == nil || rules[1].From[0].IPBlock.CIDR != "198.51.100.0/24" {
			t.Errorf("tunnelFrom-only rule from %+v", rules[1].From)
		}
	}
}

func TestTunnelServiceShapes(t *testing.T) {
	// The Ingress alone: a ClusterIP Service for it, no nodePort even if
	// given, and a ws:// URL without TLS, on another path and port.
	r := render(t, "transport=yamux", "tunnel.websocket.enabled=true", "tunnel.websocket.path=/agents",
		"tunnel.websocket.port=7443", "tunnel.ingress.enabled=true", "tunnel.ingress.host=tunnel.example.com",
		"tunnel.service.nodePorts.tunnel=30700", "tunnel.service.type=NodePort")
	svc := r.services["demo-tunnel"]
	if svc == nil {
		t.Fatalf("tunnel.ingress without tunnel.service: no Service demo-tunnel; rendered %v", r.kinds)
	}
	want(t, "Service for the Ingress alone", svc.Spec.Type, corev1.ServiceTypeClusterIP)
	// A new caller is ready only once an agent reached it through here.
	want(t, "publishNotReadyAddresses", svc.Spec.PublishNotReadyAddresses, true)
	want(t, "its ports", servicePorts(svc), []string{"tunnel=tunnel/7000/-", "tunnel-ws=tunnel-ws/7443/-"})
	ce := env(r.deployment(t, "demo-caller").Spec.Template.Spec.Containers[0])
	want(t, "TUNNEL_WS_LISTEN_ADDR", ce["TUNNEL_WS_LISTEN_ADDR"], ":7443")
	want(t, "TUNNEL_WS_PATH", ce["TUNNEL_WS_PATH"], "/agents")
	want(t, "TUNNEL_PUBLIC_ADDRESSES (ws:// without TLS)", ce["TUNNEL_PUBLIC_ADDRESSES"], "ws://tunnel.example.com/agents")
	ing := r.ingresses["demo-tunnel"]
	if ing == nil {
		t.Fatalf("no Ingress demo-tunnel; rendered %v", r.kinds)
	}
	want(t, "Ingress path", ing.Spec.Rules[0].HTTP.Paths[0].Path, "/agents")
	if ing.Spec.IngressClassName != nil || len(ing.Spec.TLS) != 0 || len(ing.Annotations) != 0 {
		t.Errorf("class, TLS or annotations rendered without values: %+v", ing.Spec)
	}

	// An Ingress without host: the URL agents dial is given.
	r = render(t, "transport=yamux", "tunnel.websocket.enabled=true", "tunnel.ingress.enabled=true",
		"tunnel.publicAddresses={ws://198.51.100.7/tunnel}")
	want(t, "no host", r.ingresses["demo-tunnel"].Spec.Rules[0].Host, "")
	want(t, "TUNNEL_PUBLIC_ADDRESSES (given only)",
		env(r.deployment(t, "demo-caller").Spec.Template.Spec.Containers[0])["TUNNEL_PUBLIC_ADDRESSES"], "ws://198.51.100.7/tunnel")

	// A load balancer, raw TCP only: its source ranges, no tunnel-ws port
	// (nor its nodePort), no WebSocket variables, no Ingress.
	r = render(t, "transport=yamux", "tunnel.service.enabled=true", "tunnel.service.type=LoadBalancer",
		"tunnel.service.loadBalancerSourceRanges={203.0.113.0/24}", "tunnel.service.nodePorts.websocket=30780",
		"tunnel.publicAddresses={lb.example.com:7000}")
	svc = r.services["demo-tunnel"]
	want(t, "LoadBalancer", svc.Spec.Type, corev1.ServiceTypeLoadBalancer)
	want(t, "loadBalancerSourceRanges", svc.Spec.LoadBalancerSourceRanges, []string{"203.0.113.0/24"})
	want(t, "LoadBalancer ports", servicePorts(svc), []string{"tunnel=tunnel/7000/-"})
	if len(r.ingresses) != 0 {
		t.Errorf("an Ingress without tunnel.ingress: %v", r.kinds)
	}
	caller := r.deployment(t, "demo-caller").Spec.Template.Spec.Containers[0]
	ce = env(caller)
	want(t, "TUNNEL_PUBLIC_ADDRESSES", ce["TUNNEL_PUBLIC_ADDRESSES"], "lb.example.com:7000")
	for _, v := range []string{"TUNNEL_WS_LISTEN_ADDR", "TUNNEL_WS_PATH"} {
		if _, ok := ce[v]; ok {
			t.Errorf("%s set without tunnel.websocket", v)
		}
	}
	want(t, "caller container ports", portNames(caller), []string{"admin=9091", "tunnel=7000"})
	// Source ranges are for a load balancer only.
	r = render(t, "transport=yamux", "tunnel.service.enabled=true", "tunnel.service.type=NodePort",
		"tunnel.service.loadBalancerSourceRanges={203.0.113.0/24}")
	want(t, "NodePort: no source ranges", len(r.services["demo-tunnel"].Spec.LoadBalancerSourceRanges), 0)
	want(t, "NodePort chosen by Kubernetes", servicePorts(r.services["demo-tunnel"]), []string{"tunnel=tunnel/7000/-"})

	// Off by default, for every transport: no Service, no Ingress, no
	// variable, and the callers' tunnel port open to echo only.
	for _, tr := range transports {
		r := render(t, "transport="+tr)
		if _, ok := r.services["demo-tunnel"]; ok {
			t.Errorf("transport %s: Service demo-tunnel by default", tr)
		}
		if len(r.ingresses) != 0 {
			t.Errorf("transport %s: an Ingress by default: %v", tr, r.kinds)
		}
		for _, d := range []string{"demo-caller", "demo-echo"} {
			for name := range env(r.deployment(t, d).Spec.Template.Spec.Containers[0]) {
				if strings.HasPrefix(name, "TUNNEL_WS_") || name == "TUNNEL_PUBLIC_ADDRESSES" || name == "TUNNEL_GATEWAYS" || strings.HasSuffix(name, "_PROXY") {
					t.Errorf("transport %s: %s sets %s by default", tr, d, name)
				}
			}
		}
		if tr == "yamux" {
			want(t, "yamux: caller ingress rules on the tunnel port (echo only)", len(tunnelIngressRules(t, r)), 1)
		}
	}
}

func TestTunnelEdgeEcho(t *testing.T) {
	out, err := run(t, "helm", templateArgs(tunnelEdgeSets)...)
	if err != nil {
		t.Fatal(err)
	}
	// Nothing of etcd anywhere: no object, no variable, no Secret, no
	// egress, not even a comment.
	if i := strings.Index(strings.ToLower(out), "etcd"); i >= 0 {
		t.Errorf("the edge release mentions etcd: …%s…", out[max(0, i-200):min(len(out), i+100)])
	}
	r := render(t, tunnelEdgeSets...)
	want(t, "objects of an edge release", strings.Join(slices.Sorted(slices.Values(r.kinds)), " "),
		"Deployment/demo-echo NetworkPolicy/demo-echo PodDisruptionBudget/demo-echo Service/demo-echo ServiceAccount/demo")
	spec := r.deployment(t, "demo-echo").Spec.Template.Spec
	ee := env(spec.Containers[0])
	want(t, "TUNNEL_GATEWAYS", ee["TUNNEL_GATEWAYS"], "wss://tunnel.example.com/tunnel,203.0.113.10:30700")
	for name := range ee {
		if strings.HasPrefix(name, "ETCD_") {
			t.Errorf("the edge echo gets %s", name)
		}
	}
	want(t, "HTTPS_PROXY", ee["HTTPS_PROXY"], "http://proxy.corp:3128")
	want(t, "NO_PROXY", ee["NO_PROXY"], ".corp,10.0.0.0/8")
	if _, ok := ee["HTTP_PROXY"]; ok {
		t.Error("HTTP_PROXY set although echo.proxy.httpProxy is empty")
	}
	want(t, "TUNNEL_WS_CA_FILE", ee["TUNNEL_WS_CA_FILE"], "/etc/kitex-anyconn/tunnel-ws-ca/ca.crt")
	want(t, "TUNNEL_TOKEN_FILE", ee["TUNNEL_TOKEN_FILE"], "/etc/kitex-anyconn/tunnel-token/token")
	mountsToken(t, spec, "callers-token")

	// The CA: only its key, at ca.crt, read-only, 0440, where
	// TUNNEL_WS_CA_FILE points.
	var vols []string
	for _, v := range spec.Volumes {
		vols = append(vols, v.Name)
	}
	want(t, "echo volumes (token, CA; no etcd Secret)", vols, []string{"tunnel-token", "tunnel-ws-ca"})
	wsCA := func(spec corev1.PodSpec) (corev1.Volume, corev1.VolumeMount) {
		t.Helper()
		var vol corev1.Volume
		var mount corev1.VolumeMount
		for _, v := range spec.Volumes {
			if v.Name == "tunnel-ws-ca" {
				vol = v
			}
		}
		for _, m := range spec.Containers[0].VolumeMounts {
			if m.Name == "tunnel-ws-ca" {
				mount = m
			}
		}
		if vol.Secret == nil {
			t.Fatalf("no tunnel-ws-ca Secret volume: %+v", spec.Volumes)
		}
		return vol, mount
	}
	v, m := wsCA(spec)
	if v.Secret.SecretName != "tunnel-ca" || *v.Secret.DefaultMode != 0o440 || len(v.Secret.Items) != 1 ||
		v.Secret.Items[0].Key != "ca.crt" || v.Secret.Items[0].Path != "ca.crt" {
		t.Errorf("CA volume %+v, want ca.crt of tunnel-ca, mode 0440", v.Secret)
	}
	if !m.ReadOnly || m.MountPath != path.Dir(ee["TUNNEL_WS_CA_FILE"]) {
		t.Errorf("CA mount %+v, want read-only at the directory of TUNNEL_WS_CA_FILE", m)
	}
	r2 := render(t, append(slices.Clone(tunnelEdgeSets), "echo.tunnel.wsCA.key=root.pem")...)
	v, _ = wsCA(r2.deployment(t, "demo-echo").Spec.Template.Spec)
	want(t, "CA from another key", v.Secret.Items[0].Key+"->"+v.Secret.Items[0].Path, "root.pem->ca.crt")

	// Egress: DNS, then the gateways' ports and the proxy's, anywhere; no
	// etcd, no pods of this release.
	np := r.netpols["demo-echo"]
	if np == nil {
		t.Fatalf("no echo NetworkPolicy; rendered %v", r.kinds)
	}
	want(t, "echo egress rules (DNS, gateways)", len(np.Spec.Egress), 2)
	ports := egressPorts(np.Spec.Egress[1])
	want(t, "gateways egress ports (wss:// 443, the NodePort, the proxy)", ports, []int{443, 30700, 3128})
	want(t, "gateways egress to anywhere", len(np.Spec.Egress[1].To), 0)
	for _, e := range np.Spec.Egress {
		for _, to := range e.To {
			if to.PodSelector != nil {
				t.Errorf("edge echo egress to pods %+v", to.PodSelector)
			}
		}
	}
	want(t, "echo ingress rules (admin only)", len(np.Spec.Ingress), 1)
	r = render(t, append(slices.Clone(tunnelEdgeSets), "networkPolicy.echoGatewaysTo[0].ipBlock.cidr=203.0.113.0/24",
		"echo.tunnel.gateways={ws://tunnel.example.com/tunnel}", "echo.proxy.httpsProxy=", "echo.proxy.httpProxy=http://proxy.corp")...)
	e := r.netpols["demo-echo"].Spec.Egress[1]
	ports = nil
	for _, p := range e.Ports {
		ports = append(ports, p.Port.IntValue())
	}
	want(t, "ws:// and a proxy without port: 80 once", ports, []int{80})
	if len(e.To) != 1 || e.To[0].IPBlock == nil || e.To[0].IPBlock.CIDR != "203.0.113.0/24" {
		t.Errorf("gateways egress to %+v, want 203.0.113.0/24", e.To)
	}
	want(t, "HTTP_PROXY", env(r.deployment(t, "demo-echo").Spec.Template.Spec.Containers[0])["HTTP_PROXY"], "http://proxy.corp")

	// With callers and an external etcd behind TLS in the same release: the
	// callers keep etcd, echo gets none of it, no helm test pod (it would be
	// a gateway these agents do not dial), and the token-init Job makes the
	// token here.
	r = render(t, append(slices.Clone(externalEtcdSets), "transport=yamux",
		"echo.tunnel.gateways={wss://tunnel.example.com/tunnel}")...)
	echo, callerSpec := r.deployment(t, "demo-echo").Spec.Template.Spec, r.deployment(t, "demo-caller").Spec.Template.Spec
	for name := range env(echo.Containers[0]) {
		if strings.HasPrefix(name, "ETCD_") {
			t.Errorf("echo with gateways gets %s", name)
		}
	}
	want(t, "caller ETCD_ENDPOINTS", env(callerSpec.Containers[0])["ETCD_ENDPOINTS"], "https://etcd-0.db:2379,https://etcd-1.db:2379")
	vols = nil
	for _, v := range echo.Volumes {
		vols = append(vols, v.Name)
	}
	want(t, "echo volumes (no etcd Secret)", vols, []string{"tunnel-token"})
	if _, ok := r.pods["demo-test-calls"]; ok {
		t.Error("helm test pod rendered for an echo with echo.tunnel.gateways")
	}
	tokenInitJob(t, r)

	// The edge release renders no token-init hook: it is given the token.
	r = render(t, tunnelEdgeSets...)
	if len(r.jobs) != 0 || len(r.roles) != 0 {
		t.Errorf("token-init hook rendered in an edge release: %v", r.kinds)
	}
}

// Mistakes in the tunnel's values stop the install with a message naming
// the value.
func TestTunnelRejected(t *testing.T) {
	edge := func(drop string, extra ...string) []string {
		var sets []string
		for _, s := range tunnelEdgeSets {
			if !strings.HasPrefix(s, drop+"=") {
				sets = append(sets, s)
			}
		}
		return append(sets, extra...)
	}
	cases := []renderFails{
		// The templates' checks.
		{[]string{"transport=yamux", "tunnel.ingress.enabled=true", "tunnel.ingress.host=t.example.com"},
			"tunnel.ingress.enabled needs tunnel.websocket.enabled"},
		{edge("tunnel.token.existingSecret"), "echo.tunnel.gateways without callers in this release (caller.enabled=false) needs tunnel.token.existingSecret"},
		{[]string{"transport=yamux", "tunnel.websocket.enabled=true", "tunnel.ingress.enabled=true", "tunnel.ingress.tls.enabled=true"},
			"tunnel.ingress.tls.enabled needs tunnel.ingress.host"},
		{[]string{"transport=yamux", "tunnel.websocket.enabled=true", "tunnel.ingress.enabled=true", "tunnel.publicAddresses={203.0.113.1:7000}"},
			"tunnel.ingress.enabled without tunnel.ingress.host: list the ws:// or wss:// URL"},
		{[]string{"transport=yamux", "tunnel.websocket.enabled=true", "tunnel.websocket.port=7000"},
			"tunnel.websocket.port=7000 is tunnel.port already"},
		{[]string{"transport=yamux", "tunnel.websocket.enabled=true", "tunnel.websocket.port=9091"},
			"tunnel.websocket.port=9091 is caller.adminPort already"},
		{[]string{"transport=yamux", "echo.tunnel.wsCA.existingSecret=ca"}, "echo.tunnel.wsCA.existingSecret is for echo.tunnel.gateways"},
		{[]string{"transport=yamux", "caller.enabled=false", "tunnel.service.enabled=true"}, "tunnel.service.enabled needs caller.enabled"},
		{[]string{"transport=yamux", "caller.enabled=false", "tunnel.websocket.enabled=true", "tunnel.ingress.enabled=true", "tunnel.ingress.host=t.example.com"},
			"tunnel.ingress.enabled needs caller.enabled"},
		{edge("caller.enabled", "caller.enabled=true"), "externalEtcd.endpoints"},
		// The schema's.
		{[]string{"transport=yamux", "tunnel.service.type=ExternalName"}, "/tunnel/service/type"},
		{[]string{"transport=yamux", "tunnel.service.nodePorts.tunnel=high"}, "/tunnel/service/nodePorts/tunnel"},
		{[]string{"transport=yamux", "tunnel.service.nodePorts.websocket=70000"}, "/tunnel/service/nodePorts/websocket"},
		{[]string{"transport=yamux", "tunnel.service.nodeport=30700"}, "nodeport"},
		{[]string{"transport=yamux", "tunnel.service.loadBalancerSourceRanges={10.0.0.0}"}, "/tunnel/service/loadBalancerSourceRanges/0"},
		{[]string{"transport=yamux", "tunnel.service.annotations.timeout=3600"}, "/tunnel/service/annotations/timeout"},
		{[]string{"transport=yamux", "tunnel.websocket.path=tunnel"}, "/tunnel/websocket/path"},
		{[]string{"transport=yamux", "tunnel.websocket.port=0"}, "/tunnel/websocket/port"},
		{[]string{"transport=yamux", "tunnel.ingress.host=Tunnel_Example"}, "/tunnel/ingress/host"},
		{[]string{"transport=yamux", "tunnel.ingress.className=Bad Class"}, "/tunnel/ingress/className"},
		{[]string{"transport=yamux", "tunnel.ingress.tls.secretName=Not_A_Name"}, "/tunnel/ingress/tls/secretName"},
		{[]string{"transport=yamux", "tunnel.ingress.path=/x"}, "path"},
		{[]string{"transport=yamux", "tunnel.publicAddresses={tunnel.example.com}"}, "/tunnel/publicAddresses/0"},
		{[]string{"transport=yamux", "tunnel.publicAddresses={https://tunnel.example.com/tunnel}"}, "/tunnel/publicAddresses/0"},
		{edge("echo.tunnel.gateways", "echo.tunnel.gateways={tunnel.example.com}"), "/echo/tunnel/gateways/0"},
		{edge("echo.tunnel.wsCA.existingSecret", "echo.tunnel.wsCA.existingSecret=Bad_CA"), "/echo/tunnel/wsCA/existingSecret"},
		{edge("echo.proxy.httpsProxy", "echo.proxy.httpsProxy=socks5://p:1080"), "/echo/proxy/httpsProxy"},
		{edge("echo.proxy.noProxy", "echo.proxy.noProxy={a,b}"), "/echo/proxy/noProxy"},
		{[]string{"networkPolicy.tunnelFrom=anyone"}, "/networkPolicy/tunnelFrom"},
		{[]string{"networkPolicy.echoGatewaysTo=anyone"}, "/networkPolicy/echoGatewaysTo"},
	}
	wantRenderErrors(t, cases)
}

// The tunnel's exposure and echo.tunnel.gateways need a tunnel transport:
// the schema says so, and the templates too when the schema is skipped.
func TestTunnelNeedsTunnelTransport(t *testing.T) {
	for value, sets := range map[string][]string{
		"tunnel.websocket.enabled":        {"transport=netpoll", "tunnel.websocket.enabled=true"},
		"tunnel.service.enabled":          {"transport=gonet", "tunnel.service.enabled=true"},
		"tunnel.ingress.enabled":          {"transport=websocket", "tunnel.ingress.enabled=true", "tunnel.websocket.enabled=true", "tunnel.ingress.host=t.example.com"},
		"tunnel.publicAddresses":          {"transport=netpoll", "tunnel.publicAddresses={203.0.113.1:7000}"},
		"echo.tunnel.gateways":            {"transport=websocket", "echo.tunnel.gateways={wss://t.example.com/tunnel}"},
		"echo.tunnel.wsCA.existingSecret": {"transport=netpoll", "echo.tunnel.wsCA.existingSecret=ca"},
	} {
		if value != "echo.tunnel.wsCA.existingSecret" { // no schema rule of its own: the template's check
			_, err := run(t, "helm", templateArgs(sets)...)
			if err == nil || !strings.Contains(err.Error(), "/transport") || !strings.Contains(err.Error(), "yamux") {
				t.Errorf("helm template with %v: want the schema to name transport and yamux, got %v", sets, err)
			}
		}
		_, err := run(t, "helm", append(templateArgs(sets), "--skip-schema-validation")...)
		wantMsg := value + " needs a tunnel transport (yamux): transport="
		if err == nil || !strings.Contains(err.Error(), wantMsg) {
			t.Errorf("helm template --skip-schema-validation with %v: want %q, got %v", sets, wantMsg, err)
		}
	}
	// echo.proxy and the NetworkPolicy peers do nothing with another
	// transport, as caller.proxy does nothing without websocket.
	for _, tr := range []string{"netpoll", "gonet", "websocket"} {
		r := render(t, "transport="+tr, "echo.proxy.httpsProxy=http://p:3128", "networkPolicy.echoGatewaysTo[0].ipBlock.cidr=10.0.0.0/8",
			"networkPolicy.tunnelFrom[0].ipBlock.cidr=10.0.0.0/8")
		for name := range env(r.deployment(t, "demo-echo").Spec.Template.Spec.Containers[0]) {
			if strings.HasSuffix(name, "_PROXY") {
				t.Errorf("transport %s: echo gets %s", tr, name)
			}
		}
		for _, np := range r.netpols {
			for _, in := range np.Spec.Ingress {
				for _, f := range in.From {
					if f.IPBlock != nil {
						t.Errorf("transport %s: %s lets %s in", tr, np.Name, f.IPBlock.CIDR)
					}
				}
			}
			for _, e := range np.Spec.Egress {
				for _, to := range e.To {
					if to.IPBlock != nil {
						t.Errorf("transport %s: %s lets out to %s", tr, np.Name, to.IPBlock.CIDR)
					}
				}
			}
		}
	}
}
