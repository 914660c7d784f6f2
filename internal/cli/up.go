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

	"github.com/hearth-run/hearth/internal/api"
	"github.com/hearth-run/hearth/internal/criu"
	"github.com/hearth-run/hearth/internal/function"
	"github.com/hearth-run/hearth/internal/image"
	"github.com/hearth-run/hearth/internal/registry"
	"github.com/hearth-run/hearth/internal/worker"
	"github.com/hearth-run/hearth/internal/zygote"
)

func newUpCmd() *cobra.Command {
	var cfgPath string
	var fresh bool
	cmd := &cobra.Command{
		Use:   "up",
		Short: "Run the worker in the foreground",
		Long: `Run the Hearth worker in the foreground until SIGTERM or SIGINT.

On first run it builds the base image (a Debian trixie tree with python3,
numpy, requests and Pillow) under the data dir, unless --base names a tree.
On shutdown it destroys every sandbox and cgroup it made.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := upConfig(cmd, cfgPath, fresh)
			if err != nil {
				return err
			}
			return runUp(cmd.Context(), cfg)
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfgPath, "config", "", "config file (hearth.yaml)")
	f.BoolVar(&fresh, "fresh", false, "start every invocation fresh: no warm cache, zygotes, pools, snapshots or first-come CPU weights (a Docker-like baseline)")
	// The flags parse into a config of their own; upConfig applies the
	// ones given to the loaded hearth.yaml.
	flags := defaultConfig()
	upFlags(f, &flags)
	return cmd
}

// upConfig is the configuration of `hearth up`: hearth.yaml at path (if
// any) over the defaults, then --fresh, then the flags given, which
// override both; then $HEARTH_TOKEN if no token is set.
func upConfig(cmd *cobra.Command, path string, fresh bool) (Config, error) {
	cfg, err := loadConfig(path)
	if err != nil {
		return cfg, err
	}
	if fresh {
		cfg.NoWarm, cfg.NoZygotes, cfg.Resources.NoPools, cfg.NoSnapshots = true, true, true, true
		cfg.FirstCome = false
	}
	if err := overlayFlags(cmd.Flags(), &cfg); err != nil {
		return cfg, err
	}
	if cfg.Token == "" {
		cfg.Token = os.Getenv("HEARTH_TOKEN")
	}
	return cfg, nil
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
	cpus, err := setProcs(cfg.Procs, log)
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
		CPUWeight:        cfg.CPUWeight,
		NoWarm:           cfg.NoWarm,
		NoZygotes:        cfg.NoZygotes,
		PreMade:          cfg.PreMade,
		Spares:           cfg.Spares,
		MaxSpares:        cfg.MaxSpares,
		MaxStarts:        maxStarts(cfg.MaxStarts, cpus),
		QueueTimeout:     cfg.QueueTimeout,
		Zygote:           zygoteConfig(cfg.Zygote),
		NoSnapshots:      cfg.NoSnapshots,
		AllowHostNetwork: cfg.AllowHostNetwork,
		ShortFirst:       cfg.ShortFirst,
		FirstCome:        firstCome(cfg),
		EagerNetwork:     cfg.EagerNetwork,
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
		"cgroup_mode", wk.CgroupMode(), "cpu_weights", cpuWeightsName(cfg))
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
	shutdownReport  = 300 * time.Millisecond
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
	// Close's own waits end shutdownReport before the deadline, so that
	// the error it then returns, which names what it waited for, is
	// logged; the deadline itself holds whatever Close does.
	cctx, cancel := context.WithDeadline(context.Background(), deadline.Add(-shutdownReport))
	defer cancel()
	hard := time.NewTimer(time.Until(deadline))
	defer hard.Stop()
	done := make(chan error, 1)
	go func() { done <- wk.Close(cctx) }()
	select {
	case err := <-done:
		if err != nil {
			log.Error("cleanup", "err", err)
		}
		log.Info("shut down", "took", time.Since(t0).Round(time.Millisecond))
		return err
	case <-hard.C:
		log.Error("cleanup did not finish in time; the reaper sweeps what is left", "took", time.Since(t0).Round(time.Millisecond))
		return fmt.Errorf("shutdown: cleanup did not finish within %s", shutdownTimeout)
	}
}

// snapshotConfig turns hearth.yaml's snapshot section into the worker's.
func snapshotConfig(ctx context.Context, c SnapshotConfig, log *slog.Logger) (worker.SnapshotConfig, error) {
	out := worker.SnapshotConfig{CRIURoot: c.CRIURoot, Threshold: c.Threshold}
	if err := nonNegative(setting{"snapshot.threshold", c.Threshold}); err != nil {
		return out, err
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
