package e2e

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/anyconn/kitex-anyconn/internal/testutil"
	"github.com/anyconn/kitex-anyconn/internal/testutil/etcdtest"
)

// The tunnel across networks, with the real binaries: two callers (two
// gateways) serve agents over WebSocket behind one load-balancing address;
// two echoes know nothing but that address (TUNNEL_GATEWAYS) and have no
// etcd. Every caller reaches every echo, /tunnel/agents and
// /tunnel/gateways list what the logs show, and no call fails.
func TestTunnelBehindOneAddressWithoutEtcd(t *testing.T) {
	t.Parallel()
	etcd := etcdtest.Start(t)
	env := []string{"SERVICE_NAME=edge", "ECHO_SERVICE=edge"}
	wsAddrs := []string{freeAddr(t), freeAddr(t)}
	lb := testutil.StartBalancer(t, wsAddrs...)
	shared := "ws://" + lb.Addr() + "/tunnel"
	type callerProc struct {
		*proc
		admin string
	}
	var callers []callerProc
	for i := range 2 {
		admin := freeAddr(t)
		callers = append(callers, callerProc{start(t, "caller", append(append(env, tunnelEnv("")...),
			"TRANSPORT=yamux", "ETCD_ENDPOINTS="+etcd, "ADMIN_ADDR="+admin, "TUNNEL_LISTEN_ADDR="+freeAddr(t),
			"TUNNEL_WS_LISTEN_ADDR="+wsAddrs[i], "TUNNEL_PUBLIC_ADDRESSES="+shared,
			"CALL_INTERVAL=50ms", "DISCOVERY_TIMEOUT=30s")...), admin})
	}
	agents := []string{"edge-a", "edge-b"}
	var echoes []*proc
	for _, id := range agents {
		// An etcd that does not answer: the agent must not need it.
		echoes = append(echoes, start(t, "echo", append(append(env, tunnelEnv(id)...),
			"TRANSPORT=yamux", "ETCD_ENDPOINTS=127.0.0.1:1", "ADMIN_ADDR="+freeAddr(t), "TUNNEL_GATEWAYS="+shared,
			"TUNNEL_SESSIONS=2", "DRAIN_DELAY=1s")...))
	}
	reachedBoth := func(c callerProc) bool {
		reached := map[any]bool{}
		for _, l := range c.logLines() {
			if l["msg"] == "call ok" {
				reached[l["target"]] = true
			}
		}
		return reached["edge-a"] && reached["edge-b"]
	}
	began := time.Now()
	for i, c := range callers {
		testutil.Eventually(t, fmt.Sprintf("caller %d calling both echoes through the shared address", i), 60*time.Second, func() bool { return reachedBoth(c) })
	}
	t.Logf("report: 2 callers behind one address, 2 echoes without etcd: every caller reached every echo %v after start", time.Since(began).Round(10*time.Millisecond))

	type agentsView struct {
		Gateway string `json:"gateway"`
		Agents  []struct {
			ID       string `json:"id"`
			Sessions []struct {
				Slot   int    `json:"slot"`
				Remote string `json:"remote"`
			} `json:"sessions"`
		} `json:"agents"`
	}
	for i, c := range callers {
		// Each agent holds TUNNEL_SESSIONS=2 sessions to each gateway.
		var view agentsView
		full := func() bool {
			view = agentsView{}
			if err := json.Unmarshal([]byte(httpBody(t, "http://"+c.admin+"/tunnel/agents")), &view); err != nil {
				t.Fatal(err)
			}
			var ids []string
			for _, a := range view.Agents {
				if len(a.Sessions) != 2 {
					return false
				}
				ids = append(ids, a.ID)
			}
			return slices.Equal(ids, agents) && view.Gateway != ""
		}
		testutil.Eventually(t, fmt.Sprintf("caller %d's /tunnel/agents listing both agents with 2 sessions each", i), 20*time.Second, full)
		metrics := httpBody(t, "http://"+c.admin+"/metrics")
		for _, id := range agents {
			if !strings.Contains(metrics, fmt.Sprintf(`tunnel_agent_sessions{agent=%q} 2`, id)) {
				t.Fatalf("caller %d metrics lack agent %s's sessions:\n%s", i, id, grep(metrics, "tunnel_agent"))
			}
		}
	}
	for i, e := range echoes {
		admin := strings.TrimPrefix(envOf(e, "ADMIN_ADDR"), "ADMIN_ADDR=")
		var view struct {
			Agent    string `json:"agent"`
			Sessions []struct {
				Gateway string `json:"gateway"`
				Address string `json:"address"`
			} `json:"sessions"`
		}
		if err := json.Unmarshal([]byte(httpBody(t, "http://"+admin+"/tunnel/gateways")), &view); err != nil {
			t.Fatal(err)
		}
		gateways := map[string]int{}
		for _, s := range view.Sessions {
			if s.Address != shared {
				t.Fatalf("echo %d: a session through %q, want only %q", i, s.Address, shared)
			}
			gateways[s.Gateway]++
		}
		if view.Agent != agents[i] || len(gateways) != 2 {
			t.Fatalf("echo %d /tunnel/gateways: %+v, want sessions to both gateways", i, view)
		}
	}

	for i, c := range callers {
		_ = c.cmd.Process.Signal(syscall.SIGTERM)
		if code := c.wait(20 * time.Second); code != 0 {
			t.Fatalf("caller %d exited %d", i, code)
		}
		ok, failed := callStats(c.proc, firstSuccess(c.proc))
		t.Logf("caller %d: %d calls ok, %d failed after the first success", i, ok, failed)
		if failed != 0 || ok == 0 {
			t.Fatalf("caller %d: %d calls ok, %d failed after the first success", i, ok, failed)
		}
	}
}

// envOf returns p's variable name=value.
func envOf(p *proc, name string) string {
	for _, kv := range p.cmd.Env {
		if strings.HasPrefix(kv, name+"=") {
			return kv
		}
	}
	return ""
}

// firstSuccess returns the time of p's first successful call.
func firstSuccess(p *proc) time.Time {
	for _, l := range p.logLines() {
		if l["msg"] == "call ok" {
			ts, _ := time.Parse(time.RFC3339Nano, fmt.Sprint(l["ts"]))
			return ts
		}
	}
	return time.Now()
}
