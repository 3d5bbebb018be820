package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"
)

// A real Prometheus (issue 19), built from source (tools/prometheus) and run as
// one pod for the whole run in its own namespace. It finds echo's and caller's
// admin ports through Kubernetes service discovery, labels their series as the
// Prometheus Operator labels those of the chart's ServiceMonitors (job is the
// Service's name), and evaluates the alerts of the chart's PrometheusRule,
// rendered for each release. Each transport's run then checks that both
// services' targets are up and that every query of the chart's Grafana
// dashboard returns data; the first transport's also scales echo to zero and
// waits for the callers' error alert to fire, then clear once echo is back.
var skipProm = flag.Bool("skip-prometheus", false, "skip the Prometheus steps (scrape targets, the chart's dashboard queries and error alert)")

const (
	promNS    = "prometheus-e2e"
	promImage = "kitex-anyconn/prometheus:e2e"
	// The rules are rendered with a short window and `for`, so that the error
	// alert fires and clears within seconds; the scrape and evaluation
	// intervals are 2 s (promConfig), 5 samples per window.
	promRateWindow = "10s"
	promAlertFor   = "4s"
	promErrorAlert = "KitexAnyconnCallerErrors"
	promDashboards = "charts/kitex-anyconn/dashboards"
)

// promTunnelPanels are the dashboard's panels about the yamux tunnel: their
// series exist only with yamux, so they are asserted only there (and must
// still be in the dashboard, so that this list does not go stale).
var promTunnelPanels = []string{"Tunnel sessions (gateway)", "Tunnel sessions (agent)", "Tunnel reconnects"}

// promResult is one row of the Prometheus summary.
type promResult struct {
	transport, targets, dashboard, alert string
}

var promResults []*promResult

func promRow(tr string) *promResult {
	for _, r := range promResults {
		if r.transport == tr {
			return r
		}
	}
	r := &promResult{transport: tr, targets: "-", dashboard: "-", alert: "-"}
	promResults = append(promResults, r)
	return r
}

// promInstallArgs are the chart values that let Prometheus scrape the
// release: its namespace in the NetworkPolicies' metricsFrom. (This cluster's
// CNI does not enforce NetworkPolicies; with one that does, the read of echo's
// metrics through the API server's pod proxy in consecutiveCalls would need
// the node's address there too.)
func promInstallArgs() []string {
	if *skipProm {
		return nil
	}
	return []string{"--set-json", `networkPolicy.metricsFrom=[{"namespaceSelector":{"matchLabels":{"kubernetes.io/metadata.name":"` + promNS + `"}}}]`}
}

// promSteps are the Prometheus steps of transport tr's run, after its tally
// (the error alert makes calls fail on purpose).
func (e *env) promSteps(tr string) []step {
	if *skipProm {
		return nil
	}
	steps := []step{{"Prometheus: echo and caller targets up, every dashboard query returns data", e.promChecks}}
	if tr == firstTransport() {
		steps = append(steps, step{fmt.Sprintf("Prometheus: %s fires with echo scaled to 0 and clears once echo is back", promErrorAlert), e.promAlert})
	}
	return steps
}

func firstTransport() string { return strings.TrimSpace(strings.Split(*only, ",")[0]) }

// startPrometheus builds Prometheus' image, renders the chart's alerting rules
// for every release of the run and deploys Prometheus; the first check waits
// for it to be ready.
func (e *env) startPrometheus() error {
	if *skipProm {
		return nil
	}
	e.step("prometheus: image, the chart's alerting rules, deployment")
	if err := e.cmd(30*time.Minute, "make", "bin/prometheus"); err != nil {
		return err
	}
	if err := e.scratchImage(promImage, "prometheus", func(out string) error {
		b, err := os.ReadFile("bin/prometheus")
		if err != nil {
			return err
		}
		return os.WriteFile(out, b, 0o755)
	}); err != nil {
		return err
	}
	files := map[string]string{}
	var namespaces []string
	for _, tr := range strings.Split(*only, ",") {
		tr = strings.TrimSpace(tr)
		ns := *namespace + "-" + tr
		rules, err := e.chartRules(ns, tr)
		if err != nil {
			return err
		}
		files["rules-"+tr+".yml"] = rules
		namespaces = append(namespaces, ns)
	}
	files["prometheus.yml"] = fmt.Sprintf(promConfig, strings.Join(namespaces, ", "))
	cm, err := json.Marshal(map[string]any{
		"apiVersion": "v1", "kind": "ConfigMap",
		"metadata": map[string]string{"name": "prometheus", "namespace": promNS},
		"data":     files,
	})
	if err != nil {
		return err
	}
	if err := e.kube(3*time.Minute, "delete", "namespace", promNS, "--ignore-not-found", "--wait=true", "--timeout=2m"); err != nil {
		return err
	}
	manifest := fmt.Sprintf(promManifest, cm, promImage)
	return e.cmdWith(2*time.Minute, nil, []byte(manifest), e.kubectl, "--context", e.context(), "apply", "-f", "-")
}

