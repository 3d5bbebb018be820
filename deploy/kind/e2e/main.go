// Command e2e runs every transport end to end in a kind cluster: `make e2e-kind`.
//
// It brings up the cluster (deploy/kind/cluster.sh up), builds the project's
// images and loads them into it, then for each transport installs the chart,
// waits for the rollout, reads the caller's log until 20 consecutive calls on
// that transport reached echo, runs `helm test`, deletes an echo pod and
// restarts echo under load (no call may fail), and for yamux checks that echo
// opens no RPC port and runs a rogue pod (deploy/kind/e2e/rogue) that writes a
// fake tunnel gateway into etcd and plays it to the echo agents that dial it:
// they must reveal no token and accept no call, and no call of the caller may
// fail meanwhile. A Prometheus built from source (prometheus.go) scrapes
// every release: echo's and caller's targets must be up and every query of
// the chart's Grafana dashboard return data, and with the first transport the
// chart's caller error alert must fire with echo scaled to 0 and clear once
// it is back. With yamux it then runs the tunnel across two clusters
// (edge.go): a second kind cluster on its own docker network, whose echo
// pods get out only through an HTTP CONNECT proxy, to two callers whose
// gateways share one NodePort. It prints a summary table and, on failure,
// the pods, events and logs. Finally `tilt ci` deploys the project's
// Tiltfile in the same cluster. The clusters are deleted at the end unless
// -keep is given.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/anyconn/kitex-anyconn/transport"
)

var (
	keep        = flag.Bool("keep", false, "keep the cluster (and the last release) for debugging")
	only        = flag.String("transports", allKinds(), "transports to run, comma-separated")
	skipTilt    = flag.Bool("skip-tilt", false, "skip the `tilt ci` step")
	skipIngress = flag.Bool("skip-ingress", false, "skip the websocket run's steps through the Traefik ingress controller")
	skipEdge    = flag.Bool("skip-edge", false, "skip the yamux run across two clusters (the edge site behind an egress proxy)")
	cluster     = flag.String("cluster", "kitex-anyconn", "kind cluster name")
	namespace   = flag.String("namespace", "kitex-e2e", "namespace of the releases")
	consecutiv  = flag.Int("calls", 20, "consecutive successful calls required per transport")
)

const release = "e2e"

// allKinds is every transport of the library, comma-separated.
func allKinds() string {
	var names []string
	for _, k := range transport.Kinds() {
		names = append(names, string(k))
	}
	return strings.Join(names, ",")
}

func main() {
	flag.Parse()
	e := &env{start: time.Now()}
	err := e.run()
	if err != nil {
		fmt.Fprintf(os.Stderr, "\ne2e-kind: FAILED: %v\n", err)
		e.dump()
	}
	e.printSummary()
	if !*keep {
		if derr := e.cmd(10*time.Minute, "deploy/kind/cluster.sh", "down"); derr != nil {
			fmt.Fprintln(os.Stderr, "e2e-kind: deleting the cluster:", derr)
		}
	} else {
		fmt.Printf("e2e-kind: cluster kept: kubectl --context %s get pods -A\n", e.context())
	}
	fmt.Printf("e2e-kind: %s in %s\n", map[bool]string{true: "PASSED", false: "FAILED"}[err == nil], time.Since(e.start).Round(time.Second))
	if err != nil {
		os.Exit(1)
	}
}

type result struct {
	transport        string
	ok, failed       int
	startupFailed    int // before the first success: echo not registered yet
	p50, p99         float64
	firstSuccess     time.Duration
	podDeleteFailed  int
	podDeleteResume  time.Duration
	restartFailed    int
	helmTest, noPort string
	rogue            string // what the rogue pod got (yamux)
}

type env struct {
	start   time.Time
	results []*result
	kubectl string
	helm    string
	steps   []string
}

func (e *env) context() string { return "kind-" + *cluster }

func (e *env) step(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	e.steps = append(e.steps, msg)
	fmt.Printf("\n== %s  (+%s)\n", msg, time.Since(e.start).Round(time.Second))
}

func (e *env) run() error {
	e.helm = abs("bin/helm")
	e.step("cluster up")
	if err := e.cmd(60*time.Minute, "deploy/kind/cluster.sh", "up"); err != nil {
		return err
	}
	e.kubectl = abs(filepath.Join("deploy/kind/.cache/bin/k8s-v1.34.4/kubectl"))
	if _, err := os.Stat(e.kubectl); err != nil {
		if e.kubectl, err = exec.LookPath("kubectl"); err != nil {
			return errors.New("no kubectl: neither deploy/kind/.cache/bin nor PATH has one")
		}
	}
	e.step("images")
	if err := e.cmd(20*time.Minute, "make", "images", "tools-helm"); err != nil {
		return err
	}
	tag, err := appVersion()
	if err != nil {
		return err
	}
	var images []string
	for _, c := range []string{"echo", "caller", "etcd"} {
		images = append(images, "kitex-anyconn/"+c+":"+tag)
	}
	if err := e.cmd(10*time.Minute, abs("bin/kind"), append([]string{"load", "docker-image", "--name", *cluster}, images...)...); err != nil {
		return err
	}
	if wants("yamux") {
		if err := e.buildRogue(); err != nil {
			return err
		}
	}
	if wants("websocket") && !*skipIngress {
		if err := e.buildTraefik(); err != nil {
			return err
		}
	}
	if err := e.startPrometheus(); err != nil {
		return err
	}
	if err := e.validateManifests(); err != nil {
		return err
	}
	for _, tr := range strings.Split(*only, ",") {
		if err := e.transport(strings.TrimSpace(tr)); err != nil {
			return fmt.Errorf("%s: %w", tr, err)
		}
	}
	e.stopPrometheus()
	if wants("yamux") && !*skipEdge {
		if err := e.edge(); err != nil {
			return err
		}
	}
	if !*skipTilt {
		if err := e.tilt(); err != nil {
			return fmt.Errorf("tilt ci: %w", err)
		}
	}
	return nil
}

