package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"
)

// The yamux tunnel across a network boundary: a second kind cluster, the
// edge site, on a docker network of its own, which docker isolates from the
// first cluster's network. Its echo pods have no RPC port, no Service and no
// etcd; their only way out is an HTTP CONNECT proxy (a container on both
// networks, as a corporate proxy sits between a site and the outside).
// Through it they reach the first cluster's two caller replicas, whose
// gateways serve WebSocket behind one NodePort.
const (
	edgeCluster  = "kitex-anyconn-edge"
	edgeNetwork  = "kitex-anyconn-edge"
	egressName   = "kitex-anyconn-egress" // the proxy's container
	egressImage  = "kitex-anyconn/egressproxy:e2e"
	edgeNS       = "kitex-e2e-edge" // in both clusters
	gwRelease    = "gw"             // the callers, in the first cluster
	edgeRelease  = "edge"           // echo, in the edge cluster
	edgeNodePort = 30780
	edgeToken    = "e2e-edge-tunnel-token-0123456789abcdef"
	callerAdmin  = 9091
)

// edgeRun is what the edge steps share.
type edgeRun struct {
	nodeIP    string    // the first cluster's node, on docker's kind network
	proxyIP   string    // the proxy, on the edge network
	url       string    // the gateways' shared WebSocket URL
	installed time.Time // when the edge's install began
	streams   *logStreams
	deleted   time.Time // when an edge echo pod was deleted
	rows      []edgeRow
}

// edgeTimes are the run's recovery figures.
var edgeTimes struct {
	everyEveryAfterInstall time.Duration // every caller reached every echo, after the edge's install began
	newEchoReachedByAll    time.Duration // both callers reached the replacement echo pod, after the delete
	newCallersReachedAll   time.Duration // both new callers reached both echoes, after the rollout restart
}

// edgeRow is a summary row: one caller pod.
type edgeRow struct {
	pod            string
	ok, failed     int // failed after the pod's first success
	reached        []string
	agentsListed   []string
	failedDelete   int
	failedRestart  int
	replacedByRoll bool
}

var edgeRows []edgeRow

func edgeContext() string { return "kind-" + edgeCluster }

// edge runs the two-cluster steps; the edge cluster, the proxy and the
// network are removed at the end whatever happens (unless -keep).
func (e *env) edge() (err error) {
	x := &edgeRun{streams: newLogStreams()}
	defer x.streams.stop()
	defer func() {
		if !*keep {
			e.step("edge: remove the edge cluster, the proxy and the network")
			e.edgeDown()
		}
	}()
	for _, st := range []struct {
		name string
		do   func(*edgeRun) error
	}{
		{"a second kind cluster on its own docker network", e.edgeCluster},
		{"the egress proxy, on the edge network and the first cluster's", e.egressProxy},
		{"the callers' side: 2 callers, their gateways' WebSocket behind one NodePort", e.edgeGateways},
		{"from the edge, nothing but the proxy gets out", e.isolated},
		{"echo at the edge: no RPC port, no Service, no etcd, out only through the proxy", e.edgeEchoes},
		{"each caller reaches both edge echoes through the proxy", e.edgeReached},
		{"/tunnel/agents lists what the logs show", e.edgeInventory},
		{"an edge echo pod deleted under load", e.edgeDeleteEcho},
		{"a rolling restart of the callers", e.edgeRollCallers},
		{"every call since each caller's first success", e.edgeTally},
	} {
		e.step("edge: %s", st.name)
		if err := st.do(x); err != nil {
			e.edgeDump()
			return fmt.Errorf("edge: %s: %w", st.name, err)
		}
	}
	edgeRows = x.rows
	return nil
}

