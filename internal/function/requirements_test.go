package function

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fakeBase builds a base image tree holding a few installed distributions
// in the layouts Debian and pip use.
func fakeBase(t *testing.T) string {
	t.Helper()
	base := t.TempDir()
	write := func(p, c string) {
		full := filepath.Join(base, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	deb := "usr/lib/python3/dist-packages/"
	write(deb+"numpy-1.24.2.dist-info/METADATA", "Metadata-Version: 2.1\nName: numpy\nVersion: 1.24.2\n\nName: not-this\n")
	// Debian's egg-info directories carry PKG-INFO.
	write(deb+"requests-2.28.1.egg-info/PKG-INFO", "Metadata-Version: 1.2\nName: requests\nVersion: 2.28.1\n")
	// An egg-info file rather than a directory.
	write(deb+"Pillow-9.4.0.egg-info", "Metadata-Version: 1.1\nName: Pillow\nVersion: 9.4.0\n")
	// No METADATA: name and version come from the directory name.
	write(deb+"typing_extensions-4.4.0.dist-info/RECORD", "")
	write(deb+"zope.interface-5.5.2.dist-info/METADATA", "Name: zope.interface\nVersion: 5.5.2rc1\n")
	write("usr/local/lib/python3.11/dist-packages/local_pkg-0.1.dev3.dist-info/METADATA", "Name: Local_Pkg\nVersion: 0.1.dev3\n")
	write("usr/local/lib/python3.11/dist-packages/not-metadata.txt", "")
	return base
}

func TestCheckRequirements(t *testing.T) {
	base := fakeBase(t)
	ok := []string{
		"numpy",
		"NumPy",
		"numpy==1.24.2",
		"numpy==1.24.2.0",
		"numpy==1.24.*",
		"numpy!=1.23.*",
		"numpy>=1.20,<2",
		"numpy > 1.24.1 , <= 1.24.2",
		"numpy (>=1.0)",
		"numpy~=1.24",
		"numpy~=1.24.0",
		"numpy[extra1,extra2]>=1",
		"numpy; python_version >= '3.8'",
		"numpy===1.24.2",
		"requests==2.28.1",
		"pillow>=9",
		"typing-extensions==4.4.0",
		"typing.extensions>=4",
		"zope-interface>=5.5.2rc1,<5.5.2",
		"local_pkg<0.1",
		"Local.Pkg==0.1.dev3",
	}
	for _, r := range ok {
		t.Run("ok/"+r, func(t *testing.T) {
			if err := CheckRequirements(base, []string{r}); err != nil {
				t.Errorf("CheckRequirements(%q) = %v", r, err)
			}
		})
	}

	bad := []struct {
		req  string
		want error
		msg  string
	}{
		{"scipy", ErrUnsatisfied, "not installed"},
		{"numpy>=2", ErrUnsatisfied, "numpy 1.24.2"},
		{"numpy==1.24.1", ErrUnsatisfied, "install cache"},
		{"numpy!=1.24.2", ErrUnsatisfied, "later issue"},
		{"numpy~=1.25", ErrUnsatisfied, "numpy 1.24.2"},
		{"pil-low>=9", ErrUnsatisfied, "not installed"},
		{"numpy<1.24.2", ErrUnsatisfied, "numpy"},
		{"numpy>1.24.2", ErrUnsatisfied, "numpy"},
		{"numpy==1.2.*", ErrUnsatisfied, "numpy"},
		{"numpy===1.24.2.0", ErrUnsatisfied, "numpy"},
		{"zope.interface>=5.5.2", ErrUnsatisfied, "5.5.2rc1"},
		{"-r other.txt", ErrUnsupported, "-r"},
		{"--index-url https://example.invalid/simple", ErrUnsupported, "--index-url"},
		{"-e .", ErrUnsupported, "-e"},
		{"numpy @ https://example.invalid/numpy.whl", ErrUnsupported, "direct references"},
		{"https://example.invalid/x.whl", ErrUnsupported, "URLs"},
		{"./local/dir", ErrUnsupported, "paths"},
		{"numpy>=", ErrInvalid, "not a"},
		{"numpy=>1", ErrInvalid, "specifier"},
		{"numpy 1.0", ErrInvalid, "specifier"},
		{"numpy~=1", ErrInvalid, "two release"},
		{"numpy>=1.0+local", ErrInvalid, "local"},
		{"numpy[unclosed", ErrInvalid, "extras"},
		{"numpy;", ErrInvalid, "marker"},
		{"!!!", ErrInvalid, "project name"},
	}
	for _, tt := range bad {
		t.Run("bad/"+tt.req, func(t *testing.T) {
			err := CheckRequirements(base, []string{tt.req})
			if !errors.Is(err, tt.want) {
				t.Fatalf("CheckRequirements(%q) = %v, want %v", tt.req, err, tt.want)
			}
			if !strings.Contains(err.Error(), tt.msg) || !strings.Contains(err.Error(), tt.req) {
				t.Errorf("error %q should name %q and mention %q", err, tt.req, tt.msg)
			}
		})
	}
}

func TestCheckRequirementsAll(t *testing.T) {
	base := fakeBase(t)
	if err := CheckRequirements(base, nil); err != nil {
		t.Errorf("no requirements: %v", err)
	}
	// A missing base is fine when nothing is required.
	if err := CheckRequirements(filepath.Join(base, "missing"), nil); err != nil {
		t.Errorf("no requirements, missing base: %v", err)
	}
	if err := CheckRequirements(filepath.Join(base, "missing"), []string{"numpy"}); err == nil {
		t.Error("missing base dir: want error")
	}
	// Every problem is reported, not only the first.
	err := CheckRequirements(base, []string{"numpy", "scipy", "-r x.txt", "pandas>=1"})
	for _, want := range []error{ErrUnsatisfied, ErrUnsupported} {
		if !errors.Is(err, want) {
			t.Errorf("joined error %v is not %v", err, want)
		}
	}
	for _, name := range []string{"scipy", "-r x.txt", "pandas>=1"} {
		if !strings.Contains(err.Error(), name) {
			t.Errorf("joined error does not name %q: %v", name, err)
		}
	}
	if strings.Contains(err.Error(), `"numpy"`) {
		t.Errorf("satisfied numpy reported: %v", err)
	}
}

func TestInstalledDists(t *testing.T) {
	d, err := InstalledDists(fakeBase(t))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"numpy": "1.24.2", "requests": "2.28.1", "pillow": "9.4.0",
		"typing-extensions": "4.4.0", "zope-interface": "5.5.2rc1", "local-pkg": "0.1.dev3",
	}
	if len(d) != len(want) {
		t.Errorf("got %d dists, want %d: %v", len(d), len(want), d)
	}
	for n, v := range want {
		if len(d[n]) != 1 || d[n][0].Version != v {
			t.Errorf("dist %s = %v, want version %s", n, d[n], v)
		}
	}
}

func TestVersionOrder(t *testing.T) {
	// Each version is strictly smaller than the next (PEP 440 examples).
	order := []string{
		"1.0.dev456", "1.0a1", "1.0a2.dev456", "1.0a12.dev456", "1.0a12",
		"1.0b1.dev456", "1.0b2", "1.0b2.post345.dev456", "1.0b2.post345",
		"1.0rc1.dev456", "1.0rc1", "1.0", "1.0+abc.5", "1.0+abc.7", "1.0+5",
		"1.0.post456.dev34", "1.0.post456", "1.0.15", "1.1.dev1", "1!0.1",
	}
	for i := 0; i+1 < len(order); i++ {
		a, err := parseVersion(order[i])
		if err != nil {
			t.Fatal(err)
		}
		b, err := parseVersion(order[i+1])
		if err != nil {
			t.Fatal(err)
		}
		if compare(a, b, false) >= 0 || compare(b, a, false) <= 0 {
			t.Errorf("want %s < %s", order[i], order[i+1])
		}
	}
	for _, eq := range [][2]string{{"1.0", "1.0.0"}, {"1.0RC1", "1.0rc1"}, {"v1.0", "1.0"}, {"1.0-1", "1.0.post1"}, {"1.0alpha", "1.0a0"}} {
		a, _ := parseVersion(eq[0])
		b, _ := parseVersion(eq[1])
		if compare(a, b, false) != 0 {
			t.Errorf("want %s == %s", eq[0], eq[1])
		}
	}
	for _, bad := range []string{"", "abc", "1..2", "1.0+", "99999999999999999999999"} {
		if _, err := parseVersion(bad); err == nil {
			t.Errorf("parseVersion(%q) succeeded", bad)
		}
	}
}

func TestNormalizeName(t *testing.T) {
	for in, want := range map[string]string{
		"Friendly-Bard": "friendly-bard", "FRIENDLY_BARD": "friendly-bard",
		"friendly.bard": "friendly-bard", "friendly--._bard": "friendly-bard",
	} {
		if got := NormalizeName(in); got != want {
			t.Errorf("NormalizeName(%q) = %q, want %q", in, got, want)
		}
	}
}
