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

// echo.ingress and echo.httpRoute need a transport over HTTP: the schema's
// rules for them (allOf, if enabled then transport in enum) name the
// transports whose trait http is true in the chart's dictionary, so that a
// new transport over HTTP is added to them as well.
func TestHTTPOnlySchemaRules(t *testing.T) {
	_, traits := chartTransports(t)
	var overHTTP []string
	for name, tr := range traits {
		if tr["http"] == true {
			overHTTP = append(overHTTP, name)
		}
	}
	slices.Sort(overHTTP)

	var schema struct {
		AllOf []struct {
			If   json.RawMessage `json:"if"`
			Then struct {
				Properties struct {
					Transport *struct {
						Enum []string `json:"enum"`
					} `json:"transport"`
				} `json:"properties"`
			} `json:"then"`
		} `json:"allOf"`
	}
	if err := json.Unmarshal([]byte(readRepo(t, "charts", "kitex-anyconn", "values.schema.json")), &schema); err != nil {
		t.Fatal(err)
	}
	var rules []string
	for _, r := range schema.AllOf {
		if r.Then.Properties.Transport == nil {
			continue
		}
		for _, key := range []string{"ingress", "httpRoute"} {
			if strings.Contains(string(r.If), `"`+key+`"`) {
				rules = append(rules, key)
			}
		}
		got := slices.Sorted(slices.Values(r.Then.Properties.Transport.Enum))
		want(t, "transports of the schema rule "+string(r.If), got, overHTTP)
	}
	want(t, "schema rules that need a transport over HTTP", rules, []string{"ingress", "httpRoute"})
}
