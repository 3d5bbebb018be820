// Package e2e runs the real echo and caller binaries against an embedded
// etcd, the way a user runs them, and checks what they log and how they exit.
package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/goleak"

	"github.com/anyconn/kitex-anyconn/internal/app"
	"github.com/anyconn/kitex-anyconn/internal/config"
	"github.com/anyconn/kitex-anyconn/internal/etcdembed"
	"github.com/anyconn/kitex-anyconn/internal/etcdreg"
	"github.com/anyconn/kitex-anyconn/internal/testutil"
	"github.com/anyconn/kitex-anyconn/internal/testutil/etcdtest"
)

var binDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "kitex-anyconn-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	// The tests here mostly wait for processes and timers: run more of them
	// at once than there are cores (the default), unless -parallel was given.
	flag.Parse()
	if !flagSet("test.parallel") {
		_ = flag.Set("test.parallel", "4")
	}
	build := exec.Command("go", "build", "-race", "-o", dir+"/", "../../services/echo", "../../services/caller")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build services:", err)
		os.Exit(1)
	}
	code := 0
	func() {
		defer os.RemoveAll(dir)
		code = m.Run()
		if err := goleak.Find(testutil.LeakOptions()...); err != nil && code == 0 {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}()
	os.Exit(code)
}

func flagSet(name string) bool {
	set := false
	flag.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

// proc is a running service binary with its output captured.
type proc struct {
	t      *testing.T
	name   string
	cmd    *exec.Cmd
	stdout syncBuffer
	stderr syncBuffer
	done   chan struct{}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func start(t *testing.T, name string, env ...string) *proc {
	t.Helper()
	p := &proc{t: t, name: name, done: make(chan struct{})}
	p.cmd = exec.Command(filepath.Join(binDir, name))
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Stdout, p.cmd.Stderr = &p.stdout, &p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() { _ = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = p.cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("%s stdout:\n%s\n%s stderr:\n%s", name, p.stdout.String(), name, p.stderr.String())
		}
	})
	return p
}

// wait waits for the process to exit and returns its exit code.
func (p *proc) wait(timeout time.Duration) int {
	p.t.Helper()
	select {
	case <-p.done:
		return p.cmd.ProcessState.ExitCode()
	case <-time.After(timeout):
		p.t.Fatalf("%s still running after %v", p.name, timeout)
		return -1
	}
}

// logLines returns the JSON log lines of stdout.
func (p *proc) logLines() []map[string]any {
	var lines []map[string]any
	sc := bufio.NewScanner(strings.NewReader(p.stdout.String()))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			p.t.Fatalf("%s wrote a line that is not JSON: %q", p.name, sc.Text())
		}
		lines = append(lines, m)
	}
	return lines
}

// freeAddr returns a loopback address free now, below the ephemeral port
// range (see etcdembed.FreeAddr): tests restart servers on it.
func freeAddr(t *testing.T) string {
	t.Helper()
	addr, err := etcdembed.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	return addr
}

func httpStatus(url string) int {
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode
}

