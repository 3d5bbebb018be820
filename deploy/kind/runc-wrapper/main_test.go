package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

// noSysResource is a bounding set with every capability up to 40 except CAP_SYS_RESOURCE.
const noSysResource = uint64(0x1fffeffffff)

func TestSubcommandAndFlags(t *testing.T) {
	args := []string{"--root", "/run/runc", "--log", "/x/log.json", "--log-format", "json", "--systemd-cgroup",
		"create", "--bundle", "/b", "--pid-file", "/p", "id"}
	cmd, rest := subcommand(args)
	if cmd != "create" || flagValue(rest, "-b", "--bundle") != "/b" {
		t.Fatalf("got %q %v", cmd, rest)
	}
	cmd, rest = subcommand([]string{"exec", "--process=/tmp/p.json", "--detach", "id"})
	if cmd != "exec" || flagValue(rest, "-p", "--process") != "/tmp/p.json" {
		t.Fatalf("got %q %v", cmd, rest)
	}
}

func TestBoundingSet(t *testing.T) {
	p := filepath.Join(t.TempDir(), "status")
	if err := os.WriteFile(p, []byte("Name:\tx\nCapInh:\t0000000000000000\nCapBnd:\t000001fffeffffff\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := boundingSet(p)
	if err != nil || got != noSysResource {
		t.Fatalf("got %x, %v", got, err)
	}
}

func TestRewriteBundleAndProcess(t *testing.T) {
	all := []string{"CAP_CHOWN", "CAP_SYS_ADMIN", "CAP_SYS_RESOURCE", "CAP_BOGUS"}
	want := []string{"CAP_CHOWN", "CAP_SYS_ADMIN"}
	caps := map[string]any{"bounding": all, "effective": all, "permitted": all, "ambient": []string{}}
	dir := t.TempDir()

	cfg := filepath.Join(dir, "config.json")
	writeJSON(t, cfg, map[string]any{"ociVersion": "1.0.2", "process": map[string]any{"args": []string{"sh"}, "capabilities": caps}, "root": map[string]any{"path": "rootfs"}})
	if err := rewriteFile(cfg, true, noSysResource); err != nil {
		t.Fatal(err)
	}
	var c struct {
		OCIVersion string `json:"ociVersion"`
		Process    struct {
			Args []string
			Caps map[string][]string `json:"capabilities"`
		}
		Root struct{ Path string }
	}
	readJSON(t, cfg, &c)
	if c.OCIVersion != "1.0.2" || c.Root.Path != "rootfs" || !reflect.DeepEqual(c.Process.Args, []string{"sh"}) {
		t.Fatalf("other fields changed: %+v", c)
	}
	for _, set := range []string{"bounding", "effective", "permitted"} {
		if !reflect.DeepEqual(c.Process.Caps[set], want) {
			t.Fatalf("%s = %v, want %v", set, c.Process.Caps[set], want)
		}
	}

	proc := filepath.Join(dir, "process.json")
	writeJSON(t, proc, map[string]any{"args": []string{"sh"}, "capabilities": caps})
	if err := rewriteFile(proc, false, noSysResource); err != nil {
		t.Fatal(err)
	}
	var p struct {
		Caps map[string][]string `json:"capabilities"`
	}
	readJSON(t, proc, &p)
	if !reflect.DeepEqual(p.Caps["effective"], want) {
		t.Fatalf("effective = %v, want %v", p.Caps["effective"], want)
	}
}

func TestUnchangedFileIsLeftAlone(t *testing.T) {
	doc := []byte(`{"process": {"capabilities": {"bounding": ["CAP_CHOWN"]}},  "x": 1}`)
	out, changed, err := filterJSON(doc, true, noSysResource)
	if err != nil || changed || string(out) != string(doc) {
		t.Fatalf("got %s %v %v", out, changed, err)
	}
}

func writeJSON(t *testing.T, path string, v any) {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func readJSON(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatal(err)
	}
}
