package cli

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"go.yaml.in/yaml/v3"

	"github.com/hearth-run/hearth/internal/api"
	"github.com/hearth-run/hearth/internal/criu"
	"github.com/hearth-run/hearth/internal/function"
	"github.com/hearth-run/hearth/internal/image"
	"github.com/hearth-run/hearth/internal/registry"
	"github.com/hearth-run/hearth/internal/worker"
	"github.com/hearth-run/hearth/internal/zygote"
)

// DefaultListen is the worker's default address: loopback only.
const DefaultListen = "127.0.0.1:7878"

// Config is hearth.yaml. Flags of `hearth up` override it.
type Config struct {
	Listen       string `yaml:"listen"`
	DataDir      string `yaml:"data_dir"`
	Base         string `yaml:"base"`
	Init         string `yaml:"init"`
	Token        string `yaml:"token"`
	WarmBudgetMB int64  `yaml:"warm_budget_mb"`
	PidsLimit    int64  `yaml:"pids_limit"`
	// CPUsPerGB: CPU quota per GB of a function's memory when it sets no
	// cpus (default 8: one CPU for 128 MB).
	CPUsPerGB    float64 `yaml:"cpus_per_gb"`
	ScratchMB    int64   `yaml:"scratch_mb"`
	MaxBodyMB    int64   `yaml:"max_body_mb"`
	MaxArchiveMB int64   `yaml:"max_archive_mb"`
	MaxFiles     int     `yaml:"max_archive_files"`
	QueueTimeout string  `yaml:"queue_timeout"`
	CgroupParent string  `yaml:"cgroup_parent"`
	LogLevel     string  `yaml:"log_level"`
	// LogLines is how many output lines the worker keeps per function
	// (default 1000); `hearth logs` says when older ones were dropped.
	LogLines int `yaml:"log_lines"`
	// LogsMB bounds the output lines kept of all functions (default 16).
	LogsMB     int64  `yaml:"logs_mb"`
	Mirror     string `yaml:"mirror"`
	NoWarm     bool   `yaml:"no_warm_cache"`
	NoZygotes  bool   `yaml:"no_zygotes"`
	ZygoteTree string `yaml:"zygote_tree"`
	// NoSnapshots switches function snapshots off (issue 6).
	NoSnapshots bool `yaml:"no_snapshots"`
	// PreMade is how many empty sandboxes wait for zygote forks (default
	// 4; negative: none).
	PreMade int `yaml:"premade_sandboxes"`
	// Spares is how many zygote children, at least, are forked ahead of
	// need per recently used zygote node (default 2; negative: none).
	Spares int `yaml:"spares"`
	// MaxSpares bounds all spares; a node that saw a burst keeps as many
	// as the burst's concurrent starts (default 128).
	MaxSpares int `yaml:"max_spares"`
	// Snapshot configures function snapshots.
	Snapshot SnapshotConfig `yaml:"snapshot"`
	// Pre-made cgroups and network namespaces (issue 5). NoPools makes
	// them on the critical path instead.
	NoPools     bool   `yaml:"no_pools"`
	CgroupPool  int    `yaml:"cgroup_pool"`
	NetnsPool   int    `yaml:"netns_pool"`
	NetnsSubnet string `yaml:"netns_subnet"`
	// NoEgress keeps isolated sandboxes (the default network) from
	// reaching anything beyond their bridge; by default they get out
	// through the host's NAT.
	NoEgress bool `yaml:"no_egress"`
	// NetnsNAT is the old switch for egress, off by default then; it now
	// means the opposite of no_egress when set.
	NetnsNAT *bool `yaml:"netns_nat"`
	// AllowHostNetwork lets functions ask for network: host (the host's
	// network namespace). Off by default: such deploys get 403.
	AllowHostNetwork bool `yaml:"allow_host_network"`
	// OpenInvoke lets anyone who reaches the listen address invoke
	// functions without the token. Off by default; refused on an address
	// other than loopback unless OpenInvokePublic is set too.
	OpenInvoke       bool `yaml:"open_invoke"`
	OpenInvokePublic bool `yaml:"open_invoke_public"`
	// Policy is the warm pool's keep-alive policy: lru, gd, freq, ttl or hist.
	Policy string `yaml:"policy"`
	// Pools splits warm_budget_mb into size-partitioned pools in percent,
	// smallest first ("80/20", the default) or "unified".
	Pools string `yaml:"pools"`
	// PoolThresholdMB is the small/large boundary of two pools (default 225).
	PoolThresholdMB int64 `yaml:"pool_threshold_mb"`
	// PoolThresholdsMB are the boundaries of three or more pools.
	PoolThresholdsMB []int64 `yaml:"pool_thresholds_mb"`
	// Borrow lets a full pool use another's spare memory.
	Borrow bool `yaml:"borrow"`
	// TTL is the ttl policy's keep-alive (default 10m).
	TTL string `yaml:"ttl"`
	// OnDrop is queue (the default: a wait of at most drop_wait, by
	// default queue_timeout, then 503) or reject (a 503 at once) when a
	// pool is full of busy sandboxes. Queued requests of functions below
	// their share of the pool go first.
	OnDrop    string `yaml:"on_drop"`
	DropQueue int    `yaml:"drop_queue"`
	DropWait  string `yaml:"drop_wait"`
	// Hist tunes the hist policy (durations as "1m"); empty means the
	// paper's defaults.
	Hist struct {
		Bin        string  `yaml:"bin"`
		Range      string  `yaml:"range"`
		Fixed      string  `yaml:"fixed"`
		MinSamples int     `yaml:"min_samples"`
		MinCV      float64 `yaml:"min_cv"`
		Margin     float64 `yaml:"margin"`
		// SeriesMin and SeriesMargin tune the time-series fallback
		// (series_min: -1 switches it off).
		SeriesMin    int     `yaml:"series_min"`
		SeriesMargin float64 `yaml:"series_margin"`
	} `yaml:"hist"`
	// Packages configures the package install cache.
	Packages PackagesConfig `yaml:"packages"`
	// Compile bounds the deploy-time byte compilation of function code.
	Compile CompileConfig `yaml:"compile"`
	// HTTP bounds the API server's connections, requests and timeouts.
	HTTP HTTPConfig `yaml:"http"`
	// Lambda configures the AWS Lambda compatible API.
	Lambda LambdaConfig `yaml:"lambda"`
	Zygote struct {
		MemoryMB    int64  `yaml:"memory_mb"`
		Window      int    `yaml:"window"`
		Promote     int    `yaml:"promote"`
		IdleTimeout string `yaml:"idle_timeout"`
		Max         int    `yaml:"max"`
		Min         int    `yaml:"min"`
		MaxReplicas int    `yaml:"max_replicas"`
	} `yaml:"zygote"`
}

