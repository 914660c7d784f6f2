package function

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
)

// Requirement is one parsed line of requirements.txt.
type Requirement struct {
	// Line is the requirement as written.
	Line string
	// Name is the project name normalised per PEP 503.
	Name string
	// Extras are the requested extras, normalised. They are accepted but
	// their extra dependencies are not checked yet.
	Extras []string
	// Marker is the environment marker after ";", unevaluated. Marker
	// evaluation comes with the install cache; until then a requirement
	// with a marker is checked as if the marker were true.
	Marker string

	specs []specifier
}

var (
	reqNameRE = regexp.MustCompile(`^\s*([A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)\s*`)
	normRE    = regexp.MustCompile(`[-_.]+`)
)

// NormalizeName returns the PEP 503 normal form of a project name.
func NormalizeName(name string) string {
	return strings.ToLower(normRE.ReplaceAllString(strings.TrimSpace(name), "-"))
}

// ParseRequirement parses a PEP 508 requirement line without a URL:
// name, optional [extras], optional comma-separated specifiers (optionally
// in parentheses) and an optional ";" marker. Option lines ("-r",
// "--index-url", ...) and direct references ("name @ url") are reported
// with ErrUnsupported; malformed lines with ErrInvalid.
func ParseRequirement(line string) (Requirement, error) {
	line = strings.TrimSpace(line)
	r := Requirement{Line: line}
	if strings.HasPrefix(line, "-") {
		opt, _, _ := strings.Cut(line, " ")
		opt, _, _ = strings.Cut(opt, "=")
		return r, fmt.Errorf("requirement %q: option %s is not supported yet (includes, constraints and index options come with the install cache): %w",
			line, opt, ErrUnsupported)
	}
	if spec, _, _ := strings.Cut(line, ";"); strings.Contains(spec, "://") && !strings.Contains(spec, "@") {
		return r, fmt.Errorf("requirement %q: URLs and paths are not supported yet (they come with the install cache): %w", line, ErrUnsupported)
	}
	rest := line
	if i := strings.IndexByte(rest, ';'); i >= 0 {
		r.Marker = strings.TrimSpace(rest[i+1:])
		rest = rest[:i]
		if r.Marker == "" {
			return r, fmt.Errorf("requirement %q: empty environment marker after \";\": %w", line, ErrInvalid)
		}
	}
	m := reqNameRE.FindStringSubmatch(rest)
	if m == nil {
		if strings.Contains(rest, "://") || strings.HasPrefix(rest, ".") || strings.HasPrefix(rest, "/") {
			return r, fmt.Errorf("requirement %q: URLs and paths are not supported yet (they come with the install cache): %w", line, ErrUnsupported)
		}
		return r, fmt.Errorf("requirement %q: does not start with a project name: %w", line, ErrInvalid)
	}
	r.Name = NormalizeName(m[1])
	rest = rest[len(m[0]):]
	if strings.HasPrefix(rest, "[") {
		end := strings.IndexByte(rest, ']')
		if end < 0 {
			return r, fmt.Errorf("requirement %q: unclosed extras bracket: %w", line, ErrInvalid)
		}
		for _, e := range strings.Split(rest[1:end], ",") {
			e = strings.TrimSpace(e)
			if e == "" {
				continue
			}
			if reqNameRE.FindString(e) != e {
				return r, fmt.Errorf("requirement %q: %q is not a valid extra: %w", line, e, ErrInvalid)
			}
			r.Extras = append(r.Extras, NormalizeName(e))
		}
		rest = rest[end+1:]
	}
	if strings.HasPrefix(strings.TrimSpace(rest), "@") {
		return r, fmt.Errorf("requirement %q: direct references (name @ url) are not supported yet (they come with the install cache): %w", line, ErrUnsupported)
	}
	specs, err := parseSpecifiers(rest)
	if err != nil {
		return r, fmt.Errorf("requirement %q: %v: %w", line, err, ErrInvalid)
	}
	r.specs = specs
	return r, nil
}

// Satisfied reports whether an installed version satisfies every
// specifier of r.
func (r Requirement) Satisfied(installed string) bool {
	for _, sp := range r.specs {
		if !sp.match(installed) {
			return false
		}
	}
	return true
}

// Dist is a distribution installed in a base image.
type Dist struct {
	Name    string // normalised per PEP 503
	Version string
	Path    string // the .dist-info or .egg-info path
}

// sitePatterns are the directories, relative to a base image root, that
// hold installed distributions: Debian's packages and pip's /usr/local.
var sitePatterns = []string{
	"usr/lib/python3/dist-packages",
	"usr/local/lib/python3*/dist-packages",
	"usr/local/lib/python3*/site-packages",
}

