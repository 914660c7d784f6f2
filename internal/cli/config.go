package cli

import (
	"cmp"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"time"

	"github.com/spf13/pflag"
	"go.yaml.in/yaml/v3"

	"github.com/hearth-run/hearth/internal/image"
	"github.com/hearth-run/hearth/internal/lambda"
	"github.com/hearth-run/hearth/internal/netns"
	"github.com/hearth-run/hearth/internal/worker"
	"github.com/hearth-run/hearth/internal/zygote"
)

// DefaultListen is the worker's default address: loopback only.
const DefaultListen = "127.0.0.1:7878"

// defaultPools is the warm pool split when none is set: KiSS's two pools.
const defaultPools = "80/20"

// Config is hearth.yaml. Where a section is a package's own config (the
// warm pool, the resource pools, zygotes, Lambda's Event invocations),
// the file is read straight into that package's struct, whose yaml tags
// name the keys and whose zero values mean the package's defaults; the
// fields here are what only the CLI reads or what the file gives in MB.
// Flags of `hearth up` override it (upFlags declares them, overlayFlags
// applies them).
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
	CPUsPerGB    float64       `yaml:"cpus_per_gb"`
	ScratchMB    int64         `yaml:"scratch_mb"`
	MaxBodyMB    int64         `yaml:"max_body_mb"`
	MaxArchiveMB int64         `yaml:"max_archive_mb"`
	MaxFiles     int           `yaml:"max_archive_files"`
	QueueTimeout time.Duration `yaml:"queue_timeout"`
	CgroupParent string        `yaml:"cgroup_parent"`
	// CPUWeight is the sandboxes' CPU weight, all together, against the
	// host's other cgroups (1..10000, 100 a default group's; default 100
	// per CPU up to 1000).
	CPUWeight uint64 `yaml:"cpu_weight"`
	LogLevel  string `yaml:"log_level"`
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
	// MaxStarts bounds the starts under way at once (default 2 per CPU;
	// negative: no bound).
	MaxStarts int `yaml:"max_starts"`
	// Procs is how many threads run the worker's own Go code at once
	// (GOMAXPROCS; default half the CPUs it may use, at least 1).
	Procs int `yaml:"procs"`
	// Snapshot configures function snapshots.
	Snapshot SnapshotConfig `yaml:"snapshot"`
	// Resources are the pre-made cgroups and network namespaces (issue
	// 5): no_pools, cgroup_pool, netns_pool, netns_subnet, no_egress.
	Resources worker.ResourceConfig `yaml:",inline"`
	// NetnsNAT is the old switch for egress, off by default then; it now
	// means the opposite of no_egress when set.
	NetnsNAT *bool `yaml:"netns_nat"`
	// AllowHostNetwork lets functions ask for network: host (the host's
	// network namespace). Off by default: such deploys get 403.
	AllowHostNetwork bool `yaml:"allow_host_network"`
	// ShortFirst weighs calls' CPU by their functions' usual run time
	// (worker.Config.ShortFirst). Off by default.
	ShortFirst bool `yaml:"short_first"`
	// FirstCome shares the running calls' CPU weight by their order of
	// arrival (worker.Config.FirstCome). On by default; ShortFirst
	// replaces it.
	FirstCome bool `yaml:"first_come"`
	// EagerNetwork gives forked sandboxes their network at start
	// (worker.Config.EagerNetwork) rather than at their first socket.
	EagerNetwork bool `yaml:"eager_network"`
	// OpenInvoke lets anyone who reaches the listen address invoke
	// functions without the token. Off by default; refused on an address
	// other than loopback unless OpenInvokePublic is set too.
	OpenInvoke       bool `yaml:"open_invoke"`
	OpenInvokePublic bool `yaml:"open_invoke_public"`
	// Pool is the warm pool: policy, borrow, ttl, on_drop (queue, the
	// default, or reject), drop_queue, drop_wait, pass_limit, pool_charge
	// and hist.
	Pool worker.PoolConfig `yaml:",inline"`
	// Pools splits warm_budget_mb into size-partitioned pools in percent,
	// smallest first ("80/20", the default) or "unified".
	Pools string `yaml:"pools"`
	// PoolThresholdMB is the small/large boundary of two pools (default 225).
	PoolThresholdMB int64 `yaml:"pool_threshold_mb"`
	// PoolThresholdsMB are the boundaries of three or more pools.
	PoolThresholdsMB []int64 `yaml:"pool_thresholds_mb"`
	// Packages configures the package install cache.
	Packages PackagesConfig `yaml:"packages"`
	// Compile bounds the deploy-time byte compilation of function code.
	Compile CompileConfig `yaml:"compile"`
	// HTTP bounds the API server's connections, requests and timeouts.
	HTTP HTTPConfig `yaml:"http"`
	// Lambda configures the AWS Lambda compatible API.
	Lambda LambdaConfig `yaml:"lambda"`
	// Zygote configures the zygote tree.
	Zygote ZygoteConfig `yaml:"zygote"`
}