func loadConfig(path string) (Config, error) {
	cfg := Config{Listen: DefaultListen, DataDir: image.DefaultDataDir}
	if path == "" {
		return cfg, nil
	}
	f, err := os.Open(path)
	if err != nil {
		return cfg, fmt.Errorf("config: %w", err)
	}
	defer f.Close()
	dec := yaml.NewDecoder(f)
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil {
		return cfg, fmt.Errorf("config %s: %w", path, err)
	}
	return cfg, nil
}

func newUpCmd() *cobra.Command {
	var cfgPath string
	var fresh bool
	var flags Config
	cmd := &cobra.Command{
		Use:   "up",
		Short: "Run the worker in the foreground",
		Long: `Run the Hearth worker in the foreground until SIGTERM or SIGINT.

On first run it builds the base image (a Debian trixie tree with python3,
numpy, requests and Pillow) under the data dir, unless --base names a tree.
On shutdown it destroys every sandbox and cgroup it made.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := loadConfig(cfgPath)
			if err != nil {
				return err
			}
			fl := cmd.Flags()
			if fl.Changed("listen") {
				cfg.Listen = flags.Listen
			}
			if fl.Changed("data-dir") {
				cfg.DataDir = flags.DataDir
			}
			if fl.Changed("base") {
				cfg.Base = flags.Base
			}
			if fl.Changed("init") {
				cfg.Init = flags.Init
			}
			if fl.Changed("token") {
				cfg.Token = flags.Token
			}
			if fl.Changed("open-invoke") {
				cfg.OpenInvoke = flags.OpenInvoke
			}
			if fl.Changed("open-invoke-public") {
				cfg.OpenInvokePublic = flags.OpenInvokePublic
			}
			if fl.Changed("warm-budget-mb") {
				cfg.WarmBudgetMB = flags.WarmBudgetMB
			}
			if fl.Changed("cgroup-parent") {
				cfg.CgroupParent = flags.CgroupParent
			}
			if fl.Changed("no-warm-cache") {
				cfg.NoWarm = flags.NoWarm
			}
			if fresh {
				cfg.NoWarm, cfg.NoZygotes, cfg.NoPools, cfg.NoSnapshots = true, true, true, true
			}
			if fl.Changed("no-snapshots") {
				cfg.NoSnapshots = flags.NoSnapshots
			}
			if fl.Changed("premade") {
				cfg.PreMade = flags.PreMade
			}
			if fl.Changed("spares") {
				cfg.Spares = flags.Spares
			}
			if fl.Changed("max-spares") {
				cfg.MaxSpares = flags.MaxSpares
			}
			if fl.Changed("no-zygotes") {
				cfg.NoZygotes = flags.NoZygotes
			}
			if fl.Changed("zygote-tree") {
				cfg.ZygoteTree = flags.ZygoteTree
			}
			if fl.Changed("policy") {
				cfg.Policy = flags.Policy
			}
			if fl.Changed("pools") {
				cfg.Pools = flags.Pools
			}
			if fl.Changed("log-level") {
				cfg.LogLevel = flags.LogLevel
			}
			if fl.Changed("log-lines") {
				cfg.LogLines = flags.LogLines
			}
			if fl.Changed("logs-mb") {
				cfg.LogsMB = flags.LogsMB
			}
			mergeResourceFlags(cmd, &cfg, flags)
			mergeHTTPFlags(cmd, &cfg.HTTP, flags.HTTP)
			mergeLambdaFlags(cmd, &cfg.Lambda, flags.Lambda)
			mergePackageFlags(cmd, &cfg.Packages, flags.Packages)
			if fl.Changed("compile-timeout") {
				cfg.Compile.Timeout = flags.Compile.Timeout
			}
			if fl.Changed("compile-memory-mb") {
				cfg.Compile.MemoryMB = flags.Compile.MemoryMB
			}
			if cfg.Token == "" {
				cfg.Token = os.Getenv("HEARTH_TOKEN")
			}
			return runUp(cmd.Context(), cfg)
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfgPath, "config", "", "config file (hearth.yaml)")
	addPackageFlags(cmd, &flags.Packages)
	addHTTPFlags(cmd, &flags.HTTP)
	addLambdaFlags(cmd, &flags.Lambda)
	f.StringVar(&flags.Listen, "listen", DefaultListen, "address to listen on")
	f.StringVar(&flags.DataDir, "data-dir", image.DefaultDataDir, "data directory")
	f.StringVar(&flags.Base, "base", "", "base image tree (default: build one under the data dir)")
	f.StringVar(&flags.Init, "init", "", "hearth-init binary (default: next to hearth, then $PATH)")
	f.StringVar(&flags.Token, "token", "", "bearer token of the API (or $HEARTH_TOKEN; default: the data dir's api-token, made at the first start)")
	f.BoolVar(&flags.OpenInvoke, "open-invoke", false, "serve the invoke endpoints without the token (loopback addresses only, unless --open-invoke-public)")
	f.BoolVar(&flags.OpenInvokePublic, "open-invoke-public", false, "allow --open-invoke on an address other than loopback")
	f.Int64Var(&flags.WarmBudgetMB, "warm-budget-mb", 0, "memory budget of all sandboxes, busy and paused, MB (default: half of the machine's memory, or of the worker's cgroup limit)")
	f.StringVar(&flags.Policy, "policy", "lru", "warm pool policy: lru, gd, freq, ttl or hist")
	f.StringVar(&flags.Pools, "pools", "80/20", `warm pool split in percent, small functions first, or "unified"`)
	f.StringVar(&flags.CgroupParent, "cgroup-parent", "", "parent cgroup of sandboxes (default: hearth, or hearth-<hash> for a non-default data dir)")
	f.StringVar(&flags.LogLevel, "log-level", "info", "debug, info, warn or error")
	f.IntVar(&flags.LogLines, "log-lines", 1000, "output lines kept per function, for hearth logs")
	f.Int64Var(&flags.LogsMB, "logs-mb", 16, "bound on the output lines kept of all functions, MB")
	f.BoolVar(&flags.NoWarm, "no-warm-cache", false, "destroy sandboxes after each call (every call starts cold)")
	f.BoolVar(&flags.NoPools, "no-pools", false, "make cgroups and network namespaces on the critical path (no pre-made resources)")
	f.IntVar(&flags.CgroupPool, "cgroup-pool", 16, "pre-made cgroups kept ready")
	f.IntVar(&flags.NetnsPool, "netns-pool", 8, "pre-made network namespaces kept ready for network: isolated")
	f.BoolVar(&flags.NoEgress, "no-egress", false, "keep isolated sandboxes (the default network) from reaching anything beyond their bridge (default: out through the host's NAT, which turns on IPv4 forwarding)")
	f.BoolVar(&flags.AllowHostNetwork, "allow-host-network", false, "let functions ask for network: host (the host's network namespace; its loopback and addresses stay closed to them)")
	f.StringVar(&flags.NetnsSubnet, "netns-subnet", "10.200.0.0/16", "private IPv4 subnet of isolated sandboxes (distinct per worker on a host)")
	f.BoolVar(&fresh, "fresh", false, "start every invocation fresh: no warm cache, zygotes, pools or snapshots (a Docker-like baseline)")
	f.BoolVar(&flags.NoSnapshots, "no-snapshots", false, "never snapshot or restore functions")
	f.IntVar(&flags.PreMade, "premade", 0, "empty sandboxes kept ready for zygote forks (default 4; negative: none)")
	f.IntVar(&flags.Spares, "spares", 0, "zygote children forked ahead of need per recently used zygote node, at least (default 2; negative: none)")
	f.IntVar(&flags.MaxSpares, "max-spares", 0, "bound on all spares; a node that saw a burst keeps one per concurrent start for a minute (default 128)")
	f.BoolVar(&flags.NoZygotes, "no-zygotes", false, "never fork from zygotes (every new sandbox starts a fresh interpreter)")
	f.StringVar(&flags.ZygoteTree, "zygote-tree", "", "start from a zygote tree planned by `hearth zygote plan`")
	f.StringVar(&flags.Compile.Timeout, "compile-timeout", "30s", "time limit of a deployed function's byte compilation (past it the deploy goes on without bytecode)")
	f.Int64Var(&flags.Compile.MemoryMB, "compile-memory-mb", 256, "memory limit of a deployed function's byte compilation, MB")
	return cmd
}

func newLogger(level string) *slog.Logger {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		l = slog.LevelInfo
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: l}))
}

// findInit locates hearth-init: next to this binary, then on $PATH.
func findInit(path string) (string, error) {
	if path != "" {
		return path, nil
	}
	if exe, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(exe), "hearth-init")
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	p, err := exec.LookPath("hearth-init")
	if err != nil {
		return "", errors.New("hearth-init not found next to hearth or on $PATH (build it with: go build -o bin/ ./cmd/...)")
	}
	return p, nil
}

func runUp(ctx context.Context, cfg Config) error {
	if ctx == nil {
		ctx = context.Background()
	}
	log := newLogger(cfg.LogLevel)
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	initPath, err := findInit(cfg.Init)
	if err != nil {
		return err
	}
	if err := checkOpenInvoke(cfg); err != nil {
		return err
	}
	// One worker per data dir; then sweep what a predecessor left (its
	// reaper may have been killed with it), and start our own reaper.
	host := worker.Host{DataDir: cfg.DataDir, CgroupParent: cfg.CgroupParent}.Resolve()
	lock, err := worker.AcquireLock(ctx, cfg.DataDir, 10*time.Second)
	if err != nil {
		return err
	}
	defer lock.Release()
	// The API is never open: without a configured token the worker uses
	// (or makes, at its first start) the one in the data dir.
	token := cfg.Token
	if token == "" {
		var created bool
		if token, created, err = api.LoadOrCreateToken(cfg.DataDir); err != nil {
			return err
		}
		if created {
			log.Info("made the API token; the CLI on this host reads it, remote clients pass it with --token or $HEARTH_TOKEN",
				"file", filepath.Join(cfg.DataDir, api.TokenFile))
		}
	}
	if b, err := os.ReadFile(filepath.Join(cfg.DataDir, worker.ReapLog)); err == nil {
		log.Warn("the previous worker exited uncleanly; its reaper swept", "reaper", strings.TrimSpace(string(b)))
		os.Remove(filepath.Join(cfg.DataDir, worker.ReapLog))
	}
	if s, err := worker.Sweep(ctx, host); err != nil {
		return fmt.Errorf("sweeping what a previous worker left: %w", err)
	} else if !s.Empty() {
		log.Warn("swept what a previous worker left", "swept", s.String())
	}
	alive, err := startReaper(host)
	if err != nil {
		return err
	}
	// Closed after a clean shutdown, or by the kernel when we die.
	defer alive.Close()
	base := cfg.Base
	if base == "" {
		base, err = image.Ensure(ctx, image.BuildOptions{DataDir: cfg.DataDir, Mirror: cfg.Mirror, Progress: os.Stderr})
		if err != nil {
			return fmt.Errorf("base image: %w", err)
		}
	}
	if err := image.Validate(base); err != nil {
		return err
	}
	if err := image.Prepare(base); err != nil {
		return err
	}
	inst, err := openInstaller(ctx, cfg, base, initPath, log)
	if err != nil {
		return err
	}
	pkgs := inst.cache
	defer func() {
		// Bounded: shutdown has a budget (see shutdownTimeout); the
		// reaper sweeps what an unfinished close leaves.
		cctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		inst.close(cctx)
	}()
	// The warm pool is settled before the registry opens: a deploy is
	// refused when the pool could never hold the function's sandbox.
	if cfg.WarmBudgetMB < 0 {
		return fmt.Errorf("warm_budget_mb %d must not be negative", cfg.WarmBudgetMB)
	}
	budget := cfg.WarmBudgetMB << 20
	if budget == 0 {
		budget = worker.DefaultWarmBudget()
	}
	poolCfg, err := poolConfig(cfg)
	if err != nil {
		return err
	}
	regOpts := registry.Options{
		CheckRequirements: func(reqs []string) error { return function.CheckRequirements(base, reqs) },
		Validate: func(s function.Spec) error {
			if err := worker.CheckNetwork(cfg.AllowHostNetwork, s); err != nil {
				return err
			}
			return worker.CheckMemory(budget, poolCfg, s.MemoryMB)
		},
		Prepare:  compileHook(inst.compiler, log),
		MaxBytes: cfg.MaxArchiveMB << 20,
		MaxFiles: cfg.MaxFiles,
	}
	packageHooks(pkgs, log, &regOpts)
	reg, err := registry.Open(cfg.DataDir, regOpts)
	if err != nil {
		return err
	}
	defer reg.Close()
	if err := syncPackageUsers(pkgs, reg); err != nil {
		return err
	}
	reinstallPackages(ctx, pkgs, reg, log)
	wcfg := worker.Config{
		DataDir:          cfg.DataDir,
		Base:             base,
		InitPath:         initPath,
		WarmBudget:       budget,
		Pool:             poolCfg,
		PidsLimit:        cfg.PidsLimit,
		CPUsPerGB:        cfg.CPUsPerGB,
		ScratchBytes:     cfg.ScratchMB << 20,
		CgroupParent:     cfg.CgroupParent,
		NoWarm:           cfg.NoWarm,
		NoZygotes:        cfg.NoZygotes,
		PreMade:          cfg.PreMade,
		Spares:           cfg.Spares,
		MaxSpares:        cfg.MaxSpares,
		NoSnapshots:      cfg.NoSnapshots,
		AllowHostNetwork: cfg.AllowHostNetwork,
		LogLines:         cfg.LogLines,
		LogBytes:         cfg.LogsMB << 20,
		Logger:           log,
	}
	if !cfg.NoSnapshots {
		if wcfg.Snapshot, err = snapshotConfig(ctx, cfg.Snapshot, log); err != nil {
			return err
		}
	}
	if wcfg.Resources, err = resourceConfig(cfg); err != nil {
		return err
	}
	if cfg.QueueTimeout != "" {
		if wcfg.QueueTimeout, err = time.ParseDuration(cfg.QueueTimeout); err != nil {
			return fmt.Errorf("queue_timeout: %w", err)
		}
	}
	wcfg.Zygote.MemoryBudget = cfg.Zygote.MemoryMB << 20
	wcfg.Zygote.Window = cfg.Zygote.Window
	wcfg.Zygote.Promote = cfg.Zygote.Promote
	wcfg.Zygote.MaxZygotes = cfg.Zygote.Max
	wcfg.Zygote.MinZygotes = cfg.Zygote.Min
	wcfg.Zygote.MaxReplicas = cfg.Zygote.MaxReplicas
	if cfg.Zygote.IdleTimeout != "" {
		if wcfg.Zygote.IdleTimeout, err = time.ParseDuration(cfg.Zygote.IdleTimeout); err != nil {
			return fmt.Errorf("zygote.idle_timeout: %w", err)
		}
	}
	if cfg.ZygoteTree != "" {
		if wcfg.ZygoteTree, err = zygote.ReadPlan(cfg.ZygoteTree); err != nil {
			return err
		}
	}
	if pkgs != nil {
		wcfg.Packages = pkgs
	}
	wk, err := worker.New(ctx, wcfg, reg)
	if err != nil {
		return err
	}
	limits, err := httpLimits(cfg.HTTP, log)
	if err != nil {
		wk.Close(context.Background())
		return err
	}
	// Requests run under reqCtx: shutdown cancels those still running
	// after a short grace.
	reqCtx, cancelRequests := context.WithCancel(context.Background())
	defer cancelRequests()
	handler := api.New(api.Config{
		Token:      token,
		OpenInvoke: cfg.OpenInvoke,
		MaxBody:    cfg.MaxBodyMB << 20,
		MaxArchive: cfg.MaxArchiveMB << 20,
		TempDir:    cfg.DataDir,
		Logger:     log,
		Packages:   apiPackages(pkgs),
		HostPaths:  hostPaths(cfg.DataDir, base, initPath),
		Limits:     limits,
	}, reg, wk)
	lam, err := mountLambda(cfg, base, reg, wk, handler, log)
	if err != nil {
		wk.Close(context.Background())
		return err
	}
	// After shutdown has stopped the server and the worker.
	defer lam.Close()
	srv := api.HTTPServer(handler, handler.Limits())
	srv.BaseContext = func(net.Listener) context.Context { return reqCtx }
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		wk.Close(context.Background())
		return err
	}
	ln = api.LimitListener(ln, handler.Limits())
	log.Info("hearth worker up", "listen", ln.Addr().String(), "data_dir", cfg.DataDir, "base", base,
		"cgroup_mode", wk.CgroupMode())
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	if cerr := shutdown(srv, wk, cancelRequests, log); cerr != nil {
		if err == nil {
			err = cerr
		}
	} else {
		alive.WriteString(worker.CleanExit)
	}
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}

// checkOpenInvoke refuses open_invoke on an address other than loopback
// unless open_invoke_public says that is meant: anyone who reaches the
// address could then run every function.
func checkOpenInvoke(cfg Config) error {
	if !cfg.OpenInvoke || cfg.OpenInvokePublic {
		return nil
	}
	host, _, err := net.SplitHostPort(cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen %q: %w", cfg.Listen, err)
	}
	if host == "localhost" {
		return nil
	}
	if a, err := netip.ParseAddr(host); err == nil && a.IsLoopback() {
		return nil
	}
	return fmt.Errorf("open_invoke on %s, which is not a loopback address, would let anyone who reaches it invoke every function; "+
		"set open_invoke_public as well if that is meant", cfg.Listen)
}

// Shutdown budget: a worker stops within shutdownTimeout of SIGTERM,
// whatever is in flight. Requests get shutdownGrace to finish, then are
// cancelled; the worker's Close gets the rest. What is still running then
// is left to the reaper, which sweeps once this process has exited.
const (
	shutdownTimeout = 4500 * time.Millisecond
	shutdownGrace   = 1500 * time.Millisecond
)

// shutdown stops srv and wk within shutdownTimeout. A second SIGTERM or
// SIGINT exits at once.
func shutdown(srv *http.Server, wk *worker.Worker, cancelRequests func(), log *slog.Logger) error {
	t0 := time.Now()
	log.Info("shutting down")
	force := make(chan os.Signal, 1)
	signal.Notify(force, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-force
		log.Warn("second signal: exiting now; the reaper sweeps what is left")
		os.Exit(2)
	}()
	deadline := t0.Add(shutdownTimeout)
	gctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
	if err := srv.Shutdown(gctx); err != nil {
		log.Warn("requests still running after the grace; cancelling them", "grace", shutdownGrace)
		cancelRequests()
		srv.Close()
	}
	cancel()
	cctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- wk.Close(cctx) }()
	select {
	case err := <-done:
		if err != nil {
			log.Error("cleanup", "err", err)
		}
		log.Info("shut down", "took", time.Since(t0).Round(time.Millisecond))
		return err
	case <-cctx.Done():
		log.Error("cleanup did not finish in time; the reaper sweeps what is left", "took", time.Since(t0).Round(time.Millisecond))
		return fmt.Errorf("shutdown: cleanup did not finish within %s", shutdownTimeout)
	}
}

// poolConfig turns the warm-pool settings of hearth.yaml into the worker's.
func poolConfig(cfg Config) (worker.PoolConfig, error) {
	pc := worker.PoolConfig{Policy: cfg.Policy, Borrow: cfg.Borrow, OnDrop: cfg.OnDrop, DropQueue: cfg.DropQueue}
	split := cfg.Pools
	if split == "" {
		split = "80/20"
	}
	var err error
	if pc.Fractions, err = worker.ParseSplit(split); err != nil {
		return pc, err
	}
	switch {
	case len(cfg.PoolThresholdsMB) > 0:
		if cfg.PoolThresholdMB != 0 {
			return pc, errors.New("pool_threshold_mb and pool_thresholds_mb: set one, not both")
		}
		for _, t := range cfg.PoolThresholdsMB {
			pc.Thresholds = append(pc.Thresholds, t<<20)
		}
	case cfg.PoolThresholdMB != 0:
		pc.Thresholds = []int64{cfg.PoolThresholdMB << 20}
	case len(pc.Fractions) == 2:
		pc.Thresholds = []int64{worker.DefaultThreshold}
	}
	if len(pc.Thresholds) != len(pc.Fractions)-1 {
		return pc, fmt.Errorf("pools %q makes %d pools, which need %d thresholds (pool_threshold_mb or pool_thresholds_mb), got %d",
			split, len(pc.Fractions), len(pc.Fractions)-1, len(pc.Thresholds))
	}
	if cfg.DropQueue < 0 {
		return pc, fmt.Errorf("drop_queue %d must not be negative", cfg.DropQueue)
	}
	for _, d := range []struct {
		name string
		s    string
		to   *time.Duration
	}{
		{"ttl", cfg.TTL, &pc.TTL}, {"drop_wait", cfg.DropWait, &pc.DropWait},
		{"hist.bin", cfg.Hist.Bin, &pc.Hist.Bin}, {"hist.range", cfg.Hist.Range, &pc.Hist.Range},
		{"hist.fixed", cfg.Hist.Fixed, &pc.Hist.Fixed},
	} {
		if d.s == "" {
			continue
		}
		v, err := time.ParseDuration(d.s)
		if err != nil || v <= 0 {
			return pc, fmt.Errorf("%s: %q is not a positive duration", d.name, d.s)
		}
		*d.to = v
	}
	pc.Hist.MinSamples, pc.Hist.MinCV, pc.Hist.Margin = cfg.Hist.MinSamples, cfg.Hist.MinCV, cfg.Hist.Margin
	pc.Hist.SeriesMin, pc.Hist.SeriesMargin = cfg.Hist.SeriesMin, cfg.Hist.SeriesMargin
	return pc, nil
}

// mergeResourceFlags lets the resource-pool flags override hearth.yaml.
func mergeResourceFlags(cmd *cobra.Command, cfg *Config, flags Config) {
	fl := cmd.Flags()
	if fl.Changed("no-pools") {
		cfg.NoPools = flags.NoPools
	}
	if fl.Changed("cgroup-pool") {
		cfg.CgroupPool = flags.CgroupPool
	}
	if fl.Changed("netns-pool") {
		cfg.NetnsPool = flags.NetnsPool
	}
	if fl.Changed("netns-subnet") {
		cfg.NetnsSubnet = flags.NetnsSubnet
	}
	if fl.Changed("no-egress") {
		cfg.NoEgress = flags.NoEgress
	}
	if fl.Changed("allow-host-network") {
		cfg.AllowHostNetwork = flags.AllowHostNetwork
	}
}

// resourceConfig turns hearth.yaml's pool settings into the worker's.
func resourceConfig(cfg Config) (worker.ResourceConfig, error) {
	r := worker.ResourceConfig{NoPools: cfg.NoPools, Cgroups: cfg.CgroupPool, NetNS: cfg.NetnsPool, NoEgress: cfg.NoEgress}
	if cfg.NetnsNAT != nil {
		if cfg.NoEgress && *cfg.NetnsNAT {
			return r, errors.New("netns_nat: true contradicts no_egress: true (netns_nat is deprecated: egress is on unless no_egress)")
		}
		r.NoEgress = !*cfg.NetnsNAT
	}
	if cfg.CgroupPool < 0 || cfg.NetnsPool < 0 {
		return r, fmt.Errorf("cgroup_pool and netns_pool must not be negative (got %d, %d)", cfg.CgroupPool, cfg.NetnsPool)
	}
	if cfg.NetnsSubnet != "" {
		p, err := netip.ParsePrefix(cfg.NetnsSubnet)
		if err != nil {
			return r, fmt.Errorf("netns_subnet: %w", err)
		}
		r.Subnet = p
	}
	return r, nil
}

// SnapshotConfig is the snapshot section of hearth.yaml.
type SnapshotConfig struct {
	// Threshold is the init time above which a function is snapshotted
	// (default 100ms).
	Threshold string `yaml:"threshold"`
	// MaxMB bounds the local snapshot cache on disk (default 4096).
	MaxMB int64 `yaml:"max_mb"`
	// CRIURoot is the private CRIU root (default /var/lib/hearth/criu-root).
	CRIURoot string `yaml:"criu_root"`
	// S3, if its endpoint is set, is the remote store snapshots are
	// shared through.
	S3 S3Config `yaml:"s3"`
}

// S3Config locates the remote snapshot store. The keys may also come
// from $HEARTH_S3_ACCESS_KEY and $HEARTH_S3_SECRET_KEY (or the AWS_
// variables), which keeps secrets out of hearth.yaml.
type S3Config struct {
	Endpoint  string `yaml:"endpoint"`
	Bucket    string `yaml:"bucket"`
	Prefix    string `yaml:"prefix"`
	AccessKey string `yaml:"access_key"`
	SecretKey string `yaml:"secret_key"`
	Region    string `yaml:"region"`
	TLS       bool   `yaml:"tls"`
	CAFile    string `yaml:"ca_file"`
}

// snapshotConfig turns hearth.yaml's snapshot section into the worker's.
func snapshotConfig(ctx context.Context, c SnapshotConfig, log *slog.Logger) (worker.SnapshotConfig, error) {
	out := worker.SnapshotConfig{CRIURoot: c.CRIURoot}
	if c.Threshold != "" {
		d, err := time.ParseDuration(c.Threshold)
		if err != nil || d <= 0 {
			return out, fmt.Errorf("snapshot.threshold: %q is not a positive duration", c.Threshold)
		}
		out.Threshold = d
	}
	if c.MaxMB < 0 {
		return out, fmt.Errorf("snapshot.max_mb %d must not be negative", c.MaxMB)
	}
	out.MaxBytes = c.MaxMB << 20
	if c.S3.Endpoint == "" {
		if c.S3 != (S3Config{}) {
			return out, errors.New("snapshot.s3: endpoint is required")
		}
		return out, nil
	}
	s3c := c.S3
	if s3c.AccessKey == "" {
		s3c.AccessKey = firstEnv("HEARTH_S3_ACCESS_KEY", "AWS_ACCESS_KEY_ID")
	}
	if s3c.SecretKey == "" {
		s3c.SecretKey = firstEnv("HEARTH_S3_SECRET_KEY", "AWS_SECRET_ACCESS_KEY")
	}
	r, err := openRemote(ctx, s3c, log)
	if err != nil {
		return out, fmt.Errorf("snapshot.s3: %w", err)
	}
	out.Remote = r
	return out, nil
}

func firstEnv(names ...string) string {
	for _, n := range names {
		if v := os.Getenv(n); v != "" {
			return v
		}
	}
	return ""
}

// hostPaths are the host paths the API keeps out of its responses: the
// data dir, the base image, the CRIU root, the binaries.
func hostPaths(dataDir, base, initPath string) []string {
	paths := []string{dataDir, base, criu.DefaultRoot, initPath}
	if exe, err := os.Executable(); err == nil {
		paths = append(paths, exe)
	}
	return paths
}
