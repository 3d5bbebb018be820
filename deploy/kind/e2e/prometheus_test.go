package main

import (
	"strings"
	"testing"
)

func TestRuleFile(t *testing.T) {
	manifest := `---
# Source: kitex-anyconn/templates/prometheusrule.yaml
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: e2e-alerts
spec:
  groups:
    - name: g
      rules:
        - alert: A
          expr: |-
            up
              > 0
          for: 4s
`
	got, err := ruleFile(manifest)
	if err != nil {
		t.Fatal(err)
	}
	want := "groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: |-\n          up\n            > 0\n        for: 4s\n"
	if got != want {
		t.Fatalf("got\n%s\nwant\n%s", got, want)
	}
	if _, err := ruleFile("apiVersion: v1\nkind: ConfigMap\n"); err == nil {
		t.Fatal("no error without a PrometheusRule")
	}
}

func TestGrafanaVars(t *testing.T) {
	values := map[string]string{"namespace": "ns", "release": "e2e", "__rate_interval": "1m"}
	got, err := grafanaVars(`rate(x{namespace="$namespace", job="${release}-caller", j="[[release]]"}[$__rate_interval])`, values)
	if err != nil {
		t.Fatal(err)
	}
	if want := `rate(x{namespace="ns", job="e2e-caller", j="e2e"}[1m])`; got != want {
		t.Fatalf("got %s, want %s", got, want)
	}
	if _, err := grafanaVars(`up{a="$other"}`, values); err == nil || !strings.Contains(err.Error(), "other") {
		t.Fatalf("an unknown variable: %v", err)
	}
}
