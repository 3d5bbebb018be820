package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// The WebSocket transport through a real ingress controller: Traefik,
// built from source (tools/traefik), serving the chart's Ingress to callers
// configured with nothing but its URL (no etcd, no pod address).
const (
	traefikNS    = "traefik-e2e"
	traefikImage = "kitex-anyconn/traefik:e2e"
	ingressHost  = "echo.e2e"
	routeHost    = "route.e2e" // the HTTPRoute's host, through the Gateway
	ingressClass = "traefik-e2e"
	// ingressIdle is the controller's idle and read timeout: below the
	// idle caller's call interval, so that it cuts that caller's connection
	// between calls.
	ingressIdle     = "3s"
	idleCallEvery   = "5s"
	outsideInterval = "200ms"
)

// ingressResult is one row of the ingress summary.
type ingressResult struct {
	path             string
	ok, failed       int
	p50, p99         float64
	callsPerSec      float64
	reloadFailed     int
	ctrlDeleteFailed int
	ctrlDeleteResume time.Duration
	sequential       bool
}

var ingressResults []*ingressResult

// buildTraefik builds the controller's image from bin/traefik and loads it.
func (e *env) buildTraefik() error {
	e.step("websocket: build the Traefik ingress controller's image")
	if err := e.cmd(30*time.Minute, "make", "bin/traefik"); err != nil {
		return err
	}
	return e.scratchImage(traefikImage, "traefik", func(out string) error {
		b, err := os.ReadFile("bin/traefik")
		if err != nil {
			return err
		}
		return os.WriteFile(out, b, 0o755)
	})
}

// ingressSteps are the websocket run's steps through the ingress.
func (e *env) ingressSteps() []step {
	return []step{
		{"Traefik (2 replicas) serves the chart's Ingress and HTTPRoute", e.ingressUp},
		{"callers outside the cluster (ws://, wss://, through the HTTPRoute, and one idle longer than the controller's timeout) call through it", e.outsideCalls},
		{"the Ingress changed three times under load (the controller reloads its configuration)", e.reloadIngress},
		{"an ingress controller pod deleted under load", e.deleteController},
		{"the idle caller: no call failed", e.idleCaller},
		{"pass-through cost: 1000 calls through the ingress and 1000 direct", e.passThrough},
		{"remove the ingress controller", e.ingressDown},
	}
}

func (e *env) ingressUp(x *run) error {
	dir, err := os.MkdirTemp("", "kitex-anyconn-ingress-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	if err := writeIngressCerts(dir); err != nil {
		return err
	}
	if err := e.kube(3*time.Minute, "delete", "namespace", traefikNS, "--ignore-not-found", "--wait=true", "--timeout=2m"); err != nil {
		return err
	}
	crds, err := gatewayCRDs()
	if err != nil {
		return err
	}
	if err := e.kube(2*time.Minute, "apply", "--server-side", "-f", crds); err != nil {
		return err
	}
	if err := e.kube(2*time.Minute, "wait", "--for=condition=Established", "crd/gateways.gateway.networking.k8s.io",
		"crd/httproutes.gateway.networking.k8s.io", "crd/gatewayclasses.gateway.networking.k8s.io", "--timeout=90s"); err != nil {
		return err
	}
	if err := e.cmdWith(2*time.Minute, nil, []byte(fmt.Sprintf(traefikManifest, traefikImage)), e.kubectl, "--context", e.context(), "apply", "-f", "-"); err != nil {
		return err
	}
	if err := e.kube(time.Minute, "-n", traefikNS, "create", "configmap", "ingress-ca", "--from-file=ca.crt="+filepath.Join(dir, "ca.crt")); err != nil {
		return err
	}
	if err := e.kube(time.Minute, "-n", x.ns, "create", "secret", "tls", "echo-e2e-tls",
		"--cert="+filepath.Join(dir, "tls.crt"), "--key="+filepath.Join(dir, "tls.key")); err != nil {
		return err
	}
	if err := e.kube(4*time.Minute, "-n", traefikNS, "rollout", "status", "deploy/traefik", "--timeout=3m"); err != nil {
		return err
	}
	return e.cmd(6*time.Minute, e.helm, "--kube-context", e.context(), "upgrade", release, "charts/kitex-anyconn", "-n", x.ns,
		"--reuse-values", "--wait", "--timeout", "5m",
		"--set", "echo.ingress.enabled=true",
		"--set", "echo.ingress.className="+ingressClass,
		"--set", "echo.ingress.host="+ingressHost,
		"--set", "echo.ingress.tls.enabled=true",
		"--set", "echo.ingress.tls.secretName=echo-e2e-tls",
		"--set", "echo.httpRoute.enabled=true",
		"--set-json", `echo.httpRoute.parentRefs=[{"name":"e2e","namespace":"`+traefikNS+`"}]`,
		"--set-json", `echo.httpRoute.hostnames=["`+routeHost+`"]`,
		"--set-json", `networkPolicy.ingressFrom=[{"namespaceSelector":{"matchLabels":{"kubernetes.io/metadata.name":"`+traefikNS+`"}}}]`)
}

