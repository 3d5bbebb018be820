package charttest

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

func readRepo(t *testing.T, parts ...string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(append([]string{root}, parts...)...))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// goKinds returns transport.Kinds(), read from transport/transport.go (a module
// of its own, which the tools module does not import).
func goKinds(t *testing.T) []string {
	t.Helper()
	goSrc := readRepo(t, "transport", "transport.go")
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
	if len(fromGo) != 4 || slices.Contains(fromGo, "") {
		t.Fatalf("transport.Kinds read as %v", fromGo)
	}
	return fromGo
}

// chartTransports returns the dictionary of transport traits in the chart's
// _helpers.tpl ("kitex-anyconn.transports"): its transports in order, and
// each one's traits.
func chartTransports(t *testing.T) ([]string, map[string]map[string]any) {
	t.Helper()
	m := regexp.MustCompile(`(?s)\{\{- define "kitex-anyconn\.transports" -\}\}\n(.*?)\n\{\{- end \}\}`).
		FindStringSubmatch(readRepo(t, "charts", "kitex-anyconn", "templates", "_helpers.tpl"))
	if m == nil {
		t.Fatal(`define "kitex-anyconn.transports" not found in _helpers.tpl`)
	}
	var names []string
	for _, k := range regexp.MustCompile(`(?m)^(\w+):`).FindAllStringSubmatch(m[1], -1) {
		names = append(names, k[1])
	}
	traits := map[string]map[string]any{}
	if err := yaml.Unmarshal([]byte(m[1]), &traits); err != nil {
		t.Fatalf("the transports dictionary in _helpers.tpl does not parse: %v", err)
	}
	return names, traits
}

// The transports are listed once per language: transport.Kinds in Go, the
// schema's enum and the dictionary of transport traits in the chart,
// TRANSPORTS in the Tiltfile. They must name the same transports in the same
// order.
func TestTransportListsAgree(t *testing.T) {
	fromGo := goKinds(t)

	var schema struct {
		Properties struct {
			Transport struct {
				Enum []string `json:"enum"`
			} `json:"transport"`
		} `json:"properties"`
	}
	if err := json.Unmarshal([]byte(readRepo(t, "charts", "kitex-anyconn", "values.schema.json")), &schema); err != nil {
		t.Fatal(err)
	}

	tilt := regexp.MustCompile(`(?m)^TRANSPORTS = \[([^\]]*)\]`).FindStringSubmatch(readRepo(t, "Tiltfile"))
	if tilt == nil {
		t.Fatal("TRANSPORTS not found in the Tiltfile")
	}
	fromTilt := strings.Fields(strings.NewReplacer("'", " ", ",", " ").Replace(tilt[1]))

	dict, _ := chartTransports(t)

	for what, got := range map[string][]string{
		"the chart's schema enum":                  schema.Properties.Transport.Enum,
		"the chart's transports dictionary (keys)": dict,
		"the Tiltfile's TRANSPORTS":                fromTilt,
		"these tests' transports":                  transports,
	} {
		want(t, what+" (transport.Kinds is "+strings.Join(fromGo, ", ")+")", got, fromGo)
	}
}

// Every transport in the chart's dictionary has the same traits, each a
// boolean, and echo is reached one way: it listens, or it dials a tunnel.
func TestTransportTraits(t *testing.T) {
	names, traits := chartTransports(t)
	wantTraits := []string{"echoListens", "http", "tunnel"}
	for _, name := range names {
		var got []string
		for k, v := range traits[name] {
			got = append(got, k)
			if _, ok := v.(bool); !ok {
				t.Errorf("transport %s: trait %s = %v, want true or false", name, k, v)
			}
		}
		slices.Sort(got)
		want(t, "traits of "+name, got, wantTraits)
		if traits[name]["echoListens"] == traits[name]["tunnel"] {
			t.Errorf("transport %s: echoListens and tunnel are both %v; echo either listens or dials a tunnel", name, traits[name]["tunnel"])
		}
	}
}

// A transport the dictionary lacks fails the render with a message naming the
// known ones, even with the schema (whose enum rejects it first) skipped.
func TestUnknownTransportFails(t *testing.T) {
	_, err := run(t, "helm", append(templateArgs([]string{"transport=quic"}), "--skip-schema-validation")...)
	if err == nil {
		t.Fatal("helm template --skip-schema-validation with transport=quic succeeded, want an error")
	}
	if !strings.Contains(err.Error(), "transport=quic is not one of gonet, netpoll, websocket, yamux") {
		t.Errorf("error does not name the known transports: %v", err)
	}
}

// Values that need a trait of the transport have a schema rule each (allOf,
// if set then transport in enum): echo.ingress and echo.httpRoute need a
// transport over HTTP, the tunnel's exposure and echo.tunnel.gateways a tunnel
// transport. Each rule's description names its trait ("those with trait X in
// _helpers.tpl"), and its enum must be exactly the transports whose trait X is
// true in the chart's dictionary, so that a new transport is added to them as
// well.
func TestTraitOnlySchemaRules(t *testing.T) {
	_, traits := chartTransports(t)
	withTrait := func(trait string) []string {
		var names []string
		for name, tr := range traits {
			if tr[trait] == true {
				names = append(names, name)
			}
		}
		slices.Sort(names)
		return names
	}

	var schema struct {
		AllOf []struct {
			If   map[string]any `json:"if"`
			Then struct {
				Properties struct {
					Transport *struct {
						Enum        []string `json:"enum"`
						Description string   `json:"description"`
					} `json:"transport"`
				} `json:"properties"`
			} `json:"then"`
		} `json:"allOf"`
	}
	if err := json.Unmarshal([]byte(readRepo(t, "charts", "kitex-anyconn", "values.schema.json")), &schema); err != nil {
		t.Fatal(err)
	}
	// ifPath is the value a rule's if tests, such as echo.ingress.enabled:
	// the chain of single properties down to the leaf.
	ifPath := func(node map[string]any) string {
		var path []string
		for {
			props, ok := node["properties"].(map[string]any)
			if !ok || len(props) != 1 {
				return strings.Join(path, ".")
			}
			for k, v := range props {
				path = append(path, k)
				node, _ = v.(map[string]any)
			}
		}
	}
	rules := map[string][]string{} // trait -> values
	for _, r := range schema.AllOf {
		tr := r.Then.Properties.Transport
		if tr == nil {
			continue
		}
		path := ifPath(r.If)
		m := regexp.MustCompile(`those with trait (\w+) in _helpers\.tpl`).FindStringSubmatch(tr.Description)
		if m == nil {
			t.Errorf("schema rule for %s: description %q names no trait", path, tr.Description)
			continue
		}
		rules[m[1]] = append(rules[m[1]], path)
		want(t, "transports of the schema rule for "+path, slices.Sorted(slices.Values(tr.Enum)), withTrait(m[1]))
	}
	want(t, "schema rules that need a transport over HTTP", rules["http"], []string{"echo.ingress.enabled", "echo.httpRoute.enabled"})
	want(t, "schema rules that need a tunnel transport", rules["tunnel"], []string{"tunnel.websocket.enabled",
		"tunnel.service.enabled", "tunnel.ingress.enabled", "tunnel.publicAddresses", "echo.tunnel.gateways"})
	want(t, "traits with schema rules", len(rules), 2)
}