func httpBody(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

type echoProc struct {
	*proc
	addr, admin string
}

func startEcho(t *testing.T, etcd, transport string, env ...string) *echoProc {
	t.Helper()
	probe := "/readyz"
	if transport == "yamux" {
		probe = "/healthz" // ready only once a caller's gateway is connected
	}
	// A free port can be taken by another test package between its pick
	// and echo's bind: then echo exits at once, and starts again on others.
	for attempt := 1; ; attempt++ {
		addr, admin := freeAddr(t), freeAddr(t)
		p := start(t, "echo", append([]string{
			"TRANSPORT=" + transport, "ETCD_ENDPOINTS=" + etcd, "LISTEN_ADDR=" + addr,
			"ADVERTISE_ADDR=" + addr, "ADMIN_ADDR=" + admin, "DRAIN_DELAY=1s", "SHUTDOWN_TIMEOUT=2s",
		}, env...)...)
		exited := false
		testutil.Eventually(t, "echo up", 20*time.Second, func() bool {
			select {
			case <-p.done:
				exited = true
				return true
			default:
			}
			return httpStatus("http://"+admin+probe) == 200
		})
		if !exited {
			return &echoProc{proc: p, addr: addr, admin: admin}
		}
		if attempt == 3 || !strings.Contains(p.stdout.String(), "address already in use") {
			t.Fatalf("echo exited at start:\n%s%s", p.stdout.String(), p.stderr.String())
		}
	}
}

// Every transport: the caller finds its echo through etcd, ignoring the
// echoes of the other transports registered under the same name, and logs
// one JSON line per call with the documented fields.
func TestCallerCallsEchoOnEveryTransport(t *testing.T) {
	etcd := etcdtest.Start(t)
	for _, transport := range []string{"netpoll", "gonet", "websocket", "yamux"} {
		t.Run(transport, func(t *testing.T) {
			t.Parallel()
			echo := startEcho(t, etcd, transport, tunnelEnv("e2e-agent")...)
			target := echo.addr
			if transport == "yamux" {
				target = "e2e-agent" // the agent's identity: echo has no RPC port
			}
			const calls = 5
			caller := start(t, "caller", append([]string{"TRANSPORT=" + transport, "ETCD_ENDPOINTS=" + etcd,
				"ADMIN_ADDR=127.0.0.1:0", fmt.Sprintf("CALL_COUNT=%d", calls), "CALL_INTERVAL=50ms",
				"DISCOVERY_TIMEOUT=20s"}, tunnelEnv("")...)...)
			if code := caller.wait(60 * time.Second); code != 0 {
				t.Fatalf("caller exited %d, want 0", code)
			}
			ok := 0
			for _, line := range caller.logLines() {
				switch line["msg"] {
				case "call ok":
					ok++
					if line["transport"] != transport || line["target"] != target {
						t.Fatalf("call ok line %v: want transport %s and target %s", line, transport, target)
					}
					if ms, isNum := line["latency_ms"].(float64); !isNum || ms <= 0 {
						t.Fatalf("latency_ms %v is not a positive number", line["latency_ms"])
					}
				case "call failed":
					t.Fatalf("a call failed: %v", line)
				}
			}
			if ok != calls {
				t.Fatalf("%d call ok lines, want %d", ok, calls)
			}
			metrics := httpBody(t, "http://"+echo.admin+"/metrics")
			if !strings.Contains(metrics, fmt.Sprintf(`echo_requests_total{transport=%q} %d`, transport, calls)) {
				t.Fatalf("echo metrics do not count %d requests:\n%s", calls, grep(metrics, "echo_"))
			}
		})
	}
}

// tunnelEnv returns the TUNNEL_* variables of a test: the shared token, a
// free gateway port for callers and, for echo, the agent identity.
func tunnelEnv(agentID string) []string {
	env := []string{"TUNNEL_TOKEN=e2e-token-0123456789abcdef", "TUNNEL_BACKOFF_MAX=500ms", "TUNNEL_KEEPALIVE=2s"}
	if agentID != "" {
		return append(env, "TUNNEL_AGENT_ID="+agentID)
	}
	return append(env, "TUNNEL_LISTEN_ADDR=127.0.0.1:0")
}

// Two callers (two gateways) and two echoes (two agents): every caller
// reaches every echo, and the echoes accept no RPC connection.
func TestTunnelTwoCallersTwoEchoes(t *testing.T) {
	t.Parallel()
	etcd := etcdtest.Start(t)
	env := []string{"SERVICE_NAME=tun", "ECHO_SERVICE=tun"}
	var echoes []*echoProc
	for _, id := range []string{"echo-a", "echo-b"} {
		echoes = append(echoes, startEcho(t, etcd, "yamux", append(env, tunnelEnv(id)...)...))
	}
	var callers []*proc
	for i := 0; i < 2; i++ {
		callers = append(callers, start(t, "caller", append(append(env, tunnelEnv("")...),
			"TRANSPORT=yamux", "ETCD_ENDPOINTS="+etcd, "ADMIN_ADDR=127.0.0.1:0",
			"CALL_COUNT=40", "CALL_INTERVAL=50ms", "DISCOVERY_TIMEOUT=20s")...))
	}
	for i, c := range callers {
		if code := c.wait(60 * time.Second); code != 0 {
			t.Fatalf("caller %d exited %d", i, code)
		}
		reached := map[any]int{}
		for _, line := range c.logLines() {
			if line["msg"] == "call ok" {
				reached[line["target"]]++
			}
		}
		if reached["echo-a"] == 0 || reached["echo-b"] == 0 {
			t.Fatalf("caller %d reached %v; want both echo-a and echo-b", i, reached)
		}
	}
	for _, e := range echoes {
		if c, err := net.DialTimeout("tcp", e.addr, time.Second); err == nil {
			c.Close()
			t.Fatalf("yamux echo accepts TCP on LISTEN_ADDR %s", e.addr)
		}
	}
}

func grep(s, substr string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, substr) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// A failed call makes a CALL_COUNT caller exit non-zero: here no echo of the
// caller's transport exists, only one of another transport.
func TestCallerFailsWithoutMatchingInstance(t *testing.T) {
	t.Parallel()
	etcd := etcdtest.Start(t)
	startEcho(t, etcd, "netpoll")
	caller := start(t, "caller", "TRANSPORT=gonet", "ETCD_ENDPOINTS="+etcd, "ADMIN_ADDR=127.0.0.1:0",
		"CALL_COUNT=1", "DISCOVERY_TIMEOUT=1s")
	if code := caller.wait(30 * time.Second); code != 1 {
		t.Fatalf("caller exited %d, want 1", code)
	}
	if !strings.Contains(caller.stdout.String(), "no instance discovered within DISCOVERY_TIMEOUT") {
		t.Fatalf("caller did not say why it failed:\n%s", caller.stdout.String())
	}
}

// A yamux caller whose gateway no agent has reached says so: its instances
// come through the gateway, so an error naming etcd would send the user the
// wrong way.
func TestTunnelCallerWithoutAgentNamesTheGateway(t *testing.T) {
	t.Parallel()
	etcd := etcdtest.Start(t)
	caller := start(t, "caller", append(tunnelEnv(""),
		"TRANSPORT=yamux", "ETCD_ENDPOINTS="+etcd, "ADMIN_ADDR=127.0.0.1:0", "CALL_INTERVAL=100ms")...)
	var failure string
	testutil.Eventually(t, "a failed call logged", 20*time.Second, func() bool {
		failure = grep(caller.stdout.String(), `"call failed"`)
		return failure != ""
	})
	if !strings.Contains(failure, "no echo agent connected to this caller's tunnel gateway") || strings.Contains(failure, "etcd") {
		t.Fatalf("the failed call does not say that no agent reached the gateway:\n%s", failure)
	}
}

// SIGTERM: echo leaves etcd first and stays up (not ready) for DRAIN_DELAY,
// then stops and exits 0.
func TestEchoDeregistersThenDrainsOnSIGTERM(t *testing.T) {
	t.Parallel()
	etcd := etcdtest.Start(t)
	cli := etcdtest.Client(t, etcd)
	echo := startEcho(t, etcd, "gonet", "DRAIN_DELAY=3s")
	key := "kitex/registry-etcd/echo/" + echo.addr
	registered := func() bool {
		resp, err := cli.Get(context.Background(), key)
		return err == nil && len(resp.Kvs) == 1
	}
	if !registered() {
		t.Fatalf("ready echo is not registered under %s", key)
	}
	if err := echo.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, "deregistered", 2*time.Second, func() bool { return !registered() })
	select {
	case <-echo.done:
		t.Fatal("echo exited before draining")
	default:
	}
	if code := httpStatus("http://" + echo.admin + "/readyz"); code != http.StatusServiceUnavailable {
		t.Fatalf("readyz while draining: %d, want 503", code)
	}
	if code := echo.wait(15 * time.Second); code != 0 {
		t.Fatalf("echo exited %d after SIGTERM, want 0", code)
	}
}