// outsideCalls starts the callers outside the release and waits for
// *consecutiv successful calls on both ws:// and wss://.
func (e *env) outsideCalls(x *run) error {
	if err := e.startOutsideCallers(
		outsideCaller{"outside-ws", "Always", "ws://" + ingressHost + "/kitex", outsideInterval, "20s", "0"},
		outsideCaller{"outside-wss", "Always", "wss://" + ingressHost + "/kitex", outsideInterval, "20s", "0"},
		outsideCaller{"outside-idle", "Always", "ws://" + ingressHost + "/kitex", idleCallEvery, "0", "0"},
		outsideCaller{"outside-route", "Always", "ws://" + routeHost + "/kitex", outsideInterval, "20s", "0"},
	); err != nil {
		return err
	}
	if err := e.kube(3*time.Minute, "-n", traefikNS, "wait", "pod/outside-ws", "pod/outside-wss", "pod/outside-idle", "pod/outside-route",
		"--for=condition=Ready", "--timeout=2m"); err != nil {
		return err
	}
	for _, name := range []string{"outside-ws", "outside-wss", "outside-route"} {
		deadline := time.Now().Add(3 * time.Minute)
		for {
			calls, err := e.podCalls(name)
			if err != nil {
				return err
			}
			if n := trailingOKAny(calls); n >= *consecutiv {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("%s: no %d consecutive successful calls through the ingress within 3 min; last calls: %v", name, *consecutiv, tail(calls, 5))
			}
			time.Sleep(2 * time.Second)
		}
	}
	return nil
}

// reloadIngress changes the Ingress under the outside callers' load, three
// times 5 s apart, with a router priority that differs each time, so that
// the controller's configuration changes (Traefik skips an unchanged one).
// Traefik swaps its configuration without closing established connections:
// no call may fail.
func (e *env) reloadIngress(x *run) error {
	ing := release + "-echo"
	start := time.Now()
	for i := 1; i <= 3; i++ {
		if err := e.kube(time.Minute, "-n", x.ns, "annotate", "--overwrite", "ingress/"+ing,
			fmt.Sprintf("traefik.ingress.kubernetes.io/router.priority=%d", 100+i)); err != nil {
			return err
		}
		time.Sleep(5 * time.Second)
	}
	for _, name := range []string{"outside-ws", "outside-wss", "outside-route"} {
		calls, err := e.podCalls(name)
		if err != nil {
			return err
		}
		after := since(calls, start)
		r := e.ingressRow(name, calls)
		r.reloadFailed = countFailed(after)
		if r.reloadFailed > 0 || okCount(after) < 30 {
			return fmt.Errorf("%s: %d ok, %d failed while the Ingress changed: %v", name, okCount(after), r.reloadFailed, failedOnly(after))
		}
	}
	return nil
}

// deleteController deletes one of the two controller pods under the
// outside callers' load: at most the call in flight on each caller's
// connection at that moment may fail, and calls resume.
func (e *env) deleteController(x *run) error {
	pods, err := e.kubeOut("-n", traefikNS, "get", "pods", "-l", "app=traefik", "-o", "jsonpath={.items[0].metadata.name}")
	if err != nil {
		return err
	}
	deleted := time.Now()
	if err := e.kube(2*time.Minute, "-n", traefikNS, "delete", "pod", strings.TrimSpace(pods), "--wait=false"); err != nil {
		return err
	}
	time.Sleep(25 * time.Second) // the controller's grace period (10 s) and the window the calls are counted in
	for _, name := range []string{"outside-ws", "outside-wss", "outside-route"} {
		calls, err := e.podCalls(name)
		if err != nil {
			return err
		}
		r := e.ingressRow(name, calls)
		after := since(calls, deleted)
		r.ctrlDeleteFailed = countFailed(after)
		resume, okAfter := firstOKAfterFailure(after, deleted)
		r.ctrlDeleteResume = resume
		if okAfter < 20 {
			return fmt.Errorf("%s: only %d successful calls in the 25 s after deleting controller pod %s: %v", name, okAfter, pods, tail(after, 5))
		}
		if r.ctrlDeleteFailed > 1 {
			return fmt.Errorf("%s: %d calls failed after deleting controller pod %s; at most the one in flight may: %v", name, r.ctrlDeleteFailed, pods, failedOnly(after))
		}
	}
	return nil
}