func (e *env) edgeCluster(*edgeRun) error {
	if err := e.cmdWith(30*time.Minute, []string{"KIND_CLUSTER_NAME=" + edgeCluster, "KIND_EXPERIMENTAL_DOCKER_NETWORK=" + edgeNetwork},
		nil, "deploy/kind/cluster.sh", "up"); err != nil {
		return err
	}
	tag, err := appVersion()
	if err != nil {
		return err
	}
	if err := e.scratchImage(egressImage, "egressproxy", func(out string) error {
		return e.cmdWith(5*time.Minute, []string{"CGO_ENABLED=0", "GOOS=linux"}, nil,
			"go", "build", "-trimpath", "-o", out, "./deploy/kind/e2e/egressproxy")
	}); err != nil {
		return err
	}
	return e.cmd(10*time.Minute, abs("bin/kind"), "load", "docker-image", "--name", edgeCluster, "kitex-anyconn/echo:"+tag, egressImage)
}

func (e *env) egressProxy(x *edgeRun) error {
	_ = exec.Command("docker", "rm", "-f", egressName).Run()
	if err := e.cmd(2*time.Minute, "docker", "run", "-d", "--name", egressName, "--network", edgeNetwork, egressImage); err != nil {
		return err
	}
	if err := e.cmd(time.Minute, "docker", "network", "connect", "kind", egressName); err != nil {
		return err
	}
	var err error
	if x.proxyIP, err = dockerIP(egressName, edgeNetwork); err != nil {
		return err
	}
	x.nodeIP, err = dockerIP(*cluster+"-control-plane", "kind")
	x.url = fmt.Sprintf("ws://%s:%d/tunnel", x.nodeIP, edgeNodePort)
	return err
}

// isolated runs two probe pods at the edge: one to the first cluster's
// node, which must not get through, and one to the proxy, which must.
func (e *env) isolated(x *edgeRun) error {
	if err := e.kubeAt(edgeContext(), time.Minute, "create", "namespace", edgeNS); err != nil {
		return err
	}
	for _, p := range []struct {
		name, target, phase string
	}{
		{"probe-first-cluster", fmt.Sprintf("%s:%d", x.nodeIP, edgeNodePort), "Failed"},
		{"probe-proxy", x.proxyIP + ":3128", "Succeeded"},
	} {
		pod := fmt.Sprintf(probePod, p.name, egressImage, p.target)
		if err := e.cmdWith(time.Minute, nil, []byte(pod), e.kubectl, "--context", edgeContext(), "-n", edgeNS, "apply", "-f", "-"); err != nil {
			return err
		}
		if err := e.kubeAt(edgeContext(), 2*time.Minute, "-n", edgeNS, "wait", "pod/"+p.name,
			"--for=jsonpath={.status.phase}="+p.phase, "--timeout=90s"); err != nil {
			out, _ := e.kubeOutAt(edgeContext(), "-n", edgeNS, "logs", p.name)
			return fmt.Errorf("%s (%s) did not end %s: %s", p.name, p.target, p.phase, strings.TrimSpace(out))
		}
		out, _ := e.kubeOutAt(edgeContext(), "-n", edgeNS, "logs", p.name)
		fmt.Print(out)
	}
	return nil
}

func (e *env) edgeGateways(x *edgeRun) error {
	if err := e.kube(time.Minute, "create", "namespace", edgeNS); err != nil {
		return err
	}
	if err := e.kube(time.Minute, "-n", edgeNS, "create", "secret", "generic", "edge-token", "--from-literal=token="+edgeToken); err != nil {
		return err
	}
	// No --wait: a caller is ready once an agent is connected, and the
	// agents come next.
	return e.cmd(6*time.Minute, e.helm, "--kube-context", e.context(), "upgrade", "--install", gwRelease, "charts/kitex-anyconn",
		"-n", edgeNS, "--set", "transport=yamux", "--set", "echo.enabled=false",
		"--set", "caller.replicas=2", "--set", "caller.callInterval=250ms",
		"--set", "tunnel.token.existingSecret=edge-token",
		"--set", "tunnel.websocket.enabled=true",
		"--set", "tunnel.service.enabled=true", "--set", "tunnel.service.type=NodePort",
		"--set", fmt.Sprintf("tunnel.service.nodePorts.websocket=%d", edgeNodePort),
		"--set", "tunnel.publicAddresses={"+x.url+"}",
		"--set-json", `networkPolicy.tunnelFrom=[{"ipBlock":{"cidr":"0.0.0.0/0"}}]`)
}

