package packages

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hearth-run/hearth/internal/fsutil"
)

// clock is a settable test clock.
type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

// stage makes a fake installed tree of about size bytes in the store's
// temp dir and commits it as p, as an install does after pip.
func stage(t *testing.T, s *Store, p Package, size int) {
	t.Helper()
	dir, err := os.MkdirTemp(filepath.Join(s.Dir(), tmpDir), "t-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "data"), make([]byte, size), 0o644); err != nil {
		t.Fatal(err)
	}
	n, err := fsutil.DiskUsage(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.commit(p, dir, n); err != nil {
		t.Fatal(err)
	}
}

func entryNames(es []Entry) string {
	var s []string
	for _, e := range es {
		s = append(s, e.String())
	}
	return strings.Join(s, " ")
}

func TestGC(t *testing.T) {
	const kb = 1 << 10
	tests := []struct {
		name    string
		opts    GCOptions
		budget  int64 // in package sizes (all are equal), sets opts.Budget
		removed string
		kept    string
	}{
		// a (oldest), b, c, d (newest) are unused; e is used by fn1.
		{"no budget removes nothing", GCOptions{}, 0, "", "a==1 b==1 c==1 d==1 e==1"},
		{"budget removes least recently used first", GCOptions{}, 3, "a==1 b==1", "c==1 d==1 e==1"},
		{"under budget removes nothing", GCOptions{}, 5, "", "a==1 b==1 c==1 d==1 e==1"},
		{"all removes every unused package", GCOptions{All: true}, 0, "a==1 b==1 c==1 d==1", "e==1"},
		{"grace protects recent uses", GCOptions{All: true, Grace: 210 * time.Minute}, 0, "a==1 b==1", "c==1 d==1 e==1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := &clock{t: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)}
			s, err := OpenStore(filepath.Join(t.TempDir(), "packages"), WithClock(clk.now))
			if err != nil {
				t.Fatal(err)
			}
			// Install order differs from use order: LRU follows use.
			for _, n := range []string{"d", "c", "a", "b", "e"} {
				stage(t, s, Package{Name: n, Version: "1"}, 40*kb)
			}
			// A view for a set no function uses any more.
			if _, err := s.Mounts([]Package{{Name: "a", Version: "1"}}); err != nil {
				t.Fatal(err)
			}
			for _, n := range []string{"a", "b", "c", "d", "e"} {
				clk.t = clk.t.Add(time.Hour)
				if err := s.Touch([]Package{{Name: n, Version: "1"}}); err != nil {
					t.Fatal(err)
				}
			}
			e := []Package{{Name: "e", Version: "1"}}
			if err := s.Use("fn1", e); err != nil {
				t.Fatal(err)
			}
			if _, err := s.Mounts(e); err != nil {
				t.Fatal(err)
			}
			clk.t = clk.t.Add(time.Hour)
			before, err := s.List()
			if err != nil {
				t.Fatal(err)
			}
			var total int64
			for _, en := range before {
				total += en.Size
				if en.Size != before[0].Size {
					t.Fatalf("sizes differ: %+v", before)
				}
			}
			tt.opts.Budget = tt.budget * before[0].Size
			res, err := s.GC(context.Background(), tt.opts)
			if err != nil {
				t.Fatal(err)
			}
			if got := entryNames(res.Removed); got != tt.removed {
				t.Errorf("removed %q, want %q", got, tt.removed)
			}
			after, err := s.List()
			if err != nil {
				t.Fatal(err)
			}
			if got := entryNames(after); got != tt.kept {
				t.Errorf("kept %q, want %q", got, tt.kept)
			}
			var left int64
			for _, en := range after {
				left += en.Size
				if _, err := os.Stat(en.Dir); err != nil {
					t.Errorf("kept %s: %v", en, err)
				}
			}
			if res.Size != left || res.Freed != total-left {
				t.Errorf("result size %d freed %d; listed %d of %d", res.Size, res.Freed, left, total)
			}
			for _, en := range res.Removed {
				if _, err := os.Stat(en.Dir); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("removed %s still on disk: %v", en, err)
				}
			}
			views, _ := os.ReadDir(filepath.Join(s.Dir(), viewsDir))
			wantViews := 1
			if tt.opts.Grace > 0 {
				wantViews = 2 // both views are younger than the grace
			}
			if len(views) != wantViews {
				t.Errorf("%d views left, want %d", len(views), wantViews)
			}
			if trash, _ := os.ReadDir(filepath.Join(s.Dir(), trashDir)); len(trash) > 0 {
				t.Errorf("trash left: %v", trash)
			}
		})
	}
}

