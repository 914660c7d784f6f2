package packages

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hearth-run/hearth/internal/cgroup"
	"github.com/hearth-run/hearth/internal/function"
	"github.com/hearth-run/hearth/internal/image"
	"github.com/hearth-run/hearth/internal/sandbox"
)

// Paths inside sandboxes.
const (
	// MountPoint is where a function sandbox sees its packages: one
	// directory per package below it.
	MountPoint = "/hearth-pkgs"
	// outPoint is the installer sandbox's writable output directory.
	outPoint = "/hearth-out"
	// codePoint is where the installer sees the function's code.
	codePoint = "/code"
	// EnvPath is the environment variable the runtime reads extra
	// sys.path entries from, colon-separated.
	EnvPath = "HEARTH_PATH"
)

// Index configures where pip finds distributions. The zero value means
// PyPI.
type Index struct {
	// URL replaces PyPI (pip --index-url).
	URL string `yaml:"index_url" json:"index_url,omitempty"`
	// ExtraURLs are searched too (--extra-index-url).
	ExtraURLs []string `yaml:"extra_index_urls" json:"extra_index_urls,omitempty"`
	// FindLinks are host directories (bound read-only into the installer)
	// or URLs of pages of links (--find-links).
	FindLinks []string `yaml:"find_links" json:"find_links,omitempty"`
	// TrustedHosts may be reached without valid HTTPS (--trusted-host).
	TrustedHosts []string `yaml:"trusted_hosts" json:"trusted_hosts,omitempty"`
	// NoIndex searches FindLinks only (--no-index).
	NoIndex bool `yaml:"no_index" json:"no_index,omitempty"`
}

func isURL(s string) bool { return strings.Contains(s, "://") }

func (ix Index) validate() error {
	for _, l := range ix.FindLinks {
		if isURL(l) {
			continue
		}
		if !filepath.IsAbs(l) {
			return fmt.Errorf("find-links %q: want an absolute directory or a URL: %w", l, ErrInvalid)
		}
		if fi, err := os.Stat(l); err != nil || !fi.IsDir() {
			return fmt.Errorf("find-links %q: not a directory: %w", l, ErrInvalid)
		}
	}
	if ix.NoIndex && len(ix.FindLinks) == 0 {
		return fmt.Errorf("no-index without find-links leaves pip nothing to install from: %w", ErrInvalid)
	}
	return nil
}

// args returns pip's index options; links are the installer-side paths
// of the host find-links directories, in order.
func (ix Index) args() []string {
	var a []string
	if ix.NoIndex {
		a = append(a, "--no-index")
	}
	if ix.URL != "" {
		a = append(a, "--index-url", ix.URL)
	}
	for _, u := range ix.ExtraURLs {
		a = append(a, "--extra-index-url", u)
	}
	for i, l := range ix.FindLinks {
		if !isURL(l) {
			l = linkPoint(i)
		}
		a = append(a, "--find-links", l)
	}
	for _, h := range ix.TrustedHosts {
		a = append(a, "--trusted-host", h)
	}
	return a
}

func linkPoint(i int) string { return fmt.Sprintf("%s/links/%d", outPoint, i) }

// Config configures a Cache.
type Config struct {
	// Dir is the cache directory, typically <data dir>/packages.
	Dir string
	// Index says where pip finds distributions (default PyPI).
	Index Index
	// Sandboxes creates installer sandboxes; its Base is the image pip
	// runs in and whose packages satisfy requirements without installs.
	// Required, with a seccomp filter (Seccomp): pip runs the setup.py
	// files of what it installs, code as untrusted as a function's. The
	// cache does not sweep its Dir.
	Sandboxes *sandbox.Factory
	// Cgroups holds one group per installer sandbox. Required.
	Cgroups *cgroup.Manager
	// Python is the interpreter inside the sandbox (default
	// /usr/bin/python3).
	Python string
	// Budget is the cache size, in bytes, above which packages no
	// function uses are removed after installs (zero: no limit).
	Budget int64
	// Grace protects recently used packages from GC (default 10 minutes).
	Grace time.Duration
	// Timeout bounds one pip run (default 10 minutes).
	Timeout time.Duration
	// MemoryBytes limits an installer sandbox (default 1 GiB).
	MemoryBytes int64
	// Retries is how often pip retries a failed connection (default 2:
	// pip's own 5, with back-off, make an unreachable index cost 8 s).
	Retries int
	// NetTimeout is pip's socket timeout (default 15 s).
	NetTimeout time.Duration
	// Parallel is the most pip installs one installer runs at once
	// (default 4).
	Parallel int
	// Logger receives install events (default: discard).
	Logger *slog.Logger
	// Options configure the Store.
	Options []Option
}

// Stats counts what a Cache did.
type Stats struct {
	// PipRuns is the number of installer sandboxes run.
	PipRuns int64
	// Installed is the number of packages installed.
	Installed int64
	// Shortcuts is the number of resolutions the base image satisfied
	// without running pip.
	Shortcuts int64
}

