package charttest

// The dashboard and the alerts (issue 19): the Grafana dashboard's ConfigMap
// (dashboards.*) and the PrometheusRule (prometheusRule.*). That every query
// parses as PromQL and names metrics the services export is checked by
// tools/promcheck, which runs the services.

import (
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/engine"
	"sigs.k8s.io/yaml"
)

// grafanaDashboard is the part of a Grafana dashboard the tests read.
type grafanaDashboard struct {
	UID        string `json:"uid"`
	Title      string `json:"title"`
	Templating struct {
		List []grafanaVariable `json:"list"`
	} `json:"templating"`
	Panels []grafanaPanel `json:"panels"`
}

type grafanaVariable struct {
	Name       string          `json:"name"`
	Type       string          `json:"type"`
	Query      json.RawMessage `json:"query"`
	Datasource map[string]any  `json:"datasource"`
	Current    map[string]any  `json:"current"`
	IncludeAll bool            `json:"includeAll"`
	Multi      bool            `json:"multi"`
}

// query is the variable's query as a string (Grafana takes a string, or an
// object with a "query" field).
func (v grafanaVariable) query(t *testing.T) string {
	t.Helper()
	var s string
	if err := json.Unmarshal(v.Query, &s); err == nil {
		return s
	}
	var o struct {
		Query string `json:"query"`
	}
	if err := json.Unmarshal(v.Query, &o); err != nil {
		t.Fatalf("variable %s: query %s is neither a string nor {query: …}", v.Name, v.Query)
	}
	return o.Query
}

type grafanaPanel struct {
	ID         int                      `json:"id"`
	Type       string                   `json:"type"`
	Title      string                   `json:"title"`
	Datasource map[string]any           `json:"datasource"`
	GridPos    struct{ X, Y, W, H int } `json:"gridPos"`
	Targets    []struct {
		RefID      string         `json:"refId"`
		Expr       string         `json:"expr"`
		Datasource map[string]any `json:"datasource"`
	} `json:"targets"`
	Panels []grafanaPanel `json:"panels"` // a collapsed row's
}