// validateManifests renders the chart in its main variants and has the API
// server validate every object (kubectl apply --dry-run=server), so a field
// the cluster's schema rejects fails here, before any install.
func (e *env) validateManifests() error {
	e.step("chart: server-side dry run of every variant")
	ns := *namespace + "-validate"
	// A namespace left by an interrupted run is deleted first.
	if err := e.kube(3*time.Minute, "delete", "namespace", ns, "--ignore-not-found", "--wait=true", "--timeout=2m"); err != nil {
		return err
	}
	if err := e.kube(time.Minute, "create", "namespace", ns); err != nil {
		return err
	}
	// Admission checks that a pod's service account exists, which a dry run
	// of the chart's own ServiceAccount does not create.
	if err := e.kube(time.Minute, "-n", ns, "create", "serviceaccount", release); err != nil {
		return err
	}
	variants := [][]string{
		{"transport=netpoll", "networkPolicy.enabled=true"},
		{"transport=gonet", "echo.pdb.minAvailable=1"},
		{"transport=websocket", "websocket.tls.enabled=true", "websocket.tls.existingSecret=ws-tls", "websocket.allowedOrigins={*}"},
		{"transport=yamux", "tunnel.tls.existingSecret=gw", "tunnel.tls.mutual=true", "tunnel.tls.clientSecret=agent", "tunnel.agentTokens.existingSecret=agents"},
		{"transport=yamux", "tunnel.tls.enabled=false", "networkPolicy.enabled=false"},
		{"etcd.enabled=false", "externalEtcd.endpoints={https://etcd.example:2379}", "externalEtcd.tls.enabled=true",
			"externalEtcd.tls.existingSecret=etcd-tls", "externalEtcd.auth.username=u", "externalEtcd.auth.existingSecret=etcd-pw"},
		{"transport=websocket", "networkPolicy.enabled=true", "echo.ingress.enabled=true", "echo.ingress.host=echo.example.com",
			"echo.ingress.tls.enabled=true", "echo.ingress.tls.secretName=echo-tls", "echo.websocket.pingInterval=30s"},
		{"transport=websocket", "echo.enabled=false", "etcd.enabled=false", "caller.echoAddresses={wss://echo.example.com/kitex}",
			"caller.websocket.headers={X-Tenant: e2e}", "caller.websocket.headersSecret.name=ws-headers", "caller.proxy.httpsProxy=http://proxy.example:3128"},
		{"transport=yamux", "networkPolicy.enabled=true", "tunnel.websocket.enabled=true",
			"tunnel.service.enabled=true", "tunnel.service.type=NodePort",
			"tunnel.service.nodePorts.tunnel=30917", "tunnel.service.nodePorts.websocket=30918",
			"tunnel.ingress.enabled=true", "tunnel.ingress.className=traefik", "tunnel.ingress.host=tunnel.example.com",
			"tunnel.ingress.tls.enabled=true", "tunnel.ingress.tls.secretName=tunnel-tls",
			"tunnel.publicAddresses={203.0.113.10:30917,ws://203.0.113.10:30918/tunnel}",
			"networkPolicy.tunnelFrom[0].ipBlock.cidr=172.16.0.0/12"},
		{"transport=yamux", "networkPolicy.enabled=true", "caller.enabled=false", "etcd.enabled=false",
			"echo.tunnel.gateways={wss://tunnel.example.com/tunnel,203.0.113.10:30917}",
			"tunnel.token.existingSecret=tunnel-token", "echo.tunnel.wsCA.existingSecret=tunnel-ca",
			"echo.proxy.httpsProxy=http://proxy.example:3128", "echo.proxy.noProxy=.cluster.local",
			"networkPolicy.echoGatewaysTo[0].ipBlock.cidr=203.0.113.0/24"},
	}
	for _, v := range variants {
		args := []string{"template", release, "charts/kitex-anyconn", "-n", ns}
		for _, s := range v {
			args = append(args, "--set", s)
		}
		out, err := exec.Command(e.helm, args...).Output()
		if err != nil {
			return fmt.Errorf("helm template %v: %w", v, err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		c := exec.CommandContext(ctx, e.kubectl, "--context", e.context(), "-n", ns, "apply", "--dry-run=server", "-f", "-")
		c.Stdin = bytes.NewReader(out)
		res, err := c.CombinedOutput()
		cancel()
		if err != nil {
			return fmt.Errorf("the API server rejects the chart with %v: %w\n%s", v, err, res)
		}
		fmt.Printf("server-side dry run OK: %v (%d objects)\n", v, strings.Count(string(res), "(server dry run)"))
	}
	return e.kube(3*time.Minute, "delete", "namespace", ns, "--wait=true", "--timeout=2m")
}

// run is one transport's release under test: its namespace, its row of
// the summary, and when it was installed.
type run struct {
	tr, ns    string
	r         *result
	installed time.Time
}

// step is one check of a run.
type step struct {
	name string
	do   func(*run) error
}

// transport installs the chart with one transport and checks it, one step
// after the other; the first step that fails ends the run.
func (e *env) transport(tr string) error {
	r := &result{transport: tr, helmTest: "-", noPort: "n/a", rogue: "n/a"}
	e.results = append(e.results, r)
	x := &run{tr: tr, ns: *namespace + "-" + tr, r: r}
	steps := []step{
		{"helm install", e.install},
		{fmt.Sprintf("%d consecutive calls that reached echo", *consecutiv), e.consecutiveCalls},
		{"helm test", e.helmTest},
		{"delete an echo pod", e.deleteEchoPod},
		{"rolling restart of echo under load", e.rollingRestart},
	}
	if tr == "yamux" {
		steps = append(steps,
			step{"echo accepts no inbound RPC connection", e.noInboundPort},
			step{"a rogue pod in the cluster writes a fake gateway into etcd", e.rogueStep})
	}
	if tr == "websocket" && !*skipIngress {
		steps = append(steps, e.ingressSteps()...)
	}
	steps = append(steps, step{"every call since the first success", e.tally})
	steps = append(steps, e.promSteps(tr)...)
	for _, st := range steps {
		e.step("%s: %s", tr, st.name)
		if err := st.do(x); err != nil {
			return err
		}
	}
	if !*keep || tr != lastTransport() {
		e.step("%s: uninstall", tr)
		return e.uninstall(x)
	}
	return nil
}

// install installs the release and waits for its rollout.
func (e *env) install(x *run) error {
	x.installed = time.Now()
	args := []string{"--kube-context", e.context(), "upgrade", "--install", release,
		"charts/kitex-anyconn", "-n", x.ns, "--create-namespace", "--wait", "--timeout", "5m",
		"--set", "transport=" + x.tr, "--set", "caller.callInterval=250ms"}
	if err := e.cmd(8*time.Minute, e.helm, append(args, promInstallArgs()...)...); err != nil {
		return err
	}
	return e.kube(5*time.Minute, "-n", x.ns, "rollout", "status", "deploy/"+release+"-echo", "deploy/"+release+"-caller", "--timeout=4m")
}

// consecutiveCalls waits for the caller's log to show *consecutiv calls in
// a row on the transport that reached echo pods, and echo's metrics to
// count them.
func (e *env) consecutiveCalls(x *run) error {
	echoes, err := e.echoTargets(x.ns, x.tr)
	if err != nil {
		return err
	}
	var calls []call
	deadline := time.Now().Add(2 * time.Minute)
	for {
		if calls, err = e.callerLog(x.ns); err != nil {
			return err
		}
		if run := trailingOK(calls, x.tr, echoes); run >= *consecutiv {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no %d consecutive successful %s calls to echo within 2 min; last calls: %v", *consecutiv, x.tr, tail(calls, 5))
		}
		time.Sleep(2 * time.Second)
	}
	for _, c := range calls {
		if c.ok {
			x.r.firstSuccess = c.ts.Sub(x.installed).Round(100 * time.Millisecond)
			break
		}
	}
	if n, err := e.echoRequests(x.ns); err != nil {
		return err
	} else if n == 0 {
		return errors.New("echo's metrics count no request")
	}
	return nil
}

// helmTest runs the chart's test pod.
func (e *env) helmTest(x *run) error {
	if err := e.cmd(4*time.Minute, e.helm, "--kube-context", e.context(), "test", release, "-n", x.ns, "--timeout", "3m", "--logs"); err != nil {
		x.r.helmTest = "failed"
		return err
	}
	x.r.helmTest = "passed"
	return nil
}

// deleteEchoPod deletes one echo pod: no call may fail, and calls go on.
func (e *env) deleteEchoPod(x *run) error {
	pods, err := e.pods(x.ns, "echo")
	if err != nil {
		return err
	}
	deleted := time.Now()
	if err := e.kube(2*time.Minute, "-n", x.ns, "delete", "pod", pods[0], "--wait=false"); err != nil {
		return err
	}
	time.Sleep(15 * time.Second) // the window the calls are counted in
	calls, err := e.callerLog(x.ns)
	if err != nil {
		return err
	}
	after := since(calls, deleted)
	x.r.podDeleteFailed = countFailed(after)
	resume, okAfter := firstOKAfterFailure(after, deleted)
	x.r.podDeleteResume = resume
	if okAfter < 10 {
		return fmt.Errorf("after deleting %s only %d successful calls in 15 s: %v", pods[0], okAfter, tail(after, 5))
	}
	if x.r.podDeleteFailed > 0 {
		return fmt.Errorf("%d calls failed after deleting echo pod %s (graceful deletion must lose none): %v", x.r.podDeleteFailed, pods[0], failedOnly(after))
	}
	return nil
}

// rollingRestart restarts echo under the caller's load: no call may fail.
func (e *env) rollingRestart(x *run) error {
	restarted := time.Now()
	if err := e.kube(time.Minute, "-n", x.ns, "rollout", "restart", "deploy/"+release+"-echo"); err != nil {
		return err
	}
	if err := e.kube(5*time.Minute, "-n", x.ns, "rollout", "status", "deploy/"+release+"-echo", "--timeout=4m"); err != nil {
		return err
	}
	time.Sleep(10 * time.Second) // old pods drain (DRAIN_DELAY) after the rollout reports done
	calls, err := e.callerLog(x.ns)
	if err != nil {
		return err
	}
	during := since(calls, restarted)
	x.r.restartFailed = countFailed(during)
	if x.r.restartFailed > 0 {
		return fmt.Errorf("%d of %d calls failed during the rolling restart: %v", x.r.restartFailed, len(during), failedOnly(during))
	}
	if okCount(during) < 10 {
		return fmt.Errorf("only %d successful calls during the rolling restart", okCount(during))
	}
	return nil
}

// noInboundPort checks that a yamux echo accepts no RPC connection.
func (e *env) noInboundPort(x *run) error {
	if err := e.noInboundRPC(x.ns); err != nil {
		x.r.noPort = "FAILED"
		return err
	}
	x.r.noPort = "verified"
	return nil
}

// rogueStep runs the rogue pod (see rogue).
func (e *env) rogueStep(x *run) error {
	var err error
	x.r.rogue, err = e.rogue(x.ns)
	return err
}

// tally counts every call of the run: none may fail after the first
// success; latencies make the summary's percentiles.
func (e *env) tally(x *run) error {
	all, err := e.callerLog(x.ns)
	if err != nil {
		return err
	}
	var lat []float64
	for _, c := range all {
		switch {
		case c.ok:
			x.r.ok++
			lat = append(lat, c.latency)
		case c.failed && x.r.ok == 0:
			x.r.startupFailed++
		case c.failed:
			x.r.failed++
		}
	}
	if x.r.failed > 0 {
		return fmt.Errorf("%d calls failed after the first success: %v", x.r.failed, failedOnly(all))
	}
	x.r.p50, x.r.p99 = percentile(lat, 0.50), percentile(lat, 0.99)
	return nil
}

// uninstall removes the release and its namespace.
func (e *env) uninstall(x *run) error {
	if err := e.cmd(3*time.Minute, e.helm, "--kube-context", e.context(), "uninstall", release, "-n", x.ns, "--wait", "--timeout", "2m"); err != nil {
		return err
	}
	return e.kube(3*time.Minute, "delete", "namespace", x.ns, "--wait=true", "--timeout=2m")
}

// wants reports whether transport tr is among those to run.
func wants(tr string) bool {
	for _, t := range strings.Split(*only, ",") {
		if strings.TrimSpace(t) == tr {
			return true
		}
	}
	return false
}

func lastTransport() string {
	parts := strings.Split(*only, ",")
	return strings.TrimSpace(parts[len(parts)-1])
}

// echoTargets returns what the caller's log names as target when a call
// reaches an echo pod of the release: pod IP:port, or with yamux the pod name.
func (e *env) echoTargets(ns, tr string) (map[string]bool, error) {
	out, err := e.kubeOut("-n", ns, "get", "pods", "-l", "app.kubernetes.io/component=echo",
		"-o", `jsonpath={range .items[*]}{.metadata.name} {.status.podIP}{"\n"}{end}`)
	if err != nil {
		return nil, err
	}
	targets := map[string]bool{}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		f := strings.Fields(line)
		if len(f) != 2 {
			continue
		}
		if tr == "yamux" {
			targets[f[0]] = true
		} else {
			targets[net.JoinHostPort(f[1], "8888")] = true
		}
	}
	if len(targets) == 0 {
		return nil, errors.New("no echo pod found")
	}
	return targets, nil
}

// pods returns the running pods of component that are not terminating (a
// pod that a rollout is replacing stays Running until it exits).
func (e *env) pods(ns, component string) ([]string, error) {
	return e.podsAt(e.context(), ns, component)
}

// podsAt is pods in the cluster of context kctx.
func (e *env) podsAt(kctx, ns, component string) ([]string, error) {
	out, err := e.kubeOutAt(kctx, "-n", ns, "get", "pods", "-l", "app.kubernetes.io/component="+component,
		"--field-selector=status.phase=Running",
		"-o", `jsonpath={range .items[*]}{.metadata.name} {.metadata.deletionTimestamp}{"\n"}{end}`)
	if err != nil {
		return nil, err
	}
	var pods []string
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if f := strings.Fields(line); len(f) == 1 {
			pods = append(pods, f[0])
		}
	}
	if len(pods) == 0 {
		return nil, fmt.Errorf("no running %s pod", component)
	}
	return pods, nil
}