// stopPrometheus removes Prometheus once the transports are done (unless
// -keep), without waiting: the edge run and Tilt need the CPU more.
func (e *env) stopPrometheus() {
	if *skipProm || *keep {
		return
	}
	_ = e.kube(time.Minute, "delete", "namespace", promNS, "--ignore-not-found", "--wait=false")
	_ = e.kube(time.Minute, "delete", "clusterrolebinding,clusterrole", promNS, "--ignore-not-found", "--wait=false")
}

// chartRules renders the chart's PrometheusRule for the release of transport
// tr in namespace ns (prometheusRule.enabled, with promRateWindow and
// promAlertFor) and returns its spec, the groups, as a Prometheus rules file.
func (e *env) chartRules(ns, tr string) (string, error) {
	out, err := exec.Command(e.helm, "template", release, "charts/kitex-anyconn", "-n", ns,
		"--set", "transport="+tr, "--set", "prometheusRule.enabled=true",
		"--set", "prometheusRule.rateWindow="+promRateWindow,
		"--set", "prometheusRule.alerts.callerErrors.for="+promAlertFor,
		"--show-only", "templates/prometheusrule.yaml").Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			err = fmt.Errorf("%w: %s", err, ee.Stderr)
		}
		return "", fmt.Errorf("helm template the PrometheusRule for %s: %w", tr, err)
	}
	return ruleFile(string(out))
}

// ruleFile turns a rendered PrometheusRule into a rules file: its spec (the
// `groups:` key and what follows, indented under `spec:`), unindented.
func ruleFile(manifest string) (string, error) {
	_, spec, ok := strings.Cut(manifest, "\nspec:\n")
	if !ok || !strings.Contains(manifest, "kind: PrometheusRule") {
		return "", fmt.Errorf("no PrometheusRule spec in the rendered chart:\n%s", manifest)
	}
	spec, _, _ = strings.Cut(spec, "\n---")
	var b strings.Builder
	for _, l := range strings.Split(strings.TrimRight(spec, "\n"), "\n") {
		if strings.TrimSpace(l) != "" && !strings.HasPrefix(l, "  ") {
			return "", fmt.Errorf("the PrometheusRule's spec ends unexpectedly at %q", l)
		}
		b.WriteString(strings.TrimPrefix(l, "  ") + "\n")
	}
	if !strings.HasPrefix(b.String(), "groups:\n") {
		return "", fmt.Errorf("the PrometheusRule's spec does not start with groups:\n%s", b.String())
	}
	return b.String(), nil
}

// promChecks checks, in Prometheus, that every echo and caller pod of the
// release is a target that is up, that the release's rule group is loaded,
// and that every query of the chart's dashboard returns data.
func (e *env) promChecks(x *run) error {
	p, stop, err := e.promClient()
	if err != nil {
		return err
	}
	defer stop()
	row := promRow(x.tr)
	row.targets = "FAILED"
	n, err := p.awaitTargets(e, x.ns)
	if err != nil {
		return err
	}
	row.targets = fmt.Sprintf("%d echo, %d caller", n["echo"], n["caller"])
	rules, err := p.rules(x.ns)
	if err != nil {
		return err
	}
	if !rules[promErrorAlert] {
		return fmt.Errorf("Prometheus has no rule %s for %s (rules loaded: %v)", promErrorAlert, x.ns, rules)
	}
	fmt.Printf("prometheus: %d alerting rules of the chart loaded for %s\n", len(rules), x.ns)
	row.dashboard = "FAILED"
	cell, err := p.dashboard(x.ns, x.tr)
	if err != nil {
		return err
	}
	row.dashboard = cell
	return nil
}

