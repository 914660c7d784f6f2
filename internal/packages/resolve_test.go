package packages

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/hearth-run/hearth/internal/function"
)

// baseVersion returns the version of name installed in the test base
// image, read independently of the cache.
func baseVersion(t *testing.T, name string) string {
	t.Helper()
	d, err := function.InstalledDists(testBase)
	if err != nil {
		t.Fatal(err)
	}
	if len(d[name]) == 0 {
		t.Fatalf("base image %s has no %s", testBase, name)
	}
	return d[name][0].Version
}

func TestResolve(t *testing.T) {
	e := newEnv(t, Config{})
	numpy := "base:numpy==" + baseVersion(t, "numpy")
	six := "base:six==" + baseVersion(t, "six")
	requests := "base:requests==" + baseVersion(t, "requests")
	tests := []struct {
		name  string
		files map[string]string
		want  []string // packages; nil with errWant
		pip   bool     // whether pip must run
		err   error
		msg   string // in the error
	}{
		{
			name: "markers extras ranges and includes",
			files: map[string]string{
				"requirements.txt": "-r deps/more.txt\n" +
					"beta[fast]>=1.0,<2 ; python_version >= \"3.8\"\n" +
					"zzz-missing ; python_version < \"3\"\n",
				"deps/more.txt": "numpy  # from Debian\n",
			},
			want: []string{"alpha==2.0", "beta==1.0", "gamma==0.3", numpy, six},
			pip:  true,
		},
		{
			name:  "range picks the older version",
			files: map[string]string{"requirements.txt": "alpha>=1,<2\n"},
			want:  []string{"alpha==1.0"},
			pip:   true,
		},
		{
			name:  "base image shortcut",
			files: map[string]string{"requirements.txt": "numpy\nrequests>=2\n"},
			want:  []string{numpy, requests},
		},
		{
			name:  "no requirements",
			files: map[string]string{"f.py": "def f(e): return e\n"},
		},
		{
			name:  "conflict",
			files: map[string]string{"requirements.txt": "beta\ndelta\n"},
			pip:   true, err: ErrResolve, msg: "conflict",
		},
		{
			name:  "missing distribution",
			files: map[string]string{"requirements.txt": "nosuch==1.0\n"},
			pip:   true, err: ErrResolve, msg: "No matching distribution found for nosuch==1.0",
		},
		{
			name:  "malformed line",
			files: map[string]string{"requirements.txt": "alpha[\n"},
			pip:   true, err: ErrResolve, msg: "Invalid requirement",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := e.c.Stats()
			set, err := e.c.Resolve(context.Background(), codeDir(t, tt.files))
			runs := e.c.Stats().PipRuns - before.PipRuns
			if tt.pip != (runs > 0) {
				t.Errorf("pip runs: %d, want pip run %v", runs, tt.pip)
			}
			if tt.err != nil {
				if !errors.Is(err, tt.err) || !strings.Contains(err.Error(), tt.msg) {
					t.Fatalf("err = %v, want %v containing %q", err, tt.err, tt.msg)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got, want := names(set), names(pkgs(t, tt.want...)); got != want {
				t.Errorf("resolved %q, want %q", got, want)
			}
		})
	}
	if e.c.Stats().Installed != 0 {
		t.Errorf("Resolve installed %d packages", e.c.Stats().Installed)
	}
}
