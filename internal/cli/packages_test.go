package cli

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// packageFixture writes a cache as a worker leaves it: three package
// directories and an index in which f1 uses alpha 2.0.
func packageFixture(t *testing.T) string {
	t.Helper()
	data := t.TempDir()
	dir := packagesDir(data)
	old := time.Now().Add(-48 * time.Hour).UTC()
	type entry struct {
		Name      string    `json:"name"`
		Version   string    `json:"version"`
		Size      int64     `json:"size"`
		Installed time.Time `json:"installed"`
		LastUse   time.Time `json:"last_use"`
	}
	ix := struct {
		Packages map[string]entry    `json:"packages"`
		Users    map[string][]string `json:"users"`
	}{Packages: map[string]entry{}, Users: map[string][]string{"f1": {"alpha==2.0"}}}
	for i, p := range []struct{ name, version, dir string }{
		{"alpha", "1.0", "alpha-1.0"}, {"alpha", "2.0", "alpha-2.0"}, {"beta-pkg", "0.5", "beta_pkg-0.5"},
	} {
		if err := os.MkdirAll(filepath.Join(dir, p.dir), 0o755); err != nil {
			t.Fatal(err)
		}
		ix.Packages[p.name+"=="+p.version] = entry{p.name, p.version, 3 << 20, old, old.Add(time.Duration(i) * time.Hour)}
	}
	b, err := json.Marshal(ix)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "index.json"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	return data
}

func runPackages(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := newPackagesCmd()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetArgs(args)
	err := cmd.Execute()
	return out.String(), err
}

func TestPackagesCommand(t *testing.T) {
	tests := []struct {
		name string
		args []string // --data-dir is appended
		want []string // substrings of the output, or of the error
		err  bool
		left string // `packages ls` rows left afterwards
	}{
		{"ls", []string{"ls"}, []string{"alpha     1.0", "alpha     2.0", "3.0MiB", "f1", "beta-pkg  0.5", "3 packages, 9.0MiB"}, false, "alpha-1.0 alpha-2.0 beta-pkg-0.5"},
		{"gc needs a budget or --all", []string{"gc"}, []string{"nothing to do"}, true, "alpha-1.0 alpha-2.0 beta-pkg-0.5"},
		{"gc to a budget", []string{"gc", "--budget-mb", "7"}, []string{"removed alpha==1.0", "freed 3.0MiB"}, false, "alpha-2.0 beta-pkg-0.5"},
		{"gc all unused", []string{"gc", "--all"}, []string{"removed alpha==1.0", "removed beta-pkg==0.5", "removed 2 packages"}, false, "alpha-2.0"},
		{"gc grace keeps recent", []string{"gc", "--all", "--grace", "100h"}, []string{"removed 0 packages"}, false, "alpha-1.0 alpha-2.0 beta-pkg-0.5"},
		{"gc negative budget", []string{"gc", "--budget-mb", "-1"}, []string{"negative"}, true, "alpha-1.0 alpha-2.0 beta-pkg-0.5"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			data := packageFixture(t)
			out, err := runPackages(t, append(tt.args, "--data-dir", data)...)
			if (err != nil) != tt.err {
				t.Fatalf("err = %v, want error %v\n%s", err, tt.err, out)
			}
			if err != nil {
				out = err.Error()
			}
			for _, w := range tt.want {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
			ls, err := runPackages(t, "ls", "--data-dir", data)
			if err != nil {
				t.Fatal(err)
			}
			if first, _, _ := strings.Cut(ls, "\n"); first != "install cache in "+packagesDir(data) {
				t.Errorf("ls does not say which cache it lists: first line %q", first)
			}
			var rows []string
			for _, l := range strings.Split(ls, "\n")[2:] {
				if f := strings.Fields(l); len(f) >= 2 && !strings.HasSuffix(f[1], "packages,") {
					rows = append(rows, f[0]+"-"+f[1])
				}
			}
			if got := strings.Join(rows, " "); got != tt.left {
				t.Errorf("left %q, want %q", got, tt.left)
			}
		})
	}
	t.Run("gc needs a data dir", func(t *testing.T) {
		_, err := runPackages(t, "gc", "--all")
		if err == nil || !strings.Contains(err.Error(), "give --data-dir or --config") {
			t.Errorf("gc without a data dir: %v", err)
		}
	})
	t.Run("no cache yet", func(t *testing.T) {
		out, err := runPackages(t, "ls", "--data-dir", t.TempDir())
		if err != nil || !strings.Contains(out, "0 packages") {
			t.Errorf("%q, %v", out, err)
		}
	})
}