// Cache resolves and installs packages. Create it with Open.
type Cache struct {
	*Store
	cfg    Config
	log    *slog.Logger
	runner *runner
	base   func() (map[string][]function.Dist, error)

	pipRuns, installed, shortcuts atomic.Int64

	mu      sync.Mutex         // guards flights
	flights map[string]*flight // installs in progress, by name==version

	dropped []Package // removed at Open: installed for another Python
}

// flight is one package being installed; done is closed when err is set.
type flight struct {
	done chan struct{}
	err  error
}

// Open opens the cache in cfg.Dir, sweeps what an interrupted install
// left, and prepares the base image's mount points (see Prepare).
func Open(cfg Config) (*Cache, error) {
	if cfg.Sandboxes == nil || cfg.Cgroups == nil {
		return nil, fmt.Errorf("opening package cache: sandbox factory and cgroup manager are required: %w", ErrInvalid)
	}
	if cfg.Sandboxes.Seccomp == "" {
		return nil, fmt.Errorf("opening package cache: installer sandboxes need a seccomp filter: %w", ErrInvalid)
	}
	if err := cfg.Index.validate(); err != nil {
		return nil, fmt.Errorf("opening package cache: %w", err)
	}
	if cfg.Python == "" {
		cfg.Python = "/usr/bin/python3"
	}
	if cfg.Grace <= 0 {
		cfg.Grace = 10 * time.Minute
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Minute
	}
	if cfg.MemoryBytes <= 0 {
		cfg.MemoryBytes = 1 << 30
	}
	if cfg.Retries <= 0 {
		cfg.Retries = 2
	}
	if cfg.NetTimeout <= 0 {
		cfg.NetTimeout = 15 * time.Second
	}
	if cfg.Parallel <= 0 {
		cfg.Parallel = 4
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := Prepare(cfg.Sandboxes.Base); err != nil {
		return nil, fmt.Errorf("opening package cache: %w", err)
	}
	st, err := OpenStore(cfg.Dir, cfg.Options...)
	if err != nil {
		return nil, err
	}
	if err := st.Sweep(); err != nil {
		return nil, err
	}
	base := cfg.Sandboxes.Base
	version, err := image.PythonVersion(base)
	if err != nil {
		return nil, fmt.Errorf("opening package cache: %w", err)
	}
	dropped, err := st.Adopt(version)
	if err != nil {
		return nil, fmt.Errorf("opening package cache: %w", err)
	}
	if len(dropped) > 0 {
		log.Warn("installed packages were for another Python; removed", "python", version, "packages", len(dropped))
	}
	return &Cache{
		Store:   st,
		cfg:     cfg,
		log:     log,
		runner:  &runner{sandboxes: cfg.Sandboxes, cgroups: cfg.Cgroups},
		base:    sync.OnceValues(func() (map[string][]function.Dist, error) { return function.InstalledDists(base) }),
		flights: map[string]*flight{},
		dropped: dropped,
	}, nil
}

// Dropped returns the packages Open removed because they had been
// installed for another Python version than the base image's (see
// Store.Adopt). Install the sets of the functions that use them again
// with Ensure.
func (c *Cache) Dropped() []Package { return c.dropped }

// Close writes pending uses to the index. Installs in progress are not
// waited for; their callers' contexts govern them.
func (c *Cache) Close() error { return c.Flush() }

// Stats returns counters since Open.
func (c *Cache) Stats() Stats {
	return Stats{PipRuns: c.pipRuns.Load(), Installed: c.installed.Load(), Shortcuts: c.shortcuts.Load()}
}

// Prepare creates the mount points the cache needs in the base image tree
// at base (/hearth-pkgs and /hearth-out) where they are missing.
func Prepare(base string) error {
	for _, d := range []string{MountPoint, outPoint} {
		p := filepath.Join(base, d)
		fi, err := os.Lstat(p)
		if err == nil {
			if !fi.IsDir() {
				return fmt.Errorf("preparing %s: %s is not a directory: %w", base, d, ErrInvalid)
			}
			continue
		}
		if !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("preparing %s: %w", base, err)
		}
		if err := os.Mkdir(p, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
			return fmt.Errorf("preparing %s: %w", base, err)
		}
	}
	return nil
}

// Install resolves the requirements of the function whose code is in
// codeDir and installs what the base image lacks; see Resolve and Ensure.
func (c *Cache) Install(ctx context.Context, codeDir string) ([]Package, error) {
	set, err := c.Resolve(ctx, codeDir)
	if err != nil {
		return nil, err
	}
	if err := c.Ensure(ctx, set); err != nil {
		return nil, err
	}
	return set, nil
}