// allPanels returns the dashboard's panels, those inside rows too.
func (d grafanaDashboard) allPanels() []grafanaPanel {
	var all []grafanaPanel
	var walk func([]grafanaPanel)
	walk = func(ps []grafanaPanel) {
		for _, p := range ps {
			all = append(all, p)
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	return all
}

// dashboardPanels are the dashboard's panels that must be there, each with
// the metrics its queries must use.
var dashboardPanels = map[string][]string{
	"Calls/s (client)":          {"kitex_client_throughput{"},
	"Calls/s (server)":          {"kitex_server_throughput{"},
	"Error ratio":               {"kitex_client_throughput{", "kitex_server_throughput{", `status="error"`},
	"Latency p50/p99 (client)":  {"histogram_quantile(0.5,", "histogram_quantile(0.99,", "kitex_client_latency_us_bucket{"},
	"Latency p50/p99 (server)":  {"histogram_quantile(0.5,", "histogram_quantile(0.99,", "kitex_server_latency_us_bucket{"},
	"Tunnel sessions (gateway)": {`tunnel_sessions{namespace="$namespace", job="$release-caller"}`, "tunnel_agent_sessions{"},
	"Tunnel sessions (agent)":   {`tunnel_sessions{namespace="$namespace", job="$release-echo"}`},
	"Tunnel reconnects":         {"tunnel_reconnects_total{"},
}

// dashboardOf returns the ConfigMap of a render with the dashboard and the
// dashboard it holds under key.
func dashboardOf(t *testing.T, objs map[string]map[string]any, name, key string) (map[string]any, grafanaDashboard) {
	t.Helper()
	cm, ok := objs["ConfigMap/"+name]
	if !ok {
		t.Fatalf("no ConfigMap/%s; rendered %v", name, slices.Sorted(maps.Keys(objs)))
	}
	data := stringMap(cm, "data")
	if len(data) != 1 {
		t.Fatalf("ConfigMap/%s data has %d keys, want the dashboard only: %v", name, len(data), slices.Sorted(maps.Keys(data)))
	}
	raw, ok := data[key]
	if !ok {
		t.Fatalf("ConfigMap/%s has no data key %s: %v", name, key, slices.Sorted(maps.Keys(data)))
	}
	if !json.Valid([]byte(raw)) {
		t.Fatalf("ConfigMap/%s %s is not valid JSON", name, key)
	}
	var d grafanaDashboard
	dec := json.NewDecoder(strings.NewReader(raw))
	if err := dec.Decode(&d); err != nil {
		t.Fatalf("ConfigMap/%s %s: %v", name, key, err)
	}
	return cm, d
}

// checkDashboard checks what every rendered dashboard must have: the
// variables, the panels and their metrics, this release's selectors.
func checkDashboard(t *testing.T, d grafanaDashboard, prefix string) {
	t.Helper()
	vars := map[string]grafanaVariable{}
	for _, v := range d.Templating.List {
		vars[v.Name] = v
	}
	ds, ok := vars["datasource"]
	if !ok || ds.Type != "datasource" || ds.query(t) != "prometheus" {
		t.Errorf("the datasource variable must be of type datasource, query prometheus: %+v", ds)
	}
	rel, ok := vars["release"]
	if !ok || rel.Type != "constant" || rel.query(t) != prefix || fmt.Sprint(rel.Current["value"]) != prefix {
		t.Errorf("the release variable must be a constant holding the prefix %q: %+v", prefix, rel)
	}
	for _, name := range []string{"namespace", "transport"} {
		v, ok := vars[name]
		if !ok || v.Type != "query" {
			t.Errorf("no query variable %s: %+v", name, v)
			continue
		}
		if fmt.Sprint(v.Datasource["uid"]) != "${datasource}" {
			t.Errorf("variable %s does not query the datasource variable: %v", name, v.Datasource)
		}
		if q := v.query(t); !strings.HasPrefix(q, "label_values(") || !strings.HasSuffix(q, ", "+name+")") || !strings.Contains(q, "$release-") {
			t.Errorf("variable %s: query %q, want label_values(<this release's series>, %s)", name, q, name)
		}
	}
	if tr := vars["transport"]; !tr.IncludeAll || !tr.Multi {
		t.Errorf("the transport variable must allow all and several transports: %+v", tr)
	}

	titles := map[string]grafanaPanel{}
	ids := map[int]string{}
	for _, p := range d.allPanels() {
		if prev, dup := ids[p.ID]; dup || p.ID == 0 {
			t.Errorf("panel %q: id %d (also %q); every panel needs an id of its own", p.Title, p.ID, prev)
		}
		ids[p.ID] = p.Title
		if p.GridPos.W <= 0 || p.GridPos.H <= 0 || p.GridPos.X+p.GridPos.W > 24 {
			t.Errorf("panel %q: gridPos %+v outside Grafana's 24 columns", p.Title, p.GridPos)
		}
		if p.Type == "row" {
			continue
		}
		titles[p.Title] = p
		if fmt.Sprint(p.Datasource["uid"]) != "${datasource}" || len(p.Targets) == 0 {
			t.Errorf("panel %q: datasource %v, %d targets; want ${datasource} and a query", p.Title, p.Datasource, len(p.Targets))
		}
		for _, tg := range p.Targets {
			if fmt.Sprint(tg.Datasource["uid"]) != "${datasource}" {
				t.Errorf("panel %q target %s: datasource %v, want ${datasource}", p.Title, tg.RefID, tg.Datasource)
			}
			// Every query is this release's: its namespace, its jobs.
			if !strings.Contains(tg.Expr, `namespace="$namespace"`) || !strings.Contains(tg.Expr, `job="$release-`) && !strings.Contains(tg.Expr, `job=~"$release-`) {
				t.Errorf("panel %q target %s does not select this release's series by namespace and job: %s", p.Title, tg.RefID, tg.Expr)
			}
			if strings.Contains(tg.Expr, "kitex_") && !strings.Contains(tg.Expr, `transport=~"$transport"`) {
				t.Errorf("panel %q target %s ignores the transport variable: %s", p.Title, tg.RefID, tg.Expr)
			}
		}
	}
	for title, metrics := range dashboardPanels {
		p, ok := titles[title]
		if !ok {
			t.Errorf("no panel %q; panels: %v", title, slices.Sorted(maps.Keys(titles)))
			continue
		}
		var exprs []string
		for _, tg := range p.Targets {
			exprs = append(exprs, tg.Expr)
		}
		all := strings.Join(exprs, "\n")
		for _, m := range metrics {
			if !strings.Contains(all, m) {
				t.Errorf("panel %q: its queries do not use %s:\n%s", title, m, all)
			}
		}
	}
}

// By default neither the dashboard nor the rules are rendered, on any transport.
func TestMonitoringOffByDefault(t *testing.T) {
	for _, tr := range transports {
		for key := range objects(t, "transport="+tr) {
			if strings.HasPrefix(key, "ConfigMap/") || strings.HasPrefix(key, "PrometheusRule/") {
				t.Errorf("transport=%s renders %s by default", tr, key)
			}
		}
	}
}

func TestDashboardConfigMap(t *testing.T) {
	file := readRepo(t, "charts", "kitex-anyconn", "dashboards", "kitex-anyconn.json")
	if !json.Valid([]byte(file)) {
		t.Fatal("charts/kitex-anyconn/dashboards/kitex-anyconn.json is not valid JSON")
	}

	objs := objects(t, "dashboards.enabled=true", "commonAnnotations.owner=rpc-team")
	cm, d := dashboardOf(t, objs, "demo-dashboard", "kitex-anyconn-prod-demo.json")
	want(t, "ConfigMap namespace", stringMap(cm, "metadata")["namespace"], namespace)
	labels := stringMap(cm, "metadata", "labels")
	want(t, "sidecar label grafana_dashboard", labels["grafana_dashboard"], "1")
	want(t, "component label", labels["app.kubernetes.io/component"], "dashboard")
	want(t, "annotations (commonAnnotations)", stringMap(cm, "metadata", "annotations"), map[string]string{"owner": "rpc-team"})
	checkDashboard(t, d, "demo")
	want(t, "title", d.Title, "kitex-anyconn: prod/demo")
	if !regexp.MustCompile(`^kitex-anyconn-[0-9a-f]{16}$`).MatchString(d.UID) {
		t.Errorf("uid %q: want kitex-anyconn-<16 hex digits> (at most 40 characters)", d.UID)
	}
	for _, v := range d.Templating.List {
		if v.Name == "namespace" {
			want(t, "namespace variable's default", v.Current["value"], namespace)
		}
	}

	// The ConfigMap holds the chart's file, with only the uid, the title and
	// the variables' defaults changed.
	var fromFile, rendered map[string]any
	if err := json.Unmarshal([]byte(file), &fromFile); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal([]byte(stringMap(cm, "data")["kitex-anyconn-prod-demo.json"]), &rendered); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"uid", "title", "templating"} {
		delete(fromFile, k)
		delete(rendered, k)
	}
	a, _ := json.Marshal(fromFile)
	b, _ := json.Marshal(rendered)
	if string(a) != string(b) {
		t.Errorf("the rendered dashboard differs from dashboards/kitex-anyconn.json beyond uid, title and templating")
	}

	// Another label, a folder annotation, another namespace and prefix.
	objs = objects(t, "dashboards.enabled=true", "dashboards.label=kitex_dashboards", "dashboards.labelValue=yes",
		"dashboards.annotations.grafana_folder=RPC", "dashboards.namespace=monitoring", "fullnameOverride=rpc")
	cm, d2 := dashboardOf(t, objs, "prod-rpc-dashboard", "kitex-anyconn-prod-rpc.json")
	want(t, "ConfigMap namespace", stringMap(cm, "metadata")["namespace"], "monitoring")
	labels = stringMap(cm, "metadata", "labels")
	want(t, "sidecar label kitex_dashboards", labels["kitex_dashboards"], "yes")
	if _, ok := labels["grafana_dashboard"]; ok {
		t.Error("dashboards.label replaces grafana_dashboard, yet it is still there")
	}
	want(t, "annotations", stringMap(cm, "metadata", "annotations"), map[string]string{"grafana_folder": "RPC"})
	checkDashboard(t, d2, "rpc")
	if d2.UID == d.UID {
		t.Errorf("two releases' dashboards share the uid %s", d.UID)
	}
}

// promRule is the part of a PrometheusRule the tests read.
type promRule struct {
	Metadata struct {
		Name      string            `json:"name"`
		Namespace string            `json:"namespace"`
		Labels    map[string]string `json:"labels"`
	} `json:"metadata"`
	Spec struct {
		Groups []struct {
			Name  string `json:"name"`
			Rules []struct {
				Alert       string            `json:"alert"`
				Expr        string            `json:"expr"`
				For         string            `json:"for"`
				Labels      map[string]string `json:"labels"`
				Annotations map[string]string `json:"annotations"`
			} `json:"rules"`
		} `json:"groups"`
	} `json:"spec"`
}

type alertRule struct {
	expr, forDur, severity string
	annotations            map[string]string
}

// prometheusRule renders the chart and returns its PrometheusRule (strictly
// decoded) and its alerts by name.
func prometheusRule(t *testing.T, name string, sets ...string) (promRule, map[string]alertRule) {
	t.Helper()
	out, err := run(t, "helm", templateArgs(append([]string{"prometheusRule.enabled=true"}, sets...))...)
	if err != nil {
		t.Fatal(err)
	}
	var pr promRule
	found := false
	for _, doc := range regexp.MustCompile(`(?m)^---\s*$`).Split(out, -1) {
		if !strings.Contains(doc, "kind: PrometheusRule") {
			continue
		}
		var head struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
		}
		if err := yaml.Unmarshal([]byte(doc), &head); err != nil {
			t.Fatal(err)
		}
		want(t, "apiVersion", head.APIVersion, "monitoring.coreos.com/v1")
		var strict struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
			promRule
		}
		if err := yaml.UnmarshalStrict([]byte(stripComments(doc)), &strict); err != nil {
			t.Fatalf("PrometheusRule has fields it should not: %v\n%s", err, doc)
		}
		pr, found = strict.promRule, true
	}
	if !found {
		t.Fatalf("no PrometheusRule rendered with %v", sets)
	}
	want(t, "PrometheusRule name", pr.Metadata.Name, name)
	if len(pr.Spec.Groups) != 1 {
		t.Fatalf("%d rule groups, want 1", len(pr.Spec.Groups))
	}
	alerts := map[string]alertRule{}
	for _, r := range pr.Spec.Groups[0].Rules {
		if _, dup := alerts[r.Alert]; dup || r.Alert == "" {
			t.Errorf("alert %q twice, or a rule without an alert name", r.Alert)
		}
		if len(r.Labels) != 1 || r.Labels["severity"] == "" {
			t.Errorf("alert %s: labels %v, want a severity", r.Alert, r.Labels)
		}
		if r.Annotations["summary"] == "" || r.Annotations["description"] == "" {
			t.Errorf("alert %s lacks a summary or a description: %v", r.Alert, r.Annotations)
		}
		alerts[r.Alert] = alertRule{expr: r.Expr, forDur: r.For, severity: r.Labels["severity"], annotations: r.Annotations}
	}
	return pr, alerts
}

