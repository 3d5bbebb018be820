package promcheck

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The services run as `make run` runs them: bin/devrun starts an embedded
// etcd on 127.0.0.1:2379, echo (RPC on 127.0.0.1:8888, admin :9090) and the
// caller (admin :9091, tunnel gateway on 127.0.0.1:7000 with yamux). Those
// ports are devrun's own: ADMIN_ADDR would give both services the same one,
// and devrun embeds etcd only at 2379. So this test needs them free, as
// `make run` does, and says so when one is not.
const (
	echoAdmin   = "127.0.0.1:9090"
	callerAdmin = "127.0.0.1:9091"
)

var devrunPorts = []int{2379, 7000, 8888, 9090, 9091}

// The transports the services are run with: yamux, whose tunnel metrics
// exist only there (and echo_registered does not), and one without the tunnel.
var runTransports = []string{"netpoll", "yamux"}

// buildServices builds echo, caller and devrun from the repository root into
// a temporary folder, as `make build` does into bin/.
func buildServices(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	top, err := filepath.Abs(root)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	cmd := exec.Command("go", "build", "-o", dir+string(os.PathSeparator), "./services/echo", "./services/caller", "./internal/devrun")
	cmd.Dir = top
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./services/echo ./services/caller ./internal/devrun in %s: %v\n%s", top, err, out)
	}
	t.Logf("built echo, caller and devrun in %v", time.Since(start).Round(time.Millisecond))
	return dir
}

// tailBuffer keeps the last max bytes written to it: the services' output,
// shown when something goes wrong.
type tailBuffer struct {
	mu  sync.Mutex
	b   []byte
	max int
}

func (w *tailBuffer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.b = append(w.b, p...)
	if len(w.b) > w.max {
		w.b = w.b[len(w.b)-w.max:]
	}
	return len(p), nil
}

func (w *tailBuffer) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return string(w.b)
}

func scrape(ctx context.Context, addr string) (*Exported, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET http://%s/metrics: %s", addr, resp.Status)
	}
	return ParseExposition(resp.Body)
}

// childrenOf returns the ids of pid's child processes (devrun's echo and
// caller, which run in process groups of their own).
func childrenOf(pid int) []int {
	var kids []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		id, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid …; comm may hold spaces and parentheses.
		s := string(stat)
		if i := strings.LastIndexByte(s, ')'); i >= 0 {
			if f := strings.Fields(s[i+1:]); len(f) > 1 && f[1] == strconv.Itoa(pid) {
				kids = append(kids, id)
			}
		}
	}
	return kids
}