func (e *env) edgeEchoes(x *edgeRun) error {
	x.installed = time.Now()
	if err := e.kubeAt(edgeContext(), time.Minute, "-n", edgeNS, "create", "secret", "generic", "edge-token", "--from-literal=token="+edgeToken); err != nil {
		return err
	}
	if err := e.cmd(8*time.Minute, e.helm, "--kube-context", edgeContext(), "upgrade", "--install", edgeRelease, "charts/kitex-anyconn",
		"-n", edgeNS, "--wait", "--timeout", "5m", "--set", "transport=yamux",
		"--set", "caller.enabled=false", "--set", "etcd.enabled=false", "--set", "echo.replicas=2",
		"--set", "tunnel.token.existingSecret=edge-token",
		"--set", "echo.tunnel.gateways={"+x.url+"}",
		"--set", "echo.proxy.httpProxy=http://"+x.proxyIP+":3128",
		"--set-json", fmt.Sprintf(`networkPolicy.echoGatewaysTo=[{"ipBlock":{"cidr":"%s/32"}}]`, x.proxyIP)); err != nil {
		return err
	}
	// The chart gives echo a ClusterIP Service for its admin port (metrics);
	// the edge site has none at all.
	if err := e.kubeAt(edgeContext(), time.Minute, "-n", edgeNS, "delete", "service", "--all"); err != nil {
		return err
	}
	return e.kube(5*time.Minute, "-n", edgeNS, "rollout", "status", "deploy/"+gwRelease+"-caller", "--timeout=4m")
}

// edgeEchoPods returns the edge echo pods running now: the agents' identities.
func (e *env) edgeEchoPods() ([]string, error) { return e.runningPods(edgeContext(), "echo") }

// callerPods returns the first cluster's caller pods running now.
func (e *env) callerPods() ([]string, error) { return e.runningPods(e.context(), "caller") }

// runningPods returns the running pods of component in the edge namespace
// of the cluster of context kctx that are not terminating, sorted.
func (e *env) runningPods(kctx, component string) ([]string, error) {
	pods, err := e.podsAt(kctx, edgeNS, component)
	sort.Strings(pods)
	return pods, err
}

// reachedSince returns the targets of a pod's successful calls since t.
func reachedSince(calls []call, t time.Time) []string {
	set := map[string]bool{}
	for _, c := range since(calls, t) {
		if c.ok {
			set[c.target] = true
		}
	}
	var out []string
	for t := range set {
		out = append(out, t)
	}
	sort.Strings(out)
	return out
}

// awaitEveryCallerReachesEvery waits until every running caller pod has
// reached every running edge echo pod since t.
func (e *env) awaitEveryCallerReachesEvery(x *edgeRun, t time.Time, within time.Duration) error {
	deadline := time.Now().Add(within)
	for {
		echoes, err := e.edgeEchoPods()
		if err != nil {
			return err
		}
		callers, err := e.callerPods()
		if err != nil {
			return err
		}
		missing := ""
		for _, pod := range callers {
			calls, err := e.podLog(pod)
			if err != nil {
				return err
			}
			if got := reachedSince(calls, t); len(echoes) != 2 || !isSubset(echoes, got) {
				missing = fmt.Sprintf("caller %s reached %v, want %v", pod, got, echoes)
			}
		}
		if missing == "" && len(callers) == 2 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not every caller reached every edge echo within %s: %s (callers %v)", within, missing, callers)
		}
		time.Sleep(2 * time.Second)
	}
}

func isSubset(want, got []string) bool {
	for _, w := range want {
		if !slices.Contains(got, w) {
			return false
		}
	}
	return true
}

func (e *env) podLog(pod string) ([]call, error) { return e.logCalls(edgeNS, pod) }

