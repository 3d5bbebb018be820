package e2e

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/anyconn/kitex-anyconn/internal/etcdembed"
	"github.com/anyconn/kitex-anyconn/internal/testutil"
	"github.com/anyconn/kitex-anyconn/internal/testutil/etcdtest"
)

// outage is how long etcd stays down in TestEtcdOutage: 3 s in `make test`,
// 30 s with KITEX_ANYCONN_CHAOS=1 (`make chaos`).
func outage() time.Duration {
	if os.Getenv("KITEX_ANYCONN_CHAOS") != "" {
		return 30 * time.Second
	}
	return 3 * time.Second
}

// callStats counts the caller's call lines logged at or after since.
func callStats(p *proc, since time.Time) (ok, failed int) {
	for _, l := range p.logLines() {
		ts, err := time.Parse(time.RFC3339Nano, fmt.Sprint(l["ts"]))
		if err != nil || ts.Before(since) {
			continue
		}
		switch l["msg"] {
		case "call ok":
			ok++
		case "call failed":
			failed++
		}
	}
	return ok, failed
}

// etcd goes away and comes back, first with its data, then wiped. Meanwhile
// the caller keeps calling the instances it knows (no call fails), and after
// each restart both echo instances are registered again within one lease TTL
// (REGISTRY_TTL=2s here), without restarting anything.
func TestEtcdOutage(t *testing.T) {
	t.Parallel()
	addr := freeAddr(t)
	srv, err := etcdembed.Start(t.TempDir(), addr)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { srv.Close() }()
	const ttl = 2 * time.Second
	env := []string{"SERVICE_NAME=outage", "ECHO_SERVICE=outage", "REGISTRY_TTL=" + ttl.String()}
	a := startEcho(t, addr, "gonet", env...)
	b := startEcho(t, addr, "gonet", env...)
	caller := start(t, "caller", append(env, "TRANSPORT=gonet", "ETCD_ENDPOINTS="+addr,
		"ADMIN_ADDR=127.0.0.1:0", "CALL_INTERVAL=50ms")...)
	began := time.Now()
	testutil.Eventually(t, "calls flowing", 20*time.Second, func() bool { ok, _ := callStats(caller, began); return ok >= 10 })

	for _, wipe := range []bool{false, true} {
		name := map[bool]string{false: "restart", true: "restart-wiped"}[wipe]
		t.Run(name, func(t *testing.T) {
			down := time.Now()
			srv.Close()
			time.Sleep(outage())
			okDown, failedDown := callStats(caller, down)
			if failedDown > 0 || okDown < int(outage()/(50*time.Millisecond))/2 {
				t.Fatalf("while etcd was down: %d calls ok, %d failed; want no failure and calls going on", okDown, failedDown)
			}
			dir := srv.Dir()
			if wipe {
				dir = t.TempDir()
			}
			if srv, err = etcdembed.Start(dir, addr); err != nil {
				t.Fatal(err)
			}
			back := time.Now()
			cli := etcdtest.Client(t, addr)
			registered := func() bool {
				resp, err := cli.Get(context.Background(), "kitex/registry-etcd/outage/", clientv3.WithPrefix())
				return err == nil && len(resp.Kvs) == 2
			}
			testutil.Eventually(t, "both echoes registered again", 2*ttl+5*time.Second, registered)
			recovered := time.Since(back)
			time.Sleep(500 * time.Millisecond)
			okAll, failedAll := callStats(caller, down)
			t.Logf("report: etcd %s after %s down: 0 calls lost (%d ok while down), both instances registered again %s after etcd came back; %d calls failed in all",
				name, outage(), okDown, recovered.Round(10*time.Millisecond), failedAll)
			if failedAll > 0 || okAll <= okDown {
				t.Fatalf("%d calls failed around the etcd %s (%d ok)", failedAll, name, okAll)
			}
			if recovered > ttl+3*time.Second {
				t.Fatalf("registrations came back after %s, want within about one lease TTL (%s)", recovered, ttl)
			}
		})
	}
	for _, e := range []*echoProc{a, b} {
		if code := httpStatus("http://" + e.admin + "/readyz"); code != http.StatusOK {
			t.Fatalf("echo not ready after the outages: %d", code)
		}
	}
}