// Resolve returns the resolved package set of the function whose code is
// in codeDir: every distribution pip would install for its
// requirements.txt (cached packages), plus the base-image distributions
// pip found already satisfying a requirement (Base set). No
// requirements.txt means an empty set. When every requirement is a plain
// name with version specifiers that the base image satisfies, pip does
// not run at all.
func (c *Cache) Resolve(ctx context.Context, codeDir string) ([]Package, error) {
	data, err := os.ReadFile(filepath.Join(codeDir, function.RequirementsFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("resolving requirements: %w", err)
	}
	lines, err := function.ParseRequirements(data)
	if err != nil {
		return nil, fmt.Errorf("resolving requirements: %w", err)
	}
	if len(lines) == 0 {
		return nil, nil
	}
	if set, ok := c.shortcut(lines); ok {
		c.shortcuts.Add(1)
		return set, nil
	}
	set, err := c.resolve(ctx, codeDir)
	if err != nil {
		return nil, err
	}
	return set, nil
}

// shortcut resolves lines from the base image alone when each is a plain
// requirement (no extras, markers, options or URLs) that a base
// distribution satisfies.
func (c *Cache) shortcut(lines []string) ([]Package, bool) {
	dists, err := c.base()
	if err != nil {
		return nil, false
	}
	var set []Package
	for _, l := range lines {
		r, err := function.ParseRequirement(l)
		if err != nil || len(r.Extras) > 0 || r.Marker != "" {
			return nil, false
		}
		found := false
		for _, d := range dists[r.Name] {
			if r.Satisfied(d.Version) {
				set = append(set, Package{Name: d.Name, Version: d.Version, Base: true})
				found = true
				break
			}
		}
		if !found {
			return nil, false
		}
	}
	return dedupe(set), true
}

func dedupe(set []Package) []Package {
	seen := map[string]bool{}
	out := set[:0]
	for _, p := range set {
		if !seen[p.String()] {
			seen[p.String()] = true
			out = append(out, p)
		}
	}
	sortPackages(out)
	return out
}

// Ensure installs every cached package of set that is not in the cache
// yet. Packages another Ensure is installing are waited for, not
// installed twice. All failures are reported, joined; packages that did
// install stay. On success every package of set is marked used now.
func (c *Cache) Ensure(ctx context.Context, set []Package) error {
	cached := Cached(set)
	for _, p := range cached {
		if err := checkPackage(p); err != nil {
			return err
		}
	}
	var mine []Package
	var theirs []*flight
	var fl []*flight
	c.mu.Lock()
	for _, p := range cached {
		if f := c.flights[p.String()]; f != nil {
			theirs = append(theirs, f)
			continue
		}
		if c.has(p) {
			continue
		}
		f := &flight{done: make(chan struct{})}
		c.flights[p.String()] = f
		mine = append(mine, p)
		fl = append(fl, f)
	}
	c.mu.Unlock()

	var errs []error
	if len(mine) > 0 {
		perr := c.install(ctx, mine)
		c.mu.Lock()
		for i, p := range mine {
			fl[i].err = perr[i]
			delete(c.flights, p.String())
			close(fl[i].done)
		}
		c.mu.Unlock()
		errs = append(errs, perr...)
	}
	for _, f := range theirs {
		select {
		case <-f.done:
			errs = append(errs, f.err)
		case <-ctx.Done():
			errs = append(errs, fmt.Errorf("waiting for an install: %w", ctx.Err()))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	if err := c.Touch(cached); err != nil {
		return err
	}
	if len(mine) > 0 && c.cfg.Budget > 0 {
		res, err := c.GC(ctx, GCOptions{Budget: c.cfg.Budget, Grace: c.cfg.Grace})
		if err != nil {
			c.log.Warn("package cache gc", "err", err)
		} else if len(res.Removed) > 0 {
			c.log.Info("package cache gc", "removed", len(res.Removed), "freed", res.Freed, "size", res.Size)
		}
	}
	return nil
}

// Mounts returns the bind mounts that give a sandbox the cached packages
// of set, in the order they must be made: first a view directory at
// MountPoint holding the mount points, then each package onto its mount
// point. All are read-only. An empty result means nothing to mount. A
// package missing from the cache is an ErrNotInstalled error. Mounts
// records a use of each package (written to the index later).
func (s *Store) Mounts(set []Package) ([]sandbox.Bind, error) {
	cached := Cached(set)
	if len(cached) == 0 {
		return nil, nil
	}
	for _, p := range cached {
		if err := checkPackage(p); err != nil {
			return nil, err
		}
		if !s.has(p) {
			return nil, fmt.Errorf("%s: %w", p, ErrNotInstalled)
		}
	}
	view, err := s.view(cached)
	if err != nil {
		return nil, err
	}
	out := []sandbox.Bind{{Source: view, Target: MountPoint}}
	for _, p := range cached {
		out = append(out, sandbox.Bind{Source: s.path(p), Target: MountPoint + "/" + pkgDir(p)})
	}
	s.touchLater(cached)
	return out, nil
}

// SysPath returns the sandbox directories of the cached packages of set,
// for sys.path (HEARTH_PATH, colon-separated), in a stable order.
func SysPath(set []Package) []string {
	var out []string
	for _, p := range Cached(set) {
		out = append(out, MountPoint+"/"+pkgDir(p))
	}
	return out
}