func (e *env) edgeReached(x *edgeRun) error {
	if err := e.awaitEveryCallerReachesEvery(x, time.Time{}, 3*time.Minute); err != nil {
		return err
	}
	edgeTimes.everyEveryAfterInstall = time.Since(x.installed).Round(time.Second)
	callers, err := e.callerPods()
	if err != nil {
		return err
	}
	for _, pod := range callers {
		x.streams.follow(e, pod)
	}
	out, err := exec.Command("docker", "logs", egressName).Output()
	if err != nil {
		return err
	}
	want := fmt.Sprintf(`"target":"%s:%d"`, x.nodeIP, edgeNodePort)
	n := strings.Count(string(out), want)
	if n == 0 {
		return fmt.Errorf("the egress proxy opened no tunnel to %s:%d: %s", x.nodeIP, edgeNodePort, out)
	}
	fmt.Printf("the egress proxy opened %d tunnels to the gateways' NodePort\n", n)
	return nil
}

func (e *env) edgeInventory(x *edgeRun) error {
	callers, err := e.callerPods()
	if err != nil {
		return err
	}
	for _, pod := range callers {
		// Agents fill their sessions one dial at a time through the shared
		// address: give them a minute.
		deadline := time.Now().Add(time.Minute)
		for {
			listed, gateway, problem, err := e.agentsListed(pod)
			if err != nil {
				return err
			}
			if problem == "" {
				fmt.Printf("%s (gateway %s): /tunnel/agents lists %v with 4 sessions each, as its log shows\n", pod, gateway, listed)
				x.rows = append(x.rows, edgeRow{pod: pod, agentsListed: listed})
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("%s: %s", pod, problem)
			}
			time.Sleep(2 * time.Second)
		}
	}
	return nil
}

// agentsListed reads a caller pod's /tunnel/agents; problem says how it
// differs from the agents its log shows calls to, with tunnel.sessions
// (4) sessions each.
func (e *env) agentsListed(pod string) (listed []string, gateway, problem string, err error) {
	calls, err := e.podLog(pod)
	if err != nil {
		return nil, "", "", err
	}
	raw, err := e.kubeOut("get", "--raw", fmt.Sprintf("/api/v1/namespaces/%s/pods/%s:%d/proxy/tunnel/agents", edgeNS, pod, callerAdmin))
	if err != nil {
		return nil, "", "", err
	}
	var view struct {
		Gateway string `json:"gateway"`
		Agents  []struct {
			ID       string            `json:"id"`
			Sessions []json.RawMessage `json:"sessions"`
		} `json:"agents"`
	}
	if err := json.Unmarshal([]byte(raw), &view); err != nil {
		return nil, "", "", fmt.Errorf("%s /tunnel/agents: %w: %s", pod, err, raw)
	}
	for _, a := range view.Agents {
		listed = append(listed, a.ID)
		if len(a.Sessions) != 4 {
			problem = fmt.Sprintf("/tunnel/agents lists %d sessions of agent %s, want tunnel.sessions (4): %s", len(a.Sessions), a.ID, raw)
		}
	}
	if reached := reachedSince(calls, time.Time{}); !slices.Equal(listed, reached) {
		problem = fmt.Sprintf("/tunnel/agents lists %v, its log shows calls to %v", listed, reached)
	}
	return listed, view.Gateway, problem, nil
}

func (e *env) edgeDeleteEcho(x *edgeRun) error {
	echoes, err := e.edgeEchoPods()
	if err != nil {
		return err
	}
	x.deleted = time.Now()
	if err := e.kubeAt(edgeContext(), 2*time.Minute, "-n", edgeNS, "delete", "pod", echoes[0], "--wait=false"); err != nil {
		return err
	}
	if err := e.kubeAt(edgeContext(), 3*time.Minute, "-n", edgeNS, "rollout", "status", "deploy/"+edgeRelease+"-echo", "--timeout=2m"); err != nil {
		return err
	}
	// The new pod is a new agent: both callers must reach it.
	if err := e.awaitEveryCallerReachesEvery(x, time.Now(), 2*time.Minute); err != nil {
		return err
	}
	edgeTimes.newEchoReachedByAll = time.Since(x.deleted).Round(time.Second)
	for i := range x.rows {
		calls, err := e.podLog(x.rows[i].pod)
		if err != nil {
			return err
		}
		x.rows[i].failedDelete = countFailed(since(calls, x.deleted))
		if x.rows[i].failedDelete > 0 {
			return fmt.Errorf("%s: %d calls failed after edge echo pod %s was deleted: %v", x.rows[i].pod, x.rows[i].failedDelete, echoes[0], failedOnly(since(calls, x.deleted)))
		}
	}
	return nil
}