// Invalid configuration: exit code 2 and one line naming the variable.
func TestInvalidConfigurationExits2(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		bin  string
		env  []string
		want string
	}{
		{"echo", []string{"TRANSPORT=carrier-pigeon"}, "TRANSPORT"},
		{"echo", []string{"LISTEN_ADDR=nowhere"}, "LISTEN_ADDR"},
		{"echo", []string{"LOG_LEVEL=chatty"}, "LOG_LEVEL"},
		{"echo", []string{"TRANSPORT=yamux", "TUNNEL_TOKEN=only-16-chars-xx"}, "TUNNEL_TOKEN"},
		{"caller", []string{"CALL_INTERVAL=often"}, "CALL_INTERVAL"},
		{"caller", []string{"CALL_COUNT=-1"}, "CALL_COUNT"},
		{"caller", []string{"LOG_FORMAT=yaml"}, "LOG_FORMAT"},
		{"caller", []string{"TRANSPORT=yamux", "TUNNEL_TOKEN=only-16-chars-xx"}, "TUNNEL_TOKEN"},
	} {
		t.Run(tt.bin+"/"+tt.want, func(t *testing.T) {
			p := start(t, tt.bin, tt.env...)
			if code := p.wait(20 * time.Second); code != 2 {
				t.Fatalf("exit code %d, want 2", code)
			}
			stderr := strings.TrimSpace(p.stderr.String())
			if strings.Count(stderr, "\n") != 0 || !strings.Contains(stderr, tt.want+"=") || !strings.Contains(stderr, "allowed") && !strings.Contains(stderr, "must") {
				t.Fatalf("stderr %q: want one line naming %s and what is allowed", stderr, tt.want)
			}
		})
	}
}

