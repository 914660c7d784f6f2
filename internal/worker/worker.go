// Package worker runs deployed functions in sandboxes: it owns the invoke
// path (warm thaw, then snapshot restore, zygote fork or cold start), the
// handler cache of paused sandboxes, function snapshots (made off the
// critical path from spare sandboxes), per-function concurrency limits,
// logs and metrics.
//
// A Worker is safe for concurrent use. Close destroys every sandbox and
// cgroup it made.
package worker

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	goruntime "runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/hearth-run/hearth/api/types"
	"github.com/hearth-run/hearth/internal/cgroup"
	"github.com/hearth-run/hearth/internal/function"
	"github.com/hearth-run/hearth/internal/ident"
	"github.com/hearth-run/hearth/internal/image"
	"github.com/hearth-run/hearth/internal/packages"
	"github.com/hearth-run/hearth/internal/registry"
	"github.com/hearth-run/hearth/internal/runtime"
	"github.com/hearth-run/hearth/internal/sandbox"
	"github.com/hearth-run/hearth/internal/zygote"
)

// Config configures a Worker. Zero values mean the documented defaults.
type Config struct {
	// DataDir holds sandboxes and the runtime files (default /var/lib/hearth).
	DataDir string
	// Base is the read-only base image.
	Base string
	// InitPath is the hearth-init binary.
	InitPath string
	// Python is the interpreter inside the base (default /usr/bin/python3).
	Python string
	// WarmBudget bounds the memory of all sandboxes, busy and paused, at
	// their measured cgroup usage (default DefaultWarmBudget: half the
	// machine's memory, or of the worker's cgroup limit); Pool splits it.
	WarmBudget int64
	// Pool configures the warm pool: policy, partitions, drop behaviour.
	Pool PoolConfig
	// PidsLimit caps processes per sandbox (default 64).
	PidsLimit int64
	// CPUsPerGB is the CPU quota per GB of memory of functions that set
	// no cpus (default function.DefaultCPUsPerGB: one CPU for the
	// default 128 MB, as Lambda gives CPU in proportion to memory).
	CPUsPerGB float64
	// ScratchBytes is the /tmp of pre-made sandboxes (holders and
	// spares), which only serve functions whose tmp_mb matches it
	// (default function.DefaultTmpMB MiB, function.yaml's own default).
	// A function's /tmp is its tmp_mb, on disk unless it asks for memory.
	ScratchBytes int64
	// ReadyScratch is how many on-disk /tmp file systems are kept ready
	// for each size in use (default 4; negative: none).
	ReadyScratch int
	// InitTimeout bounds a cold start up to the handler being loaded (default 60 s).
	InitTimeout time.Duration
	// QueueTimeout bounds how long a request waits for a concurrency slot (default 10 s).
	QueueTimeout time.Duration
	// MaxQueue bounds waiting requests per function (default 256).
	MaxQueue int
	// LogLines is how many output lines are kept per function (default 1000).
	LogLines int
	// LogBytes bounds the output lines kept of all functions (default 16
	// MiB, counting each line's text and bookkeeping): past it the oldest
	// lines of the functions that keep the most are dropped.
	LogBytes int64
	// CgroupParent is the cgroup under which sandboxes live (default
	// DefaultCgroupParent(DataDir)).
	CgroupParent string
	// CPUWeight is the CPU weight of CgroupParent, so of all sandboxes
	// and zygotes together, against the host's other groups (1..10000,
	// 100 a default group's; 0: cgroup.DefaultWeight of the host's CPUs,
	// 100 per CPU up to 1000).
	CPUWeight uint64
	// UID and GID, if set, run every function's handlers. Zero: each
	// function runs as its own host user, from IDs (see internal/ident).
	UID, GID int
	// IDs is the block of host ids for sandboxes (default ident.Default).
	IDs ident.Range
	// FreezeDelay is how long an idle sandbox stays runnable before it is
	// frozen (default 2 ms; negative: at once). A call that arrives in
	// between takes it without a freeze and a thaw (0.1 ms each, more
	// when a vCPU must be woken); the memory is the same either way.
	FreezeDelay time.Duration
	// PreMade is how many generic sandboxes are kept ready for zygote
	// forks (default 4; negative: none). Off with Resources.NoPools too.
	PreMade int
	// Spares is how many zygote children, at least, are forked ahead of
	// need for each zygote node used in the last minute, so that a fork
	// start only hands one its function (default 2; negative: none).
	// They need pre-made sandboxes (PreMade not negative).
	Spares int
	// MaxSpares bounds all spares: a node whose starts came in a burst
	// keeps as many spares as the burst had starts under way at once, for
	// a minute (default 128; each holds about 2 MB).
	MaxSpares int
	// MaxStarts bounds the starts under way at once (default 2 per CPU;
	// negative: no bound), half of them for one function's; more wait
	// their turn, in arrival order, up to QueueTimeout. A start is mostly
	// CPU (imports, a restore): past a few per CPU more at once only
	// share the CPU, so each takes as long as all of them, and slow the
	// calls running beside them. A start holds its turn for a second at
	// most (startHold).
	MaxStarts int
	// NoZygotes switches zygote forks off: every new sandbox gets a fresh
	// interpreter.
	NoZygotes bool
	// Zygote configures the zygote tree.
	Zygote zygote.Config
	// Packages, if set, is the install cache: each function's installed
	// packages are mounted read-only into its sandboxes and zygotes.
	Packages Packages
	// ZygoteTree, if set, lists package sets to create nodes for at start.
	ZygoteTree [][]string
	// NoWarm switches the handler cache off: every sandbox is destroyed
	// after its call, so every call starts cold.
	NoWarm bool
	// Resources configures the pre-made cgroups and network namespaces.
	Resources ResourceConfig
	// AllowHostNetwork lets functions run in the host's network namespace
	// (network: host). Off by default: deploys and invocations of such
	// functions fail with ErrHostNetwork.
	AllowHostNetwork bool
	// ShortFirst weighs a call's sandbox by how long its function's calls
	// usually take (see shortWeight): under contention, as at a burst,
	// the CPU goes first to calls that end soon. Off by default: it
	// shifts CPU between functions.
	ShortFirst bool
	// FirstCome shares the running calls' CPU weight by the order in
	// which they reached the worker (see comeWeights): at a burst the
	// earlier calls end first, instead of all late. Their weights add up
	// to the default's, so it moves CPU only among calls that arrived
	// within 2 s of each other; a call that has used 300 ms of CPU goes
	// last. Not with ShortFirst. (The CLI turns it on by default.)
	FirstCome bool
	// EagerNetwork gives a forked sandbox of network: isolated its veth
	// pair when it starts, as a cold one has it. By default it gets it
	// when it first makes an internet or netlink socket (see lazynet.go),
	// and a function that never does costs no veth pair.
	EagerNetwork bool
	// NoSnapshots switches function snapshots off. Without a working
	// CRIU they are off anyway (Tiers reports it).
	NoSnapshots bool
	// Snapshot configures function snapshots.
	Snapshot SnapshotConfig
	// Logger receives the worker's logs (default slog.Default()).
	Logger *slog.Logger
}