// ZygoteConfig is the zygote section of hearth.yaml: the zygote manager's
// own config, with its memory budget in MB.
type ZygoteConfig struct {
	zygote.Config `yaml:",inline"`
	MemoryMB      int64 `yaml:"memory_mb"`
}

// SnapshotConfig is the snapshot section of hearth.yaml.
type SnapshotConfig struct {
	// Threshold is the init time above which a function is snapshotted
	// (default 100ms).
	Threshold time.Duration `yaml:"threshold"`
	// MaxMB bounds the local snapshot cache on disk (default 4096).
	MaxMB int64 `yaml:"max_mb"`
	// CRIURoot is the private CRIU root (default criu.DefaultRoot).
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

// defaultConfig is the configuration before hearth.yaml and flags: the
// defaults the CLI owns. Every other zero value means the default of the
// package that reads it.
func defaultConfig() Config {
	return Config{Listen: DefaultListen, DataDir: image.DefaultDataDir, Pools: defaultPools, FirstCome: true}
}

// loadConfig reads hearth.yaml at path over the defaults; an unknown key
// is an error.
func loadConfig(path string) (Config, error) {
	cfg := defaultConfig()
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

// upFlags declares the flags of `hearth up` that override hearth.yaml on
// fs, bound to c's fields, with c's values as their defaults. It is the
// one list of those flags: the command declares them with it, and
// overlayFlags once more to apply them.
func upFlags(f *pflag.FlagSet, c *Config) {
	addPackageFlags(f, &c.Packages)
	addHTTPFlags(f, &c.HTTP)
	addLambdaFlags(f, &c.Lambda)
	f.StringVar(&c.Listen, "listen", c.Listen, "address to listen on")
	f.StringVar(&c.DataDir, "data-dir", c.DataDir, "data directory")
	f.StringVar(&c.Base, "base", c.Base, "base image tree (default: build one under the data dir)")
	f.StringVar(&c.Init, "init", c.Init, "hearth-init binary (default: next to hearth, then $PATH)")
	f.StringVar(&c.Token, "token", c.Token, "bearer token of the API (or $HEARTH_TOKEN; default: the data dir's api-token, made at the first start)")
	f.BoolVar(&c.OpenInvoke, "open-invoke", c.OpenInvoke, "serve the invoke endpoints without the token (loopback addresses only, unless --open-invoke-public)")
	f.BoolVar(&c.OpenInvokePublic, "open-invoke-public", c.OpenInvokePublic, "allow --open-invoke on an address other than loopback")
	f.Int64Var(&c.WarmBudgetMB, "warm-budget-mb", c.WarmBudgetMB, "memory budget of all sandboxes, busy and paused, MB (default: half of the machine's memory, or of the worker's cgroup limit)")
	f.StringVar(&c.Pool.Policy, "policy", c.Pool.Policy, "warm pool policy: lru (default), gd, freq, ttl or hist")
	f.StringVar(&c.Pool.Charge, "pool-charge", c.Pool.Charge, "what a new sandbox is charged to the warm pool until its first call ends: peak (default: its function's measured peak) or declared (memory_mb)")
	f.StringVar(&c.Pool.Events, "pool-events", c.Pool.Events, "write every change to the warm pool's sandboxes (admit, hit, release, resize, evict, expire, remove) to this CSV file, for comparing with the simulator (it grows with every call and is never rotated)")
	f.DurationVar(&c.Pool.PassLimit, "pass-limit", c.Pool.PassLimit, "how long a request waiting for memory lets younger ones that fit take the room first; then, for up to a second, they wait behind it (default 0: no bound, first fit)")
	f.StringVar(&c.Pools, "pools", c.Pools, `warm pool split in percent, small functions first, or "unified"`)
	f.StringVar(&c.CgroupParent, "cgroup-parent", c.CgroupParent, "parent cgroup of sandboxes (default: hearth, or hearth-<hash> for a non-default data dir)")
	f.StringVar(&c.LogLevel, "log-level", c.LogLevel, "debug, info (default), warn or error")
	f.IntVar(&c.LogLines, "log-lines", c.LogLines, "output lines kept per function, for hearth logs (default 1000)")
	f.Int64Var(&c.LogsMB, "logs-mb", c.LogsMB, "bound on the output lines kept of all functions, MB (default 16)")
	f.BoolVar(&c.NoWarm, "no-warm-cache", c.NoWarm, "destroy sandboxes after each call (every call starts cold)")
	f.BoolVar(&c.Resources.NoPools, "no-pools", c.Resources.NoPools, "make cgroups and network namespaces on the critical path (no pre-made resources)")
	f.IntVar(&c.Resources.Cgroups, "cgroup-pool", c.Resources.Cgroups, "pre-made cgroups kept ready (default 16)")
	f.IntVar(&c.Resources.NetNS, "netns-pool", c.Resources.NetNS, "pre-made network namespaces kept ready for network: isolated (default 8)")
	f.BoolVar(&c.Resources.NoEgress, "no-egress", c.Resources.NoEgress, "keep isolated sandboxes (the default network) from reaching anything beyond their bridge (default: out through the host's NAT, which turns on IPv4 forwarding)")
	f.BoolVar(&c.AllowHostNetwork, "allow-host-network", c.AllowHostNetwork, "let functions ask for network: host (the host's network namespace; its loopback and addresses stay closed to them)")
	f.BoolVar(&c.ShortFirst, "short-first", c.ShortFirst, "under CPU contention, give calls of functions that usually run short more CPU weight (50-200 against a sandbox's 100; shifts CPU between functions)")
	f.BoolVar(&c.FirstCome, "first-come", c.FirstCome, "under CPU contention, share the running calls' CPU weight by their order of arrival (a quarter of a sandbox's for each after the first four, which share the rest 16:8:4:2), among the calls that arrived in the last 2 s and within their default total, calls that have used 300 ms of CPU last, so a burst's calls end in turn; --short-first replaces it")
	f.BoolVar(&c.EagerNetwork, "eager-network", c.EagerNetwork, "give forked sandboxes of network: isolated their veth pair at start (default: at their first internet or netlink socket, so that a function that opens none costs none)")
	f.Var((*prefixValue)(&c.Resources.Subnet), "netns-subnet", "private IPv4 subnet of isolated sandboxes, distinct per worker on a host (default "+netns.DefaultSubnet.String()+")")
	f.BoolVar(&c.NoSnapshots, "no-snapshots", c.NoSnapshots, "never snapshot or restore functions")
	f.Uint64Var(&c.CPUWeight, "cpu-weight", c.CPUWeight, "CPU weight of all sandboxes together against the host's other cgroups, 1..10000 (100: a default group's; default 100 per CPU up to 1000, as kubelet weighs its pods)")
	f.IntVar(&c.PreMade, "premade", c.PreMade, "empty sandboxes kept ready for zygote forks (default 4; negative: none)")
	f.IntVar(&c.Spares, "spares", c.Spares, "zygote children forked ahead of need per recently used zygote node, at least (default 2; negative: none)")
	f.IntVar(&c.MaxSpares, "max-spares", c.MaxSpares, "bound on all spares; a node that saw a burst keeps one per concurrent start for a minute (default 128)")
	f.IntVar(&c.MaxStarts, "max-starts", c.MaxStarts, "starts under way at once; more wait their turn, in arrival order (default 2 per CPU; negative: no bound)")
	f.IntVar(&c.Procs, "procs", c.Procs, "threads that run the worker's own Go code at once (GOMAXPROCS; default half the CPUs it may use, at least 1: the rest are the sandboxes')")
	f.BoolVar(&c.NoZygotes, "no-zygotes", c.NoZygotes, "never fork from zygotes (every new sandbox starts a fresh interpreter)")
	f.StringVar(&c.ZygoteTree, "zygote-tree", c.ZygoteTree, "start from a zygote tree planned by `hearth zygote plan`")
	f.IntVar(&c.Zygote.PlantDeployed, "plant-deployed", c.Zygote.PlantDeployed, "zygote nodes planted for deployed functions' package sets before their first call, at most, at once (default half of zygote.max; negative: none, nodes come only from calls)")
	f.DurationVar(&c.Compile.Timeout, "compile-timeout", c.Compile.Timeout, "time limit of a deployed function's byte compilation; past it the deploy goes on without bytecode (default 30s)")
	f.Int64Var(&c.Compile.MemoryMB, "compile-memory-mb", c.Compile.MemoryMB, "memory limit of a deployed function's byte compilation, MB (default 256)")
}

// overlayFlags applies to c the flags of `hearth up` that were given on
// set, so that they override hearth.yaml. It declares the flags once more
// with upFlags, bound to c and defaulting to c's values, and sets on them
// each given flag's value; flags upFlags does not declare (--config,
// --fresh) are the caller's.
func overlayFlags(set *pflag.FlagSet, c *Config) error {
	to := pflag.NewFlagSet("overlay", pflag.ContinueOnError)
	upFlags(to, c)
	var err error
	set.Visit(func(f *pflag.Flag) {
		t := to.Lookup(f.Name)
		if t == nil || err != nil {
			return
		}
		if s, ok := f.Value.(pflag.SliceValue); ok {
			err = t.Value.(pflag.SliceValue).Replace(s.GetSlice())
		} else {
			err = t.Value.Set(f.Value.String())
		}
		if err != nil {
			err = fmt.Errorf("--%s: %w", f.Name, err)
		}
	})
	return err
}

// offDuration is a positive duration, or "off" (-1): the API's timeouts.
// Zero means the default.
type offDuration time.Duration

func (d *offDuration) Set(s string) error {
	if s == "off" {
		*d = -1
		return nil
	}
	v, err := time.ParseDuration(s)
	if err != nil || v <= 0 {
		return fmt.Errorf(`%q is not a positive duration or "off"`, s)
	}
	*d = offDuration(v)
	return nil
}

func (d offDuration) String() string {
	switch {
	case d == 0:
		return ""
	case d < 0:
		return "off"
	}
	return time.Duration(d).String()
}

func (d *offDuration) Type() string { return "duration" }

// UnmarshalYAML reads a duration such as "10s", or "off".
func (d *offDuration) UnmarshalYAML(n *yaml.Node) error {
	if err := d.Set(n.Value); err != nil {
		return fmt.Errorf("line %d: %w", n.Line, err)
	}
	return nil
}

// prefixValue is a netip.Prefix flag; empty is the zero prefix (the
// default subnet).
type prefixValue netip.Prefix

func (p *prefixValue) Set(s string) error { return (*netip.Prefix)(p).UnmarshalText([]byte(s)) }

func (p *prefixValue) String() string {
	b, _ := netip.Prefix(*p).MarshalText()
	return string(b)
}

func (p *prefixValue) Type() string { return "prefix" }

// setting is a duration of hearth.yaml and its key.
type setting struct {
	key string
	d   time.Duration
}

// nonNegative checks durations that must not be negative (zero: the
// default).
func nonNegative(ds ...setting) error {
	for _, s := range ds {
		if s.d < 0 {
			return fmt.Errorf("%s: %s is not a positive duration", s.key, s.d)
		}
	}
	return nil
}

// poolConfig completes the warm pool of hearth.yaml: the split and its
// thresholds, checked.
func poolConfig(cfg Config) (worker.PoolConfig, error) {
	pc := cfg.Pool
	split := cmp.Or(cfg.Pools, defaultPools)
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
	if pc.DropQueue < 0 {
		return pc, fmt.Errorf("drop_queue %d must not be negative", pc.DropQueue)
	}
	if err := worker.CheckCharge(pc.Charge); err != nil {
		return pc, fmt.Errorf("pool_charge: %w", err)
	}
	return pc, nonNegative(setting{"ttl", pc.TTL}, setting{"drop_wait", pc.DropWait},
		setting{"hist.bin", pc.Hist.Bin}, setting{"hist.range", pc.Hist.Range}, setting{"hist.fixed", pc.Hist.Fixed})
}

// resourceConfig checks the resource pools of hearth.yaml and applies the
// deprecated netns_nat.
func resourceConfig(cfg Config) (worker.ResourceConfig, error) {
	r := cfg.Resources
	if cfg.NetnsNAT != nil {
		if r.NoEgress && *cfg.NetnsNAT {
			return r, errors.New("netns_nat: true contradicts no_egress: true (netns_nat is deprecated: egress is on unless no_egress)")
		}
		r.NoEgress = !*cfg.NetnsNAT
	}
	if r.Cgroups < 0 || r.NetNS < 0 {
		return r, fmt.Errorf("cgroup_pool and netns_pool must not be negative (got %d, %d)", r.Cgroups, r.NetNS)
	}
	return r, nil
}

// zygoteConfig is the zygote section as the manager takes it.
func zygoteConfig(c ZygoteConfig) zygote.Config {
	zc := c.Config
	zc.MemoryBudget = c.MemoryMB << 20
	return zc
}

// firstCome reports whether the worker shares calls' CPU weight by
// their order of arrival: first_come, unless short_first replaces it.
func firstCome(cfg Config) bool { return cfg.FirstCome && !cfg.ShortFirst }

// cpuWeightsName says how the worker weighs calls' CPU, for its log.
func cpuWeightsName(cfg Config) string {
	switch {
	case cfg.ShortFirst && cfg.FirstCome:
		return "short_first (replaces first_come)"
	case cfg.ShortFirst:
		return "short_first"
	case cfg.FirstCome:
		return "first_come"
	}
	return "alike"
}

// lambdaAsync checks the Event invocation settings of the lambda section.
func lambdaAsync(a lambda.AsyncConfig) error {
	if a.MaxQueued < 0 || a.Concurrency < 0 || a.KeepRecords < 0 {
		return fmt.Errorf("lambda.async: max_queued, concurrency and keep_records must not be negative")
	}
	return nonNegative(setting{"lambda.async.retry_backoff", a.RetryBackoff}, setting{"lambda.async.max_age", a.MaxAge})
}
