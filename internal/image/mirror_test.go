package image

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestParseSourcesList(t *testing.T) {
	const list = `# comment
deb http://deb.mirror.example.net/debian bookworm main contrib
deb-src http://src.example.org/debian bookworm main
deb http://security.mirror.example.net/debian-security bookworm-security main
deb [arch=amd64 signed-by=/usr/share/keyrings/k.gpg] https://mirror.example.org/debian/ bookworm main
deb [ trusted=yes ] file:///srv/mirror bookworm main # local
deb cdrom:[Debian GNU/Linux 12]/ bookworm main
deb http://deb.mirror.example.net/debian bullseye main
deb http://broken.example.org
   deb   http://spaced.example.org/debian   bookworm   main
`
	tests := []struct {
		suite string
		want  []string
	}{
		{"bookworm", []string{"http://deb.mirror.example.net/debian", "https://mirror.example.org/debian", "file:///srv/mirror", "http://spaced.example.org/debian"}},
		{"bookworm-security", []string{"http://security.mirror.example.net/debian-security"}},
		{"bullseye", []string{"http://deb.mirror.example.net/debian"}},
		{"trixie", nil},
	}
	for _, tt := range tests {
		t.Run(tt.suite, func(t *testing.T) {
			got, err := ParseSourcesList(strings.NewReader(list), tt.suite)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("ParseSourcesList(%s) = %q, want %q", tt.suite, got, tt.want)
			}
		})
	}
}

// hostSources is Debian 12's stock debian.sources, as on this machine.
const hostSources = `Types: deb
# http://snapshot.mirror.example.net/archive/debian/20250520T000000Z
URIs: http://deb.mirror.example.net/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
# http://snapshot.mirror.example.net/archive/debian-security/20250520T000000Z
URIs: http://deb.mirror.example.net/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
`

func TestParseDeb822(t *testing.T) {
	const more = `Types: deb-src
URIs: http://src.example.org/debian
Suites: bookworm
Components: main

Types: deb
URIs: http://off.example.org/debian
Suites: bookworm
Enabled: no
Components: main

Types: deb deb-src
URIs: https://a.example.org/debian/
 http://b.example.org/debian
Suites:
 bookworm
Components: main
Signed-By:
 -----BEGIN PGP PUBLIC KEY BLOCK-----
 .
 xyz
 -----END PGP PUBLIC KEY BLOCK-----
`
	tests := []struct {
		name, in, suite string
		want            []string
		bad             bool
	}{
		{"host-bookworm", hostSources, "bookworm", []string{"http://deb.mirror.example.net/debian"}, false},
		{"host-updates", hostSources, "bookworm-updates", []string{"http://deb.mirror.example.net/debian"}, false},
		{"host-security", hostSources, "bookworm-security", []string{"http://deb.mirror.example.net/debian-security"}, false},
		{"host-trixie", hostSources, "trixie", nil, false},
		{"multiline", more, "bookworm", []string{"https://a.example.org/debian", "http://b.example.org/debian"}, false},
		{"malformed", "Types deb\n", "bookworm", nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseDeb822(strings.NewReader(tt.in), tt.suite)
			if (err != nil) != tt.bad {
				t.Fatalf("err = %v, want error %v", err, tt.bad)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("ParseDeb822(%s) = %q, want %q", tt.suite, got, tt.want)
			}
		})
	}
}

func TestHostMirror(t *testing.T) {
	write := func(t *testing.T, dir, name, s string) {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name  string
		files map[string]string
		want  string
		suite string // default bookworm
	}{
		{"deb822", map[string]string{"sources.list.d/debian.sources": hostSources}, "http://deb.mirror.example.net/debian", ""},
		{"one-line-first", map[string]string{
			"sources.list":                  "deb http://first.example.org/debian bookworm main\n",
			"sources.list.d/debian.sources": hostSources,
		}, "http://first.example.org/debian", ""},
		{"list-in-d", map[string]string{
			"sources.list":                              "# empty\n",
			"sources.list.d/a.list":                     "deb http://a.example.org/debian bookworm-security main\n",
			"sources.list.d/b.list":                     "deb http://b.example.org/debian bookworm main\n",
			"sources.list.d/c.sources.disabled-by-farm": hostSources,
		}, "http://b.example.org/debian", ""},
		{"disabled-only", map[string]string{"sources.list.d/debian.sources.disabled": hostSources}, "", ""},
		{"none", nil, "", ""},
		// A bookworm host building a trixie image: the host release's
		// archive mirror, never its security mirror.
		{"other-release", map[string]string{
			"sources.list.d/a.list": "deb http://a.example.org/debian-security bookworm-security main\n",
			"sources.list.d/b.list": "deb http://b.example.org/debian bookworm main\n",
		}, "http://b.example.org/debian", "trixie"},
		{"other-release-deb822", map[string]string{"sources.list.d/debian.sources": hostSources}, "http://deb.mirror.example.net/debian", "trixie"},
		{"listed-release-first", map[string]string{
			"sources.list.d/a.list": "deb http://a.example.org/debian bookworm main\n",
			"sources.list.d/b.list": "deb http://b.example.org/debian trixie main\n",
		}, "http://b.example.org/debian", "trixie"},
		{"security-only", map[string]string{
			"sources.list": "deb http://a.example.org/debian-security bookworm-security main\n",
		}, "", "trixie"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			for n, s := range tt.files {
				write(t, dir, n, s)
			}
			suite := tt.suite
			if suite == "" {
				suite = "bookworm"
			}
			got, err := HostMirror(dir, suite)
			if tt.want == "" {
				if !errors.Is(err, ErrNoMirror) {
					t.Fatalf("HostMirror = %q, %v; want ErrNoMirror", got, err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("HostMirror = %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}