func (c *Config) setDefaults() {
	if c.FreezeDelay == 0 {
		c.FreezeDelay = 2 * time.Millisecond
	}
	if c.DataDir == "" {
		c.DataDir = image.DefaultDataDir
	}
	if c.Python == "" {
		c.Python = "/usr/bin/python3"
	}
	if c.WarmBudget <= 0 {
		c.WarmBudget = DefaultWarmBudget()
	}
	if c.CPUsPerGB <= 0 {
		c.CPUsPerGB = function.DefaultCPUsPerGB
	}
	if c.PidsLimit <= 0 {
		c.PidsLimit = 64
	}
	if c.MaxStarts == 0 {
		c.MaxStarts = 2 * goruntime.GOMAXPROCS(0) // the CPUs it may use
	}
	if c.ScratchBytes <= 0 {
		c.ScratchBytes = function.DefaultTmpMB << 20
	}
	if c.InitTimeout <= 0 {
		c.InitTimeout = 60 * time.Second
	}
	if c.QueueTimeout <= 0 {
		c.QueueTimeout = 10 * time.Second
	}
	if c.MaxQueue <= 0 {
		c.MaxQueue = 256
	}
	if c.LogLines <= 0 {
		c.LogLines = 1000
	}
	if c.LogBytes <= 0 {
		c.LogBytes = 16 << 20
	}
	if c.CgroupParent == "" {
		c.CgroupParent = DefaultCgroupParent(c.DataDir)
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// DefaultCgroupParent is "hearth" for the default data dir and
// "hearth-<hash>" for any other, so that two workers with their own data
// dirs never sweep each other's cgroups.
func DefaultCgroupParent(dataDir string) string {
	abs, err := filepath.Abs(dataDir)
	if err != nil {
		abs = dataDir
	}
	if abs == image.DefaultDataDir {
		return "hearth"
	}
	sum := sha256.Sum256([]byte(abs))
	return "hearth-" + hex.EncodeToString(sum[:4])
}

// socketName is the runtime's listening socket in the sandbox's /tmp.
const socketName = ".hearth.sock"

// Packages is what the worker needs of the package install cache.
type Packages interface {
	// Dir is the host directory holding one directory per package, the
	// same layout as packages.MountPoint in a sandbox.
	Dir() string
	Mounts(set []packages.Package) ([]sandbox.Bind, error)
	Modules(p packages.Package) ([]string, error)
}

// Functions is what the worker needs of the registry.
type Functions interface {
	Get(name string) (registry.Function, error)
	// Lease is Get, and keeps the revision's code directory on disk until
	// release is called, even when a newer revision is deployed or the
	// function is deleted meanwhile.
	Lease(name string) (fn registry.Function, release func(), err error)
	// List returns every deployed function.
	List() ([]registry.Function, error)
}

// Worker runs functions.
type Worker struct {
	cfg     Config
	fns     Functions
	cg      *cgroup.Manager
	home    *cgroup.Group
	factory *sandbox.Factory
	disks   *sandbox.Disks // on-disk /tmp; nil: every /tmp is in memory
	runtime string         // host dir of the runtime files
	log     *slog.Logger
	metrics *Metrics
	seq     atomic.Uint64
	cache   *warmCache
	zyg     *zygote.Manager // nil when zygotes are off
	res     *resources
	holders *holders      // pre-made sandboxes for forks; nil when off
	spares  *spares       // children forked ahead of need; nil when off
	homes   *homes        // ended sandboxes' user and network namespaces (homes.go); nil when off
	snap    *snapshots    // nil when snapshots are off
	snapOff string        // why snap is nil
	zygOff  string        // why zyg is nil, when a probe found zygotes cannot fork
	stop    chan struct{} // closed by Close
	// watchWarned: a zygote child that could not watch its sockets was
	// logged (lazynet.go); once, not at every start.
	watchWarned atomic.Bool
	life        context.Context // cancelled by Close: background work stops
	endLife     context.CancelFunc
	come        *firstCome  // Config.FirstCome; nil without
	busy        *busyGate   // invocations under way
	starts      *startTurns // Config.MaxStarts; nil: no bound

	resolver *zygote.BaseResolver
	pkgMu    sync.Mutex
	pkgCache map[fnKey][]string // package set by function revision; guarded by pkgMu
	logs     *logStore
	// plantMu orders what the zygote manager is told of deploys and
	// deletes (deployed).
	plantMu sync.Mutex

	mu     sync.Mutex
	state  map[string]*fnState // by function name; guarded by mu
	live   map[*instance]struct{}
	closed bool
	wg     sync.WaitGroup // background freezes and evictions

	codeMu sync.Mutex
	code   map[fnKey]*codeHold // guarded by codeMu
}

// codeHold is the worker's lease on one revision's code directory, held
// while calls of that revision run and its sandboxes live: a sandbox's
// bind mount shows the directory itself, so the registry must not remove
// it under them.
type codeHold struct {
	n       int // calls and sandboxes using it
	release func()
}

// fnState is the per-function runtime state. Retire frees it, and the
// state the worker keeps per revision of the function (revs).
type fnState struct {
	name   string
	revs   map[string]struct{} // revisions started or invoked here; guarded by Worker.mu
	logs   *logRing
	stdout *logSink
	stderr *logSink
	slots  chan struct{} // concurrency limit of the current spec
	limit  int
	wait   atomic.Int32 // requests queued for a slot
	run    atomic.Int64 // moving average of its calls' run time, ns (Config.ShortFirst)
	// netUsed: a sandbox of the function made an internet or netlink
	// socket, so the next ones get their network at start (lazynet.go).
	netUsed atomic.Bool
	// forkAt is when its last fork start began (unix ns), and forkAgain
	// whether the one before was within spareIdle of it: its ended
	// sandboxes then leave homes (homes.go).
	forkAt    atomic.Int64
	forkAgain atomic.Bool
}

// New starts a worker: it sweeps what a crashed predecessor left (cgroups,
// mounts, sockets) and installs the runtime files.
func New(ctx context.Context, cfg Config, fns Functions) (*Worker, error) {
	cfg.setDefaults()
	w := &Worker{
		cfg:     cfg,
		fns:     fns,
		log:     cfg.Logger,
		state:   make(map[string]*fnState),
		live:    make(map[*instance]struct{}),
		metrics: newMetrics(),
		logs:    newLogStore(cfg.LogLines, cfg.LogBytes),
		stop:    make(chan struct{}),
		busy:    newBusyGate(),
		starts:  newStartTurns(cfg.MaxStarts),
		code:    make(map[fnKey]*codeHold),
	}
	w.life, w.endLife = context.WithCancel(context.Background())
	if cfg.FirstCome && cfg.ShortFirst {
		return nil, errors.New("worker: FirstCome and ShortFirst both weigh calls' CPU; choose one")
	}
	if t := w.starts; t != nil {
		w.metrics.Registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "hearth_start_turns_held", Help: "Start turns held now, of max_starts.",
		}, func() float64 { return float64(len(t.all)) }))
	}
	cache, err := newWarmCache(w)
	if err != nil {
		return nil, fmt.Errorf("worker: %w", err)
	}
	w.cache = cache
	made := false
	defer func() {
		if !made {
			cache.close() // its event log, if any (close is idempotent)
		}
	}()
	// Every start moves a process into a cgroup; by default each move
	// waits for an RCU grace period (~10 ms here). See FavorDynMods.
	if !cfg.NoZygotes {
		if err := roomForInotify(); err != nil {
			w.log.Warn("forked functions share the zygotes' inotify limit", "err", err)
		}
	}
	if _, err := cgroup.FavorDynMods(); err != nil {
		w.log.Warn("cgroup moves stay slow", "err", err)
	}
	cg, err := cgroup.NewManager(cfg.CgroupParent, cgroup.WithFreezerPin())
	if err != nil {
		return nil, fmt.Errorf("worker: %w", err)
	}
	w.cg = cg
	weight := cfg.CPUWeight
	if weight == 0 {
		weight = cgroup.DefaultWeight(goruntime.NumCPU())
	}
	if err := cg.SetWeight(weight); err != nil {
		if cfg.CPUWeight != 0 {
			cg.Close(ctx)
			return nil, fmt.Errorf("worker: cpu_weight: %w", err)
		}
		w.log.Warn("sandboxes keep a default group's CPU weight", "err", err)
	}
	if n, err := cg.Sweep(ctx); err != nil {
		return nil, fmt.Errorf("worker: sweeping cgroups: %w", err)
	} else if n > 0 {
		w.log.Info("swept cgroups left by a previous worker", "count", n)
	}
	if err := w.initResources(ctx); err != nil {
		return nil, fmt.Errorf("worker: resource pools: %w", err)
	}
	w.home, err = cg.Create("init", cgroup.Limits{})
	if err != nil {
		return nil, fmt.Errorf("worker: init cgroup: %w", err)
	}
	w.runtime = filepath.Join(cfg.DataDir, "runtime")
	w.factory = &sandbox.Factory{
		InitPath: cfg.InitPath,
		Base:     cfg.Base,
		Dir:      filepath.Join(cfg.DataDir, "sandboxes"),
		UID:      cfg.UID,
		GID:      cfg.GID,
		Home:     w.home,
		// Written by runtime.Install below, before any sandbox starts.
		Seccomp:       filepath.Join(w.runtime, runtime.SeccompFile),
		ZygoteSeccomp: filepath.Join(w.runtime, runtime.ZygoteSeccompFile),
	}
	if m, err := sandbox.MountsUnder(w.factory.Dir); err == nil && len(m) > 0 {
		w.log.Info("sweeping mounts left by a previous worker", "count", len(m))
	}
	if err := w.factory.Prepare(); err != nil {
		return nil, fmt.Errorf("worker: %w", err)
	}
	if err := runtime.Install(w.runtime); err != nil {
		return nil, fmt.Errorf("worker: installing runtime: %w", err)
	}
	// Sandboxes' /tmp on disk, as AWS Lambda's: in memory it would count
	// against the function's memory, and cap it at that.
	disks, err := sandbox.OpenDisks(filepath.Join(cfg.DataDir, "scratch"), sandbox.DisksConfig{
		Ready: cfg.ReadyScratch, Logger: w.log.With("component", "scratch")})
	if err != nil {
		w.log.Warn("sandbox /tmp in memory (tmpfs), counted against each function's memory", "err", err)
	} else {
		w.disks = disks
		w.factory.Disks = disks
		disks.Keep(cfg.ScratchBytes)
		w.metrics.Registry.MustRegister(newScratchCollector(disks))
	}
	w.resolver = &zygote.BaseResolver{Base: cfg.Base}
	w.pkgCache = map[fnKey][]string{}
	if err := w.openSnapshots(ctx); err != nil {
		w.Close(context.Background())
		return nil, fmt.Errorf("worker: snapshots: %w", err)
	}
	// Best effort: a bytecode cache saves each cold start ~2 ms. It is
	// compiled by the base image's own python3, whose version the
	// sandboxes run.
	if argv, env, err := image.Python(cfg.Base); err != nil {
		w.log.Warn("runtime bytecode not precompiled", "err", err)
	} else if err := runtime.Compile(ctx, argv, env, w.runtime); err != nil {
		w.log.Warn("runtime bytecode not precompiled", "err", err)
	}
	if !cfg.NoZygotes {
		zc := cfg.Zygote
		zc.Runtime = w.runtime
		zc.Python = cfg.Python
		zc.Modules = w.modules
		// Functions on the host's network fork from zygotes on it; where
		// none may be, zygotes (and the packages they import) have no
		// network at all.
		zc.HostNetwork = cfg.AllowHostNetwork
		zc.Paths = w.pkgPaths
		if cfg.Packages != nil {
			// Zygotes see the whole cache at the sandboxes' paths, so a
			// package installed later is importable without a restart.
			zc.Binds = append(zc.Binds, sandbox.Bind{Source: cfg.Packages.Dir(), Target: packages.MountPoint})
		}
		zc.Logger = w.log.With("component", "zygote")
		// Set before any node but the root can be ready: startSpares runs
		// before Plant, and promotions come with invocations.
		zc.NodeReady = func(key string) {
			if w.spares != nil {
				// For the default network.
				w.spares.prime(key, function.NetworkIsolated)
			}
		}
		zc.Log = newZygoteLog(zc.Logger)
		w.zyg, err = zygote.NewManager(ctx, zc, w.factory, w.cg)
		if errors.Is(err, zygote.ErrUnavailable) {
			// A host limit, not a fault: serve with fresh starts, and say why.
			w.zygOff = err.Error()
			w.log.Warn("zygotes off: every start without a snapshot is cold", "why", err)
			w.zyg, err = nil, nil
		}
		if err != nil {
			w.Close(context.Background())
			return nil, fmt.Errorf("worker: zygotes: %w", err)
		}
		w.metrics.Registry.MustRegister(newZygoteCollector(w))
		if cfg.PreMade >= 0 && !cfg.Resources.NoPools {
			n := cfg.PreMade
			if n == 0 {
				n = 4
			}
			w.startHolders(n)
			if cfg.Spares >= 0 {
				if !cfg.EagerNetwork {
					w.homes = newHomes()
				}
				w.startSpares(cmp.Or(cfg.Spares, 2), cmp.Or(cfg.MaxSpares, 128))
			}
		}
		if len(cfg.ZygoteTree) > 0 {
			if err := w.zyg.Plant(ctx, cfg.ZygoteTree); err != nil {
				w.Close(context.Background())
				return nil, fmt.Errorf("worker: zygote tree: %w", err)
			}
		}
		w.plantDeployed()
	}
	if cfg.FirstCome {
		// Last: no error return after it leaves the loop running.
		w.come = newFirstCome(w.setWeight)
		w.wg.Add(1)
		go func() {
			defer w.wg.Done()
			w.come.run(w.life)
		}()
	}
	made = true
	return w, nil
}