// echoRequests sums echo_requests_total over the echo pods, read through the
// API server's pod proxy (the images have no shell).
func (e *env) echoRequests(ns string) (float64, error) {
	pods, err := e.pods(ns, "echo")
	if err != nil {
		return 0, err
	}
	var sum float64
	for _, p := range pods {
		out, err := e.kubeOut("get", "--raw", fmt.Sprintf("/api/v1/namespaces/%s/pods/%s:9090/proxy/metrics", ns, p))
		if err != nil {
			return 0, err
		}
		for _, line := range strings.Split(out, "\n") {
			if strings.HasPrefix(line, "echo_requests_total") {
				f := strings.Fields(line)
				v, _ := strconv.ParseFloat(f[len(f)-1], 64)
				sum += v
			}
		}
	}
	return sum, nil
}

// noInboundRPC checks that no echo pod declares or listens on an RPC port:
// the pod spec names only the admin port, and a connection forwarded to port
// 8888 of the pod is refused.
func (e *env) noInboundRPC(ns string) error {
	pods, err := e.pods(ns, "echo")
	if err != nil {
		return err
	}
	ports, err := e.kubeOut("-n", ns, "get", "pod", pods[0], "-o", "jsonpath={.spec.containers[*].ports[*].containerPort}")
	if err != nil {
		return err
	}
	if strings.TrimSpace(ports) != "9090" {
		return fmt.Errorf("echo pod %s declares ports %q, want only the admin port 9090", pods[0], ports)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	local := l.Addr().(*net.TCPAddr).Port
	l.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pf := exec.CommandContext(ctx, e.kubectl, "--context", e.context(), "-n", ns, "port-forward", "pod/"+pods[0], fmt.Sprintf("%d:8888", local))
	var pfOut bytes.Buffer
	pf.Stdout, pf.Stderr = &pfOut, &pfOut
	if err := pf.Start(); err != nil {
		return err
	}
	defer func() { cancel(); _ = pf.Wait() }()
	addr := fmt.Sprintf("127.0.0.1:%d", local)
	for i := 0; i < 50 && !strings.Contains(pfOut.String(), "Forwarding from"); i++ {
		time.Sleep(200 * time.Millisecond)
	}
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return fmt.Errorf("port-forward did not start: %v\n%s", err, pfOut.String())
	}
	// The forward accepts locally, then fails to connect inside the pod and
	// closes this end; a listening echo would answer a framed call instead.
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	_, _ = c.Write([]byte{0, 0, 0, 0})
	_, rerr := c.Read(make([]byte, 1))
	c.Close()
	time.Sleep(500 * time.Millisecond)
	if rerr == nil || !strings.Contains(pfOut.String(), "refused") {
		return fmt.Errorf("port 8888 of echo pod %s did not refuse the connection (read: %v):\n%s", pods[0], rerr, pfOut.String())
	}
	return nil
}

