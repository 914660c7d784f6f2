package image

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// DefaultAptDir is where the host's apt sources live.
const DefaultAptDir = "/etc/apt"

// HostMirror returns the first Debian mirror that the apt sources under
// aptDir (normally DefaultAptDir) use for suite, reading sources.list and
// then sources.list.d/*.list and *.sources in name order, as apt does.
// When none lists suite, it returns the mirror of the host's own release
// (a suite without "-updates", "-security" and the like): a Debian
// archive mirror serves every release, so a bookworm host can build a
// trixie image.
func HostMirror(aptDir, suite string) (string, error) {
	if m, err := hostMirror(aptDir, suite); err == nil || !errors.Is(err, ErrNoMirror) {
		return m, err
	}
	if m, err := hostMirror(aptDir, ""); err == nil {
		return m, nil
	}
	return "", fmt.Errorf("%w for %s in %s (pass a mirror explicitly)", ErrNoMirror, suite, aptDir)
}

// release reports whether suite names a release's main archive, as
// "trixie" or "stable" do and "trixie-security" does not.
func release(suite string) bool {
	return suite != "" && !strings.ContainsAny(suite, "-/")
}

// matches reports whether an apt source's suite s serves want; an empty
// want takes any release.
func matches(s, want string) bool {
	if want == "" {
		return release(s)
	}
	return s == want
}

func hostMirror(aptDir, suite string) (string, error) {
	files := []string{filepath.Join(aptDir, "sources.list")}
	ents, err := os.ReadDir(filepath.Join(aptDir, "sources.list.d"))
	if err != nil && !os.IsNotExist(err) {
		return "", fmt.Errorf("reading apt sources: %w", err)
	}
	for _, e := range ents {
		n := e.Name()
		if !e.IsDir() && (strings.HasSuffix(n, ".list") || strings.HasSuffix(n, ".sources")) {
			files = append(files, filepath.Join(aptDir, "sources.list.d", n))
		}
	}
	for _, f := range files {
		r, err := os.Open(f)
		if os.IsNotExist(err) {
			continue
		}
		if err != nil {
			return "", fmt.Errorf("reading apt sources: %w", err)
		}
		var uris []string
		if strings.HasSuffix(f, ".sources") {
			uris, err = ParseDeb822(r, suite)
		} else {
			uris, err = ParseSourcesList(r, suite)
		}
		r.Close()
		if err != nil {
			return "", fmt.Errorf("reading %s: %w", f, err)
		}
		if len(uris) > 0 {
			return uris[0], nil
		}
	}
	return "", fmt.Errorf("%w for %s in %s (pass a mirror explicitly)", ErrNoMirror, suite, aptDir)
}

// usableURI reports whether debootstrap can fetch from u.
func usableURI(u string) bool {
	p, err := url.Parse(u)
	if err != nil || p.Host == "" && p.Scheme != "file" {
		return false
	}
	switch p.Scheme {
	case "http", "https", "file", "ftp":
		return true
	}
	return false
}

// ParseSourcesList returns the URIs of the "deb" lines for suite (for any
// release when suite is empty) in the one-line format of sources.list:
//
//	deb [ option=value ... ] uri suite component...
func ParseSourcesList(r io.Reader, suite string) ([]string, error) {
	var uris []string
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line, _, _ := strings.Cut(sc.Text(), "#")
		f := strings.Fields(line)
		if len(f) < 3 || f[0] != "deb" {
			continue
		}
		f = f[1:]
		if strings.HasPrefix(f[0], "[") {
			// Options may hold spaces: skip to the closing bracket.
			i := slices.IndexFunc(f, func(s string) bool { return strings.HasSuffix(s, "]") })
			if i < 0 {
				continue
			}
			f = f[i+1:]
		}
		if len(f) >= 2 && matches(f[1], suite) && usableURI(f[0]) {
			uris = append(uris, strings.TrimSuffix(f[0], "/"))
		}
	}
	return uris, sc.Err()
}

// ParseDeb822 returns the URIs of the enabled "deb" stanzas for suite (for
// any release when suite is empty) in the deb822 format of *.sources files.
func ParseDeb822(r io.Reader, suite string) ([]string, error) {
	var uris []string
	stanza := map[string]string{}
	var last string
	flush := func() {
		if strings.EqualFold(stanza["enabled"], "no") {
			stanza = map[string]string{}
			return
		}
		if slices.Contains(strings.Fields(stanza["types"]), "deb") &&
			slices.ContainsFunc(strings.Fields(stanza["suites"]), func(s string) bool { return matches(s, suite) }) {
			for _, u := range strings.Fields(stanza["uris"]) {
				if usableURI(u) {
					uris = append(uris, strings.TrimSuffix(u, "/"))
				}
			}
		}
		stanza = map[string]string{}
	}
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "#"):
		case strings.TrimSpace(line) == "":
			flush()
			last = ""
		case line[0] == ' ' || line[0] == '\t':
			if last != "" {
				stanza[last] += " " + strings.TrimSpace(line)
			}
		default:
			k, v, ok := strings.Cut(line, ":")
			if !ok {
				return nil, fmt.Errorf("bad deb822 line %q", line)
			}
			last = strings.ToLower(strings.TrimSpace(k))
			stanza[last] = strings.TrimSpace(v)
		}
	}
	flush()
	return uris, sc.Err()
}