// With no etcd at start, both services start, answer /healthz, report not
// ready, and become ready and call once etcd appears: no crash loop.
func TestEtcdUnreachableAtStart(t *testing.T) {
	t.Parallel()
	addr := freeAddr(t)
	echoAddr, echoAdmin, callerAdmin := freeAddr(t), freeAddr(t), freeAddr(t)
	echo := start(t, "echo", "TRANSPORT=netpoll", "ETCD_ENDPOINTS="+addr, "LISTEN_ADDR="+echoAddr,
		"ADVERTISE_ADDR="+echoAddr, "ADMIN_ADDR="+echoAdmin, "SERVICE_NAME=late", "DRAIN_DELAY=1s")
	caller := start(t, "caller", "TRANSPORT=netpoll", "ETCD_ENDPOINTS="+addr, "ADMIN_ADDR="+callerAdmin,
		"ECHO_SERVICE=late", "CALL_INTERVAL=100ms")
	for _, admin := range []string{echoAdmin, callerAdmin} {
		testutil.Eventually(t, "alive without etcd", 10*time.Second, func() bool { return httpStatus("http://"+admin+"/healthz") == 200 })
	}
	time.Sleep(2 * time.Second)
	for _, p := range []*proc{echo, caller} {
		select {
		case <-p.done:
			t.Fatalf("%s exited while etcd was unreachable", p.name)
		default:
		}
	}
	for _, admin := range []string{echoAdmin, callerAdmin} {
		if code := httpStatus("http://" + admin + "/readyz"); code != http.StatusServiceUnavailable {
			t.Fatalf("%s/readyz without etcd: %d, want 503", admin, code)
		}
	}

	srv, err := etcdembed.Start(t.TempDir(), addr)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	arrived := time.Now()
	testutil.Eventually(t, "echo ready", 20*time.Second, func() bool { return httpStatus("http://"+echoAdmin+"/readyz") == 200 })
	echoReady := time.Since(arrived)
	testutil.Eventually(t, "a call ok", 20*time.Second, func() bool { ok, _ := callStats(caller, arrived); return ok > 0 })
	t.Logf("report: etcd unreachable at start: no restart; echo ready %s and the first call ok %s after etcd arrived",
		echoReady.Round(10*time.Millisecond), time.Since(arrived).Round(10*time.Millisecond))
	if code := httpStatus("http://" + callerAdmin + "/readyz"); code != http.StatusOK {
		t.Fatalf("caller not ready once etcd is there: %d", code)
	}
}

// A rolling restart under a steady call load, on every transport: a new
// echo starts and becomes ready, then an old one gets SIGTERM (it leaves,
// drains and stops), twice, so that both original instances are replaced.
// Not one call may fail.
func TestRollingRestartUnderLoad(t *testing.T) {
	for _, tr := range []string{"netpoll", "gonet", "websocket", "yamux"} {
		t.Run(tr, func(t *testing.T) {
			t.Parallel()
			etcd := etcdtest.Start(t)
			svc := "roll-" + tr
			env := []string{"SERVICE_NAME=" + svc, "ECHO_SERVICE=" + svc, "DRAIN_DELAY=1s"}
			echoEnv := func(id string) []string {
				if tr == "yamux" {
					return append(env, tunnelEnv(id)...)
				}
				return env
			}
			var callerEnv []string
			if tr == "yamux" {
				callerEnv = tunnelEnv("")
			}
			old := []*echoProc{startEcho(t, etcd, tr, echoEnv(svc+"-0")...), startEcho(t, etcd, tr, echoEnv(svc+"-1")...)}
			caller := start(t, "caller", append(append(env, callerEnv...), "TRANSPORT="+tr, "ETCD_ENDPOINTS="+etcd,
				"ADMIN_ADDR=127.0.0.1:0", "CALL_INTERVAL=20ms")...)
			began := time.Now()
			testutil.Eventually(t, "calls flowing", 20*time.Second, func() bool { ok, _ := callStats(caller, began); return ok >= 10 })

			// From here on (a yamux caller fails its first calls until an
			// agent has found its gateway in etcd).
			began = time.Now()
			for i, e := range old {
				next := startEcho(t, etcd, tr, echoEnv(fmt.Sprintf("%s-%d", svc, i+2))...)
				testutil.Eventually(t, "the new echo ready", 20*time.Second, func() bool { return httpStatus("http://"+next.admin+"/readyz") == 200 })
				if err := e.cmd.Process.Signal(syscall.SIGTERM); err != nil {
					t.Fatal(err)
				}
				if code := e.wait(20 * time.Second); code != 0 {
					t.Fatalf("echo exited %d after SIGTERM, want 0", code)
				}
			}
			stopped := time.Now()
			testutil.Eventually(t, "10 calls answered by the new instances alone", 10*time.Second, func() bool { ok, _ := callStats(caller, stopped); return ok >= 10 })
			ok, failed := callStats(caller, began)
			elapsed := time.Since(began)
			t.Logf("report: rolling restart of 2 %s echoes under 50 calls/s: %d calls ok, %d failed, in %s",
				tr, ok, failed, elapsed.Round(100*time.Millisecond))
			if failed > 0 {
				t.Fatalf("%d of %d calls failed during the rolling restart:\n%s", failed, ok+failed, grep(caller.stdout.String(), `"call failed"`))
			}
			// Calls went on throughout: at least a quarter of one per 20 ms
			// (the caller's pace; the race detector and a busy machine slow it).
			if want := int(elapsed / (20 * time.Millisecond) / 4); ok < want {
				t.Fatalf("%d calls ok in %s, want at least %d: calls stalled during the restart", ok, elapsed.Round(100*time.Millisecond), want)
			}
		})
	}
}