// promTarget is one of /api/v1/targets' active targets.
type promTarget struct {
	Labels    map[string]string `json:"labels"`
	Health    string            `json:"health"`
	LastError string            `json:"lastError"`
	ScrapeURL string            `json:"scrapeUrl"`
}

// awaitTargets waits (at most 1 min) until Prometheus scrapes every running
// echo and caller pod of namespace ns, and nothing else there, and each is
// up; it returns how many of each.
func (p *promAPI) awaitTargets(e *env, ns string) (map[string]int, error) {
	deadline := time.Now().Add(time.Minute)
	for {
		problem, counts, err := p.targetsProblem(e, ns)
		if err != nil {
			return nil, err
		}
		if problem == "" {
			fmt.Printf("prometheus: targets up in %s: %v\n", ns, counts)
			return counts, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("Prometheus' targets in %s after 1 min: %s", ns, problem)
		}
		time.Sleep(2 * time.Second)
	}
}

func (p *promAPI) targetsProblem(e *env, ns string) (string, map[string]int, error) {
	var data struct {
		ActiveTargets []promTarget `json:"activeTargets"`
	}
	if err := p.get("/api/v1/targets", url.Values{"state": {"active"}}, &data); err != nil {
		return "", nil, err
	}
	counts := map[string]int{}
	var problems []string
	for _, t := range data.ActiveTargets {
		if t.Labels["namespace"] != ns {
			continue
		}
		comp := strings.TrimPrefix(t.Labels["job"], release+"-")
		counts[comp]++
		if t.Health != "up" {
			problems = append(problems, fmt.Sprintf("%s %s is %s (%s)", t.Labels["job"], t.ScrapeURL, t.Health, t.LastError))
		}
	}
	for _, comp := range []string{"echo", "caller"} {
		pods, err := e.pods(ns, comp)
		if err != nil {
			return "", nil, err
		}
		if counts[comp] != len(pods) {
			problems = append(problems, fmt.Sprintf("%d %s targets for %d running pods", counts[comp], comp, len(pods)))
		}
	}
	if len(counts) != 2 {
		problems = append(problems, fmt.Sprintf("jobs %v, want %s-echo and %s-caller", counts, release, release))
	}
	return strings.Join(problems, "; "), counts, nil
}

// rules returns the names of the rules of the chart's group for ns; a rule
// whose evaluation fails is an error.
func (p *promAPI) rules(ns string) (map[string]bool, error) {
	var data struct {
		Groups []struct {
			Name  string `json:"name"`
			Rules []struct {
				Name      string `json:"name"`
				Health    string `json:"health"`
				LastError string `json:"lastError"`
			} `json:"rules"`
		} `json:"groups"`
	}
	if err := p.get("/api/v1/rules", nil, &data); err != nil {
		return nil, err
	}
	names := map[string]bool{}
	for _, g := range data.Groups {
		if g.Name != "kitex-anyconn."+ns+"."+release {
			continue
		}
		for _, r := range g.Rules {
			if r.Health == "err" {
				return nil, fmt.Errorf("rule %s of %s fails: %s", r.Name, g.Name, r.LastError)
			}
			names[r.Name] = true
		}
	}
	return names, nil
}

// dashQuery is one query of the dashboard: a panel target's expr, or a
// template variable's label_values().
type dashQuery struct {
	panel, ref, expr string
}

