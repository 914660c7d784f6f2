package packages

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
)

// TestAnotherPythonDropsPackages checks that a cache whose packages were
// installed for another Python version (an older base image), or whose
// index does not say (made before versions were recorded), drops them
// when opened, keeps their users, and installs them again on Ensure.
func TestAnotherPythonDropsPackages(t *testing.T) {
	e := newEnv(t, Config{})
	ctx := context.Background()
	set, err := e.c.Install(ctx, codeDir(t, map[string]string{"requirements.txt": "alpha==1.0\n"}))
	if err != nil {
		t.Fatal(err)
	}
	if err := e.c.Use("fn", set); err != nil {
		t.Fatal(err)
	}
	cached := Cached(set)
	if len(cached) != 1 || !e.c.has(cached[0]) {
		t.Fatalf("installed %v", cached)
	}
	if len(e.c.Dropped()) != 0 {
		t.Fatalf("a fresh cache dropped %v", e.c.Dropped())
	}
	cfg := e.c.cfg
	e.c.Close()
	for _, old := range []string{"3.11", ""} {
		ix := filepath.Join(cfg.Dir, indexFile)
		b, err := os.ReadFile(ix)
		if err != nil {
			t.Fatal(err)
		}
		var m map[string]any
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatal(err)
		}
		if m["python"] == nil || m["python"] == "" {
			t.Fatalf("index records no Python version: %s", b)
		}
		if old == "" {
			delete(m, "python")
		} else {
			m["python"] = old
		}
		b, _ = json.Marshal(m)
		if err := os.WriteFile(ix, b, 0o644); err != nil {
			t.Fatal(err)
		}
		c, err := Open(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if d := c.Dropped(); len(d) != 1 || d[0] != cached[0] {
			t.Errorf("index for Python %q: dropped %v, want %v", old, d, cached)
		}
		if c.has(cached[0]) {
			t.Errorf("index for Python %q: %s still installed", old, cached[0])
		}
		if l, err := c.List(); err != nil || len(l) != 0 {
			t.Errorf("index for Python %q: list %v, %v", old, l, err)
		}
		if err := c.Ensure(ctx, set); err != nil {
			t.Fatal(err)
		}
		l, err := c.List()
		if err != nil || len(l) != 1 || len(l[0].Users) != 1 || l[0].Users[0] != "fn" {
			t.Errorf("after Ensure: %+v, %v; want %s used by fn", l, err, cached[0])
		}
		c.Close()
		// Opened again for the same Python: nothing to drop.
		c, err = Open(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if len(c.Dropped()) != 0 || !c.has(cached[0]) {
			t.Errorf("reopened: dropped %v, installed %v", c.Dropped(), c.has(cached[0]))
		}
		c.Close()
	}
}