// TLS through the services' configuration: echo serves wss:// and the caller
// verifies it; the tunnel runs over mutual TLS.
func TestTLSConfiguration(t *testing.T) {
	t.Parallel()
	etcd := etcdtest.Start(t)
	dir := t.TempDir()
	ca := testutil.NewCA(t)
	caFile := ca.WriteCAFile(t, dir)
	srvCert, srvKey := testutil.WriteFiles(t, dir, "server", ca.Issue(t, "server", x509.ExtKeyUsageServerAuth))
	// The agent's certificate names its identity: the gateway takes the
	// identity from it under mutual TLS.
	cliCert, cliKey := testutil.WriteFiles(t, dir, "client", ca.Issue(t, "mtls-agent", x509.ExtKeyUsageClientAuth))

	t.Run("wss", func(t *testing.T) {
		startEcho(t, etcd, "websocket", "SERVICE_NAME=secure", "TLS_CERT_FILE="+srvCert, "TLS_KEY_FILE="+srvKey)
		caller := start(t, "caller", "TRANSPORT=websocket", "ETCD_ENDPOINTS="+etcd, "ECHO_SERVICE=secure",
			"ADMIN_ADDR=127.0.0.1:0", "CALL_COUNT=3", "CALL_INTERVAL=50ms", "DISCOVERY_TIMEOUT=20s", "TLS_CA_FILE="+caFile)
		if code := caller.wait(60 * time.Second); code != 0 {
			t.Fatalf("wss caller exited %d", code)
		}
	})
	t.Run("tunnel-mtls", func(t *testing.T) {
		env := []string{"SERVICE_NAME=mtls", "ECHO_SERVICE=mtls", "TUNNEL_TLS_CA_FILE=" + caFile}
		startEcho(t, etcd, "yamux", append(append(env, tunnelEnv("mtls-agent")...),
			"TUNNEL_TLS_CERT_FILE="+cliCert, "TUNNEL_TLS_KEY_FILE="+cliKey)...)
		caller := start(t, "caller", append(append(env, tunnelEnv("")...), "TRANSPORT=yamux", "ETCD_ENDPOINTS="+etcd,
			"ADMIN_ADDR=127.0.0.1:0", "CALL_COUNT=3", "CALL_INTERVAL=50ms", "DISCOVERY_TIMEOUT=20s",
			"TUNNEL_TLS_CERT_FILE="+srvCert, "TUNNEL_TLS_KEY_FILE="+srvKey)...)
		if code := caller.wait(60 * time.Second); code != 0 {
			t.Fatalf("tunnel caller over mutual TLS exited %d", code)
		}
	})
}