// dashboard runs every query of the chart's dashboards against Prometheus
// with the Grafana variables replaced for the release under test; each must
// return data, but for the tunnel panels on another transport than yamux. It
// returns the summary's cell.
func (p *promAPI) dashboard(ns, tr string) (string, error) {
	queries, vars, err := dashboardQueries()
	if err != nil {
		return "", err
	}
	values := map[string]string{
		"namespace": ns, "transport": tr, "release": release,
		"__rate_interval": "1m", "__interval": "10s", "__range": "5m",
	}
	tunnel := map[string]bool{}
	for _, t := range promTunnelPanels {
		tunnel[t] = true
	}
	seen := map[string]bool{}
	var failed []string
	withData, skipped := 0, 0
	for _, q := range queries {
		seen[q.panel] = true
		expr, err := grafanaVars(q.expr, values)
		if err != nil {
			return "", fmt.Errorf("panel %q %s: %w", q.panel, q.ref, err)
		}
		n, err := p.resultLen(expr)
		if err != nil {
			return "", fmt.Errorf("panel %q %s: %s: %w", q.panel, q.ref, expr, err)
		}
		switch {
		case n > 0:
			withData++
		case tunnel[q.panel] && tr != "yamux":
			skipped++
		default:
			failed = append(failed, fmt.Sprintf("panel %q %s: no data for %s", q.panel, q.ref, expr))
		}
		fmt.Printf("prometheus: %3d series  %s %s\n", n, q.panel, q.ref)
	}
	for _, t := range promTunnelPanels {
		if !seen[t] {
			failed = append(failed, fmt.Sprintf("promTunnelPanels names %q, which the dashboard does not have", t))
		}
	}
	// The variables the dashboard offers must list the release's namespace
	// and transport (Grafana's label_values(metric, label)).
	for _, v := range vars {
		if want := values[v.panel]; want != "" {
			got, err := p.labelValues(v.expr, values)
			if err != nil {
				return "", fmt.Errorf("variable %s: %w", v.panel, err)
			}
			if !contains(got, want) {
				failed = append(failed, fmt.Sprintf("variable %s (%s) offers %v, not %s", v.panel, v.expr, got, want))
			}
		}
	}
	if len(failed) > 0 {
		return "FAILED", fmt.Errorf("the chart's dashboard on %s:\n  %s", tr, strings.Join(failed, "\n  "))
	}
	cell := fmt.Sprintf("%d/%d queries", withData, len(queries))
	if skipped > 0 {
		cell += fmt.Sprintf(" (%d tunnel queries n/a)", skipped)
	}
	return cell + fmt.Sprintf(", %d variables", len(vars)), nil
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// dashboardQueries reads every dashboard of the chart: its panels' queries
// (rows' nested panels too), and its query variables (panel is the
// variable's name, expr its query).
func dashboardQueries() (queries, vars []dashQuery, err error) {
	files, err := filepath.Glob(filepath.Join(promDashboards, "*.json"))
	if err != nil || len(files) == 0 {
		return nil, nil, fmt.Errorf("no dashboard in %s (%v)", promDashboards, err)
	}
	type panel struct {
		Title   string  `json:"title"`
		Panels  []panel `json:"panels"`
		Targets []struct {
			RefID string `json:"refId"`
			Expr  string `json:"expr"`
		} `json:"targets"`
	}
	var walk func(ps []panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			for _, t := range p.Targets {
				if strings.TrimSpace(t.Expr) != "" {
					queries = append(queries, dashQuery{p.Title, t.RefID, t.Expr})
				}
			}
			walk(p.Panels)
		}
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, nil, err
		}
		var d struct {
			Panels     []panel `json:"panels"`
			Templating struct {
				List []struct {
					Name  string `json:"name"`
					Type  string `json:"type"`
					Query any    `json:"query"`
				} `json:"list"`
			} `json:"templating"`
		}
		if err := json.Unmarshal(b, &d); err != nil {
			return nil, nil, fmt.Errorf("%s: %w", f, err)
		}
		walk(d.Panels)
		for _, v := range d.Templating.List {
			if q, ok := v.Query.(string); ok && v.Type == "query" {
				vars = append(vars, dashQuery{v.Name, "", q})
			}
		}
	}
	if len(queries) == 0 {
		return nil, nil, fmt.Errorf("no query in %v", files)
	}
	return queries, vars, nil
}

var grafanaVar = regexp.MustCompile(`\$\{(\w+)(?::\w+)?\}|\[\[(\w+)\]\]|\$(\w+)`)

// grafanaVars replaces Grafana's variables ($x, ${x}, ${x:fmt}, [[x]]) in
// expr with values; an unknown one is an error.
func grafanaVars(expr string, values map[string]string) (string, error) {
	var missing []string
	out := grafanaVar.ReplaceAllStringFunc(expr, func(m string) string {
		sub := grafanaVar.FindStringSubmatch(m)
		name := sub[1] + sub[2] + sub[3]
		v, ok := values[name]
		if !ok {
			missing = append(missing, name)
			return m
		}
		return v
	})
	if len(missing) > 0 {
		return "", fmt.Errorf("no value for the Grafana variables %v in %s", missing, expr)
	}
	return out, nil
}