// idleCaller checks the caller whose calls come less often than the
// controller's idle timeout, without pings: none may fail.
func (e *env) idleCaller(*run) error {
	deadline := time.Now().Add(2 * time.Minute)
	for {
		calls, err := e.podCalls("outside-idle")
		if err != nil {
			return err
		}
		r := e.ingressRow("outside-idle", calls)
		if r.failed > 0 {
			return fmt.Errorf("outside-idle: %d calls failed after the first success: %v", r.failed, failedOnly(calls))
		}
		if r.ok >= 8 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("outside-idle: only %d successful calls: %v", r.ok, tail(calls, 5))
		}
		time.Sleep(5 * time.Second)
	}
}

// passThrough measures the ingress's cost: 1000 calls back to back through
// it, then 1000 straight to echo's Service, from the same namespace.
func (e *env) passThrough(x *run) error {
	direct := fmt.Sprintf("ws://%s-echo.%s.svc.cluster.local:8888/kitex", release, x.ns)
	for _, p := range []struct{ name, url string }{{"bench-ingress", "ws://" + ingressHost + "/kitex"}, {"bench-direct", direct}} {
		if err := e.startOutsideCallers(outsideCaller{p.name, "Never", p.url, "1us", "20s", "1000"}); err != nil {
			return err
		}
		if err := e.kube(4*time.Minute, "-n", traefikNS, "wait", "pod/"+p.name, "--for=jsonpath={.status.phase}=Succeeded", "--timeout=3m"); err != nil {
			return err
		}
		calls, err := e.podCalls(p.name)
		if err != nil {
			return err
		}
		r := e.ingressRow(p.name, calls)
		r.sequential = true
		if len(calls) > 1 {
			r.callsPerSec = float64(len(calls)-1) / calls[len(calls)-1].ts.Sub(calls[0].ts).Seconds()
		}
		if r.failed > 0 || r.ok != 1000 {
			return fmt.Errorf("%s: %d ok, %d failed of 1000", p.name, r.ok, r.failed)
		}
	}
	return nil
}

func (e *env) ingressDown(x *run) error {
	for _, name := range []string{"outside-ws", "outside-wss", "outside-idle", "outside-route"} {
		calls, err := e.podCalls(name)
		if err != nil {
			return err
		}
		e.ingressRow(name, calls)
	}
	if err := e.kube(3*time.Minute, "delete", "namespace", traefikNS, "--wait=true", "--timeout=2m"); err != nil {
		return err
	}
	return e.kube(2*time.Minute, "delete", "gatewayclass", ingressClass, "--ignore-not-found")
}

// gatewayCRDs returns the folder of the Gateway API's standard CRDs, of the
// version the pinned Traefik speaks, from the Go module cache.
func gatewayCRDs() (string, error) {
	c := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "sigs.k8s.io/gateway-api")
	c.Dir = "tools/traefik"
	out, err := c.Output()
	if err != nil {
		return "", fmt.Errorf("the Gateway API module of tools/traefik: %w", err)
	}
	return filepath.Join(strings.TrimSpace(string(out)), "config", "crd", "standard"), nil
}

// outsideCaller is a caller pod outside the release: its name, restart
// policy, ECHO_ADDRESSES, CALL_INTERVAL, WS_PING_INTERVAL and CALL_COUNT.
type outsideCaller struct{ name, restart, url, every, ping, count string }

// startOutsideCallers applies the pods of callers, with the ingress's and
// the route's hosts resolving to the controller's Service.
func (e *env) startOutsideCallers(callers ...outsideCaller) error {
	ip, err := e.kubeOut("-n", traefikNS, "get", "service", "traefik", "-o", "jsonpath={.spec.clusterIP}")
	if err != nil {
		return err
	}
	tag, err := appVersion()
	if err != nil {
		return err
	}
	for _, c := range callers {
		pod := fmt.Sprintf(outsideCallerPod, c.name, c.restart, strings.TrimSpace(ip), ingressHost+", "+routeHost, tag, c.url, c.every, c.ping, c.count)
		if err := e.cmdWith(time.Minute, nil, []byte(pod), e.kubectl, "--context", e.context(), "apply", "-f", "-"); err != nil {
			return err
		}
	}
	return nil
}

