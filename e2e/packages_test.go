package e2e

import (
	"context"
	"strings"
	"testing"

	"github.com/hearth-run/hearth/internal/packages/wheeltest"
)

// versionProbe reports alpha's version and where it came from.
const versionProbe = `
import alpha
def f(e):
    try:
        open(alpha.__file__, "a")
        writable = True
    except OSError:
        writable = False
    return {"version": alpha.VERSION, "file": alpha.__file__, "writable": writable}
`

// TestInstalledPackagesInBothModes deploys functions whose requirements
// come from a wheelhouse the test builds: two pin different versions of
// one package, and each must import its own, read-only, whether its
// sandbox was forked from a zygote or started fresh.
func TestInstalledPackagesInBothModes(t *testing.T) {
	wheels := t.TempDir()
	if err := wheeltest.House(wheels,
		wheeltest.Wheel{Name: "alpha", Version: "1.0"},
		wheeltest.Wheel{Name: "alpha", Version: "2.0"},
		wheeltest.Wheel{Name: "beta", Version: "1.0", Requires: []string{"alpha>=1.5"}},
	); err != nil {
		t.Fatal(err)
	}
	modes(t, func(t *testing.T, w *worker, path string) {
		w.deployDir("old", fn(t, "f.py", versionProbe, "requirements.txt", "alpha==1.0\n"))
		w.deployDir("new", fn(t, "f.py", versionProbe, "requirements.txt", "beta\n"))
		fns, err := w.c.List(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range fns {
			if f.Name == "new" && len(f.Packages) != 2 {
				t.Errorf("new resolved to %v, want alpha and beta", f.Packages)
			}
		}
		for _, tc := range []struct{ name, version string }{{"old", "1.0"}, {"new", "2.0"}} {
			for i := 0; i < 3; i++ { // the third call forks from a promoted node
				inv := w.mustInvoke(tc.name, "{}")
				m := decode(t, inv.Body)
				if m["version"] != tc.version || m["writable"] != false ||
					!strings.HasPrefix(m["file"].(string), "/hearth-pkgs/alpha-"+tc.version+"/") {
					t.Errorf("%s call %d: %v", tc.name, i, m)
				}
				if path == "cold" && inv.Path != "cold" && inv.Path != "warm" {
					t.Errorf("%s: path %s with zygotes off", tc.name, inv.Path)
				}
			}
		}
		if path == "fork" {
			tree, err := w.c.Zygotes(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			found := false
			for _, n := range tree.Nodes {
				for _, p := range n.Packages {
					found = found || strings.HasPrefix(p, "alpha==")
				}
			}
			if !found {
				t.Errorf("no zygote node holds alpha: %+v", tree.Nodes)
			}
		}
	}, "--no-index", "--find-links", wheels, "--no-warm-cache", "--config", writeConfig(t, "zygote:\n  promote: 2\n"))
}
