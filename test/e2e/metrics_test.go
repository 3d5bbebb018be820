package e2e

import (
	"fmt"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/anyconn/kitex-anyconn/internal/testutil"
	"github.com/anyconn/kitex-anyconn/internal/testutil/etcdtest"
)

// The standard RPC metrics, on both sides and every transport: a call
// the caller makes is counted by kitex_client_throughput on the caller and
// kitex_server_throughput on echo, by caller, callee, method, status and
// transport, and timed by the latency histograms with the same labels.
// The caller's name reaches echo in TTHeader.
func TestRPCMetricsOnEveryTransport(t *testing.T) {
	etcd := etcdtest.Start(t)
	for _, transport := range []string{"netpoll", "gonet", "websocket", "yamux"} {
		t.Run(transport, func(t *testing.T) {
			t.Parallel()
			env := []string{"SERVICE_NAME=m-" + transport, "ECHO_SERVICE=m-" + transport}
			echo := startEcho(t, etcd, transport, append(env, tunnelEnv("metrics-"+transport)...)...)
			admin := freeAddr(t)
			start(t, "caller", append(append(env, tunnelEnv("")...), "TRANSPORT="+transport, "ETCD_ENDPOINTS="+etcd,
				"ADMIN_ADDR="+admin, "CALL_INTERVAL=50ms")...)
			testutil.Eventually(t, "caller up", 20*time.Second, func() bool { return httpStatus("http://"+admin+"/healthz") == 200 })
			labels := fmt.Sprintf(`callee="m-%s",caller="caller",method="echo",retry="0",status="succeed",transport=%q`, transport, transport)
			var client, server float64
			testutil.Eventually(t, "3 calls counted on both sides", 30*time.Second, func() bool {
				client = metricValue(httpBody(t, "http://"+admin+"/metrics"), "kitex_client_throughput{"+labels+"}")
				server = metricValue(httpBody(t, "http://"+echo.admin+"/metrics"), "kitex_server_throughput{"+labels+"}")
				return client >= 3 && server >= 3
			})
			for side, addr := range map[string]string{"client": admin, "server": echo.admin} {
				body := httpBody(t, "http://"+addr+"/metrics")
				if n := metricValue(body, "kitex_"+side+"_latency_us_count{"+labels+"}"); n < 3 {
					t.Errorf("kitex_%s_latency_us_count{%s} = %v, want at least 3:\n%s", side, labels, n, grep(body, "kitex_"))
				}
				if metricValue(body, "kitex_"+side+`_latency_us_bucket{`+labels+`,le="+Inf"}`) < 3 {
					t.Errorf("no latency buckets on the %s side:\n%s", side, grep(body, "kitex_"+side+"_latency_us_bucket"))
				}
			}
			t.Logf("report: %s: %v calls counted by the caller, %v by echo", transport, client, server)
		})
	}
}

// metricValue returns the value of the exposition line starting with
// series (name and labels, as Prometheus writes them), or -1.
func metricValue(body, series string) float64 {
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` (\S+)$`).FindStringSubmatch(body)
	if m == nil {
		return -1
	}
	v, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		return -1
	}
	return v
}