// The rogue pod (deploy/kind/e2e/rogue) plays an attacker inside the cluster.
const (
	rogueImage    = "kitex-anyconn/rogue:e2e"
	rogueDuration = 40 * time.Second
)

// buildRogue builds the rogue pod's image, a static binary FROM scratch (no
// image is pulled), and loads it into the cluster.
func (e *env) buildRogue() error {
	e.step("yamux: build the rogue pod's image")
	return e.scratchImage(rogueImage, "rogue", func(out string) error {
		return e.cmdWith(5*time.Minute, []string{"CGO_ENABLED=0", "GOOS=linux"}, nil,
			"go", "build", "-trimpath", "-o", out, "./deploy/kind/e2e/rogue")
	})
}

// scratchImage builds image FROM scratch around the one binary that put
// writes to the path it is given (run as /<name>, user 65532), and loads it
// into the cluster.
func (e *env) scratchImage(image, name string, put func(out string) error) error {
	dir, err := os.MkdirTemp("", "kitex-anyconn-image-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	if err := put(filepath.Join(dir, name)); err != nil {
		return err
	}
	dockerfile := fmt.Sprintf("FROM scratch\nCOPY %s /%s\nUSER 65532:65532\nENTRYPOINT [\"/%s\"]\n", name, name, name)
	if err := os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte(dockerfile), 0o644); err != nil {
		return err
	}
	if err := e.cmdWith(5*time.Minute, []string{"DOCKER_BUILDKIT=0"}, nil, "docker", "build", "-q", "-t", image, dir); err != nil {
		return err
	}
	return e.cmd(5*time.Minute, abs("bin/kind"), "load", "docker-image", "--name", *cluster, image)
}

