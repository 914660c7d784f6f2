package packages

import (
	"cmp"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/hearth-run/hearth/internal/function"
)

// pip reports a connection it could not make in a retry warning (urllib3's,
// "Retrying (Retry(total=1, ...)) after connection broken by
// 'NewConnectionError(...: Failed to establish a new connection: [Errno
// 111] Connection refused')': /simple/alpha/"), and a page it gave up on
// as "Could not fetch URL ...: <reason> - skipping". Either way, its final
// word is only "Could not find a version that satisfies the requirement
// alpha (from versions: none)", the same as for a name the index does not
// have.
var (
	retryRE    = regexp.MustCompile(`(?m)^WARNING: Retrying \(.*\) after connection broken by '(.*)': \S+\s*$`)
	fetchRE    = regexp.MustCompile(`(?m)^(?:WARNING: )?Could not fetch URL \S+: (.*?)(?: - skipping)?\s*$`)
	reprRE     = regexp.MustCompile(`<[^<>]*>(?:: |, )?`)
	excRE      = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_.]*\((.*)\)$`)
	ignoringRE = regexp.MustCompile(`(?m)^Ignoring ([A-Za-z0-9][A-Za-z0-9._-]*): markers `)
)

// unreachable returns why pip could not reach an index, from its output,
// or "" if it reached every one it tried.
func unreachable(output string) string {
	if m := retryRE.FindStringSubmatch(output); m != nil {
		return excReason(m[1])
	}
	if m := fetchRE.FindStringSubmatch(output); m != nil {
		return excReason(m[1])
	}
	return ""
}

// excReason shortens a urllib3 exception's text to its message:
// "NewConnectionError('<...HTTPConnection object at 0x...>: Failed to
// establish a new connection: [Errno 111] Connection refused')" becomes
// "Failed to establish a new connection: [Errno 111] Connection refused".
func excReason(s string) string {
	s = reprRE.ReplaceAllString(s, "")
	for {
		m := excRE.FindStringSubmatch(s)
		if m == nil {
			break
		}
		s = m[1]
	}
	return strings.Trim(strings.TrimSpace(s), `'",`)
}

// indexes names the indexes pip was told to use, without credentials.
func (ix Index) indexes() string {
	var urls []string
	if !ix.NoIndex {
		urls = append(urls, cmp.Or(ix.URL, "https://pypi.org/simple"))
		urls = append(urls, ix.ExtraURLs...)
	}
	for _, l := range ix.FindLinks {
		if isURL(l) {
			urls = append(urls, l)
		}
	}
	for i, u := range urls {
		urls[i] = redact(u)
	}
	if len(urls) == 1 {
		return "package index " + urls[0]
	}
	return "package indexes " + strings.Join(urls, ", ")
}

// redact drops the user info of an index URL: it may hold a password.
func redact(u string) string {
	p, err := url.Parse(u)
	if err != nil || p.User == nil {
		return u
	}
	p.User = nil
	return p.String()
}

// unreachableErr is the error of a resolve that failed because pip could
// not reach the index: it names the index, pip's reason and every
// requirement that needed the index (those the base image does not
// satisfy), not only the first one pip tried.
func (c *Cache) unreachableErr(codeDir, output, reason string) error {
	err := fmt.Errorf("%w: the %s could not be reached (%s)", ErrIndexUnreachable, c.cfg.Index.indexes(), reason)
	if names := c.unresolved(codeDir, output); len(names) > 0 {
		err = fmt.Errorf("%w; could not resolve %s", err, strings.Join(names, ", "))
	}
	return err
}

// unresolved lists the requirements of codeDir's requirements.txt (and
// the files it includes with -r) that no base-image distribution
// satisfies, as written; markers pip reported as not matching are left
// out.
func (c *Cache) unresolved(codeDir, output string) []string {
	skip := map[string]bool{}
	for _, m := range ignoringRE.FindAllStringSubmatch(output, -1) {
		skip[function.NormalizeName(m[1])] = true
	}
	dists, err := c.base()
	if err != nil {
		dists = nil
	}
	var out []string
	seen := map[string]bool{}
	var walk func(rel string, depth int)
	walk = func(rel string, depth int) {
		p := filepath.Join(codeDir, rel)
		if depth > 8 || seen[p] || !filepath.IsLocal(rel) {
			return
		}
		seen[p] = true
		data, err := os.ReadFile(p)
		if err != nil {
			return
		}
		lines, err := function.ParseRequirements(data)
		if err != nil {
			return
		}
		for _, l := range lines {
			if inc, ok := include(l); ok {
				walk(filepath.Join(filepath.Dir(rel), inc), depth+1)
				continue
			}
			if strings.HasPrefix(l, "-") {
				continue // other options name no package
			}
			r, err := function.ParseRequirement(l)
			if err != nil {
				out = append(out, l) // a URL or another form pip needs the network for
				continue
			}
			if skip[r.Name] || satisfied(r, dists) {
				continue
			}
			out = append(out, r.Line)
		}
	}
	walk(function.RequirementsFile, 0)
	return out
}

// include returns the file a "-r FILE", "-rFILE", "--requirement FILE"
// or "--requirement=FILE" line names.
func include(line string) (string, bool) {
	for _, opt := range []string{"--requirement", "-r"} {
		rest, ok := strings.CutPrefix(line, opt)
		if !ok {
			continue
		}
		if r, ok := strings.CutPrefix(rest, "="); ok {
			rest = r
		} else if opt == "--requirement" && strings.TrimLeft(rest, " \t") == rest {
			continue
		}
		if f := strings.TrimSpace(rest); f != "" {
			return f, true
		}
	}
	return "", false
}

func satisfied(r function.Requirement, dists map[string][]function.Dist) bool {
	for _, d := range dists[r.Name] {
		if r.Satisfied(d.Version) {
			return true
		}
	}
	return false
}