var labelValuesQuery = regexp.MustCompile(`^\s*label_values\((.*),\s*(\w+)\s*\)\s*$`)

// labelValues answers Grafana's label_values(selector, label) query.
func (p *promAPI) labelValues(query string, values map[string]string) ([]string, error) {
	m := labelValuesQuery.FindStringSubmatch(query)
	if m == nil {
		return nil, fmt.Errorf("not a label_values(selector, label) query: %s", query)
	}
	sel, err := grafanaVars(m[1], values)
	if err != nil {
		return nil, err
	}
	var got []string
	if err := p.get("/api/v1/label/"+m[2]+"/values", url.Values{"match[]": {sel}}, &got); err != nil {
		return nil, err
	}
	return got, nil
}

// resultLen runs an instant query and returns the number of series (1 for
// a scalar or string).
func (p *promAPI) resultLen(expr string) (int, error) {
	var data struct {
		ResultType string          `json:"resultType"`
		Result     json.RawMessage `json:"result"`
	}
	if err := p.get("/api/v1/query", url.Values{"query": {expr}}, &data); err != nil {
		return 0, err
	}
	if data.ResultType == "scalar" || data.ResultType == "string" {
		return 1, nil
	}
	var series []json.RawMessage
	if err := json.Unmarshal(data.Result, &series); err != nil {
		return 0, fmt.Errorf("result of type %s: %w", data.ResultType, err)
	}
	return len(series), nil
}

// promAlert scales echo to 0: the callers' calls fail, and the chart's
// error alert must fire; then scales it back, waits for the rollout and for
// calls to reach echo again, and the alert must clear.
func (e *env) promAlert(x *run) error {
	p, stop, err := e.promClient()
	if err != nil {
		return err
	}
	defer stop()
	row := promRow(x.tr)
	row.alert = "FAILED"
	if s, err := p.alertState(x.ns); err != nil {
		return err
	} else if s == "firing" {
		return fmt.Errorf("%s fires in %s before echo is scaled down", promErrorAlert, x.ns)
	}
	deploy := "deploy/" + release + "-echo"
	replicas, err := e.kubeOut("-n", x.ns, "get", deploy, "-o", "jsonpath={.spec.replicas}")
	if err != nil {
		return err
	}
	if _, err := strconv.Atoi(strings.TrimSpace(replicas)); err != nil {
		return fmt.Errorf("%s has no replica count (%q): %w", deploy, replicas, err)
	}
	down := time.Now()
	if err := e.kube(time.Minute, "-n", x.ns, "scale", deploy, "--replicas=0"); err != nil {
		return err
	}
	fired, err := p.awaitAlert(x.ns, true, down, 2*time.Minute)
	if err != nil {
		return err
	}
	fmt.Printf("prometheus: %s firing %s after echo was scaled to 0\n", promErrorAlert, fired)
	up := time.Now()
	if err := e.kube(time.Minute, "-n", x.ns, "scale", deploy, "--replicas="+strings.TrimSpace(replicas)); err != nil {
		return err
	}
	if err := e.kube(5*time.Minute, "-n", x.ns, "rollout", "status", deploy, "--timeout=4m"); err != nil {
		return err
	}
	if err := e.awaitCallsReachEcho(x, up); err != nil {
		return err
	}
	cleared, err := p.awaitAlert(x.ns, false, up, 2*time.Minute)
	if err != nil {
		return err
	}
	fmt.Printf("prometheus: %s cleared %s after echo was scaled back\n", promErrorAlert, cleared)
	row.alert = fmt.Sprintf("fired %s after echo to 0, cleared %s after echo back", fired, cleared)
	return nil
}

// awaitCallsReachEcho waits (at most 2 min) for *consecutiv successful calls
// since t that reached the echo pods running now.
func (e *env) awaitCallsReachEcho(x *run, t time.Time) error {
	deadline := time.Now().Add(2 * time.Minute)
	for {
		echoes, err := e.echoTargets(x.ns, x.tr)
		if err != nil {
			return err
		}
		calls, err := e.callerLog(x.ns)
		if err != nil {
			return err
		}
		if trailingOK(since(calls, t), x.tr, echoes) >= *consecutiv {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no %d consecutive calls reached echo within 2 min of scaling it back: %v", *consecutiv, tail(calls, 5))
		}
		time.Sleep(time.Second)
	}
}