// roguePod is a bare pod without the chart's labels, so that none of the
// chart's NetworkPolicies lets it in anywhere; it passes restricted pod
// security. Arguments: image, release, release, duration.
const roguePod = `apiVersion: v1
kind: Pod
metadata:
  name: rogue
spec:
  restartPolicy: Never
  automountServiceAccountToken: false
  enableServiceLinks: false
  securityContext:
    runAsNonRoot: true
    runAsUser: 65532
    runAsGroup: 65532
    seccompProfile:
      type: RuntimeDefault
  containers:
    - name: rogue
      image: %s
      imagePullPolicy: Never
      env:
        - name: ETCD_ENDPOINTS
          value: %s-etcd:2379
        - name: SERVICE
          value: %s-echo-tunnel
        - name: DURATION
          value: %s
        - name: POD_IP
          valueFrom:
            fieldRef:
              fieldPath: status.podIP
      securityContext:
        allowPrivilegeEscalation: false
        readOnlyRootFilesystem: true
        capabilities:
          drop: ["ALL"]
`

// rogueReport is the rogue pod's JSON line.
type rogueReport struct {
	EtcdWrite      string `json:"etcd_write"`
	Connections    int    `json:"connections"`
	BytesReceived  int    `json:"bytes_received"`
	ReceivedSample string `json:"received_sample"` // %q of the first 200 bytes
	ReceivedB64    string `json:"received_b64"`    // the first 4 KiB
	TLSConnections int    `json:"tls_connections"`
	StreamsOpened  int    `json:"streams_opened"`
	Replies        int    `json:"replies"`
}

