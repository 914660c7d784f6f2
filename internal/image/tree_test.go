package image

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
)

// mkTree builds a tree from a spec: "path" -> "dir", "file", "exec", or
// "->target" for a symbolic link.
func mkTree(t *testing.T, spec map[string]string) string {
	t.Helper()
	root := t.TempDir()
	for p, kind := range spec {
		full := filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		var err error
		switch {
		case kind == "dir":
			err = os.MkdirAll(full, 0o755)
		case kind == "file":
			err = os.WriteFile(full, []byte("x"), 0o644)
		case kind == "exec":
			err = os.WriteFile(full, []byte("#!/bin/sh\n"), 0o755)
		case len(kind) > 2 && kind[:2] == "->":
			err = os.Symlink(kind[2:], full)
		default:
			t.Fatalf("bad spec %q", kind)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name string
		spec map[string]string
		ok   bool
	}{
		{"plain", map[string]string{"usr/bin/python3": "exec"}, true},
		{"relative-link", map[string]string{"usr/bin/python3": "->python3.11", "usr/bin/python3.11": "exec"}, true},
		// An absolute link points inside the tree, not at the host.
		{"absolute-link", map[string]string{"usr/bin/python3": "->/opt/py/bin/py", "opt/py/bin/py": "exec"}, true},
		{"usrmerge-dir-link", map[string]string{"usr": "->real/usr", "real/usr/bin/python3": "exec"}, true},
		{"absolute-link-to-host-only", map[string]string{"usr/bin/python3": "->/usr/bin/env"}, false},
		{"not-executable", map[string]string{"usr/bin/python3": "file"}, false},
		{"directory", map[string]string{"usr/bin/python3": "dir"}, false},
		{"missing", map[string]string{"usr/bin/python2": "exec"}, false},
		{"dangling", map[string]string{"usr/bin/python3": "->nowhere"}, false},
		{"loop", map[string]string{"usr/bin/python3": "->python3b", "usr/bin/python3b": "->python3"}, false},
		{"escape", map[string]string{"usr/bin/python3": "->../../../../../../usr/bin/env"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Validate(mkTree(t, tt.spec))
			if tt.ok && err != nil {
				t.Fatalf("Validate: %v", err)
			}
			if !tt.ok && !errors.Is(err, ErrInvalid) {
				t.Fatalf("Validate = %v, want ErrInvalid", err)
			}
		})
	}
	t.Run("not-a-dir", func(t *testing.T) {
		f := filepath.Join(t.TempDir(), "f")
		os.WriteFile(f, nil, 0o644)
		if err := Validate(f); !errors.Is(err, ErrInvalid) {
			t.Errorf("Validate(file) = %v", err)
		}
		if err := Validate(filepath.Join(f, "nope")); !errors.Is(err, ErrInvalid) {
			t.Errorf("Validate(missing) = %v", err)
		}
	})
}

func TestPrepare(t *testing.T) {
	tests := []struct {
		name string
		spec map[string]string
		ok   bool
	}{
		{"empty", map[string]string{"usr": "dir"}, true},
		{"some-exist", map[string]string{"proc": "dir", "dev": "dir"}, true},
		{"tmp-link", map[string]string{"tmp": "->var/tmp", "var/tmp": "dir"}, true},
		{"code-is-file", map[string]string{"code": "file"}, false},
		{"dangling-link", map[string]string{"tmp": "->/var/nope"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := mkTree(t, tt.spec)
			err := Prepare(root)
			if !tt.ok {
				if err == nil {
					t.Fatal("Prepare succeeded")
				}
				return
			}
			if err != nil {
				t.Fatalf("Prepare: %v", err)
			}
			for _, mp := range mountPoints {
				p, err := resolveIn(root, mp.path)
				if err != nil {
					t.Fatalf("%s: %v", mp.path, err)
				}
				st, err := os.Stat(p)
				if err != nil || !st.IsDir() {
					t.Fatalf("%s is not a directory: %v", mp.path, err)
				}
				if _, pre := tt.spec[mp.path]; !pre && st.Mode()&(fs.ModePerm|fs.ModeSticky) != mp.mode.Perm()|mp.mode&fs.ModeSticky {
					t.Errorf("%s mode %v, want %v", mp.path, st.Mode(), mp.mode)
				}
			}
			if err := Prepare(root); err != nil {
				t.Fatalf("second Prepare: %v", err)
			}
		})
	}
}

func TestID(t *testing.T) {
	built := mkTree(t, map[string]string{"usr/bin/python3": "exec"})
	write := func(s string) {
		if err := os.WriteFile(filepath.Join(built, MarkerFile), []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(`{"suite":"bookworm","built":"2026-01-01T00:00:00Z"}`)
	a := ID(built)
	if len(a) != len("sha256:")+64 || a != ID(built) {
		t.Fatalf("ID = %q, not a stable sha256 id", a)
	}
	write(`{"suite":"bookworm","built":"2026-01-02T00:00:00Z"}`)
	if b := ID(built); b == a {
		t.Error("ID did not change with the marker")
	}
	user := mkTree(t, map[string]string{"usr/bin/python3": "exec"})
	u := ID(user)
	if u == "" || u != ID(user) || u == ID(built) {
		t.Errorf("unmarked tree ID %q: empty, unstable or equal to another tree's", u)
	}
	if id := ID(filepath.Join(t.TempDir(), "nope")); id != "" {
		t.Errorf("ID(missing) = %q, want empty", id)
	}
}