// plantDeployed tells the zygote manager the package sets of the
// functions deployed before this start, which it plants nodes for in the
// background (zygote.Manager.Deployed).
func (w *Worker) plantDeployed() {
	w.plantMu.Lock()
	defer w.plantMu.Unlock()
	fns, err := w.fns.List()
	if err != nil {
		w.log.Warn("no zygote nodes planted for deployed functions", "err", err)
		return
	}
	sets := map[string][]string{}
	for _, fn := range fns {
		pkgs, err := w.packageSet(fn)
		if err != nil {
			w.log.Warn("no zygote node planted for a deployed function", "function", fn.Name, "err", err)
			continue
		}
		sets[fn.Name] = pkgs
	}
	w.zyg.Deployed(sets)
}

// deployed tells the zygote manager the package set of function name as
// the registry has it now, after a deploy or a delete. One at a time, each
// reading the registry under plantMu: of a deploy and a delete racing, the
// last to tell has read the registry last.
func (w *Worker) deployed(name string) {
	if w.zyg == nil {
		return
	}
	w.plantMu.Lock()
	defer w.plantMu.Unlock()
	fn, err := w.fns.Get(name)
	if errors.Is(err, registry.ErrNotFound) {
		w.zyg.Deployed(map[string][]string{name: nil})
		return
	}
	var pkgs []string
	if err == nil {
		pkgs, err = w.packageSet(fn)
	}
	if err != nil {
		w.log.Warn("no zygote node planted for a deployed function", "function", name, "err", err)
		return
	}
	w.zyg.Deployed(map[string][]string{name: pkgs})
}