// rogue runs the rogue pod in ns while the caller keeps calling: it writes
// itself into etcd as a tunnel gateway and plays one to the echo agents that
// dial it. Where the chart's NetworkPolicies are enforced the write times out;
// where they are not (this cluster's CNI) the agents dial it. Either way it
// must see no token and have no stream accepted, and no call of the caller
// may fail. It returns the summary for the table.
func (e *env) rogue(ns string) (string, error) {
	tokens, err := e.tunnelTokens(ns)
	if err != nil {
		return "FAILED", err
	}
	if err := e.kube(2*time.Minute, "-n", ns, "delete", "pod", "rogue", "--ignore-not-found", "--wait=true"); err != nil {
		return "FAILED", err
	}
	started := time.Now()
	manifest := fmt.Sprintf(roguePod, rogueImage, release, release, rogueDuration)
	if err := e.cmdWith(time.Minute, nil, []byte(manifest), e.kubectl, "--context", e.context(), "-n", ns, "apply", "-f", "-"); err != nil {
		return "FAILED", err
	}
	wait := rogueDuration + time.Minute
	deadline := time.Now().Add(wait)
	phase := ""
	for phase != "Succeeded" && phase != "Failed" {
		if time.Now().After(deadline) {
			state, _ := e.kubeOut("-n", ns, "get", "pod", "rogue", "-o", "jsonpath={.status.containerStatuses[*].state}")
			return "FAILED", fmt.Errorf("the rogue pod is still %q %s after it was created: %s", phase, wait, state)
		}
		time.Sleep(2 * time.Second)
		if phase, err = e.kubeOut("-n", ns, "get", "pod", "rogue", "-o", "jsonpath={.status.phase}"); err != nil {
			return "FAILED", err
		}
	}
	logs, err := e.kubeOut("-n", ns, "logs", "pod/rogue")
	if err != nil {
		return "FAILED", err
	}
	if phase == "Failed" {
		return "FAILED", fmt.Errorf("the rogue pod failed; its log:\n%s", logs)
	}
	rep, err := parseRogue(logs)
	if err != nil {
		return "FAILED", fmt.Errorf("%w; its log:\n%s", err, logs)
	}
	fmt.Printf("rogue pod saw: etcd write %s; %d connections (%d over TLS), %d bytes received: %s; %d streams opened, %d replies\n",
		rep.EtcdWrite, rep.Connections, rep.TLSConnections, rep.BytesReceived, rep.ReceivedSample, rep.StreamsOpened, rep.Replies)

	if rep.StreamsOpened > 0 || rep.Replies > 0 {
		return "FAILED", fmt.Errorf("echo agents accepted %d streams from the rogue's fake gateway and answered on %d", rep.StreamsOpened, rep.Replies)
	}
	if err := noToken(rep, tokens); err != nil {
		return "FAILED", err
	}
	calls, err := e.callerLog(ns)
	if err != nil {
		return "FAILED", err
	}
	during := since(calls, started)
	if n := countFailed(during); n > 0 {
		return "FAILED", fmt.Errorf("%d of %d calls failed while the rogue pod ran: %v", n, len(during), failedOnly(during))
	}
	if okCount(during) < 10 {
		return "FAILED", fmt.Errorf("only %d successful calls while the rogue pod ran", okCount(during))
	}

	write := "ok"
	switch {
	case rep.EtcdWrite != "ok":
		write = "failed"
		fmt.Printf("rogue: the etcd write failed (%s): the NetworkPolicies keep a stranger out of etcd\n", rep.EtcdWrite)
	case rep.Connections == 0:
		fmt.Println("rogue: the fake gateway was written into etcd (NetworkPolicies not enforced here), but no agent dialed it")
	default:
		fmt.Printf("rogue: the fake gateway was written into etcd (this cluster's CNI does not enforce NetworkPolicies); "+
			"%d agent connections reached it, revealed no token and accepted no stream\n", rep.Connections)
	}
	if out, err := e.kubeOut("-n", ns, "logs", "-l", "app.kubernetes.io/component=echo", "--tail=-1"); err == nil {
		fmt.Printf("rogue: echo logged %d refusals of a gateway that did not prove the token\n",
			strings.Count(out, "did not prove it holds the token"))
	}
	return fmt.Sprintf("no token, 0 calls (etcd write %s, %d conns, %.1f KiB seen)", write, rep.Connections, float64(rep.BytesReceived)/1024), nil
}

// tunnelTokens returns the tokens of the release's tunnel Secret (one per line).
func (e *env) tunnelTokens(ns string) ([]string, error) {
	name := release + "-tunnel-token"
	out, err := e.kubeOut("-n", ns, "get", "secret", name, "-o", "jsonpath={.data.token}")
	if err != nil {
		return nil, err
	}
	b, err := base64.StdEncoding.DecodeString(strings.TrimSpace(out))
	if err != nil {
		return nil, fmt.Errorf("secret %s: %w", name, err)
	}
	var tokens []string
	for _, l := range strings.Split(string(b), "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
			tokens = append(tokens, l)
		}
	}
	if len(tokens) == 0 {
		return nil, fmt.Errorf("secret %s holds no token", name)
	}
	return tokens, nil
}