func alertNames(alerts map[string]alertRule) []string {
	names := slices.Collect(maps.Keys(alerts))
	sort.Strings(names)
	return names
}

func TestPrometheusRule(t *testing.T) {
	readme := readRepo(t, "charts", "kitex-anyconn", "README.md")
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			pr, alerts := prometheusRule(t, "demo-alerts", "transport="+tr, "prometheusRule.labels.release=prom")
			want(t, "namespace", pr.Metadata.Namespace, namespace)
			want(t, "label release", pr.Metadata.Labels["release"], "prom")
			want(t, "component label", pr.Metadata.Labels["app.kubernetes.io/component"], "alerts")
			want(t, "group", pr.Spec.Groups[0].Name, "kitex-anyconn.prod.demo")
			names := []string{"KitexAnyconnCallerErrors", "KitexAnyconnEchoAbsent", "KitexAnyconnLatencyP99High"}
			if tr == "yamux" {
				names = append(names, "KitexAnyconnTunnelNoAgent", "KitexAnyconnTunnelReconnectStorm")
			}
			sort.Strings(names)
			want(t, "alerts", alertNames(alerts), names)

			caller, echo := `{namespace="prod", job="demo-caller"`, `{namespace="prod", job="demo-echo"`
			wantAlert := func(name, forDur, severity string, parts ...string) {
				t.Helper()
				a := alerts[name]
				want(t, name+" for", a.forDur, forDur)
				want(t, name+" severity", a.severity, severity)
				for _, p := range parts {
					if !strings.Contains(a.expr, p) {
						t.Errorf("%s: expr lacks %q:\n%s", name, p, a.expr)
					}
				}
				url := a.annotations["runbook_url"]
				anchor := "#" + strings.ToLower(name)
				if !strings.HasPrefix(url, "https://github.com/anyconn/kitex-anyconn/blob/main/charts/kitex-anyconn/README.md") || !strings.HasSuffix(url, anchor) {
					t.Errorf("%s: runbook_url %q, want the chart README%s", name, url, anchor)
				}
				if !strings.Contains(readme, "\n#### "+name+"\n") {
					t.Errorf("the chart README has no heading %q, which %s's runbook_url points to", "#### "+name, name)
				}
			}
			wantAlert("KitexAnyconnCallerErrors", "5m", "critical", "kitex_client_throughput"+caller+`, status="error"}[5m]`,
				"kitex_client_throughput"+caller+"}[5m]", "> 0.05")
			wantAlert("KitexAnyconnLatencyP99High", "10m", "warning", "histogram_quantile(0.99,", "kitex_client_latency_us_bucket"+caller+"}[5m]",
				"/ 1e6", "> 0.5")
			if tr == "yamux" {
				wantAlert("KitexAnyconnEchoAbsent", "2m", "critical", "tunnel_sessions"+echo+"}) < 1", "absent(tunnel_sessions"+echo+"})")
				wantAlert("KitexAnyconnTunnelNoAgent", "2m", "critical", "tunnel_sessions"+caller+"}) < 1")
				wantAlert("KitexAnyconnTunnelReconnectStorm", "10m", "warning", "rate(tunnel_reconnects_total"+echo+"}[5m])", "60 *", "> 2")
			} else {
				wantAlert("KitexAnyconnEchoAbsent", "2m", "critical", "echo_registered"+echo+"}) < 1", "absent(echo_registered"+echo+"})")
			}
			// Prometheus' templates reach the rule as they are, not eaten by Helm.
			if s := alerts["KitexAnyconnCallerErrors"].annotations["summary"]; !strings.Contains(s, "{{ $value | humanizePercentage }}") {
				t.Errorf("KitexAnyconnCallerErrors summary: %q", s)
			}
		})
	}

	// Thresholds, windows, severities and switches come from the values; --set
	// gives the decimals as strings, which the chart takes too.
	_, alerts := prometheusRule(t, "demo-alerts", "transport=yamux", "prometheusRule.errorRatio=0.1", "prometheusRule.p99Seconds=0.25",
		"prometheusRule.reconnectsPerMinute=10", "prometheusRule.rateWindow=10m", "prometheusRule.alerts.latencyP99.for=15m",
		"prometheusRule.alerts.latencyP99.severity=page", "prometheusRule.alerts.tunnelNoAgent.enabled=false", "prometheusRule.runbookURL=")
	want(t, "alerts", alertNames(alerts), []string{"KitexAnyconnCallerErrors", "KitexAnyconnEchoAbsent", "KitexAnyconnLatencyP99High", "KitexAnyconnTunnelReconnectStorm"})
	for name, tail := range map[string]string{"KitexAnyconnCallerErrors": "> 0.1", "KitexAnyconnLatencyP99High": "> 0.25", "KitexAnyconnTunnelReconnectStorm": "> 10"} {
		a := alerts[name]
		if !strings.HasSuffix(strings.TrimSpace(a.expr), tail) || !strings.Contains(a.expr, "[10m]") || strings.Contains(a.expr, "[5m]") {
			t.Errorf("%s: expr does not end with %q, or takes a window other than rateWindow's 10m:\n%s", name, tail, a.expr)
		}
		if _, ok := a.annotations["runbook_url"]; ok {
			t.Errorf("%s: a runbook_url with runbookURL empty", name)
		}
	}
	want(t, "p99 for", alerts["KitexAnyconnLatencyP99High"].forDur, "15m")
	want(t, "p99 severity", alerts["KitexAnyconnLatencyP99High"].severity, "page")
	if d := alerts["KitexAnyconnCallerErrors"].annotations["description"]; !strings.Contains(d, "More than 10 % of the calls") {
		t.Errorf("KitexAnyconnCallerErrors description does not give the threshold: %q", d)
	}
	// The same in a values file, as numbers.
	values := filepath.Join(t.TempDir(), "values.yaml")
	if err := os.WriteFile(values, []byte("prometheusRule:\n  errorRatio: 0.02\n  p99Seconds: 1.5\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, alerts = prometheusRule(t, "demo-alerts", "values:"+values)
	for name, tail := range map[string]string{"KitexAnyconnCallerErrors": "> 0.02", "KitexAnyconnLatencyP99High": "> 1.5"} {
		if e := strings.TrimSpace(alerts[name].expr); !strings.HasSuffix(e, tail) {
			t.Errorf("%s: expr does not end with %q:\n%s", name, tail, e)
		}
	}

	// Only what applies: callers only, echo only, another namespace.
	_, alerts = prometheusRule(t, "demo-alerts", "transport=websocket", "echo.enabled=false", "caller.echoAddresses={wss://echo.example.com/kitex}")
	want(t, "callers-only alerts", alertNames(alerts), []string{"KitexAnyconnCallerErrors", "KitexAnyconnLatencyP99High"})
	_, alerts = prometheusRule(t, "demo-alerts", "transport=netpoll", "caller.enabled=false")
	want(t, "echo-only alerts", alertNames(alerts), []string{"KitexAnyconnEchoAbsent"})
	pr, alerts := prometheusRule(t, "prod-demo-alerts", "prometheusRule.namespace=monitoring")
	want(t, "namespace", pr.Metadata.Namespace, "monitoring")
	if e := alerts["KitexAnyconnCallerErrors"].expr; !strings.Contains(e, `namespace="prod"`) {
		t.Errorf("a rule in another namespace must still select the release's namespace: %s", e)
	}
}

// helm lint --strict with the dashboard and the rules on, for every transport.
func TestMonitoringLint(t *testing.T) {
	for _, tr := range goKinds(t) {
		sets := []string{"transport=" + tr, "dashboards.enabled=true", "prometheusRule.enabled=true", "serviceMonitor.enabled=true",
			"prometheusRule.labels.release=prom", "dashboards.annotations.grafana_folder=RPC"}
		args := append([]string{"lint", "--strict", chartDir()}, templateArgs(sets)[5:]...)
		out, err := run(t, "helm", args...)
		if err != nil || !strings.Contains(out, "0 chart(s) failed") {
			t.Fatalf("helm lint --strict with %v: %v\n%s", sets, err, out)
		}
	}
}

func TestMonitoringRejected(t *testing.T) {
	d, p := "dashboards.enabled=true", "prometheusRule.enabled=true"
	wantRenderErrors(t, []renderFails{
		{[]string{"string:dashboards.enabled=yes"}, "/dashboards/enabled"},
		{[]string{d, "dashboards.label=bad label"}, "/dashboards/label"},
		{[]string{d, "dashboards.labelValue=-1-"}, "/dashboards/labelValue"},
		{[]string{d, "dashboards.namespace=Monitoring"}, "/dashboards/namespace"},
		{[]string{d, "dashboards.annotations.grafana_folder=1"}, "/dashboards/annotations/grafana_folder"},
		{[]string{d, "dashboards.folder=RPC"}, "folder"},
		{[]string{p, "prometheusRule.errorRatio=1"}, "prometheusRule.errorRatio=1 must be above 0 and below 1"},
		{[]string{p, "prometheusRule.errorRatio=-0.1"}, "/prometheusRule/errorRatio"},
		{[]string{p, "prometheusRule.p99Seconds=0"}, "/prometheusRule/p99Seconds"},
		{[]string{p, "prometheusRule.p99Seconds=0.0"}, "prometheusRule.p99Seconds=0.0 must be above 0"},
		{[]string{p, "prometheusRule.p99Seconds=fast"}, "/prometheusRule/p99Seconds"},
		{[]string{p, "prometheusRule.reconnectsPerMinute=-2"}, "/prometheusRule/reconnectsPerMinute"},
		{[]string{p, "prometheusRule.rateWindow=5"}, "/prometheusRule/rateWindow"},
		{[]string{p, "prometheusRule.rateWindow=1.5m"}, "/prometheusRule/rateWindow"},
		{[]string{p, "prometheusRule.alerts.callerErrors.for=soon"}, "/prometheusRule/alerts/callerErrors/for"},
		{[]string{p, "prometheusRule.alerts.echoAbsent.severity="}, "/prometheusRule/alerts/echoAbsent/severity"},
		{[]string{p, "prometheusRule.alerts.noSuchAlert.enabled=true"}, "noSuchAlert"},
		{[]string{p, "prometheusRule.labels.release=bad value"}, "/prometheusRule/labels/release"},
		{[]string{p, "prometheusRule.namespace=-x"}, "/prometheusRule/namespace"},
		{[]string{p, "prometheusRule.runbookURL=ftp://runbooks.example.com"}, "/prometheusRule/runbookURL"},
		{[]string{p, "prometheusRule.runbookURL=https://runbooks.example.com/#kitex"}, "/prometheusRule/runbookURL"},
	})
}

// notes renders the chart's NOTES.txt (helm template does not print it) with
// helm's own engine, at the version bin/helm is built from (tools/go.mod).
func notes(t *testing.T, values map[string]any) string {
	t.Helper()
	ch, err := loader.Load(chartDir())
	if err != nil {
		t.Fatal(err)
	}
	vals, err := chartutil.ToRenderValues(ch, values, chartutil.ReleaseOptions{Name: release, Namespace: namespace, IsInstall: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	out, err := engine.Render(ch, vals)
	if err != nil {
		t.Fatal(err)
	}
	n, ok := out["kitex-anyconn/templates/NOTES.txt"]
	if !ok {
		t.Fatal("no NOTES.txt rendered")
	}
	return n
}

// NOTES.txt says where the dashboard and the rules went, and what they select.
func TestMonitoringNotes(t *testing.T) {
	n := notes(t, map[string]any{})
	if strings.Contains(n, "Grafana") || strings.Contains(n, "PrometheusRule") {
		t.Errorf("NOTES mention the dashboard or the alerts, off by default:\n%s", n)
	}
	n = notes(t, map[string]any{
		"dashboards":     map[string]any{"enabled": true, "namespace": "monitoring"},
		"prometheusRule": map[string]any{"enabled": true, "labels": map[string]any{"release": "prom", "team": "rpc"}},
	})
	for _, s := range []string{
		"ConfigMap prod-demo-dashboard in\nnamespace monitoring, labelled grafana_dashboard=\"1\"",
		"PrometheusRule demo-alerts in namespace prod (labels release=prom, team=rpc)",
		"select the jobs demo-echo and demo-caller",
	} {
		if !strings.Contains(n, s) {
			t.Errorf("NOTES lack %q:\n%s", s, n)
		}
	}
	n = notes(t, map[string]any{"dashboards": map[string]any{"enabled": true}, "serviceMonitor": map[string]any{"enabled": true}})
	if !strings.Contains(n, "ConfigMap demo-dashboard in\nnamespace prod") || strings.Contains(n, "select the jobs") {
		t.Errorf("NOTES with the ServiceMonitors on:\n%s", n)
	}
}