func TestUsers(t *testing.T) {
	s, err := OpenStore(filepath.Join(t.TempDir(), "packages"))
	if err != nil {
		t.Fatal(err)
	}
	a1, a2 := Package{Name: "alpha", Version: "1.0"}, Package{Name: "alpha", Version: "2.0"}
	b := Package{Name: "beta", Version: "1.0"}
	for _, p := range []Package{a1, a2, b} {
		stage(t, s, p, 100)
	}
	numpy := Package{Name: "numpy", Version: "1.24.2", Base: true}
	steps := []struct {
		name string
		do   func() error
		want map[string]string // package -> users
	}{
		{"use", func() error { return s.Use("f1", []Package{a1, numpy}) },
			map[string]string{"alpha==1.0": "f1"}},
		{"second user", func() error { return s.Use("f2", []Package{a2, b}) },
			map[string]string{"alpha==1.0": "f1", "alpha==2.0": "f2", "beta==1.0": "f2"}},
		{"redeploy replaces", func() error { return s.Use("f1", []Package{a2}) },
			map[string]string{"alpha==2.0": "f1,f2", "beta==1.0": "f2"}},
		{"release", func() error { return s.Release("f2") },
			map[string]string{"alpha==2.0": "f1"}},
		{"sync", func() error { return s.SyncUsers(map[string][]Package{"f3": {b}}) },
			map[string]string{"beta==1.0": "f3"}},
		{"empty name", func() error {
			if err := s.Use("", []Package{b}); !errors.Is(err, ErrInvalid) {
				return errors.New("Use with no name did not fail")
			}
			return nil
		}, map[string]string{"beta==1.0": "f3"}},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			if err := st.do(); err != nil {
				t.Fatal(err)
			}
			// A second Store on the same directory (the CLI) sees it.
			s2, err := OpenStore(s.Dir())
			if err != nil {
				t.Fatal(err)
			}
			ents, err := s2.List()
			if err != nil {
				t.Fatal(err)
			}
			got := map[string]string{}
			for _, e := range ents {
				if len(e.Users) > 0 {
					got[e.String()] = strings.Join(e.Users, ",")
				}
			}
			if len(got) != len(st.want) {
				t.Fatalf("users %v, want %v", got, st.want)
			}
			for k, v := range st.want {
				if got[k] != v {
					t.Errorf("%s: users %q, want %q", k, got[k], v)
				}
			}
		})
	}
}