// InstalledDists scans the base image tree at baseDir for installed
// distributions (*.dist-info and *.egg-info, directories or files), keyed by
// normalised name. The name and version come from METADATA or PKG-INFO,
// falling back to the directory name.
func InstalledDists(baseDir string) (map[string][]Dist, error) {
	fi, err := os.Stat(baseDir)
	if err != nil {
		return nil, fmt.Errorf("scanning base image: %w", err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("scanning base image: %s is not a directory", baseDir)
	}
	out := map[string][]Dist{}
	for _, pat := range sitePatterns {
		dirs, err := filepath.Glob(filepath.Join(baseDir, pat))
		if err != nil {
			return nil, fmt.Errorf("scanning base image: %w", err)
		}
		for _, d := range dirs {
			ents, err := os.ReadDir(d)
			if err != nil {
				if errors.Is(err, fs.ErrNotExist) {
					continue
				}
				return nil, fmt.Errorf("scanning base image: %w", err)
			}
			for _, e := range ents {
				n := e.Name()
				if !strings.HasSuffix(n, ".dist-info") && !strings.HasSuffix(n, ".egg-info") {
					continue
				}
				d, ok := readDist(filepath.Join(d, n))
				if ok {
					out[d.Name] = append(out[d.Name], d)
				}
			}
		}
	}
	return out, nil
}

// readDist reads one metadata entry. Unreadable entries are skipped: a
// broken package in the base image should not fail every deploy.
func readDist(p string) (Dist, bool) {
	d := Dist{Path: p}
	meta := p
	if fi, err := os.Stat(p); err == nil && fi.IsDir() {
		meta = filepath.Join(p, "METADATA")
		if strings.HasSuffix(p, ".egg-info") {
			meta = filepath.Join(p, "PKG-INFO")
		}
	}
	if f, err := os.Open(meta); err == nil {
		d.Name, d.Version = readHeaders(f)
		f.Close()
	}
	if d.Name == "" || d.Version == "" {
		// Fall back to name-version.dist-info (or
		// name-version[-pyX.Y].egg-info).
		base := strings.TrimSuffix(strings.TrimSuffix(filepath.Base(p), ".dist-info"), ".egg-info")
		parts := strings.SplitN(base, "-", 3)
		if len(parts) < 2 {
			return Dist{}, false
		}
		if d.Name == "" {
			d.Name = parts[0]
		}
		if d.Version == "" {
			d.Version = parts[1]
		}
	}
	d.Name = NormalizeName(d.Name)
	return d, true
}

// readHeaders reads Name and Version from RFC 822 style metadata; the
// headers end at the first blank line.
func readHeaders(r io.Reader) (name, ver string) {
	sc := bufio.NewScanner(io.LimitReader(r, 1<<20))
	for sc.Scan() {
		line := sc.Text()
		if line == "" {
			break
		}
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		switch strings.ToLower(strings.TrimSpace(k)) {
		case "name":
			if name == "" {
				name = strings.TrimSpace(v)
			}
		case "version":
			if ver == "" {
				ver = strings.TrimSpace(v)
			}
		}
		if name != "" && ver != "" {
			break
		}
	}
	return name, ver
}

// CheckRequirements checks each requirement line against the distributions
// installed in the base image tree at baseDir (see InstalledDists). It
// returns nil when all are satisfied. Nothing is installed: an unsatisfied
// requirement is an ErrUnsatisfied error naming it, an option line or URL
// an ErrUnsupported error, a malformed line an ErrInvalid error. Extras
// are accepted without checking the extra dependencies and environment
// markers are not evaluated (treated as true) until the install cache
// lands. All problems are reported, joined with errors.Join.
func CheckRequirements(baseDir string, reqs []string) error {
	if len(reqs) == 0 {
		return nil
	}
	dists, err := InstalledDists(baseDir)
	if err != nil {
		return err
	}
	var errs []error
	for _, line := range reqs {
		r, err := ParseRequirement(line)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		var found []string
		ok := false
		for _, d := range dists[r.Name] {
			if r.Satisfied(d.Version) {
				ok = true
				break
			}
			found = append(found, d.Version)
		}
		if ok {
			continue
		}
		have := "it is not installed there"
		if len(found) > 0 {
			sort.Strings(found)
			have = fmt.Sprintf("it has %s %s", r.Name, strings.Join(found, ", "))
		}
		errs = append(errs, fmt.Errorf("requirement %q is not satisfied by the base image (%s); installing packages from a pip index needs the install cache, which comes in a later issue: %w",
			r.Line, have, ErrUnsatisfied))
	}
	return errors.Join(errs...)
}