// runServices runs devrun with the transport until the caller has made a
// few successful calls, then returns a scrape of each service.
func runServices(t *testing.T, bin, transport string) map[Side]*Exported {
	t.Helper()
	for _, port := range devrunPorts {
		ln, err := net.Listen("tcp", ":"+strconv.Itoa(port))
		if err != nil {
			t.Fatalf("port %d is in use (a `make run` still running?): the services run here as `make run` runs them, on devrun's fixed ports %v: %v", port, devrunPorts, err)
		}
		ln.Close()
	}
	out := &tailBuffer{max: 64 << 10}
	cmd := exec.Command(filepath.Join(bin, "devrun"), "-bin", bin)
	// Only what the services need: a developer's ETCD_ENDPOINTS, ADMIN_ADDR or
	// TUNNEL_* must not change the run.
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME"), "TMPDIR=" + t.TempDir(),
		"TRANSPORT=" + transport, "CALL_INTERVAL=100ms", "LOG_FORMAT=console"}
	cmd.Stdout, cmd.Stderr = out, out
	// If this test dies, devrun gets SIGTERM and stops echo and the caller.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(45 * time.Second):
			// devrun did not stop its children: end them, then it.
			for _, kid := range childrenOf(cmd.Process.Pid) {
				_ = syscall.Kill(kid, syscall.SIGKILL)
			}
			_ = cmd.Process.Kill()
			<-exited
			t.Errorf("devrun (TRANSPORT=%s) did not stop within 45 s of SIGTERM; killed it and its children", transport)
		}
	}
	t.Cleanup(stop)

	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	var caller *Exported
	var lastErr error
	for {
		select {
		case err := <-exited:
			stopped = true
			t.Fatalf("devrun (TRANSPORT=%s) exited early: %v\n%s", transport, err, out.String())
		case <-ctx.Done():
			t.Fatalf("TRANSPORT=%s: the caller made no 3 successful calls within 90 s (last scrape: %v)\n%s", transport, lastErr, out.String())
		case <-time.After(200 * time.Millisecond):
		}
		caller, lastErr = scrape(ctx, callerAdmin)
		if lastErr != nil {
			continue
		}
		ok := caller.Sum("kitex_client_throughput", map[string]string{"status": "succeed"})
		if ok == 0 {
			ok = caller.Sum("caller_calls_total", map[string]string{"result": "ok"}) // before the kitex_* metrics
		}
		if ok >= 3 {
			break
		}
		lastErr = fmt.Errorf("%v successful calls so far", ok)
	}
	echo, err := scrape(ctx, echoAdmin)
	if err != nil {
		t.Fatalf("TRANSPORT=%s: echo's metrics: %v\n%s", transport, err, out.String())
	}
	// Scrape the caller again: a series made by the call that echo just
	// counted is there too.
	if caller, err = scrape(ctx, callerAdmin); err != nil {
		t.Fatalf("TRANSPORT=%s: the caller's metrics: %v\n%s", transport, err, out.String())
	}
	stop()
	t.Logf("TRANSPORT=%s: echo exports %d series names, the caller %d", transport, len(echo.Names()), len(caller.Names()))
	return map[Side]*Exported{Echo: echo, Caller: caller}
}

// TestMetricsExported runs the services over netpoll and yamux and checks
// that every metric the dashboard and the alerts name is one they export, on
// the service the query's job selects (<prefix>-echo or <prefix>-caller):
// the dashboard against what either run exports, each transport's rules
// against that transport's run.
func TestMetricsExported(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the services (-short)")
	}
	bin := buildServices(t)
	runs := map[string]map[Side][]string{}
	union := map[Side][]string{}
	for _, tr := range runTransports {
		scrapes := runServices(t, bin, tr)
		runs[tr] = map[Side][]string{}
		for side, ex := range scrapes {
			runs[tr][side] = ex.Names()
			union[side] = append(union[side], ex.Names()...)
		}
	}
	for side := range union {
		slices.Sort(union[side])
		union[side] = slices.Compact(union[side])
	}

	report := func(what string, qs []Query, exported map[Side][]string) {
		t.Helper()
		problems, err := Missing(qs, exported)
		if err != nil {
			t.Error(err)
			return
		}
		for _, p := range problems {
			t.Errorf("%s: %s", what, p)
		}
	}
	report("dashboard (services run over "+strings.Join(runTransports, " and ")+")", dashboardQueries(t), union)
	for _, tr := range runTransports {
		report("alerts (services run over "+tr+")", ruleQueries(t, tr), runs[tr])
	}

	// The run exercised what the queries need: the tunnel's metrics on both
	// sides with yamux, echo's registration without.
	for tr, want := range map[string]map[Side][]string{
		"yamux":   {Echo: {"tunnel_sessions", "tunnel_reconnects_total"}, Caller: {"tunnel_sessions", "tunnel_agent_sessions"}},
		"netpoll": {Echo: {"echo_registered"}},
	} {
		for side, names := range want {
			for _, n := range names {
				if !slices.Contains(runs[tr][side], n) {
					t.Errorf("TRANSPORT=%s: %s does not export %s", tr, side, n)
				}
			}
		}
	}
	var b bytes.Buffer
	for _, tr := range runTransports {
		fmt.Fprintf(&b, "\n%s echo: %v\n%s caller: %v", tr, runs[tr][Echo], tr, runs[tr][Caller])
	}
	if t.Failed() {
		t.Logf("what the services exported:%s", b.String())
	}
}
