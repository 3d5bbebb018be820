// Package idl holds the Thrift IDL of the echo service. Its test proves
// that kitex_gen/ is exactly what the pinned generator makes of it.
package idl

import (
	"bytes"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

const module = "github.com/anyconn/kitex-anyconn"

// TestGeneratedCodeIsFresh regenerates kitex_gen/ with the generator pinned
// in go.mod into a scratch folder and compares it with the committed copy.
func TestGeneratedCodeIsFresh(t *testing.T) {
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	tmp := t.TempDir()
	kitex := filepath.Join(tmp, "kitex")
	build := exec.Command("go", "build", "-o", kitex, "github.com/cloudwego/kitex/tool/cmd/kitex")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build the pinned kitex generator: %v\n%s", err, out)
	}

	work := filepath.Join(tmp, "work")
	if err := os.MkdirAll(filepath.Join(work, "idl"), 0o755); err != nil {
		t.Fatal(err)
	}
	thrift, err := os.ReadFile(filepath.Join(root, "idl", "echo.thrift"))
	if err != nil {
		t.Fatal(err)
	}
	must(t, os.WriteFile(filepath.Join(work, "idl", "echo.thrift"), thrift, 0o644))
	must(t, os.WriteFile(filepath.Join(work, "go.mod"), []byte("module "+module+"\n\ngo 1.26\n"), 0o644))
	gen := exec.Command(kitex, "-module", module, "idl/echo.thrift")
	gen.Dir = work
	if out, err := gen.CombinedOutput(); err != nil {
		t.Fatalf("kitex: %v\n%s", err, out)
	}

	want := readTree(t, filepath.Join(work, "kitex_gen"))
	got := readTree(t, filepath.Join(root, "kitex_gen"))
	for name, w := range want {
		g, ok := got[name]
		switch {
		case !ok:
			t.Errorf("kitex_gen/%s is missing: run `make gen`", name)
		case !bytes.Equal(g, w):
			t.Errorf("kitex_gen/%s differs from the generator's output: run `make gen`, never edit it by hand", name)
		}
	}
	for name := range got {
		if _, ok := want[name]; !ok {
			t.Errorf("kitex_gen/%s is not generated from idl/: remove it or run `make gen`", name)
		}
	}
}

func readTree(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	files := map[string][]byte{}
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		files[filepath.ToSlash(rel)], err = os.ReadFile(path)
		return err
	})
	if err != nil {
		t.Fatalf("read %s: %v", dir, err)
	}
	return files
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