// ingressRow fills (or refills) the summary row of pod name from its calls.
func (e *env) ingressRow(name string, calls []call) *ingressResult {
	var r *ingressResult
	for _, have := range ingressResults {
		if have.path == name {
			r = have
		}
	}
	if r == nil {
		r = &ingressResult{path: name}
		ingressResults = append(ingressResults, r)
	}
	r.ok, r.failed = 0, 0
	var lat []float64
	for _, c := range calls {
		switch {
		case c.ok:
			r.ok++
			lat = append(lat, c.latency)
		case c.failed && r.ok > 0:
			r.failed++
		}
	}
	r.p50, r.p99 = percentile(lat, 0.50), percentile(lat, 0.99)
	return r
}

// podCalls reads the calls a caller pod of the ingress namespace logged.
func (e *env) podCalls(pod string) ([]call, error) { return e.logCalls(traefikNS, pod) }

// trailingOKAny counts the successful calls at the end of the log.
func trailingOKAny(calls []call) int {
	n := 0
	for i := len(calls) - 1; i >= 0 && calls[i].ok; i-- {
		n++
	}
	return n
}

func printIngressSummary() {
	if len(ingressResults) == 0 {
		return
	}
	fmt.Println("\n| websocket through Traefik | calls ok | failed after the first success | p50 ms | p99 ms | sequential calls/s | failed while the Ingress changed | failed after a controller pod was deleted | calls succeeding again after |")
	fmt.Println("|---|---|---|---|---|---|---|---|---|")
	for _, r := range ingressResults {
		rate := "-"
		if r.sequential {
			rate = fmt.Sprintf("%.0f", r.callsPerSec)
		}
		fmt.Printf("| %s | %d | %d | %.2f | %.2f | %s | %d | %d | %s |\n", r.path, r.ok, r.failed, r.p50, r.p99, rate, r.reloadFailed, r.ctrlDeleteFailed, r.ctrlDeleteResume)
	}
}

// writeIngressCerts writes ca.crt, and tls.crt and tls.key for ingressHost
// signed by it, into dir.
func writeIngressCerts(dir string) error {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	now := time.Now()
	ca := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "kitex-anyconn e2e ingress CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, ca, ca, &caKey.PublicKey, caKey)
	if err != nil {
		return err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	leaf := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: ingressHost}, DNSNames: []string{ingressHost},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, leaf, ca, &key.PublicKey, caKey)
	if err != nil {
		return err
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	for name, block := range map[string]*pem.Block{
		"ca.crt":  {Type: "CERTIFICATE", Bytes: caDER},
		"tls.crt": {Type: "CERTIFICATE", Bytes: leafDER},
		"tls.key": {Type: "EC PRIVATE KEY", Bytes: keyDER},
	} {
		if err := os.WriteFile(filepath.Join(dir, name), pem.EncodeToMemory(block), 0o600); err != nil {
			return err
		}
	}
	return nil
}