func (e *env) edgeRollCallers(x *edgeRun) error {
	before, err := e.callerPods()
	if err != nil {
		return err
	}
	rolled := time.Now()
	if err := e.kube(time.Minute, "-n", edgeNS, "rollout", "restart", "deploy/"+gwRelease+"-caller"); err != nil {
		return err
	}
	if err := e.kube(5*time.Minute, "-n", edgeNS, "rollout", "status", "deploy/"+gwRelease+"-caller", "--timeout=4m"); err != nil {
		return err
	}
	if err := e.awaitEveryCallerReachesEvery(x, rolled, 3*time.Minute); err != nil {
		return err
	}
	edgeTimes.newCallersReachedAll = time.Since(rolled).Round(time.Second)
	after, err := e.callerPods()
	if err != nil {
		return err
	}
	for _, pod := range after {
		if !slices.Contains(before, pod) {
			x.rows = append(x.rows, edgeRow{pod: pod, replacedByRoll: true})
			x.streams.follow(e, pod)
		}
	}
	// The old pods' logs end with their termination: read from the streams.
	for i := range x.rows {
		if x.rows[i].replacedByRoll {
			continue
		}
		calls, err := parseCalls(x.streams.text(x.rows[i].pod))
		if err != nil {
			return err
		}
		x.rows[i].failedRestart = countFailed(since(calls, rolled))
	}
	return nil
}

func (e *env) edgeTally(x *edgeRun) error {
	time.Sleep(5 * time.Second)
	x.streams.stop()
	for i := range x.rows {
		r := &x.rows[i]
		calls, err := parseCalls(x.streams.text(r.pod))
		if err != nil {
			return err
		}
		first := -1
		for j, c := range calls {
			if c.ok {
				first = j
				break
			}
		}
		if first < 0 {
			return fmt.Errorf("%s: no successful call", r.pod)
		}
		r.ok, r.failed = okCount(calls[first:]), countFailed(calls[first:])
		r.reached = reachedSince(calls, time.Time{})
		if r.failed > 0 {
			return fmt.Errorf("%s: %d calls failed after its first success: %v", r.pod, r.failed, failedOnly(calls[first:]))
		}
	}
	return nil
}

func (e *env) edgeDown() {
	_ = e.cmdWith(10*time.Minute, []string{"KIND_CLUSTER_NAME=" + edgeCluster}, nil, "deploy/kind/cluster.sh", "down")
	_ = exec.Command("docker", "rm", "-f", egressName).Run()
	_ = exec.Command("docker", "network", "rm", edgeNetwork).Run()
	_ = e.kube(3*time.Minute, "delete", "namespace", edgeNS, "--ignore-not-found", "--wait=true", "--timeout=2m")
}

// edgeDump prints what explains a failure at the edge.
func (e *env) edgeDump() {
	fmt.Println("\n== dump: edge pods")
	_ = e.kubeAt(edgeContext(), time.Minute, "get", "pods", "-A", "-o", "wide")
	out, _ := e.kubeOutAt(edgeContext(), "-n", edgeNS, "get", "pods", "-o", "jsonpath={.items[*].metadata.name}")
	for _, pod := range strings.Fields(out) {
		fmt.Printf("\n== dump: edge logs %s (last 40 lines)\n", pod)
		_ = e.kubeAt(edgeContext(), time.Minute, "-n", edgeNS, "logs", pod, "--tail=40")
	}
	fmt.Println("\n== dump: egress proxy (last 40 lines)")
	_ = e.cmd(time.Minute, "docker", "logs", "--tail", "40", egressName)
}

