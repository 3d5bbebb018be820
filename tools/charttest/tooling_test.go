package charttest

// The chart's tooling (issue 19): ct lint with ct.yaml and the ci/ values
// files, kube-score on every transport, and Chart.yaml's Artifact Hub metadata.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

// ciValuesFile is the chart's ct values file of one transport.
func ciValuesFile(tr string) string {
	return filepath.Join(chartDir(), "ci", tr+"-values.yaml")
}

// The ci/ folder has one values file per transport of transport.Kinds, each
// setting its transport, and each renders.
func TestCIValuesPerTransport(t *testing.T) {
	kinds := goKinds(t)
	entries, err := os.ReadDir(filepath.Join(chartDir(), "ci"))
	if err != nil {
		t.Fatal(err)
	}
	var names, wantNames []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	for _, k := range kinds {
		wantNames = append(wantNames, k+"-values.yaml")
	}
	slices.Sort(wantNames)
	want(t, "charts/kitex-anyconn/ci", names, wantNames)
	for _, k := range kinds {
		var v struct {
			Transport string `json:"transport"`
		}
		if err := yaml.Unmarshal([]byte(readRepo(t, "charts", "kitex-anyconn", "ci", k+"-values.yaml")), &v); err != nil {
			t.Fatal(err)
		}
		want(t, k+"-values.yaml transport", v.Transport, k)
		r := render(t, "values:"+ciValuesFile(k))
		want(t, k+"-values.yaml: echo TRANSPORT", env(r.deployment(t, "demo-echo").Spec.Template.Spec.Containers[0])["TRANSPORT"], k)
	}
}