// Zygotes describes the zygote tree; nil when zygotes are off.
func (w *Worker) Zygotes() []zygote.NodeInfo {
	if w.zyg == nil {
		return nil
	}
	nodes := w.zyg.Nodes()
	if w.spares != nil {
		for i := range nodes {
			nodes[i].Spares = w.spares.count(strings.Join(nodes[i].Packages, ","))
		}
	}
	return nodes
}

// Metrics returns the worker's Prometheus metrics.
func (w *Worker) Metrics() *Metrics { return w.metrics }

// Life returns the worker's lifetime: it ends when Close begins, and
// background work bound to the worker (the Lambda API's asynchronous
// invocations) stops with it.
func (w *Worker) Life() context.Context { return w.life }

// CgroupMode reports the host's cgroup mode.
func (w *Worker) CgroupMode() string { return string(w.cg.Mode()) }

// Result is the outcome of one invocation.
type Result struct {
	// Body is the handler's JSON result, when Err is nil.
	Body []byte
	// Err is the handler's own error (an exception), if any.
	Err *runtime.HandlerError
	// Path is how the call started: "warm", "snapshot", "fork" or "cold".
	Path string
	// Init is the cold-start time up to the handler being loaded, or up
	// to the failure when InitFailed.
	Init time.Duration
	// InitFailed says the start failed (the invoke error says why): the
	// handler never ran.
	InitFailed bool
	// Wait is how long the call waited before it had a sandbox or room
	// for a new one and its turn to start it: for one of its function's
	// concurrency slots, for memory in the warm pool (a warm call's
	// includes the thaw) and for a turn (Config.MaxStarts).
	Wait time.Duration
	// TurnWait is the part of Wait spent waiting for a turn to start,
	// after the call had its room.
	TurnWait time.Duration
	// Run is the handler's run time as the worker saw it.
	Run time.Duration
	// Revision is the code revision that ran.
	Revision string
}

