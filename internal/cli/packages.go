package cli

import (
	"context"
	"errors"
	"fmt"
	"github.com/hearth-run/hearth/internal/worker"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/hearth-run/hearth/internal/api"
	"github.com/hearth-run/hearth/internal/cgroup"
	"github.com/hearth-run/hearth/internal/packages"
	"github.com/hearth-run/hearth/internal/registry"
	"github.com/hearth-run/hearth/internal/sandbox"
	"github.com/hearth-run/hearth/internal/seccomp"
)

// PackagesConfig is the packages section of hearth.yaml: the package
// install cache.
type PackagesConfig struct {
	// Index says where pip finds distributions (default PyPI).
	packages.Index `yaml:",inline"`
	// BudgetMB is the cache size above which packages no function uses
	// are removed, least recently used first (0: no limit).
	BudgetMB int64 `yaml:"budget_mb"`
	// Disabled turns the install cache off: requirements must then be
	// satisfied by the base image.
	Disabled bool `yaml:"disabled"`
}

// packagesDir is the cache directory below the data dir.
func packagesDir(dataDir string) string { return filepath.Join(dataDir, "packages") }

// addPackageFlags declares the install cache flags of `hearth up`, bound
// to pc.
func addPackageFlags(f *pflag.FlagSet, pc *PackagesConfig) {
	f.StringVar(&pc.URL, "index-url", pc.URL, "package index for requirements (default PyPI)")
	f.StringArrayVar(&pc.ExtraURLs, "extra-index-url", pc.ExtraURLs, "extra package index (repeatable)")
	f.StringArrayVar(&pc.FindLinks, "find-links", pc.FindLinks, "directory or URL of distributions for pip (repeatable)")
	f.StringArrayVar(&pc.TrustedHosts, "trusted-host", pc.TrustedHosts, "index host reachable without valid HTTPS (repeatable)")
	f.BoolVar(&pc.NoIndex, "no-index", pc.NoIndex, "install only from --find-links")
	f.Int64Var(&pc.BudgetMB, "package-budget-mb", pc.BudgetMB, "install cache size above which unused packages are removed (0: no limit)")
	f.BoolVar(&pc.Disabled, "no-install-cache", pc.Disabled, "do not install requirements; the base image must satisfy them")
}

// installer is what `hearth up` runs in installer sandboxes: the install
// cache (nil when disabled) and the byte compiler of functions' code.
type installer struct {
	cache    *packages.Cache
	compiler *packages.Compiler
	// close releases everything.
	close func(context.Context) error
}

// openInstaller opens the installer sandboxes (under <data>/installer) and
// their cgroup parent (<cgroup parent>-pkgs), both swept first, which the
// worker's reaper sweeps too; and on them the byte compiler and, unless
// disabled, the install cache. A disabled cache keeps the compiler:
// function code is untrusted input whichever way its requirements are
// met, and its compile runs sandboxed or not at all.
func openInstaller(ctx context.Context, cfg Config, base, initPath string, log *slog.Logger) (*installer, error) {
	cc, err := compileConfig(cfg.Compile)
	if err != nil {
		return nil, err
	}
	parent := cfg.CgroupParent
	if parent == "" {
		parent = worker.DefaultCgroupParent(cfg.DataDir)
	}
	cg, err := cgroup.NewManager(parent + "-pkgs")
	if err != nil {
		return nil, fmt.Errorf("installer: %w", err)
	}
	if _, err := cg.Sweep(ctx); err != nil {
		cg.Close(context.Background())
		return nil, fmt.Errorf("installer: %w", err)
	}
	// pip runs the setup.py files it installs, and the compiler reads
	// untrusted code: the installer sandboxes get the functions' seccomp
	// filter.
	filter := filepath.Join(cfg.DataDir, "installer-seccomp.bpf")
	if err := seccomp.WriteFile(filter); err != nil {
		cg.Close(context.Background())
		return nil, fmt.Errorf("installer: %w", err)
	}
	f := &sandbox.Factory{InitPath: initPath, Base: base, Dir: filepath.Join(cfg.DataDir, "installer"), Seccomp: filter}
	if _, err := f.Sweep(); err != nil {
		cg.Close(context.Background())
		return nil, fmt.Errorf("installer: %w", err)
	}
	cc.Sandboxes, cc.Cgroups = f, cg
	inst := &installer{close: cg.Close}
	if inst.compiler, err = packages.NewCompiler(cc); err != nil {
		cg.Close(context.Background())
		return nil, err
	}
	pc := cfg.Packages
	if pc.Disabled {
		return inst, nil
	}
	c, err := packages.Open(packages.Config{
		Dir:       packagesDir(cfg.DataDir),
		Index:     pc.Index,
		Sandboxes: f,
		Cgroups:   cg,
		Budget:    pc.BudgetMB << 20,
		Logger:    log.With("component", "packages"),
	})
	if err != nil {
		cg.Close(context.Background())
		return nil, err
	}
	inst.cache = c
	inst.close = func(ctx context.Context) error {
		return errors.Join(c.Close(), cg.Close(ctx))
	}
	return inst, nil
}