// awaitAlert waits until the error alert of ns fires (firing) or no longer
// fires, and returns how long after t.
func (p *promAPI) awaitAlert(ns string, firing bool, t time.Time, within time.Duration) (time.Duration, error) {
	deadline := time.Now().Add(within)
	for {
		s, err := p.alertState(ns)
		if err != nil {
			return 0, err
		}
		if (s == "firing") == firing {
			return time.Since(t).Round(time.Second), nil
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("%s in %s still %q %s after echo was scaled (want firing=%v)", promErrorAlert, ns, s, within, firing)
		}
		time.Sleep(time.Second)
	}
}

// alertState returns the state of the error alert of ns: firing, pending,
// or "" when it is not active.
func (p *promAPI) alertState(ns string) (string, error) {
	var data struct {
		Alerts []struct {
			Labels map[string]string `json:"labels"`
			State  string            `json:"state"`
		} `json:"alerts"`
	}
	if err := p.get("/api/v1/alerts", nil, &data); err != nil {
		return "", err
	}
	state := ""
	for _, a := range data.Alerts {
		if a.Labels["alertname"] == promErrorAlert && a.Labels["namespace"] == ns {
			if a.State == "firing" || state == "" {
				state = a.State
			}
		}
	}
	return state, nil
}

// promAPI is Prometheus' HTTP API through a kubectl port-forward.
type promAPI struct{ base string }