// Invoke runs function name on event. The call runs the revision
// deployed when it came, to the end, whatever is deployed or deleted
// meanwhile: it holds that revision's code.
func (w *Worker) Invoke(ctx context.Context, name string, event []byte) (Result, error) {
	return w.InvokeID(ctx, name, event, "")
}

// InvokeID is Invoke with the request id the handler sees as
// context.aws_request_id (the Lambda API passes its own); "" draws one.
func (w *Worker) InvokeID(ctx context.Context, name string, event []byte, id string) (Result, error) {
	start := time.Now()
	fn, release, err := w.fns.Lease(name)
	if err != nil {
		if errors.Is(err, registry.ErrNotFound) {
			return Result{}, fmt.Errorf("%s: %w", name, ErrNotFound)
		}
		return Result{}, err
	}
	code := w.holdCode(fn, release)
	defer w.dropCode(code)
	// A function deployed when the worker allowed the host's network, or
	// before network: none was renamed, on a worker that no longer does.
	if err := CheckNetwork(w.cfg.AllowHostNetwork, fn.Spec); err != nil {
		return Result{}, fmt.Errorf("%s: %w", name, err)
	}
	st, err := w.fnState(fn)
	if err != nil {
		return Result{}, err
	}
	tw := time.Now()
	if err := w.acquireSlot(ctx, st); err != nil {
		w.metrics.invocations.WithLabelValues("none", "throttled").Inc()
		return Result{}, err
	}
	defer func() { <-st.slots }()
	w.busy.enter()
	defer w.busy.leave()

	res := Result{Revision: fn.Revision, Path: "warm"}
	if id == "" {
		id = strconv.FormatUint(w.seq.Add(1), 36)
	}
	timeout := time.Duration(fn.Spec.TimeoutS) * time.Second
	// A warm (thawed) sandbox, or room reserved in the pool for a new one.
	inst, resv, err := w.cache.take(ctx, fn)
	if w.come != nil {
		// Done below; this if a panic comes first (connect counted a
		// started sandbox already).
		defer func() {
			if inst != nil {
				w.come.done(inst)
			}
		}()
	}
	res.Wait = time.Since(tw)
	if err != nil {
		w.metrics.invocations.WithLabelValues("none", "dropped").Inc()
		return Result{Wait: res.Wait}, err
	}
	if inst == nil {
		// Its turn to start, after its room: a start waiting for a
		// turn holds memory, not a turn waiting for memory.
		tt := time.Now()
		done, err := w.startTurn(ctx, fn.Name)
		res.Wait, res.TurnWait = time.Since(tw), time.Since(tt)
		if err != nil {
			w.cache.abort(resv)
			w.metrics.invocations.WithLabelValues("none", "dropped").Inc()
			return Result{Wait: res.Wait}, err
		}
		var first *runtime.Request
		if len(event) <= runtime.PipelineMax {
			// No deadline: the runtime's timeout runs from the call's
			// start, after the load, as the worker's below.
			first = &runtime.Request{ID: id, Event: event}
		}
		t0 := time.Now()
		inst, res.Path, err = func() (*instance, string, error) {
			defer done()
			return w.start(ctx, fn, st, first, start)
		}()
		if err != nil {
			res.Init, res.InitFailed = time.Since(t0), true
			w.cache.abort(resv)
			w.metrics.invocations.WithLabelValues(res.Path, "start_error").Inc()
			return res, err
		}
		res.Init = time.Since(t0)
		if !inst.firstRan.IsZero() {
			res.Init = inst.firstRan.Sub(t0) // the call has run since
		}
		w.cache.bind(resv, inst, res.Init)
		w.metrics.coldStarts.WithLabelValues(res.Path).Observe(res.Init.Seconds())
	}

	w.weigh(inst, st)
	if w.come != nil {
		w.come.running(inst, start)
	}
	rctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	t1 := time.Now()
	if !inst.firstRan.IsZero() {
		t1, inst.firstRan = inst.firstRan, time.Time{}
	}
	growth := w.watchGrowth(inst, t1)
	defer growth.stop() // stopped below; this if the call panics
	resp, err := inst.conn.Invoke(rctx, runtime.Request{
		ID:       id,
		Event:    event,
		Deadline: time.Now().Add(timeout),
	})
	res.Run = time.Since(t1)
	if w.come != nil {
		w.come.done(inst)
	}
	// Every call the handler ran counts, the longest (timed out, crashed)
	// too: a function cannot keep a short one's weight by failing.
	st.observeRun(res.Run)
	if err == nil {
		inst.drainOutput() // still watched: it runs on until paused
	}
	growth.stop()
	if err != nil {
		err = w.classify(inst, fn, err, rctx)
		w.destroy(inst)
		inst.awaitOutputEnd()
		w.metrics.invocations.WithLabelValues(res.Path, errLabel(err)).Inc()
		return res, err
	}
	res.Body, res.Err = resp.Body, resp.Err
	status := "ok"
	if res.Err != nil {
		status = "handler_error"
	}
	w.metrics.invocations.WithLabelValues(res.Path, status).Inc()
	w.metrics.latency.WithLabelValues(res.Path).Observe(time.Since(start).Seconds())
	w.release(inst, growth.grew())
	return res, nil
}

func errLabel(err error) string {
	switch {
	case errors.Is(err, ErrTimeout):
		return "timeout"
	case errors.Is(err, ErrOOM):
		return "oom"
	default:
		return "crashed"
	}
}

