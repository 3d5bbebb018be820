package app

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/anyconn/kitex-anyconn/internal/config"
	"github.com/anyconn/kitex-anyconn/internal/testutil"
	"github.com/anyconn/kitex-anyconn/internal/testutil/etcdtest"
)

func TestMain(m *testing.M) { testutil.VerifyTestMain(m) }

func common(etcd string) config.Common {
	return config.Common{
		LogLevel: "info", LogFormat: "json", AdminAddr: "127.0.0.1:0",
		Etcd: config.Etcd{Endpoints: []string{etcd}},
	}
}

func TestConfigErrorExits2WithOneLine(t *testing.T) {
	var stdout, stderr bytes.Buffer
	ran := false
	code := run(Service{
		Name:      "echo",
		ConfigErr: &config.Error{Var: "TRANSPORT", Value: "quic", Allowed: "allowed values are netpoll, gonet, websocket, yamux"},
		Run:       func(context.Context, *Runtime) error { ran = true; return nil },
	}, &stdout, &stderr)
	if code != ExitConfig || ran {
		t.Fatalf("exit %d, ran %v; want %d without running", code, ran, ExitConfig)
	}
	want := `echo: invalid TRANSPORT="quic": allowed values are netpoll, gonet, websocket, yamux` + "\n"
	if stderr.String() != want || stdout.Len() != 0 {
		t.Fatalf("stderr %q, stdout %q; want stderr %q only", stderr.String(), stdout.String(), want)
	}
}

func TestRunErrorExits1AndIsLogged(t *testing.T) {
	var stdout, stderr bytes.Buffer
	code := run(Service{
		Name: "caller", Config: common(etcdtest.Start(t)),
		Run: func(context.Context, *Runtime) error { return errors.New("boom") },
	}, &stdout, &stderr)
	if code != ExitFailed {
		t.Fatalf("exit %d; want %d", code, ExitFailed)
	}
	if !strings.Contains(stdout.String(), `"msg":"caller stopped with an error","error":"boom"`) {
		t.Fatalf("log %q lacks the error line", stdout.String())
	}
}

func TestUnreachableEtcdWithinConnectTimeoutExits1(t *testing.T) {
	var stdout, stderr bytes.Buffer
	cfg := common("127.0.0.1:1")                    // nothing listens on port 1
	cfg.Etcd.Username, cfg.Etcd.Password = "u", "p" // with a user, Connect waits for etcd
	ran := false
	code := run(Service{
		Name: "caller", Config: cfg, ConnectTimeout: 300 * time.Millisecond,
		Run: func(context.Context, *Runtime) error { ran = true; return nil },
	}, &stdout, &stderr)
	if code != ExitFailed || ran {
		t.Fatalf("exit %d, ran %v; want %d without running", code, ran, ExitFailed)
	}
}

func readyz(t *testing.T, addr string) (int, string) {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/readyz")
	if err != nil {
		t.Fatalf("GET /readyz: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, strings.TrimSpace(string(b))
}

func TestReadinessFollowsSetReady(t *testing.T) {
	type probe struct {
		code int
		body string
	}
	var got []probe
	code := run(Service{
		Name: "echo", Config: common(etcdtest.Start(t)),
		Run: func(_ context.Context, rt *Runtime) error {
			c, b := readyz(t, rt.AdminAddr)
			got = append(got, probe{c, b})
			rt.SetReady(func() error { return errors.New("not registered in etcd") })
			c, b = readyz(t, rt.AdminAddr)
			got = append(got, probe{c, b})
			rt.SetReady(func() error { return nil })
			c, b = readyz(t, rt.AdminAddr)
			got = append(got, probe{c, b})
			return nil
		},
	}, io.Discard, io.Discard)
	want := []probe{
		{503, "not ready: connecting to etcd"},
		{503, "not ready: not registered in etcd"},
		{200, "ready"},
	}
	if code != ExitOK || len(got) != len(want) {
		t.Fatalf("exit %d, probes %v", code, got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("probe %d: %v; want %v", i, got[i], want[i])
		}
	}
}

func TestNoEtcdRunsWithoutConnecting(t *testing.T) {
	cfg := common("127.0.0.1:1") // nothing listens there
	cfg.Etcd.Username, cfg.Etcd.Password = "u", "p"
	var etcdSeen bool
	code := run(Service{
		Name: "caller", Config: cfg, NoEtcd: true, ConnectTimeout: 200 * time.Millisecond,
		Run: func(_ context.Context, rt *Runtime) error { etcdSeen = rt.Etcd != nil; return nil },
	}, io.Discard, io.Discard)
	if code != ExitOK || etcdSeen {
		t.Fatalf("exit %d, etcd client %v; want 0 without one", code, etcdSeen)
	}
}