// promClient waits for Prometheus to be ready and forwards a local port to
// it; stop ends the forward.
func (e *env) promClient() (*promAPI, func(), error) {
	if err := e.kube(3*time.Minute, "-n", promNS, "rollout", "status", "deploy/prometheus", "--timeout=2m"); err != nil {
		return nil, nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	pf := exec.CommandContext(ctx, e.kubectl, "--context", e.context(), "-n", promNS, "port-forward", "svc/prometheus", ":9090")
	var out syncBuffer
	pf.Stdout, pf.Stderr = &out, &out
	if err := pf.Start(); err != nil {
		cancel()
		return nil, nil, err
	}
	stop := func() { cancel(); _ = pf.Wait() }
	fwd := regexp.MustCompile(`Forwarding from 127\.0\.0\.1:(\d+)`)
	for i := 0; ; i++ {
		if m := fwd.FindStringSubmatch(out.String()); m != nil {
			p := &promAPI{base: "http://127.0.0.1:" + m[1]}
			if err := p.ready(); err != nil {
				stop()
				return nil, nil, err
			}
			return p, stop, nil
		}
		if i == 100 {
			stop()
			return nil, nil, fmt.Errorf("kubectl port-forward to Prometheus did not start: %s", out.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// ready waits (at most 1 min) for Prometheus' /-/ready.
func (p *promAPI) ready() error {
	deadline := time.Now().Add(time.Minute)
	for {
		resp, err := http.Get(p.base + "/-/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("%s", resp.Status)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("Prometheus not ready: %w", err)
		}
		time.Sleep(time.Second)
	}
}

// get calls the API at path and decodes its data into v.
func (p *promAPI) get(path string, q url.Values, v any) error {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.base+path+"?"+q.Encode(), nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("Prometheus %s: %w", path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	var r struct {
		Status    string          `json:"status"`
		Data      json.RawMessage `json:"data"`
		ErrorType string          `json:"errorType"`
		Error     string          `json:"error"`
	}
	if err := json.Unmarshal(body, &r); err != nil {
		return fmt.Errorf("Prometheus %s: %s: %.200s", path, resp.Status, body)
	}
	if r.Status != "success" {
		return fmt.Errorf("Prometheus %s: %s: %s", path, r.ErrorType, r.Error)
	}
	return json.Unmarshal(r.Data, v)
}

// syncBuffer is a bytes.Buffer that a command writes while we read it.
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

// dumpPrometheus prints what explains a failed Prometheus step.
func (e *env) dumpPrometheus() {
	if *skipProm {
		return
	}
	fmt.Println("\n== dump: Prometheus' log (last 40 lines)")
	_ = e.kube(time.Minute, "-n", promNS, "logs", "deploy/prometheus", "--tail=40")
}

func printPromSummary() {
	if len(promResults) == 0 {
		return
	}
	fmt.Println("\n| Prometheus | targets up | dashboard queries with data | " + promErrorAlert + " |")
	fmt.Println("|---|---|---|---|")
	for _, r := range promResults {
		fmt.Printf("| %s | %s | %s | %s |\n", r.transport, r.targets, r.dashboard, r.alert)
	}
}

// promConfig scrapes the admin port of the release Services' echo and caller
// endpoints in the run's namespaces (argument: their names, comma-separated),
// ready ones only, with the labels the Prometheus Operator gives a
// ServiceMonitor's targets (job: the Service's name), which the chart's
// dashboard and alerts select on.
const promConfig = `global:
  scrape_interval: 2s
  scrape_timeout: 2s
  evaluation_interval: 2s
rule_files:
  - /etc/prometheus/rules-*.yml
scrape_configs:
  - job_name: kitex-anyconn
    kubernetes_sd_configs:
      - role: endpointslice
        namespaces:
          names: [%s]
    relabel_configs:
      - action: keep
        source_labels:
          - __meta_kubernetes_service_label_app_kubernetes_io_part_of
          - __meta_kubernetes_service_label_app_kubernetes_io_instance
          - __meta_kubernetes_service_label_app_kubernetes_io_component
          - __meta_kubernetes_endpointslice_port_name
        regex: kitex-anyconn;` + release + `;(echo|caller);admin
      - action: drop
        source_labels: [__meta_kubernetes_endpointslice_endpoint_conditions_ready]
        regex: "false"
      - {source_labels: [__meta_kubernetes_namespace], target_label: namespace}
      - {source_labels: [__meta_kubernetes_service_name], target_label: service}
      - {source_labels: [__meta_kubernetes_service_name], target_label: job}
      - {source_labels: [__meta_kubernetes_pod_name], target_label: pod}
      - {source_labels: [__meta_kubernetes_pod_container_name], target_label: container}
      - {source_labels: [__meta_kubernetes_endpointslice_port_name], target_label: endpoint}
`

// promManifest is Prometheus: one pod reading the ConfigMap (first
// argument, JSON) and its image (second), allowed to discover pods,
// Services and EndpointSlices; its data in an emptyDir.
const promManifest = `apiVersion: v1
kind: Namespace
metadata:
  name: ` + promNS + `
---
apiVersion: v1
kind: ServiceAccount
metadata:
  name: prometheus
  namespace: ` + promNS + `
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: ` + promNS + `
rules:
  - apiGroups: [""]
    resources: [pods, services, endpoints]
    verbs: [get, list, watch]
  - apiGroups: [discovery.k8s.io]
    resources: [endpointslices]
    verbs: [get, list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: ` + promNS + `
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: ` + promNS + `
subjects:
  - kind: ServiceAccount
    name: prometheus
    namespace: ` + promNS + `
---
%s
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: prometheus
  namespace: ` + promNS + `
spec:
  replicas: 1
  selector:
    matchLabels: {app: prometheus}
  template:
    metadata:
      labels: {app: prometheus}
    spec:
      serviceAccountName: prometheus
      enableServiceLinks: false
      securityContext:
        runAsNonRoot: true
        runAsUser: 65532
        runAsGroup: 65532
        fsGroup: 65532
        seccompProfile: {type: RuntimeDefault}
      containers:
        - name: prometheus
          image: %s
          imagePullPolicy: Never
          args:
            - --config.file=/etc/prometheus/prometheus.yml
            - --storage.tsdb.path=/data
            - --storage.tsdb.retention.time=2h
            - --web.listen-address=:9090
          ports:
            - {name: web, containerPort: 9090}
          readinessProbe:
            httpGet: {path: /-/ready, port: web}
            periodSeconds: 2
          securityContext:
            allowPrivilegeEscalation: false
            readOnlyRootFilesystem: true
            capabilities: {drop: [ALL]}
          volumeMounts:
            - {name: config, mountPath: /etc/prometheus, readOnly: true}
            - {name: data, mountPath: /data}
      volumes:
        - name: config
          configMap: {name: prometheus}
        - name: data
          emptyDir: {}
---
apiVersion: v1
kind: Service
metadata:
  name: prometheus
  namespace: ` + promNS + `
spec:
  selector: {app: prometheus}
  ports:
    - {name: web, port: 9090, targetPort: web}
`
