package charttest

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// The transports are listed once per language: transport.Kinds in Go, the
// schema's enum in the chart, TRANSPORTS in the Tiltfile (and the loop of
// `make chart-lint`). They must name the same transports in the same order.
func TestTransportListsAgree(t *testing.T) {
	read := func(parts ...string) string {
		t.Helper()
		b, err := os.ReadFile(filepath.Join(append([]string{root}, parts...)...))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	goSrc := read("transport", "transport.go")
	consts := map[string]string{}
	for _, m := range regexp.MustCompile(`(?m)^\s+(\w+) Kind = "(\w+)"$`).FindAllStringSubmatch(goSrc, -1) {
		consts[m[1]] = m[2]
	}
	kinds := regexp.MustCompile(`func Kinds\(\) \[\]Kind \{ return \[\]Kind\{([^}]*)\} \}`).FindStringSubmatch(goSrc)
	if kinds == nil {
		t.Fatal("transport.Kinds not found in transport/transport.go")
	}
	var fromGo []string
	for _, name := range strings.Split(kinds[1], ",") {
		fromGo = append(fromGo, consts[strings.TrimSpace(name)])
	}

	var schema struct {
		Properties struct {
			Transport struct {
				Enum []string `json:"enum"`
			} `json:"transport"`
		} `json:"properties"`
	}
	if err := json.Unmarshal([]byte(read("charts", "kitex-anyconn", "values.schema.json")), &schema); err != nil {
		t.Fatal(err)
	}

	tilt := regexp.MustCompile(`(?m)^TRANSPORTS = \[([^\]]*)\]`).FindStringSubmatch(read("Tiltfile"))
	if tilt == nil {
		t.Fatal("TRANSPORTS not found in the Tiltfile")
	}
	fromTilt := strings.Fields(strings.NewReplacer("'", " ", ",", " ").Replace(tilt[1]))

	lint := regexp.MustCompile(`for t in ([a-z ]+); do \$\(HELM\) lint`).FindStringSubmatch(read("Makefile"))
	if lint == nil {
		t.Fatal("the chart-lint loop not found in the Makefile")
	}

	for what, got := range map[string][]string{
		"the chart's schema enum":   schema.Properties.Transport.Enum,
		"the Tiltfile's TRANSPORTS": fromTilt,
		"make chart-lint's loop":    strings.Fields(lint[1]),
		"these tests' transports":   transports,
	} {
		want(t, what+" (transport.Kinds is "+strings.Join(fromGo, ", ")+")", got, fromGo)
	}
	if len(fromGo) != 4 {
		t.Fatalf("transport.Kinds read as %v", fromGo)
	}
}