// classify turns a failed call into the error the caller sees.
func (w *Worker) classify(inst *instance, fn registry.Function, err error, ctx context.Context) error {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%s: timed out after %ds: %w", fn.Name, fn.Spec.TimeoutS, ErrTimeout)
	}
	if errors.Is(err, runtime.ErrCrashed) {
		exit := inst.exit()
		if oomKilled(inst.group, exit) {
			return fmt.Errorf("%s: out of memory: the function exceeded its memory limit of %d MB: %w",
				fn.Name, fn.Spec.MemoryMB, ErrOOM)
		}
		return fmt.Errorf("%s: the function's process %s during the call: %w",
			fn.Name, exit, ErrCrashed)
	}
	return fmt.Errorf("%s: %w: %w", fn.Name, err, ErrCrashed)
}

func (w *Worker) fnState(fn registry.Function) (*fnState, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return nil, ErrClosed
	}
	limit := fn.Spec.MaxConcurrency
	if limit <= 0 {
		limit = function.DefaultMaxConcurrency // Parse fills it in; a zero Spec gets the same
	}
	st := w.state[fn.Name]
	if st == nil {
		// Retire frees the state after the registry's Delete; a caller
		// that looked the function up just before the Delete must not
		// make a new state that nothing would free. Rare: once per
		// function.
		if _, err := w.fns.Get(fn.Name); err != nil {
			if errors.Is(err, registry.ErrNotFound) {
				return nil, fmt.Errorf("%s: %w", fn.Name, ErrNotFound)
			}
			return nil, err
		}
		st = &fnState{name: fn.Name, revs: map[string]struct{}{}, logs: w.logs.ring()}
		log := w.log.With("function", fn.Name)
		st.stdout = &logSink{ring: st.logs, log: log, def: runtime.Stdout}
		st.stderr = &logSink{ring: st.logs, log: log, def: runtime.Stderr}
		w.state[fn.Name] = st
	}
	st.revs[fn.Revision] = struct{}{}
	if st.slots == nil || st.limit != limit {
		// A changed limit applies to new requests; calls in flight keep
		// the old channel, which they release into.
		st.slots = make(chan struct{}, limit)
		st.limit = limit
	}
	return st, nil
}

// acquireSlot waits for one of the function's concurrency slots.
func (w *Worker) acquireSlot(ctx context.Context, st *fnState) error {
	slots := st.slots
	select {
	case slots <- struct{}{}:
		return nil
	default:
	}
	if int(st.wait.Add(1)) > w.cfg.MaxQueue {
		st.wait.Add(-1)
		return fmt.Errorf("%s: %d requests already queued: %w", st.name, w.cfg.MaxQueue, ErrTooMany)
	}
	defer st.wait.Add(-1)
	t := time.NewTimer(w.cfg.QueueTimeout)
	defer t.Stop()
	select {
	case slots <- struct{}{}:
		return nil
	case <-t.C:
		return fmt.Errorf("%s: no free sandbox within %s (max_concurrency %d): %w",
			st.name, w.cfg.QueueTimeout, st.limit, ErrTooMany)
	case <-ctx.Done():
		return ctx.Err()
	}
}

// LoadError is a handler that failed to load (import error, missing
// function). Its Err has the Lambda error shape.
type LoadError struct {
	Function string
	Err      *runtime.HandlerError
}

// Error names the function and the load error.
func (e *LoadError) Error() string {
	return fmt.Sprintf("%s: loading handler: %s: %s", e.Function, e.Err.Type, e.Err.Message)
}

func shortRev(rev string) string {
	if len(rev) > 8 {
		return rev[:8]
	}
	return rev
}

func (w *Worker) track(inst *instance) {
	inst.code = w.retainCode(fnKey{inst.fn, inst.rev})
	w.mu.Lock()
	w.live[inst] = struct{}{}
	w.mu.Unlock()
	w.metrics.sandboxes.Inc()
}

// holdCode counts a user of fn's code, whose lease release the caller
// took from the registry, and returns the key for dropCode.
func (w *Worker) holdCode(fn registry.Function, release func()) fnKey {
	k := fnKey{fn.Name, fn.Revision}
	w.codeMu.Lock()
	h := w.code[k]
	if h == nil {
		w.code[k] = &codeHold{n: 1, release: release}
		w.codeMu.Unlock()
		return k
	}
	h.n++
	w.codeMu.Unlock()
	release() // the worker holds one lease per revision
	return k
}

// retainCode counts another user of code the worker holds (a sandbox
// started by a call that holds it); false if it holds none (a start
// outside a call).
func (w *Worker) retainCode(k fnKey) bool {
	w.codeMu.Lock()
	defer w.codeMu.Unlock()
	h := w.code[k]
	if h == nil {
		return false
	}
	h.n++
	return true
}

// dropCode ends a use of k's code; the last gives the lease back.
func (w *Worker) dropCode(k fnKey) {
	w.codeMu.Lock()
	h := w.code[k]
	if h.n--; h.n > 0 {
		w.codeMu.Unlock()
		return
	}
	delete(w.code, k)
	w.codeMu.Unlock()
	h.release()
}

// release returns a healthy sandbox to the handler cache. The freeze runs in
// the background: a request that arrives first takes the sandbox still
// running and skips the thaw. grew is how far into its call its growth
// was last charged (0: none).
func (w *Worker) release(inst *instance, grew time.Duration) {
	fn, err := w.fns.Get(inst.fn)
	drop := err != nil || fn.Revision != inst.rev || w.cfg.NoWarm || w.isClosed()
	if !drop && inst.lazy.retire(w.cache.startCost(inst)) {
		// Its replacement must come without the filter.
		inst.lazy.markUsed()
		w.metrics.lazyRetired.Inc()
		w.cache.learn(inst) // its peak, as for one kept
		drop = true
	}
	if drop {
		// Retired revision, deleted function, no cache, shutdown, or a
		// network filter that costs more than a new sandbox; off
		// the response path, but out of the pool's accounting now, so the
		// next start does not see memory that is already being freed.
		w.cache.forget(inst)
		switch {
		case errors.Is(err, registry.ErrNotFound):
			// Deleted during the call, which may have made state that
			// Retire had already freed.
			w.forget(inst.fn, "", inst.rev)
		case err == nil && fn.Revision != inst.rev:
			w.forget(inst.fn, fn.Revision, inst.rev)
		}
		w.background(func() {
			w.busy.wait(teardownDelay, w.stop)
			w.destroy(inst)
		})
		return
	}
	w.cache.learn(inst) // before markIdle: an idle sandbox may be dropped, its group cleaned
	// 0 if unread: then charged as it was until the pause measures it.
	size, _ := inst.group.MemoryUsage()
	inst.markIdle()
	victims := w.cache.put(inst, int64(size), grew)
	w.destroyAsync(victims)
	w.park(inst, w.cfg.FreezeDelay)
}

