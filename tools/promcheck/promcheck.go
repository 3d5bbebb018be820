// Package promcheck checks the PromQL that the chart ships: every query of the
// Grafana dashboard (charts/kitex-anyconn/dashboards/kitex-anyconn.json) and
// every expression of the PrometheusRule (templates/prometheusrule.yaml, as
// bin/helm renders it). Each must parse with Prometheus' own parser, and each
// metric it names must be one the services export on their admin port.
//
// Its tests (run by `make test-chart`) build echo, caller and devrun from the
// repository root, run them as `make run` does over netpoll and yamux, and
// read their /metrics. It is a module of its own so that the root module does
// not depend on Prometheus' server code.
package promcheck

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strings"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"
	"go.yaml.in/yaml/v3"
)

// Query is one PromQL expression found in the dashboard or the rules.
type Query struct {
	// Source says where it is: a panel and target, a variable, an alert.
	Source string
	// Expr is the expression as written (with Grafana's variables).
	Expr string
	// PromQL is Expr with Grafana's variables replaced by valid placeholders,
	// or "" when the source holds no PromQL (a Grafana variable query such as
	// label_names()).
	PromQL string
}

// Placeholder is what a Grafana variable other than the interval ones
// becomes: the chart uses them only inside label values.
const Placeholder = "placeholder"

// grafanaVar matches Grafana's variable syntaxes: $name, ${name},
// ${name:format} and [[name]].
var grafanaVar = regexp.MustCompile(`\$\{(\w+)(?::[^}]*)?\}|\$(\w+)|\[\[(\w+)(?::[^\]]*)?\]\]`)

// Substitute replaces Grafana's variables in expr: the interval and range
// ones ($__rate_interval, $__interval, $__range) by a duration, their _ms and
// _s forms by a number, every other by Placeholder.
func Substitute(expr string) string {
	return grafanaVar.ReplaceAllStringFunc(expr, func(m string) string {
		sub := grafanaVar.FindStringSubmatch(m)
		name := sub[1] + sub[2] + sub[3]
		switch name {
		case "__rate_interval", "__interval", "__range", "__auto":
			return "5m"
		case "__interval_ms", "__range_ms":
			return "300000"
		case "__range_s":
			return "300"
		}
		return Placeholder
	})
}

// Grafana's variable queries for Prometheus that are not PromQL.
var (
	labelValuesQuery = regexp.MustCompile(`^\s*label_values\((.*),\s*([A-Za-z_][A-Za-z0-9_]*)\s*\)\s*$`)
	queryResultQuery = regexp.MustCompile(`^\s*query_result\((.*)\)\s*$`)
	noPromQLQuery    = regexp.MustCompile(`^\s*(label_names\(.*\)|metrics\(.*\)|label_values\(\s*[A-Za-z_][A-Za-z0-9_]*\s*\))\s*$`)
)

// variablePromQL returns the PromQL inside a Grafana variable query:
// label_values(<selector>, label)'s selector, query_result(<expr>)'s
// expression, the query itself otherwise; "" for the queries without any.
func variablePromQL(q string) string {
	if m := labelValuesQuery.FindStringSubmatch(q); m != nil {
		return m[1]
	}
	if m := queryResultQuery.FindStringSubmatch(q); m != nil {
		return m[1]
	}
	if noPromQLQuery.MatchString(q) {
		return ""
	}
	return q
}

type dashPanel struct {
	Title   string `json:"title"`
	Targets []struct {
		RefID string `json:"refId"`
		Expr  string `json:"expr"`
	} `json:"targets"`
	Panels []dashPanel `json:"panels"`
}

