package transport_test

import (
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// The library stands alone: no package of this module (tests aside)
// imports anything of the project outside transport/, nor zap or etcd, so
// that a module importing it resolves Kitex, yamux and x/net only.
func TestLibraryImportsNothingOfTheProject(t *testing.T) {
	const project = "github.com/anyconn/kitex-anyconn/"
	banned := []string{"go.uber.org/zap", "go.etcd.io/", "github.com/prometheus/", "gonum.org/", "github.com/cloudwego/kitex/pkg/klog"}
	checked := 0
	err := filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return err
		}
		f, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.ImportsOnly)
		if err != nil {
			return err
		}
		checked++
		for _, imp := range f.Imports {
			p, _ := strconv.Unquote(imp.Path.Value)
			if strings.HasPrefix(p, project) && !strings.HasPrefix(p, project+"transport") {
				t.Errorf("%s imports %s: the library must not depend on the project", path, p)
			}
			for _, b := range banned {
				if strings.HasPrefix(p, b) {
					t.Errorf("%s imports %s: the library logs with log/slog and needs no service dependency", path, p)
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if checked < 10 {
		t.Fatalf("checked %d files; the walk did not find the library", checked)
	}
}