func printEdgeSummary() {
	if len(edgeRows) == 0 {
		return
	}
	fmt.Println("\n| yamux across two clusters: caller pod | calls ok | failed after its first success | edge echoes reached | /tunnel/agents | failed after an edge echo pod was deleted | failed during the callers' rolling restart |")
	fmt.Println("|---|---|---|---|---|---|---|")
	for _, r := range edgeRows {
		listed, del, roll := strings.Join(r.agentsListed, ", "), fmt.Sprint(r.failedDelete), fmt.Sprint(r.failedRestart)
		if r.replacedByRoll {
			listed, del, roll = "(started by the roll)", "-", "0 (new)"
		}
		fmt.Printf("| %s | %d | %d | %s | %s | %s | %s |\n", r.pod, r.ok, r.failed, strings.Join(r.reached, ", "), listed, del, roll)
	}
	fmt.Printf("\nEvery caller reached every edge echo %s after the edge's install began; both callers reached the echo pod that replaced a deleted one %s after the delete (its rollout included); both new callers reached both echoes %s after the rolling restart began (its rollout included).\n",
		edgeTimes.everyEveryAfterInstall, edgeTimes.newEchoReachedByAll, edgeTimes.newCallersReachedAll)
}

// dockerIP returns container's address on a docker network.
func dockerIP(container, network string) (string, error) {
	out, err := exec.Command("docker", "inspect", "-f", fmt.Sprintf(`{{(index .NetworkSettings.Networks %q).IPAddress}}`, network), container).Output()
	if err != nil {
		return "", fmt.Errorf("docker inspect %s: %w", container, err)
	}
	ip := strings.TrimSpace(string(out))
	if ip == "" {
		return "", fmt.Errorf("%s has no address on docker network %s", container, network)
	}
	return ip, nil
}

// logStreams follows pods' logs (kubectl logs -f) into memory, so that the
// log of a pod deleted meanwhile (a rolling restart) is still there.
type logStreams struct {
	mu    sync.Mutex
	logs  map[string]*strings.Builder
	ctx   context.Context
	stopF context.CancelFunc
	wg    sync.WaitGroup
}

func newLogStreams() *logStreams {
	ctx, cancel := context.WithCancel(context.Background())
	return &logStreams{logs: map[string]*strings.Builder{}, ctx: ctx, stopF: cancel}
}

func (s *logStreams) follow(e *env, pod string) {
	s.mu.Lock()
	if _, ok := s.logs[pod]; ok {
		s.mu.Unlock()
		return
	}
	b := &strings.Builder{}
	s.logs[pod] = b
	s.mu.Unlock()
	c := exec.CommandContext(s.ctx, e.kubectl, "--context", e.context(), "-n", edgeNS, "logs", "-f", pod, "--tail=-1")
	out, err := c.StdoutPipe()
	if err != nil {
		fmt.Fprintln(os.Stderr, "follow", pod, err)
		return
	}
	if err := c.Start(); err != nil {
		fmt.Fprintln(os.Stderr, "follow", pod, err)
		return
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			s.mu.Lock()
			b.WriteString(sc.Text())
			b.WriteByte('\n')
			s.mu.Unlock()
		}
		_, _ = io.Copy(io.Discard, out)
		_ = c.Wait()
	}()
}

func (s *logStreams) text(pod string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if b, ok := s.logs[pod]; ok {
		return b.String()
	}
	return ""
}

func (s *logStreams) stop() {
	s.stopF()
	s.wg.Wait()
}

// probePod runs egressproxy -probe: name, image, target.
const probePod = `apiVersion: v1
kind: Pod
metadata:
  name: %s
spec:
  restartPolicy: Never
  automountServiceAccountToken: false
  securityContext:
    runAsNonRoot: true
    runAsUser: 65532
    seccompProfile:
      type: RuntimeDefault
  containers:
    - name: probe
      image: %s
      imagePullPolicy: Never
      args: ["-probe", "%s"]
      securityContext:
        allowPrivilegeEscalation: false
        capabilities:
          drop: ["ALL"]
`