// DashboardQueries returns every PromQL expression of a Grafana dashboard:
// its panels' targets (rows' panels included) and its query variables.
func DashboardQueries(raw []byte) ([]Query, error) {
	var d struct {
		Panels     []dashPanel `json:"panels"`
		Templating struct {
			List []struct {
				Name  string          `json:"name"`
				Type  string          `json:"type"`
				Query json.RawMessage `json:"query"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(raw, &d); err != nil {
		return nil, fmt.Errorf("dashboard: %w", err)
	}
	var qs []Query
	var walk func([]dashPanel)
	walk = func(ps []dashPanel) {
		for _, p := range ps {
			for _, t := range p.Targets {
				qs = append(qs, Query{Source: fmt.Sprintf("panel %q target %s", p.Title, t.RefID), Expr: t.Expr, PromQL: Substitute(t.Expr)})
			}
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		var q string
		if err := json.Unmarshal(v.Query, &q); err != nil {
			var o struct {
				Query string `json:"query"`
			}
			if err := json.Unmarshal(v.Query, &o); err != nil {
				return nil, fmt.Errorf("variable %s: query %s is neither a string nor {query: …}", v.Name, v.Query)
			}
			q = o.Query
		}
		qs = append(qs, Query{Source: fmt.Sprintf("variable %q", v.Name), Expr: q, PromQL: Substitute(variablePromQL(q))})
	}
	return qs, nil
}

// RuleQueries returns the expression of every rule of every PrometheusRule
// in manifests (the YAML documents `helm template` prints).
func RuleQueries(manifests []byte) ([]Query, error) {
	dec := yaml.NewDecoder(strings.NewReader(string(manifests)))
	var qs []Query
	for {
		var doc struct {
			Kind     string `yaml:"kind"`
			Metadata struct {
				Name string `yaml:"name"`
			} `yaml:"metadata"`
			Spec struct {
				Groups []struct {
					Name  string `yaml:"name"`
					Rules []struct {
						Alert  string `yaml:"alert"`
						Record string `yaml:"record"`
						Expr   string `yaml:"expr"`
					} `yaml:"rules"`
				} `yaml:"groups"`
			} `yaml:"spec"`
		}
		err := dec.Decode(&doc)
		if errors.Is(err, io.EOF) {
			return qs, nil
		}
		if err != nil {
			return nil, fmt.Errorf("manifests: %w", err)
		}
		if doc.Kind != "PrometheusRule" {
			continue
		}
		for _, g := range doc.Spec.Groups {
			for _, r := range g.Rules {
				name := r.Alert + r.Record
				qs = append(qs, Query{Source: fmt.Sprintf("PrometheusRule %s group %s rule %s", doc.Metadata.Name, g.Name, name), Expr: r.Expr, PromQL: r.Expr})
			}
		}
	}
}

// Parse parses q's PromQL with Prometheus' parser.
func Parse(q Query) (parser.Expr, error) {
	e, err := parser.NewParser(parser.Options{}).ParseExpr(q.PromQL)
	if err != nil {
		return nil, fmt.Errorf("%s: %w\n  expr: %s\n  parsed: %s", q.Source, err, q.Expr, q.PromQL)
	}
	return e, nil
}

// Side is the service a selector's series come from, told by its job
// matcher: <prefix>-echo or <prefix>-caller, as the chart's ServiceMonitors
// name the jobs.
type Side string

const (
	Echo   Side = "echo"
	Caller Side = "caller"
	Either Side = "echo or caller" // no job matcher, or one that matches both
)

// Selector is a metric a query selects.
type Selector struct {
	// Name is the metric name; NameRegexp the regular expression of a
	// __name__=~"…" matcher instead.
	Name, NameRegexp string
	Side             Side
}

// Selectors returns the metrics e selects (vector selectors, those inside
// range selectors, subqueries and absent() included), each once.
func Selectors(e parser.Expr) []Selector {
	var out []Selector
	add := func(vs *parser.VectorSelector) {
		s := Selector{Name: vs.Name, Side: Either}
		for _, m := range vs.LabelMatchers {
			switch {
			case m.Name == labels.MetricName && m.Type == labels.MatchEqual:
				s.Name = m.Value
			case m.Name == labels.MetricName && m.Type == labels.MatchRegexp:
				s.NameRegexp = m.Value
			case m.Name == "job" && m.Type == labels.MatchEqual:
				if strings.HasSuffix(m.Value, "-echo") {
					s.Side = Echo
				} else if strings.HasSuffix(m.Value, "-caller") {
					s.Side = Caller
				}
			case m.Name == "job" && m.Type == labels.MatchRegexp:
				echo, caller := m.Matches(Placeholder+"-echo"), m.Matches(Placeholder+"-caller")
				if echo && !caller {
					s.Side = Echo
				} else if caller && !echo {
					s.Side = Caller
				}
			}
		}
		if s.NameRegexp != "" {
			s.Name = ""
		}
		if !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
		switch n := n.(type) {
		case *parser.VectorSelector:
			add(n)
		case *parser.MatrixSelector:
			if vs, ok := n.VectorSelector.(*parser.VectorSelector); ok {
				add(vs)
			}
		}
		return nil
	})
	return out
}

// PrometheusSeries are the series Prometheus makes itself, which no service
// exports: a target's scrape series and the alerts' state.
var PrometheusSeries = []string{"up", "scrape_duration_seconds", "scrape_samples_scraped", "scrape_samples_post_metric_relabeling",
	"scrape_series_added", "ALERTS", "ALERTS_FOR_STATE"}

// Exported is what one scrape of a service's /metrics holds: the names of
// its series (a histogram's _bucket, _sum and _count, a summary's name,
// _sum and _count) and their samples.
type Exported struct {
	Families map[string]*Family
}

// Family is a metric family of a scrape.
type Family struct {
	Type    string
	Samples []Sample
}

// Sample is one series of a family (a histogram's or a summary's by its
// labels, with its count as value).
type Sample struct {
	Labels map[string]string
	Value  float64
}

// ParseExposition parses a /metrics answer in Prometheus' text format.
func ParseExposition(r io.Reader) (*Exported, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(r)
	if err != nil {
		return nil, err
	}
	ex := &Exported{Families: map[string]*Family{}}
	for name, mf := range mfs {
		f := &Family{Type: strings.ToLower(mf.GetType().String())}
		for _, m := range mf.GetMetric() {
			s := Sample{Labels: map[string]string{}}
			for _, l := range m.GetLabel() {
				s.Labels[l.GetName()] = l.GetValue()
			}
			switch {
			case m.Counter != nil:
				s.Value = m.GetCounter().GetValue()
			case m.Gauge != nil:
				s.Value = m.GetGauge().GetValue()
			case m.Untyped != nil:
				s.Value = m.GetUntyped().GetValue()
			case m.Histogram != nil:
				s.Value = float64(m.GetHistogram().GetSampleCount())
			case m.Summary != nil:
				s.Value = float64(m.GetSummary().GetSampleCount())
			}
			f.Samples = append(f.Samples, s)
		}
		ex.Families[name] = f
	}
	return ex, nil
}

// Names returns the series names of the scrape, as PromQL selects them.
func (ex *Exported) Names() []string {
	var names []string
	for name, f := range ex.Families {
		switch f.Type {
		case "histogram", "gauge_histogram":
			names = append(names, name+"_bucket", name+"_sum", name+"_count")
		case "summary":
			names = append(names, name, name+"_sum", name+"_count")
		default:
			names = append(names, name)
		}
	}
	slices.Sort(names)
	return names
}

// Sum adds up the values of a family's samples whose labels include want.
func (ex *Exported) Sum(family string, want map[string]string) float64 {
	f := ex.Families[family]
	if f == nil {
		return 0
	}
	total := 0.0
	for _, s := range f.Samples {
		ok := true
		for k, v := range want {
			if s.Labels[k] != v {
				ok = false
			}
		}
		if ok {
			total += s.Value
		}
	}
	return total
}

// Missing returns, for each selector of the queries whose metric the
// services do not export, a line naming the metric, the service it was looked
// for on and the query. exported gives each service's series names.
func Missing(qs []Query, exported map[Side][]string) ([]string, error) {
	var problems []string
	for _, q := range qs {
		if q.PromQL == "" {
			continue
		}
		e, err := Parse(q)
		if err != nil {
			return nil, err
		}
		for _, s := range Selectors(e) {
			if s.Name != "" && slices.Contains(PrometheusSeries, s.Name) {
				continue
			}
			var have []string
			if s.Side == Either {
				have = append(slices.Clone(exported[Echo]), exported[Caller]...)
			} else {
				have = exported[s.Side]
			}
			if s.NameRegexp != "" {
				re, err := regexp.Compile("^(?:" + s.NameRegexp + ")$")
				if err != nil {
					return nil, fmt.Errorf("%s: __name__=~%q: %w", q.Source, s.NameRegexp, err)
				}
				if !slices.ContainsFunc(have, re.MatchString) {
					problems = append(problems, fmt.Sprintf("no metric matching __name__=~%q is exported by %s; used by %s: %s", s.NameRegexp, s.Side, q.Source, q.Expr))
				}
				continue
			}
			if s.Name == "" {
				problems = append(problems, fmt.Sprintf("a selector without a metric name in %s: %s", q.Source, q.Expr))
				continue
			}
			if !slices.Contains(have, s.Name) {
				problems = append(problems, fmt.Sprintf("metric %s is not exported by %s; used by %s: %s", s.Name, s.Side, q.Source, q.Expr))
			}
		}
	}
	return problems, nil
}