// CompileConfig is the compile section of hearth.yaml: the byte
// compilation of each deployed function's code, in an installer sandbox.
type CompileConfig struct {
	// Timeout bounds one compile (default 30s).
	Timeout time.Duration `yaml:"timeout"`
	// MemoryMB limits one compile's cgroup (default 256).
	MemoryMB int64 `yaml:"memory_mb"`
}

// compileConfig turns the compile section into the compiler's limits.
func compileConfig(c CompileConfig) (packages.CompileConfig, error) {
	cc := packages.CompileConfig{Timeout: c.Timeout}
	if err := nonNegative(setting{"compile.timeout", c.Timeout}); err != nil {
		return cc, err
	}
	if c.MemoryMB < 0 {
		return cc, fmt.Errorf("compile.memory_mb %d: want a positive size", c.MemoryMB)
	}
	cc.MemoryBytes = c.MemoryMB << 20
	return cc, nil
}

// compileHook is the registry's Prepare: it precompiles a function's
// bytecode, which saves every fresh start and fork the compile of its
// modules (~1 ms for a small handler). Bytecode is an optimisation: a
// compile that fails, or that the compiler's limits kill (a source that
// makes it use gigabytes or minutes), is logged and the deploy goes on
// without it.
func compileHook(c *packages.Compiler, log *slog.Logger) func(ctx context.Context, name, dir string) error {
	return func(ctx context.Context, name, dir string) error {
		t0 := time.Now()
		n, err := c.Compile(ctx, dir)
		took := time.Since(t0).Round(time.Millisecond)
		if err != nil {
			log.Warn("function bytecode not precompiled; deploying without it", "function", name, "took", took, "err", err)
			return nil
		}
		log.Debug("function bytecode precompiled", "function", name, "files", n, "took", took)
		return nil
	}
}

// packageHooks sets the registry options that resolve and install
// requirements at deploy time and keep the cache's users current.
func packageHooks(c *packages.Cache, log *slog.Logger, o *registry.Options) {
	if c == nil {
		return
	}
	o.Resolve = c.Install
	o.Deployed = func(fn registry.Function) {
		if err := c.Use(fn.Name, fn.Packages); err != nil {
			log.Warn("recording package users", "function", fn.Name, "err", err)
		}
	}
	o.Deleted = func(name string) {
		if err := c.Release(name); err != nil {
			log.Warn("recording package users", "function", name, "err", err)
		}
	}
}