// teardownDelay bounds how long the teardown of a sandbox whose call is
// done waits for the invocations under way to finish: on two cores,
// tearing down (process exits, reaping, unmounting) takes a fifth of a
// burst's CPU.
const teardownDelay = 500 * time.Millisecond

// background runs f in a goroutine that Close waits for; after Close it
// runs f at once.
func (w *Worker) background(f func()) {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		f()
		return
	}
	w.wg.Add(1)
	w.mu.Unlock()
	go func() {
		defer w.wg.Done()
		f()
	}()
}

func (w *Worker) destroyAsync(victims []*instance) {
	for _, v := range victims {
		w.dropHome(v)
		w.metrics.evictions.Inc()
		w.background(func() { w.destroy(v) })
	}
}

// destroy kills a sandbox and removes its cgroup.
func (w *Worker) destroy(inst *instance) {
	if w.come != nil {
		// No weight is written to its group from here on: the pool
		// resets the group and hands it to another sandbox.
		w.come.forget(inst)
	}
	w.mu.Lock()
	_, ok := w.live[inst]
	delete(w.live, inst)
	home := inst.home // setHome gives none from now on
	inst.home = nil
	w.mu.Unlock()
	if !ok {
		return
	}
	w.cache.forget(inst)
	w.metrics.sandboxes.Dec()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// Taking the sandbox back from the freezer first turns a background
	// freeze that has not run yet into a no-op: a freeze racing the kill
	// would leave the killed processes frozen for good.
	if err := inst.thaw(ctx); err != nil && !errors.Is(err, errDead) {
		w.log.Warn("thawing a sandbox to destroy it", "sandbox", inst.id, "err", err)
	}
	if inst.conn != nil {
		inst.conn.Close()
	}
	inst.proc.close()
	// The dying processes' exits (unmapping an interpreter's memory) run
	// at their cgroup's CPU weight: the lowest, so that they yield to
	// live calls and starts. The pool resets it.
	if err := inst.group.SetCPUWeight(1); err != nil {
		w.log.Debug("lowering a dying sandbox's CPU weight", "sandbox", inst.id, "err", err)
	}
	gone := true // all its processes are
	if err := inst.sb.Destroy(ctx); err != nil {
		gone = false
		w.log.Warn("destroying sandbox", "sandbox", inst.id, "err", err)
	}
	if err := w.dropGroup(ctx, inst.group); err != nil {
		w.log.Warn("deleting cgroup", "sandbox", inst.id, "err", err)
	}
	w.dropNet(ctx, inst.net)
	pristine := w.dropLazy(ctx, inst.lazy)
	w.keepHome(home, gone && inst.net == nil && pristine)
	if inst.code {
		// Unmounted: the registry may remove a retired revision's code.
		w.dropCode(fnKey{inst.fn, inst.rev})
	}
}

func (w *Worker) isClosed() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.closed
}

// Retire destroys the cached sandboxes of function name that do not run
// revision keep (all of them if keep is empty). Busy ones are destroyed
// when their call ends. It is called after every deploy (keep is the new
// revision) and delete (keep is empty), and so also plants a zygote node
// for a newly deployed function's packages.
func (w *Worker) Retire(name, keep string) {
	for _, inst := range w.cache.drop(name, keep) {
		w.destroy(inst)
	}
	w.retireSnapshots(name, keep)
	w.forget(name, keep)
	w.dropHomes(name)
	w.deployed(name)
}

// forget frees what the worker keeps of function name's revisions other
// than keep (all of them, and the function's state and logs, if keep is
// empty): the revisions it ran (fnState.revs) and also, if given, revs,
// which an invocation that ended after its function was retired reports.
// The pool frees a revision that still has sandboxes once they are gone.
func (w *Worker) forget(name, keep string, revs ...string) {
	w.mu.Lock()
	st := w.state[name]
	if st != nil {
		for rev := range st.revs {
			if rev != keep {
				revs = append(revs, rev)
				delete(st.revs, rev)
			}
		}
		if keep == "" {
			delete(w.state, name)
		}
	}
	w.mu.Unlock()
	if st != nil && keep == "" {
		w.logs.drop(st.logs)
	}
	w.pkgMu.Lock()
	for _, rev := range revs {
		delete(w.pkgCache, fnKey{name, rev})
	}
	w.pkgMu.Unlock()
	for _, rev := range revs {
		w.cache.retire(name, rev)
	}
	w.snap.forget(name, revs)
}

// Logs returns up to n output lines of function name (all it keeps if
// n <= 0), oldest first: the newest ones if since is 0, else the first
// ones from Seq since on, to follow the log.
func (w *Worker) Logs(name string, n int, since uint64) LogTail {
	w.mu.Lock()
	st := w.state[name]
	w.mu.Unlock()
	if st == nil {
		// Nothing printed yet; a log starts when it is needed.
		return LogTail{Lines: []LogLine{}, Next: 1, Limit: w.cfg.LogLines, LimitBytes: w.cfg.LogBytes}
	}
	return st.logs.query(n, since)
}

// SandboxInfo describes one live sandbox (the shape GET /v1/status
// answers).
type SandboxInfo = types.SandboxInfo