// parseRogue finds the rogue pod's report, the last JSON line of its log.
func parseRogue(logs string) (rogueReport, error) {
	lines := strings.Split(strings.TrimSpace(logs), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		var rep rogueReport
		if json.Unmarshal([]byte(lines[i]), &rep) == nil && rep.EtcdWrite != "" {
			return rep, nil
		}
	}
	return rogueReport{}, errors.New("the rogue pod printed no report")
}

// noToken checks that no token appears in what the rogue received: in its
// sample, quoted or not, or in everything it kept.
func noToken(rep rogueReport, tokens []string) error {
	sample, err := strconv.Unquote(rep.ReceivedSample)
	if err != nil {
		return fmt.Errorf("the rogue's received_sample is not a quoted string: %w", err)
	}
	all, err := base64.StdEncoding.DecodeString(rep.ReceivedB64)
	if err != nil {
		return fmt.Errorf("the rogue's received_b64: %w", err)
	}
	for _, t := range tokens {
		if strings.Contains(rep.ReceivedSample, t) || strings.Contains(sample, t) || bytes.Contains(all, []byte(t)) {
			return errors.New("the tunnel token reached the rogue's fake gateway")
		}
	}
	return nil
}

// tilt runs the project's Tiltfile in the cluster with `tilt ci`.
func (e *env) tilt() error {
	e.step("tilt: build the pinned Tilt")
	if err := e.cmd(45*time.Minute, "make", "bin/tilt"); err != nil {
		return err
	}
	path := strings.Join([]string{abs("bin"), filepath.Dir(e.kubectl), os.Getenv("PATH")}, string(os.PathListSeparator))
	run := func(timeout time.Duration, args ...string) error {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		c := exec.CommandContext(ctx, abs("bin/tilt"), args...)
		// Tilt deploys to the current context: give it the cluster's own
		// kubeconfig (written by cluster.sh) instead of switching the user's.
		c.Env = append(os.Environ(), "PATH="+path, "KUBECONFIG="+abs("deploy/kind/.cache/kubeconfig"))
		c.Stdout, c.Stderr = os.Stdout, os.Stderr
		return c.Run()
	}
	// This Tilt has a placeholder web UI (tools/tilt/build.sh): serve it as
	// built. The default transport, and yamux (whose Tiltfile path differs).
	for _, args := range [][]string{{}, {"--", "--transport=yamux"}} {
		e.step("tilt ci %s", strings.Join(args, " "))
		err := run(15*time.Minute, append([]string{"ci", "--timeout", "10m", "--web-mode", "prod"}, args...)...)
		if derr := run(5*time.Minute, append([]string{"down"}, args...)...); derr != nil && err == nil {
			err = fmt.Errorf("tilt down: %w", derr)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// call is one line of the caller's log.
type call struct {
	ts         time.Time
	ok, failed bool
	transport  string
	target     string
	latency    float64
	errText    string
}

func (c call) String() string {
	if c.ok {
		return fmt.Sprintf("%s ok %s", c.ts.Format("15:04:05.000"), c.target)
	}
	return fmt.Sprintf("%s FAILED %s: %s", c.ts.Format("15:04:05.000"), c.target, c.errText)
}

func (e *env) callerLog(ns string) ([]call, error) {
	return e.logCalls(ns, "deploy/"+release+"-caller")
}

// logCalls reads the calls in the whole log of what (a pod, or
// deploy/<name>) in namespace ns.
func (e *env) logCalls(ns, what string) ([]call, error) {
	out, err := e.kubeOut("-n", ns, "logs", what, "--tail=-1")
	if err != nil {
		return nil, err
	}
	return parseCalls(out)
}

// parseCalls reads the "call ok" and "call failed" lines of a caller's log.
func parseCalls(out string) ([]call, error) {
	var calls []call
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var l struct {
			Msg       string  `json:"msg"`
			TS        string  `json:"ts"`
			Transport string  `json:"transport"`
			Target    string  `json:"target"`
			Latency   float64 `json:"latency_ms"`
			Error     string  `json:"error"`
		}
		if json.Unmarshal(sc.Bytes(), &l) != nil || (l.Msg != "call ok" && l.Msg != "call failed") {
			continue
		}
		ts, err := time.Parse(time.RFC3339Nano, l.TS)
		if err != nil {
			return nil, fmt.Errorf("caller log: ts %q: %w", l.TS, err)
		}
		calls = append(calls, call{ts: ts, ok: l.Msg == "call ok", failed: l.Msg == "call failed",
			transport: l.Transport, target: l.Target, latency: l.Latency, errText: l.Error})
	}
	return calls, sc.Err()
}

// trailingOK counts the successful calls at the end of the log that used
// transport tr and reached one of the echo targets.
func trailingOK(calls []call, tr string, targets map[string]bool) int {
	n := 0
	for i := len(calls) - 1; i >= 0; i-- {
		c := calls[i]
		if !c.ok || c.transport != tr || !targets[c.target] {
			break
		}
		n++
	}
	return n
}

func since(calls []call, t time.Time) []call {
	i := sort.Search(len(calls), func(i int) bool { return !calls[i].ts.Before(t) })
	return calls[i:]
}

func countFailed(calls []call) int {
	n := 0
	for _, c := range calls {
		if c.failed {
			n++
		}
	}
	return n
}

func okCount(calls []call) int { return len(calls) - countFailed(calls) }

func failedOnly(calls []call) []call {
	var f []call
	for _, c := range calls {
		if c.failed {
			f = append(f, c)
		}
	}
	return tail(f, 5)
}

// firstOKAfterFailure returns how long after t calls were succeeding again
// (the first success after the last failure; 0 when none failed) and how many
// calls succeeded after t.
func firstOKAfterFailure(calls []call, t time.Time) (time.Duration, int) {
	last := -1
	for i, c := range calls {
		if c.failed {
			last = i
		}
	}
	var resume time.Duration
	if last >= 0 && last+1 < len(calls) {
		resume = calls[last+1].ts.Sub(t).Round(100 * time.Millisecond)
	}
	return resume, okCount(calls)
}

func tail(calls []call, n int) []call {
	if len(calls) > n {
		return calls[len(calls)-n:]
	}
	return calls
}

func percentile(v []float64, p float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	sort.Float64s(s)
	return s[int(float64(len(s)-1)*p+0.5)]
}

func (e *env) printSummary() {
	defer printEdgeSummary()
	defer printIngressSummary()
	defer printPromSummary()
	if len(e.results) == 0 {
		return
	}
	fmt.Println("\n| transport | calls ok | calls failed | failed before the first success | p50 ms | p99 ms | first success after install | failed after pod delete | failed during rolling restart | helm test | no inbound RPC port | rogue pod |")
	fmt.Println("|---|---|---|---|---|---|---|---|---|---|---|---|")
	for _, r := range e.results {
		fmt.Printf("| %s | %d | %d | %d | %.2f | %.2f | %s | %d | %d | %s | %s | %s |\n", r.transport, r.ok, r.failed, r.startupFailed,
			r.p50, r.p99, r.firstSuccess, r.podDeleteFailed, r.restartFailed, r.helmTest, r.noPort, r.rogue)
	}
}

// dump prints what explains a failure: pods, events and logs of the test namespaces.
func (e *env) dump() {
	if e.kubectl == "" {
		return
	}
	defer e.dumpPrometheus()
	fmt.Println("\n== dump: pods")
	_ = e.kube(time.Minute, "get", "pods", "-A", "-o", "wide")
	fmt.Println("\n== dump: events")
	_ = e.kube(time.Minute, "get", "events", "-A", "--sort-by=.lastTimestamp")
	out, _ := e.kubeOut("get", "pods", "-A", "-l", "app.kubernetes.io/part-of=kitex-anyconn",
		"-o", `jsonpath={range .items[*]}{.metadata.namespace} {.metadata.name}{"\n"}{end}`)
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		f := strings.Fields(line)
		if len(f) != 2 {
			continue
		}
		fmt.Printf("\n== dump: logs %s/%s (last 60 lines)\n", f[0], f[1])
		_ = e.kube(time.Minute, "-n", f[0], "logs", f[1], "--all-containers", "--tail=60")
	}
}

func (e *env) kube(timeout time.Duration, args ...string) error {
	return e.kubeAt(e.context(), timeout, args...)
}

// kubeAt runs kubectl in the cluster of context kctx.
func (e *env) kubeAt(kctx string, timeout time.Duration, args ...string) error {
	return e.cmd(timeout, e.kubectl, append([]string{"--context", kctx}, args...)...)
}

func (e *env) kubeOut(args ...string) (string, error) {
	return e.kubeOutAt(e.context(), args...)
}

// kubeOutAt runs kubectl in the cluster of context kctx and returns its output.
func (e *env) kubeOutAt(kctx string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := exec.CommandContext(ctx, e.kubectl, append([]string{"--context", kctx}, args...)...)
	var out, errb bytes.Buffer
	c.Stdout, c.Stderr = &out, &errb
	if err := c.Run(); err != nil {
		return "", fmt.Errorf("kubectl %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(errb.String()))
	}
	return out.String(), nil
}

// cmd runs a command with its output on ours, bounded by timeout.
func (e *env) cmd(timeout time.Duration, name string, args ...string) error {
	return e.cmdWith(timeout, nil, nil, name, args...)
}

// cmdWith is cmd with variables added to the environment and, if not nil,
// stdin as the command's input.
func (e *env) cmdWith(timeout time.Duration, environ []string, stdin []byte, name string, args ...string) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	shown := ""
	for _, v := range environ {
		shown += v + " "
	}
	fmt.Printf("$ %s%s %s\n", shown, filepath.Base(name), strings.Join(args, " "))
	c := exec.CommandContext(ctx, name, args...)
	c.Stdout, c.Stderr = os.Stdout, os.Stderr
	if environ != nil {
		c.Env = append(os.Environ(), environ...)
	}
	if stdin != nil {
		c.Stdin = bytes.NewReader(stdin)
	}
	if err := c.Run(); err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("%s %s: timed out after %s", filepath.Base(name), strings.Join(args, " "), timeout)
		}
		return fmt.Errorf("%s %s: %w", filepath.Base(name), strings.Join(args, " "), err)
	}
	return nil
}

func abs(p string) string {
	a, err := filepath.Abs(p)
	if err != nil {
		return p
	}
	return a
}

func appVersion() (string, error) {
	b, err := os.ReadFile("charts/kitex-anyconn/Chart.yaml")
	if err != nil {
		return "", err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "appVersion:"); ok {
			return strings.Trim(strings.TrimSpace(v), `"`), nil
		}
	}
	return "", errors.New("no appVersion in Chart.yaml")
}