// reinstallPackages installs again, in one installer, the packages of every
// deployed function after the cache dropped them for another Python (an
// upgrade changed the base image). A failure is logged: the functions it
// leaves without their packages report it when they start.
func reinstallPackages(ctx context.Context, c *packages.Cache, reg *registry.Registry, log *slog.Logger) {
	if c == nil || len(c.Dropped()) == 0 {
		return
	}
	fns, err := reg.List()
	if err != nil {
		log.Warn("reinstalling packages", "err", err)
		return
	}
	var set []packages.Package
	seen := map[string]bool{}
	for _, f := range fns {
		for _, p := range f.Packages {
			if !seen[p.String()] {
				seen[p.String()] = true
				set = append(set, p)
			}
		}
	}
	t0 := time.Now()
	if err := c.Ensure(ctx, set); err != nil {
		log.Warn("reinstalling packages for the base image's Python", "err", err)
		return
	}
	log.Info("reinstalled packages for the base image's Python", "functions", len(fns), "took", time.Since(t0).Round(time.Millisecond))
}

// syncPackageUsers makes the cache's users match the registry.
func syncPackageUsers(c *packages.Cache, reg *registry.Registry) error {
	if c == nil {
		return nil
	}
	fns, err := reg.List()
	if err != nil {
		return err
	}
	users := map[string][]packages.Package{}
	for _, f := range fns {
		users[f.Name] = f.Packages
	}
	return c.SyncUsers(users)
}

func newPackagesCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "packages",
		Short: "Inspect and clean the package install cache",
		Long: `Inspect and clean the package install cache.

ls asks the running worker (--server or $HEARTH_URL) for its cache, or,
with --data-dir or --config, reads the cache in that data dir. gc works
on a data dir's cache directly and needs one of those two flags; it is
safe while a worker runs.`,
	}
	cmd.AddCommand(newPackagesLsCmd(), newPackagesGCCmd())
	return cmd
}

// apiPackages is the cache as the API lists it: nil, not a nil *Cache,
// when the cache is off.
func apiPackages(c *packages.Cache) api.Packages {
	if c == nil {
		return nil
	}
	return c
}

// storeFlags locate a cache on disk: --data-dir, or data_dir of --config.
// Neither has a default: a default data dir may well be another worker's.
type storeFlags struct {
	config, dataDir string
}

func (sf *storeFlags) add(cmd *cobra.Command, usage string) {
	cmd.Flags().StringVar(&sf.config, "config", "", "config file (hearth.yaml) naming the data dir")
	cmd.Flags().StringVar(&sf.dataDir, "data-dir", "", usage)
}

// given reports whether the flags name a data dir.
func (sf *storeFlags) given(cmd *cobra.Command) bool {
	return sf.config != "" || cmd.Flags().Changed("data-dir")
}

// open returns the cache's store, its directory and the loaded config,
// or a nil store if the data dir has no cache yet.
func (sf *storeFlags) open(cmd *cobra.Command) (*packages.Store, string, Config, error) {
	cfg, err := loadConfig(sf.config)
	if err != nil {
		return nil, "", cfg, err
	}
	if cmd.Flags().Changed("data-dir") {
		cfg.DataDir = sf.dataDir
	}
	if cfg.DataDir == "" {
		return nil, "", cfg, errors.New("empty data dir")
	}
	dir := packagesDir(cfg.DataDir)
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		return nil, dir, cfg, nil
	}
	s, err := packages.OpenStore(dir)
	return s, dir, cfg, err
}

// packageRow is one line of packages ls.
type packageRow struct {
	name, version string
	size          int64
	lastUse       time.Time
	users         []string
}