// Status is a snapshot of the worker's state (the body of GET /v1/status).
type Status = types.Status

// privateBytes returns the memory pid maps alone, from its smaps_rollup;
// 0 if it is gone.
func privateBytes(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	if err != nil {
		return 0
	}
	var total int64
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok || (k != "Private_Clean" && k != "Private_Dirty") {
			continue
		}
		if n, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64); err == nil {
			total += n << 10
		}
	}
	return total
}

// Tiers says which cache tiers are on; each can be switched off so that
// one machine can compare designs side by side.
type Tiers = types.Tiers

// Tiers reports the worker's tier switches.
func (w *Worker) Tiers() Tiers {
	return Tiers{
		Warm:         !w.cfg.NoWarm,
		Snapshots:    w.snap != nil,
		Zygotes:      w.zyg != nil,
		Pools:        !w.cfg.Resources.NoPools,
		SnapshotsOff: w.snapOff,
		ZygotesOff:   w.zygOff,
	}
}

// Status reports the live sandboxes and memory.
func (w *Worker) Status() Status {
	st := Status{CgroupMode: w.CgroupMode(), WarmBudget: w.cfg.WarmBudget, Sandboxes: []SandboxInfo{}, Tiers: w.Tiers()}
	w.mu.Lock()
	insts := make([]*instance, 0, len(w.live))
	for inst := range w.live {
		insts = append(insts, inst)
	}
	w.mu.Unlock()
	for _, inst := range insts {
		info := SandboxInfo{ID: inst.id, Function: inst.fn, Revision: inst.rev, State: inst.stateName()}
		if m, err := inst.group.MemoryUsage(); err == nil {
			info.Memory = int64(m)
		}
		if pids, err := inst.group.Pids(); err == nil {
			info.Pids = pids
			for _, pid := range pids {
				info.Private += privateBytes(pid)
			}
		}
		st.Sandboxes = append(st.Sandboxes, info)
	}
	st.WarmBytes = w.cache.used()
	st.Policy, st.Pools = w.cache.cfg.Policy, w.cache.stats()
	st.Charge, st.Charges = w.cache.cfg.Charge, w.cache.charges()
	st.GrowthEveryMs = float64(growthEvery) / float64(time.Millisecond)
	return st
}

// Close destroys every sandbox and cgroup the worker made.
func (w *Worker) Close(ctx context.Context) error {
	w.mu.Lock()
	if !w.closed {
		close(w.stop)
	}
	w.closed = true
	// Background work in flight (snapshot dumps, refills) ends now, so
	// that shutdown does not wait for it.
	w.endLife()
	insts := make([]*instance, 0, len(w.live))
	for inst := range w.live {
		insts = append(insts, inst)
	}
	w.mu.Unlock()
	// Each stage's time goes to the log as it ends: when shutdown runs
	// out of time, the last one logged says where it was.
	t0 := time.Now()
	stage := func(name string) {
		now := time.Now()
		w.log.Debug("shutdown", "stage", name, "took", now.Sub(t0).Round(time.Microsecond))
		t0 = now
	}
	w.cache.close()
	if w.come != nil {
		// Before the sandboxes go: their groups go back to the pools.
		w.come.stop()
	}
	w.wg.Wait()
	stage("background work")
	if w.holders != nil {
		w.holders.close(ctx)
	}
	if w.spares != nil {
		w.spares.close()
	}
	stage("pre-made sandboxes and spares")
	var errs []error
	// Sandboxes first: a forked one lives in a pid namespace nested in
	// its root zygote's, whose end waits for it, and a paused one only
	// dies when its cgroup's kill thaws it.
	var wg sync.WaitGroup
	for _, inst := range insts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w.destroy(inst)
		}()
	}
	wg.Wait()
	if w.homes != nil {
		w.metrics.homes.WithLabelValues("dropped").Add(float64(w.homes.close()))
	}
	stage(fmt.Sprintf("%d sandboxes", len(insts)))
	if w.zyg != nil {
		if err := w.zyg.Close(ctx); err != nil {
			errs = append(errs, err)
		}
		stage("zygotes")
	}
	if w.snap != nil {
		// Only now: closing detaches the sandboxes dir the restored
		// sandboxes live in.
		if err := w.snap.svc.Close(); err != nil {
			errs = append(errs, err)
		}
		stage("snapshots")
	}
	if err := w.home.Delete(ctx); err != nil {
		errs = append(errs, err)
	}
	stage("init group")
	if err := w.closeResources(ctx, stage); err != nil {
		errs = append(errs, err)
	}
	if err := w.cg.Close(ctx); err != nil {
		errs = append(errs, err)
	}
	if _, err := w.factory.Sweep(); err != nil {
		errs = append(errs, err)
	}
	stage("cgroups and mounts")
	if w.disks != nil {
		// Last: every sandbox, and so every /tmp but the ready ones, is gone.
		if err := w.disks.Close(); err != nil {
			errs = append(errs, err)
		}
		stage("scratch disks")
	}
	return errors.Join(errs...)
}

// Inotify instances and watches made in a user namespace count against
// its owner too: all functions forked from zygotes count against the
// zygotes' user, each up to its own cap (zygote.py's INOTIFY_LIMITS:
// 128 and 8192), and so does what the zygotes' packages take, up to
// zygote pids x open files (8 x 1024) per node. roomForInotify raises the
// host's per-user limits to hold 4 nodes' worth and 64 functions at
// their caps, so that neither a function nor a node can exhaust the
// others'; it never lowers them.
func roomForInotify() error {
	for _, l := range []struct {
		path string
		min  int
	}{{"/proc/sys/fs/inotify/max_user_instances", 4*8*1024 + 64*128}, {"/proc/sys/fs/inotify/max_user_watches", 64 * 8192}} {
		b, err := os.ReadFile(l.path)
		if err != nil {
			return err
		}
		if n, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && n >= l.min {
			continue
		}
		if err := os.WriteFile(l.path, []byte(strconv.Itoa(l.min)), 0); err != nil {
			return err
		}
	}
	return nil
}