func TestSweep(t *testing.T) {
	s, err := OpenStore(filepath.Join(t.TempDir(), "packages"))
	if err != nil {
		t.Fatal(err)
	}
	keep, gone := Package{Name: "keep", Version: "1"}, Package{Name: "gone", Version: "1"}
	stage(t, s, keep, 10)
	stage(t, s, gone, 10)
	// A crash leaves: an install in progress, a package directory the
	// index does not know, and an index entry whose directory vanished.
	for _, d := range []string{filepath.Join(tmpDir, "run-1", "t", "0"), "orphan-1", filepath.Join(trashDir, "x")} {
		if err := os.MkdirAll(filepath.Join(s.Dir(), d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.RemoveAll(s.path(gone)); err != nil {
		t.Fatal(err)
	}
	if err := s.Sweep(); err != nil {
		t.Fatal(err)
	}
	ents, err := s.List()
	if err != nil {
		t.Fatal(err)
	}
	if got := entryNames(ents); got != "keep==1" {
		t.Errorf("index after sweep: %q", got)
	}
	for _, d := range []string{tmpDir, trashDir} {
		if left, _ := os.ReadDir(filepath.Join(s.Dir(), d)); len(left) > 0 {
			t.Errorf("%s not swept: %v", d, left)
		}
	}
	if _, err := os.Stat(filepath.Join(s.Dir(), "orphan-1")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("orphan directory: %v", err)
	}
	if _, err := s.Mounts([]Package{gone}); !errors.Is(err, ErrNotInstalled) {
		t.Errorf("Mounts of a removed package: %v", err)
	}
}

func TestParsePackage(t *testing.T) {
	tests := []struct {
		in, want, dir string
		err           bool
	}{
		{"alpha==1.0", "alpha==1.0", "alpha-1.0", false},
		{"Charset_Normalizer==3.0.1", "charset-normalizer==3.0.1", "charset_normalizer-3.0.1", false},
		{"zope.interface==6.0+local.1", "zope-interface==6.0+local.1", "zope_interface-6.0+local.1", false},
		{"legacy==1.0-1", "legacy==1.0-1", "legacy-1.0_1", false},
		{"alpha", "", "", true},
		{"alpha==", "", "", true},
		{"alpha==../../etc", "", "", true},
		{"alpha==1/2", "", "", true},
		{"==1.0", "", "", true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			p, err := ParsePackage(tt.in)
			if tt.err {
				if !errors.Is(err, ErrInvalid) {
					t.Fatalf("got %v, %v; want ErrInvalid", p, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if p.String() != tt.want || pkgDir(p) != tt.dir {
				t.Errorf("got %s in %s, want %s in %s", p, pkgDir(p), tt.want, tt.dir)
			}
		})
	}
}

func TestIndexArgs(t *testing.T) {
	ix := Index{
		URL:          "https://pypi.example/simple",
		ExtraURLs:    []string{"https://extra.example/simple"},
		FindLinks:    []string{"/srv/wheels", "https://links.example/"},
		TrustedHosts: []string{"pypi.example"},
		NoIndex:      true,
	}
	got := strings.Join(ix.args(), " ")
	want := "--no-index --index-url https://pypi.example/simple --extra-index-url https://extra.example/simple " +
		"--find-links /hearth-out/links/0 --find-links https://links.example/ --trusted-host pypi.example"
	if got != want {
		t.Errorf("args:\n got %s\nwant %s", got, want)
	}
	bad := []Index{
		{FindLinks: []string{"relative/dir"}},
		{FindLinks: []string{"/no/such/dir"}},
		{NoIndex: true},
	}
	for _, ix := range bad {
		if err := ix.validate(); !errors.Is(err, ErrInvalid) {
			t.Errorf("%+v: %v, want ErrInvalid", ix, err)
		}
	}
}

func TestPipOutput(t *testing.T) {
	out := "Looking in links: /x\n" +
		"Requirement already satisfied: numpy in /usr/lib/python3/dist-packages (from -r /code/requirements.txt (line 2)) (1.24.2)\n" +
		"Requirement already satisfied: idna<4,>=2.5 in /usr/lib/python3/dist-packages (from requests) (3.3)\n" +
		"Requirement already satisfied: Six in /usr/lib/python3/dist-packages (1.16.0)\n" +
		"ERROR: Cannot install beta and delta because these package versions have conflicting dependencies.\n" +
		"ERROR: ResolutionImpossible: for help visit https://pip.pypa.io\n"
	var got []string
	for _, m := range satisfiedRE.FindAllStringSubmatch(out, -1) {
		got = append(got, m[1]+"=="+m[3])
	}
	if s := strings.Join(got, " "); s != "numpy==1.24.2 idna==3.3 Six==1.16.0" {
		t.Errorf("satisfied: %q", s)
	}
	if s := pipTail(out); s != "Cannot install beta and delta because these package versions have conflicting dependencies.; ResolutionImpossible: for help visit https://pip.pypa.io" {
		t.Errorf("pipTail: %q", s)
	}
	if s := pipTail("a\nb\nc\n"); s != "a | b | c" {
		t.Errorf("pipTail without errors: %q", s)
	}
}