// traefikManifest is the ingress controller: two replicas watching the
// Ingresses of class traefik-e2e, plain HTTP on port 80 and TLS on 443 of
// its Service, with idle and read timeouts of ingressIdle. Argument: image.
var traefikManifest = `apiVersion: v1
kind: Namespace
metadata:
  name: ` + traefikNS + `
---
apiVersion: v1
kind: ServiceAccount
metadata:
  name: traefik
  namespace: ` + traefikNS + `
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: traefik-e2e
rules:
  - apiGroups: [""]
    resources: [services, secrets, nodes]
    verbs: [get, list, watch]
  - apiGroups: [discovery.k8s.io]
    resources: [endpointslices]
    verbs: [get, list, watch]
  - apiGroups: [networking.k8s.io]
    resources: [ingresses, ingressclasses]
    verbs: [get, list, watch]
  - apiGroups: [networking.k8s.io]
    resources: [ingresses/status]
    verbs: [update]
  - apiGroups: [""]
    resources: [namespaces, configmaps]
    verbs: [get, list, watch]
  - apiGroups: [gateway.networking.k8s.io]
    resources: [gatewayclasses, gateways, httproutes, grpcroutes, referencegrants, backendtlspolicies]
    verbs: [get, list, watch]
  - apiGroups: [gateway.networking.k8s.io]
    resources: [gatewayclasses/status, gateways/status, httproutes/status, grpcroutes/status, backendtlspolicies/status]
    verbs: [update]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: traefik-e2e
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: traefik-e2e
subjects:
  - kind: ServiceAccount
    name: traefik
    namespace: ` + traefikNS + `
---
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata:
  name: ` + ingressClass + `
spec:
  controller: traefik.io/ingress-controller
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: traefik
  namespace: ` + traefikNS + `
spec:
  replicas: 2
  selector:
    matchLabels: {app: traefik}
  template:
    metadata:
      labels: {app: traefik}
    spec:
      serviceAccountName: traefik
      securityContext:
        runAsNonRoot: true
        runAsUser: 65532
        runAsGroup: 65532
        seccompProfile: {type: RuntimeDefault}
      containers:
        - name: traefik
          image: %s
          imagePullPolicy: Never
          args:
            - --providers.kubernetesingress.ingressclass=` + ingressClass + `
            - --providers.kubernetesgateway
            - --entryPoints.web.address=:8000
            - --entryPoints.websecure.address=:8443
            - --entryPoints.websecure.http.tls=true
            - --entryPoints.traefik.address=:8080
            - --entryPoints.web.transport.respondingTimeouts.idleTimeout=` + ingressIdle + `
            - --entryPoints.web.transport.respondingTimeouts.readTimeout=` + ingressIdle + `
            - --entryPoints.websecure.transport.respondingTimeouts.idleTimeout=` + ingressIdle + `
            - --entryPoints.websecure.transport.respondingTimeouts.readTimeout=` + ingressIdle + `
            - --ping=true
            - --log.level=INFO
            - --global.checkNewVersion=false
            - --global.sendAnonymousUsage=false
          ports:
            - {name: web, containerPort: 8000}
            - {name: websecure, containerPort: 8443}
            - {name: admin, containerPort: 8080}
          readinessProbe:
            httpGet: {path: /ping, port: admin}
            periodSeconds: 2
          securityContext:
            allowPrivilegeEscalation: false
            readOnlyRootFilesystem: true
            capabilities: {drop: [ALL]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata:
  name: ` + ingressClass + `
spec:
  controllerName: traefik.io/gateway-controller
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: e2e
  namespace: ` + traefikNS + `
spec:
  gatewayClassName: ` + ingressClass + `
  listeners:
    - name: web
      protocol: HTTP
      port: 8000
      allowedRoutes:
        namespaces: {from: All}
---
apiVersion: v1
kind: Service
metadata:
  name: traefik
  namespace: ` + traefikNS + `
spec:
  selector: {app: traefik}
  ports:
    - {name: web, port: 80, targetPort: web}
    - {name: websecure, port: 443, targetPort: websecure}
`

// outsideCallerPod is a caller outside the release: no etcd, only the
// URL, the ingress host resolved to the controller's Service. Arguments:
// name, restart policy, controller IP, host, image tag, ECHO_ADDRESSES,
// CALL_INTERVAL, WS_PING_INTERVAL, CALL_COUNT.
const outsideCallerPod = `apiVersion: v1
kind: Pod
metadata:
  name: %s
  namespace: ` + traefikNS + `
spec:
  restartPolicy: %s
  automountServiceAccountToken: false
  enableServiceLinks: false
  hostAliases:
    - ip: %s
      hostnames: [%s]
  securityContext:
    runAsNonRoot: true
    runAsUser: 65532
    runAsGroup: 65532
    seccompProfile: {type: RuntimeDefault}
  containers:
    - name: caller
      image: kitex-anyconn/caller:%s
      imagePullPolicy: Never
      env:
        - {name: TRANSPORT, value: websocket}
        - {name: ECHO_ADDRESSES, value: "%s"}
        - {name: TLS_CA_FILE, value: /ca/ca.crt}
        - {name: CALL_INTERVAL, value: "%s"}
        - {name: WS_PING_INTERVAL, value: "%s"}
        - {name: CALL_COUNT, value: "%s"}
      volumeMounts:
        - {name: ca, mountPath: /ca, readOnly: true}
      securityContext:
        allowPrivilegeEscalation: false
        readOnlyRootFilesystem: true
        capabilities: {drop: [ALL]}
  volumes:
    - name: ca
      configMap: {name: ingress-ca}
`
