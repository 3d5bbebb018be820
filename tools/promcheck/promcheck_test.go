package promcheck

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// root is the repository root; the tests run in tools/promcheck.
var root = filepath.Join("..", "..")

// tool returns the path of a pinned tool built into bin/ (make test-chart sets
// KITEX_ANYCONN_TOOLS to it, as for tools/charttest).
func tool(t *testing.T, name string) string {
	t.Helper()
	dir := os.Getenv("KITEX_ANYCONN_TOOLS")
	if dir == "" {
		dir = filepath.Join(root, "bin")
	}
	p, err := filepath.Abs(filepath.Join(dir, name))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("%s is not built: run `make tools` (or `make test-chart`, which builds it): %v", name, err)
	}
	return p
}

// dashboardQueries returns the queries of the chart's dashboard file.
func dashboardQueries(t *testing.T) []Query {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(root, "charts", "kitex-anyconn", "dashboards", "kitex-anyconn.json"))
	if err != nil {
		t.Fatal(err)
	}
	qs, err := DashboardQueries(raw)
	if err != nil {
		t.Fatal(err)
	}
	return qs
}

// ruleQueries renders the chart's PrometheusRule with the pinned helm for a
// transport (every alert on) and returns its expressions.
func ruleQueries(t *testing.T, transport string) []Query {
	t.Helper()
	cmd := exec.Command(tool(t, "helm"), "template", "demo", filepath.Join(root, "charts", "kitex-anyconn"), "--namespace", "prod",
		"--set", "transport="+transport, "--set", "prometheusRule.enabled=true", "--show-only", "templates/prometheusrule.yaml")
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("helm template: %v\n%s", err, errb.String())
	}
	qs, err := RuleQueries(out.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	for i := range qs {
		qs[i].Source += " (transport=" + transport + ")"
	}
	return qs
}

// Every query of the dashboard and of the rules (each transport's) parses,
// with no Grafana variable left, and names at least one metric.
func TestQueriesParse(t *testing.T) {
	dash := dashboardQueries(t)
	promql := 0
	for _, q := range dash {
		if q.PromQL != "" {
			promql++
		}
	}
	// The panels' targets and the namespace and transport variables.
	if promql < 18 {
		t.Errorf("only %d PromQL queries found in the dashboard; the extraction misses some", promql)
	}
	all := slices.Clone(dash)
	for tr, n := range map[string]int{"netpoll": 3, "gonet": 3, "websocket": 3, "yamux": 5} {
		qs := ruleQueries(t, tr)
		if len(qs) != n {
			t.Errorf("transport=%s: %d rules, want %d", tr, len(qs), n)
		}
		all = append(all, qs...)
	}
	for _, q := range all {
		if q.PromQL == "" {
			t.Logf("%s holds no PromQL: %s", q.Source, q.Expr)
			continue
		}
		if strings.ContainsAny(q.PromQL, "$") || strings.Contains(q.PromQL, "[[") {
			t.Errorf("%s: a Grafana variable is left after substitution: %s", q.Source, q.PromQL)
		}
		e, err := Parse(q)
		if err != nil {
			t.Error(err)
			continue
		}
		if len(Selectors(e)) == 0 {
			t.Errorf("%s selects no metric: %s", q.Source, q.Expr)
		}
	}
}

// The checks fail where they should: a query that does not parse, a metric
// that is not exported or is looked for on the wrong service.
func TestCheckerCatchesMistakes(t *testing.T) {
	dash := []byte(`{"panels": [{"title": "Row", "type": "row", "panels": [
	  {"title": "Bad", "targets": [{"refId": "A", "expr": "sum(rate(kitex_client_throughput{job=\"$release-caller\"}[$__rate_interval])"}]}]},
	  {"title": "Typo", "targets": [{"refId": "A", "expr": "rate(kitex_client_throughputt{namespace=\"$namespace\", job=\"$release-caller\"}[${__rate_interval}])"}]},
	  {"title": "Wrong side", "targets": [{"refId": "A", "expr": "tunnel_reconnects_total{job=\"$release-caller\"}"}]},
	  {"title": "Fine", "targets": [{"refId": "A", "expr": "absent(up{job=~\"$release-(echo|caller)\"}) or tunnel_reconnects_total{job=\"[[release]]-echo\"}"}]}],
	 "templating": {"list": [
	  {"name": "transport", "type": "query", "query": {"query": "label_values(kitex_server_thoughput{namespace=\"$namespace\"}, transport)"}},
	  {"name": "labels", "type": "query", "query": "label_names()"},
	  {"name": "datasource", "type": "datasource", "query": "prometheus"}]}}`)
	qs, err := DashboardQueries(dash)
	if err != nil {
		t.Fatal(err)
	}
	var sources []string
	for _, q := range qs {
		sources = append(sources, q.Source)
	}
	want := []string{`panel "Bad" target A`, `panel "Typo" target A`, `panel "Wrong side" target A`, `panel "Fine" target A`,
		`variable "transport"`, `variable "labels"`}
	if fmt.Sprint(sources) != fmt.Sprint(want) {
		t.Fatalf("queries found: %q, want %q", sources, want)
	}
	if _, err := Parse(qs[0]); err == nil || !strings.Contains(err.Error(), `panel "Bad" target A`) {
		t.Errorf("an unclosed parenthesis parses, or the error does not say where: %v", err)
	}
	if qs[5].PromQL != "" {
		t.Errorf("label_names() taken for PromQL: %q", qs[5].PromQL)
	}
	exported := map[Side][]string{
		Echo:   {"kitex_server_throughput", "tunnel_reconnects_total"},
		Caller: {"kitex_client_throughput", "tunnel_sessions"},
	}
	problems, err := Missing(qs[1:], exported)
	if err != nil {
		t.Fatal(err)
	}
	joined := strings.Join(problems, "\n")
	for _, p := range []string{
		"metric kitex_client_throughputt is not exported by caller",
		"metric tunnel_reconnects_total is not exported by caller",
		`metric kitex_server_thoughput is not exported by echo or caller; used by variable "transport"`,
	} {
		if !strings.Contains(joined, p) {
			t.Errorf("Missing does not report %q; it reports:\n%s", p, joined)
		}
	}
	if len(problems) != 3 {
		t.Errorf("%d problems, want 3 (the last panel is fine):\n%s", len(problems), joined)
	}
}

func TestSubstitute(t *testing.T) {
	for in, want := range map[string]string{
		`rate(x{a="$namespace"}[$__rate_interval])`:      `rate(x{a="placeholder"}[5m])`,
		`rate(x{a="${namespace:regex}"}[${__interval}])`: `rate(x{a="placeholder"}[5m])`,
		`x{job="[[release]]-echo"} / $__range_s`:         `x{job="placeholder-echo"} / 300`,
	} {
		if got := Substitute(in); got != want {
			t.Errorf("Substitute(%s) = %s, want %s", in, got, want)
		}
	}
}
