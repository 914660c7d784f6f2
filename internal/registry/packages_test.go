package registry

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"sync"
	"testing"

	"github.com/hearth-run/hearth/internal/packages"
)

// hooks records the package hooks' calls. Resolve reads the staged
// requirements file, so a test sees that it got the code.
type hooks struct {
	mu       sync.Mutex
	seen     []string // requirements.txt content per Resolve call
	deployed []string // name@packages
	deleted  []string
	err      error // returned by Resolve when set
}

func (h *hooks) options() Options {
	return Options{
		Resolve: func(ctx context.Context, dir string) ([]packages.Package, error) {
			b, err := os.ReadFile(filepath.Join(dir, "requirements.txt"))
			if err != nil {
				return nil, err
			}
			h.mu.Lock()
			defer h.mu.Unlock()
			h.seen = append(h.seen, string(b))
			if h.err != nil {
				return nil, h.err
			}
			p, err := packages.ParsePackage(string(b[:len(b)-1]))
			if err != nil {
				return nil, err
			}
			return []packages.Package{p, {Name: "numpy", Version: "1.24.2", Base: true}}, nil
		},
		Deployed: func(f Function) {
			h.mu.Lock()
			defer h.mu.Unlock()
			h.deployed = append(h.deployed, fmt.Sprintf("%s@%v", f.Name, f.Packages))
		},
		Deleted: func(name string) {
			h.mu.Lock()
			defer h.mu.Unlock()
			h.deleted = append(h.deleted, name)
		},
	}
}

func TestResolveHook(t *testing.T) {
	dir := t.TempDir()
	h := &hooks{}
	r := open(t, dir, h.options())
	ctx := context.Background()
	want := []packages.Package{{Name: "alpha", Version: "1.0"}, {Name: "numpy", Version: "1.24.2", Base: true}}

	f, err := r.Deploy(ctx, "fn", Source{Dir: srcDir(t, map[string]string{"f.py": "def f(e): return e\n", "requirements.txt": "alpha==1.0\n"})})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(f.Packages, want) {
		t.Errorf("Packages = %v, want %v", f.Packages, want)
	}
	if len(h.seen) != 1 || h.seen[0] != "alpha==1.0\n" {
		t.Errorf("Resolve saw %q", h.seen)
	}
	if fmt.Sprint(h.deployed) != fmt.Sprintf("[fn@%v]", want) {
		t.Errorf("Deployed calls: %v", h.deployed)
	}

	t.Run("no requirements skips resolve", func(t *testing.T) {
		g, err := r.Deploy(ctx, "plain", Source{Dir: srcDir(t, map[string]string{"f.py": "def f(e): return 1\n"})})
		if err != nil {
			t.Fatal(err)
		}
		if len(h.seen) != 1 || g.Packages != nil {
			t.Errorf("Resolve calls %d, packages %v", len(h.seen), g.Packages)
		}
	})

	tests := []struct {
		name    string
		err     error
		invalid bool
	}{
		{"unresolvable is bad input", fmt.Errorf("%w: pip: No matching distribution", packages.ErrResolve), true},
		{"install failure is bad input", fmt.Errorf("%w: beta==1.0", packages.ErrInstall), true},
		{"installer trouble is not", errors.New("installer: no cgroup"), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h.err = tt.err
			defer func() { h.err = nil }()
			_, err := r.Deploy(ctx, "fn", Source{Dir: srcDir(t, map[string]string{"f.py": "def f(e): return 2\n", "requirements.txt": "alpha==2.0\n"})})
			if !errors.Is(err, tt.err) || errors.Is(err, ErrInvalid) != tt.invalid {
				t.Fatalf("err = %v; want %v, ErrInvalid %v", err, tt.err, tt.invalid)
			}
			cur, err := r.Get("fn")
			if err != nil || !reflect.DeepEqual(cur.Packages, want) || cur.Revision != f.Revision {
				t.Errorf("after a failed deploy: %+v, %v", cur, err)
			}
		})
	}

	t.Run("packages persist", func(t *testing.T) {
		r.Close()
		r2 := open(t, dir, Options{})
		g, err := r2.Get("fn")
		if err != nil || !reflect.DeepEqual(g.Packages, want) {
			t.Fatalf("after reopen: %v, %v", g.Packages, err)
		}
		r = r2
	})

	t.Run("delete", func(t *testing.T) {
		r3 := open(t, filepath.Join(dir, "other"), h.options())
		if _, err := r3.Deploy(ctx, "gone", Source{Dir: srcDir(t, map[string]string{"f.py": "def f(e): return 3\n"})}); err != nil {
			t.Fatal(err)
		}
		if err := r3.Delete("gone"); err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(h.deleted) != "[gone]" {
			t.Errorf("Deleted calls: %v", h.deleted)
		}
	})
}