func newPackagesLsCmd() *cobra.Command {
	var sf storeFlags
	var cf clientFlags
	cmd := &cobra.Command{
		Use:   "ls",
		Short: "List installed packages with size, last use and users",
		Long: `List the installed packages of the running worker's install cache, as
that worker (--server or $HEARTH_URL) reports them; with --data-dir or
--config, those of the cache in that data dir, read from disk. The first
line says which cache is listed.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			out := cmd.OutOrStdout()
			var rows []packageRow
			var where string
			if sf.given(cmd) {
				s, dir, _, err := sf.open(cmd)
				if err != nil {
					return err
				}
				where = "install cache in " + dir
				if s != nil {
					ents, err := s.List()
					if err != nil {
						return err
					}
					for _, e := range ents {
						rows = append(rows, packageRow{e.Name, e.Version, e.Size, e.LastUse, e.Users})
					}
				}
			} else {
				l, err := cf.client().Packages(cmd.Context())
				if err != nil {
					return fmt.Errorf("asking the worker at %s for its install cache (or give --data-dir to read a data dir's): %w", cf.server, err)
				}
				if !l.Enabled {
					fmt.Fprintf(out, "the worker at %s runs without an install cache\n", cf.server)
					return nil
				}
				where = "install cache of the worker at " + cf.server
				for _, p := range l.Packages {
					rows = append(rows, packageRow{p.Name, p.Version, p.Size, p.LastUse, p.Users})
				}
			}
			fmt.Fprintln(out, where)
			tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tVERSION\tSIZE\tLAST USE\tUSERS")
			var total int64
			for _, r := range rows {
				users := strings.Join(r.users, ",")
				if users == "" {
					users = "-"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", r.name, r.version, humanBytes(r.size),
					r.lastUse.Local().Format(time.DateTime), users)
				total += r.size
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			fmt.Fprintf(out, "%d packages, %s\n", len(rows), humanBytes(total))
			return nil
		},
	}
	sf.add(cmd, "data dir whose cache to read from disk (default: ask the worker)")
	cf.add(cmd)
	return cmd
}

func newPackagesGCCmd() *cobra.Command {
	var sf storeFlags
	var all bool
	var budgetMB int64
	var grace time.Duration
	cmd := &cobra.Command{
		Use:   "gc",
		Short: "Remove packages no deployed function uses",
		Long: `Remove packages no deployed function uses, least recently used first,
until the cache fits --budget-mb (default: packages.budget_mb of --config),
or all of them with --all. Packages used within --grace are kept: a deploy
may be about to use them.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if !sf.given(cmd) {
				return errors.New("packages gc: give --data-dir or --config: gc cleans a data dir's cache directly, and a default one may be another worker's")
			}
			s, dir, cfg, err := sf.open(cmd)
			if err != nil {
				return err
			}
			if !cmd.Flags().Changed("budget-mb") {
				budgetMB = cfg.Packages.BudgetMB
			}
			if budgetMB < 0 || grace < 0 {
				return errors.New("packages gc: --budget-mb and --grace must not be negative")
			}
			if !all && budgetMB == 0 {
				return errors.New("packages gc: nothing to do: give --budget-mb or --all")
			}
			if s == nil {
				fmt.Fprintf(cmd.OutOrStdout(), "no install cache in %s\n", dir)
				return nil
			}
			fmt.Fprintf(cmd.OutOrStdout(), "install cache in %s\n", dir)
			res, err := s.GC(cmd.Context(), packages.GCOptions{Budget: budgetMB << 20, All: all, Grace: grace})
			for _, e := range res.Removed {
				fmt.Fprintf(cmd.OutOrStdout(), "removed %s (%s)\n", e.Package, humanBytes(e.Size))
			}
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "removed %d packages, freed %s, cache now %s\n",
				len(res.Removed), humanBytes(res.Freed), humanBytes(res.Size))
			return nil
		},
	}
	sf.add(cmd, "data dir whose cache to clean (required unless --config names it)")
	cmd.Flags().BoolVar(&all, "all", false, "remove every unused package, whatever the budget")
	cmd.Flags().Int64Var(&budgetMB, "budget-mb", 0, "shrink the cache to this size")
	cmd.Flags().DurationVar(&grace, "grace", 10*time.Minute, "keep packages used this recently")
	return cmd
}

// humanBytes formats n in B, KiB, MiB or GiB.
func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%dB", n)
	}
	v, suffix := float64(n), "B"
	for _, s := range []string{"KiB", "MiB", "GiB", "TiB"} {
		if v < unit {
			break
		}
		v /= unit
		suffix = s
	}
	return fmt.Sprintf("%.1f%s", v, suffix)
}