// TestChartTestingLint runs `ct lint` (the pinned bin/ct, with bin/helm first on
// PATH) from the repository root, where it finds ct.yaml by itself: offline, one
// helm lint --strict per ci/ values file. Every check ct.yaml turns off has a
// comment saying why.
func TestChartTestingLint(t *testing.T) {
	ct, helm := tool(t, "ct"), tool(t, "helm")
	top, err := filepath.Abs(root)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(ct, "lint", "--charts", "charts/kitex-anyconn", "--print-config")
	cmd.Dir = top
	cmd.Env = []string{"PATH=" + filepath.Dir(helm) + string(os.PathListSeparator) + os.Getenv("PATH")}
	for _, kv := range os.Environ() {
		// ct reads CT_* variables as settings: leave the developer's out.
		if !strings.HasPrefix(kv, "PATH=") && !strings.HasPrefix(kv, "CT_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	b, err := cmd.CombinedOutput()
	out := string(b)
	if err != nil {
		t.Fatalf("ct lint: %v\n%s", err, out)
	}
	for _, s := range []string{"Using config file: " + filepath.Join(top, "ct.yaml"), "ChartDirs: [charts]",
		"HelmLintExtraArgs: --strict", "ValidateMaintainers: false", "CheckVersionIncrement: false",
		"All charts linted successfully"} {
		if !strings.Contains(out, s) {
			t.Errorf("ct lint output lacks %q:\n%s", s, out)
		}
	}
	for _, k := range goKinds(t) {
		if s := `Linting chart with values file "charts/kitex-anyconn/ci/` + k + `-values.yaml"`; !strings.Contains(out, s) {
			t.Errorf("ct lint did not lint with ci/%s-values.yaml:\n%s", k, out)
		}
	}
	lines := strings.Split(readRepo(t, "ct.yaml"), "\n")
	off := 0
	for i, l := range lines {
		if m := regexp.MustCompile(`^([\w-]+):\s*false\s*$`).FindStringSubmatch(l); m != nil {
			off++
			if i == 0 || !strings.HasPrefix(lines[i-1], "#") {
				t.Errorf("ct.yaml turns %s off without a comment above it saying why", m[1])
			}
		}
	}
	want(t, "checks ct.yaml turns off", off, 4)
}

// kubeScoreExemption is an entry of kube-score-exemptions.yaml.
type kubeScoreExemption struct {
	Check   string   `json:"check"`
	Objects []string `json:"objects"`
	Summary string   `json:"summary"`
	Reason  string   `json:"reason"`
}

func (e kubeScoreExemption) covers(check, object, summary string) bool {
	if e.Check != check || (e.Summary != "" && e.Summary != summary) {
		return false
	}
	for _, o := range e.Objects {
		pattern := "^" + strings.ReplaceAll(regexp.QuoteMeta(o), `\*`, ".*") + "$"
		if regexp.MustCompile(pattern).MatchString(object) {
			return true
		}
	}
	return false
}

// kubeScoreObject is one object of `kube-score score -o json`.
type kubeScoreObject struct {
	TypeMeta struct {
		Kind string `json:"kind"`
	} `json:"type_meta"`
	ObjectMeta struct {
		Name string `json:"name"`
	} `json:"object_meta"`
	Checks []struct {
		Check struct {
			ID string `json:"id"`
		} `json:"check"`
		Grade    int  `json:"grade"`
		Skipped  bool `json:"skipped"`
		Comments []struct {
			Path    string `json:"path"`
			Summary string `json:"summary"`
		} `json:"comments"`
	} `json:"checks"`
}

// TestKubeScore runs the pinned kube-score, with its default checks, on the
// render of every ci/ values file and on echo's autoscaler: every finding must be
// covered by a reasoned entry of kube-score-exemptions.yaml, and every entry
// must cover a finding.
func TestKubeScore(t *testing.T) {
	ks := tool(t, "kube-score")
	var exemptions []kubeScoreExemption
	if err := yaml.UnmarshalStrict([]byte(readRepo(t, "tools", "charttest", "kube-score-exemptions.yaml")), &exemptions); err != nil {
		t.Fatalf("kube-score-exemptions.yaml: %v", err)
	}
	for _, e := range exemptions {
		if e.Check == "" || len(e.Objects) == 0 || len(strings.Fields(e.Reason)) < 10 {
			t.Errorf("kube-score exemption %+v: each needs a check, its objects and a reason", e)
		}
	}
	// The stable-version check judges apiVersions against the oldest Kubernetes
	// the chart installs on: Chart.yaml's kubeVersion.
	m := regexp.MustCompile(`(?m)^kubeVersion: ">=(\d+)\.(\d+)`).FindStringSubmatch(readRepo(t, "charts", "kitex-anyconn", "Chart.yaml"))
	if m == nil {
		t.Fatal("no kubeVersion >=X.Y in Chart.yaml")
	}
	kubeVersion := "v" + m[1] + "." + m[2]

	type variant struct {
		name string
		sets []string
	}
	var variants []variant
	for _, k := range goKinds(t) {
		variants = append(variants, variant{k, []string{"values:" + ciValuesFile(k)}})
	}
	variants = append(variants, variant{"netpoll-autoscaling", []string{"values:" + ciValuesFile("netpoll"), "echo.autoscaling.enabled=true"}})

	used := make([]bool, len(exemptions))
	for _, v := range variants {
		t.Run(v.name, func(t *testing.T) {
			out, err := run(t, "helm", templateArgs(v.sets)...)
			if err != nil {
				t.Fatal(err)
			}
			manifests := filepath.Join(t.TempDir(), "manifests.yaml")
			if err := os.WriteFile(manifests, []byte(out), 0o644); err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command(ks, "score", "--kubernetes-version", kubeVersion, "--output-format", "json", manifests)
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			runErr := cmd.Run() // exit status 1 when a check fails: the JSON says which
			var objs []kubeScoreObject
			if err := json.Unmarshal(stdout.Bytes(), &objs); err != nil {
				t.Fatalf("kube-score (%v): %v\n%s", runErr, err, stderr.String())
			}
			passed := 0
			for _, o := range objs {
				object := o.TypeMeta.Kind + "/" + o.ObjectMeta.Name
				for _, c := range o.Checks {
					if c.Skipped {
						continue
					}
					if c.Grade >= 10 {
						passed++
						continue
					}
					comments := c.Comments
					if len(comments) == 0 {
						comments = append(comments, struct {
							Path    string `json:"path"`
							Summary string `json:"summary"`
						}{})
					}
					for _, cm := range comments {
						covered := false
						for i, e := range exemptions {
							if e.covers(c.Check.ID, object, cm.Summary) {
								used[i], covered = true, true
							}
						}
						if !covered {
							t.Errorf("kube-score %s on %s (%s): %s (grade %d); fix the chart, or add an exemption with its reason to tools/charttest/kube-score-exemptions.yaml",
								c.Check.ID, object, cm.Path, cm.Summary, c.Grade)
						}
					}
				}
			}
			// A render kube-score did not understand would pass vacuously.
			if len(objs) < 10 || passed < 50 {
				t.Errorf("kube-score scored %d objects, %d checks passed: too few for the chart", len(objs), passed)
			}
		})
	}
	if !t.Failed() {
		for i, u := range used {
			if !u {
				t.Errorf("kube-score exemption of %s on %v covers no finding: remove it", exemptions[i].Check, exemptions[i].Objects)
			}
		}
	}
}

// Chart.yaml's maintainer is an account, and its Artifact Hub annotations are
// strings that parse: the two images at appVersion, https links, changes of
// Artifact Hub's kinds.
func TestChartMetadata(t *testing.T) {
	var chart struct {
		AppVersion  string `json:"appVersion"`
		Maintainers []struct {
			Name string `json:"name"`
			URL  string `json:"url"`
		} `json:"maintainers"`
		Annotations map[string]any `json:"annotations"`
	}
	if err := yaml.Unmarshal([]byte(readRepo(t, "charts", "kitex-anyconn", "Chart.yaml")), &chart); err != nil {
		t.Fatal(err)
	}
	want(t, "maintainers", fmt.Sprintf("%+v", chart.Maintainers), "[{Name:anyconn URL:https://github.com/anyconn}]")
	ann := map[string]string{}
	for k, v := range chart.Annotations {
		s, ok := v.(string)
		if !ok {
			t.Errorf("annotation %s is a %T, want a string", k, v)
		}
		ann[k] = s
	}
	for _, k := range []string{"links", "images", "changes", "prerelease", "category"} {
		if ann["artifacthub.io/"+k] == "" {
			t.Errorf("Chart.yaml lacks the annotation artifacthub.io/%s", k)
		}
	}
	// A license only once the repository has one, and then the same.
	_, statErr := os.Stat(filepath.Join(root, "LICENSE"))
	if lic, ok := ann["artifacthub.io/license"]; ok != (statErr == nil) || (ok && !regexp.MustCompile(`^[A-Za-z0-9.+-]+$`).MatchString(lic)) {
		t.Errorf("artifacthub.io/license %q (set: %v) while the repository's LICENSE file exists: %v; a license is claimed only with the file, as an SPDX identifier", lic, ok, statErr == nil)
	}
	want(t, "artifacthub.io/prerelease", ann["artifacthub.io/prerelease"], "false")
	if !slices.Contains([]string{"ai-machine-learning", "database", "integration-delivery", "monitoring-logging", "networking",
		"security", "storage", "streaming-messaging"}, ann["artifacthub.io/category"]) {
		t.Errorf("artifacthub.io/category %q is not one of Artifact Hub's", ann["artifacthub.io/category"])
	}

	var links []struct{ Name, URL string }
	if err := yaml.UnmarshalStrict([]byte(ann["artifacthub.io/links"]), &links); err != nil || len(links) == 0 {
		t.Errorf("artifacthub.io/links: %v %+v", err, links)
	}
	for _, l := range links {
		if l.Name == "" || !strings.HasPrefix(l.URL, "https://") {
			t.Errorf("artifacthub.io/links entry %+v", l)
		}
	}

	var values struct {
		Echo, Caller struct {
			Image struct {
				Repository string `json:"repository"`
			} `json:"image"`
		}
	}
	if err := yaml.Unmarshal([]byte(readRepo(t, "charts", "kitex-anyconn", "values.yaml")), &values); err != nil {
		t.Fatal(err)
	}
	var images []struct{ Name, Image string }
	if err := yaml.UnmarshalStrict([]byte(ann["artifacthub.io/images"]), &images); err != nil {
		t.Errorf("artifacthub.io/images: %v", err)
	}
	want(t, "artifacthub.io/images", fmt.Sprintf("%+v", images), fmt.Sprintf("[{Name:echo Image:%s:%s} {Name:caller Image:%s:%s}]",
		values.Echo.Image.Repository, chart.AppVersion, values.Caller.Image.Repository, chart.AppVersion))

	var changes []struct{ Kind, Description string }
	if err := yaml.UnmarshalStrict([]byte(ann["artifacthub.io/changes"]), &changes); err != nil || len(changes) == 0 {
		t.Errorf("artifacthub.io/changes: %v %+v", err, changes)
	}
	for _, c := range changes {
		if !slices.Contains([]string{"added", "changed", "deprecated", "removed", "fixed", "security"}, c.Kind) || c.Description == "" {
			t.Errorf("artifacthub.io/changes entry %+v", c)
		}
	}
}