// The services reach an etcd that requires TLS, a client certificate and a
// user name and password (ETCD_*), as the Helm chart's externalEtcd wires
// them; a wrong password stops the process with an error.
func TestEtcdOverTLSWithAuth(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca := testutil.NewCA(t)
	caFile := ca.WriteCAFile(t, dir)
	srvCert, srvKey := testutil.WriteFiles(t, dir, "etcd", ca.Issue(t, "etcd", x509.ExtKeyUsageServerAuth))
	cliCert, cliKey := testutil.WriteFiles(t, dir, "client", ca.Issue(t, "client", x509.ExtKeyUsageClientAuth))
	srv, err := etcdembed.StartTLS(t.TempDir(), "", &etcdembed.TLS{CertFile: srvCert, KeyFile: srvKey, ClientCAFile: caFile})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	etcd := srv.Endpoint()
	if !strings.HasPrefix(etcd, "https://") {
		t.Fatalf("endpoint %s, want https", etcd)
	}

	// Turn authentication on: root, and a user "kitex" that may only read and
	// write the registry's keys.
	adminCfg, err := app.EtcdConfig(config.Etcd{Endpoints: []string{etcd}, CAFile: caFile, CertFile: cliCert, KeyFile: cliKey})
	if err != nil {
		t.Fatal(err)
	}
	admin, err := etcdreg.Connect(context.Background(), adminCfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, step := range []func() error{
		func() error { _, err := admin.UserAdd(ctx, "root", "root-pw"); return err },
		func() error { _, err := admin.UserGrantRole(ctx, "root", "root"); return err },
		func() error { _, err := admin.RoleAdd(ctx, "registry"); return err },
		func() error {
			_, err := admin.RoleGrantPermission(ctx, "registry", "kitex/", clientv3.GetPrefixRangeEnd("kitex/"), clientv3.PermissionType(clientv3.PermReadWrite))
			return err
		},
		func() error { _, err := admin.UserAdd(ctx, "kitex", "s3cret"); return err },
		func() error { _, err := admin.UserGrantRole(ctx, "kitex", "registry"); return err },
		func() error { _, err := admin.AuthEnable(ctx); return err },
	} {
		if err := step(); err != nil {
			t.Fatalf("set up etcd auth: %v", err)
		}
	}
	_ = admin.Close()

	pwFile := filepath.Join(dir, "password")
	if err := os.WriteFile(pwFile, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	etcdEnv := []string{"ETCD_ENDPOINTS=" + etcd, "ETCD_CA_FILE=" + caFile, "ETCD_CERT_FILE=" + cliCert,
		"ETCD_KEY_FILE=" + cliKey, "ETCD_USERNAME=kitex"}

	startEcho(t, etcd, "gonet", append(etcdEnv, "SERVICE_NAME=guarded", "ETCD_PASSWORD_FILE="+pwFile)...)
	caller := start(t, "caller", append(etcdEnv, "TRANSPORT=gonet", "ECHO_SERVICE=guarded", "ETCD_PASSWORD=s3cret",
		"ADMIN_ADDR=127.0.0.1:0", "CALL_COUNT=3", "CALL_INTERVAL=50ms", "DISCOVERY_TIMEOUT=20s")...)
	if code := caller.wait(60 * time.Second); code != 0 {
		t.Fatalf("caller through an etcd with TLS and auth exited %d", code)
	}

	denied := start(t, "caller", append(etcdEnv, "TRANSPORT=gonet", "ECHO_SERVICE=guarded", "ETCD_PASSWORD=wrong",
		"ADMIN_ADDR=127.0.0.1:0", "CALL_COUNT=1", "DISCOVERY_TIMEOUT=5s")...)
	if code := denied.wait(30 * time.Second); code != 1 {
		t.Fatalf("caller with a wrong etcd password exited %d, want 1", code)
	}
	if !strings.Contains(denied.stdout.String()+denied.stderr.String(), "authentication failed") {
		t.Fatalf("caller with a wrong password does not say why:\n%s", denied.stdout.String()+denied.stderr.String())
	}
}

// An echo killed with SIGKILL stays registered until its lease expires, but
// the caller stops using it at once: only the calls in flight at that
// instant and, on gonet and WebSocket (whose pooled connections only learn of
// the peer's death when they read), the first call sent on each pooled
// connection to it may fail, all within a second.
// A call that cannot connect is retried on another instance (Kitex's
// resolver middleware does that for connection errors), and with yamux the
// gateway drops the dead agent's session at once. The report line
// gives the failed calls and whether the dead instance was still in etcd.
func TestSIGKILLedEchoCostsNoCall(t *testing.T) {
	etcd := etcdtest.Start(t)
	cli := etcdtest.Client(t, etcd)
	for _, transport := range []string{"netpoll", "gonet", "websocket", "yamux"} {
		t.Run(transport, func(t *testing.T) {
			t.Parallel()
			svc := "kill-" + transport
			env := append([]string{"SERVICE_NAME=" + svc, "ECHO_SERVICE=" + svc}, tunnelEnv("")...)
			victim := startEcho(t, etcd, transport, append(env[:len(env):len(env)], "TUNNEL_AGENT_ID="+svc+"-a")...)
			startEcho(t, etcd, transport, append(env[:len(env):len(env)], "TUNNEL_AGENT_ID="+svc+"-b")...)
			caller := start(t, "caller", append(env, "TRANSPORT="+transport, "ETCD_ENDPOINTS="+etcd,
				"ADMIN_ADDR=127.0.0.1:0", "CALL_INTERVAL=20ms")...)
			okCalls := func() int {
				n := 0
				for _, l := range caller.logLines() {
					if l["msg"] == "call ok" {
						n++
					}
				}
				return n
			}
			testutil.Eventually(t, "calls flowing to both echoes", 30*time.Second, func() bool { return okCalls() >= 20 })

			if err := victim.cmd.Process.Kill(); err != nil {
				t.Fatal(err)
			}
			killed := time.Now()
			before := okCalls()
			testutil.Eventually(t, "50 more calls", 20*time.Second, func() bool { return okCalls() >= before+50 })
			stillRegistered := false
			if transport != "yamux" {
				resp, err := cli.Get(context.Background(), "kitex/registry-etcd/"+svc+"/"+victim.addr)
				stillRegistered = err == nil && len(resp.Kvs) == 1
			}
			// Count before stopping the caller: its own shutdown cancels the
			// call in flight, which says nothing about the kill.
			failed, late := 0, 0
			for _, l := range caller.logLines() {
				ts, _ := time.Parse(time.RFC3339Nano, fmt.Sprint(l["ts"]))
				if l["msg"] != "call failed" || ts.Before(killed.Add(-time.Millisecond)) {
					continue
				}
				failed++
				if ts.After(killed.Add(time.Second)) {
					late++
				}
				t.Logf("failed call: %v", l)
			}
			elapsed := time.Since(killed)
			_ = caller.cmd.Process.Signal(syscall.SIGTERM)
			caller.wait(10 * time.Second)
			t.Logf("report: SIGKILL %s: %d calls failed (all within 1 s of the kill), %d succeeded in the %s after it; killed instance still in etcd then: %v",
				transport, failed, okCalls()-before, elapsed.Round(time.Millisecond), stillRegistered)
			// The calls in flight at the kill, and on gonet and WebSocket the
			// first call on each pooled connection to it, may fail; after a
			// second the dead instance is no longer used.
			if late > 0 || failed > 4 {
				t.Fatalf("%d calls failed after SIGKILL of one echo, %d of them more than 1 s after it", failed, late)
			}
		})
	}
}
