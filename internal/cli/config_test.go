package cli

import (
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"

	"github.com/hearth-run/hearth/internal/api"
	"github.com/hearth-run/hearth/internal/image"
	"github.com/hearth-run/hearth/internal/lambda"
	"github.com/hearth-run/hearth/internal/packages"
	"github.com/hearth-run/hearth/internal/pool/policy"
	"github.com/hearth-run/hearth/internal/worker"
	"github.com/hearth-run/hearth/internal/zygote"
)

func writeYAML(t *testing.T, s string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "hearth.yaml")
	if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// everyKey is a hearth.yaml that sets every key, none to its default.
const everyKey = `listen: 127.0.0.1:9999
data_dir: /srv/hearth
base: /srv/base
init: /srv/hearth-init
token: secret
warm_budget_mb: 3000
pids_limit: 99
cpus_per_gb: 4.5
scratch_mb: 256
max_body_mb: 7
max_archive_mb: 51
max_archive_files: 1234
queue_timeout: 300ms
cgroup_parent: hearth-test
log_level: debug
log_lines: 500
logs_mb: 8
mirror: http://deb.example/debian
no_warm_cache: true
no_zygotes: true
zygote_tree: /srv/plan.json
no_snapshots: true
premade_sandboxes: -1
spares: 3
max_spares: 64
max_starts: 5
procs: 3
snapshot:
  threshold: 250ms
  max_mb: 100
  criu_root: /srv/criu
  s3:
    endpoint: s3.example:9000
    bucket: snaps
    prefix: w1/
    access_key: ak
    secret_key: sk
    region: eu-west-1
    tls: true
    ca_file: /srv/ca.pem
no_pools: true
cgroup_pool: 4
netns_pool: 2
netns_subnet: 10.201.0.0/16
no_egress: false
netns_nat: true
allow_host_network: true
short_first: true
first_come: false
eager_network: true
open_invoke: true
open_invoke_public: true
policy: hist
pools: 60/30/10
pool_thresholds_mb: [128, 512]
borrow: true
ttl: 2m
on_drop: reject
drop_queue: 9
drop_wait: 3s
pass_limit: 250ms
pool_charge: declared
hist:
  bin: 2m
  range: 2h
  fixed: 30m
  min_samples: 5
  min_cv: 1.5
  margin: 0.2
  series_min: -1
  series_margin: 0.3
packages:
  index_url: http://pypi.example/simple
  extra_index_urls: [http://extra.example/simple]
  find_links: [/srv/wheels]
  trusted_hosts: [pypi.example]
  no_index: true
  budget_mb: 700
  disabled: true
compile:
  timeout: 45s
  memory_mb: 300
http:
  read_header_timeout: 5s
  read_timeout: "off"
  write_timeout: 90s
  idle_timeout: 3m
  max_conns: 100
  max_conns_per_ip: -1
  max_requests_per_ip: 8
lambda:
  credentials: /srv/lambda-keys
  insecure: true
  region: eu-west-1
  account_id: "123456789012"
  async:
    max_queued: 10
    concurrency: 3
    retry_backoff: 20s
    max_age: 1h
    keep_records: 50
zygote:
  memory_mb: 512
  window: 50
  promote: 2
  idle_timeout: 5m
  max: 16
  min: 1
  max_replicas: 2
`

// TestConfigEveryKey loads a hearth.yaml that sets every key and checks
// what each package's config gets.
func TestConfigEveryKey(t *testing.T) {
	cfg, err := loadConfig(writeYAML(t, everyKey))
	if err != nil {
		t.Fatal(err)
	}
	check := func(what string, got, want any) {
		t.Helper()
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s: got %+v, want %+v", what, got, want)
		}
	}
	check("top level", []any{cfg.Listen, cfg.DataDir, cfg.Base, cfg.Init, cfg.Token, cfg.WarmBudgetMB, cfg.PidsLimit,
		cfg.CPUsPerGB, cfg.ScratchMB, cfg.MaxBodyMB, cfg.MaxArchiveMB, cfg.MaxFiles, cfg.QueueTimeout, cfg.CgroupParent,
		cfg.LogLevel, cfg.LogLines, cfg.LogsMB, cfg.Mirror, cfg.NoWarm, cfg.NoZygotes, cfg.ZygoteTree, cfg.NoSnapshots,
		cfg.PreMade, cfg.Spares, cfg.MaxSpares, cfg.MaxStarts, cfg.Procs, cfg.AllowHostNetwork, cfg.ShortFirst, !cfg.FirstCome, cfg.EagerNetwork, cfg.OpenInvoke, cfg.OpenInvokePublic},
		[]any{"127.0.0.1:9999", "/srv/hearth", "/srv/base", "/srv/hearth-init", "secret", int64(3000), int64(99),
			4.5, int64(256), int64(7), int64(51), 1234, 300 * time.Millisecond, "hearth-test",
			"debug", 500, int64(8), "http://deb.example/debian", true, true, "/srv/plan.json", true,
			-1, 3, 64, 5, 3, true, true, true, true, true, true})

	pc, err := poolConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	check("pool", pc, worker.PoolConfig{
		Policy: "hist", Fractions: []float64{0.6, 0.3, 0.1}, Thresholds: []int64{128 << 20, 512 << 20}, Borrow: true,
		TTL: 2 * time.Minute, OnDrop: "reject", DropQueue: 9, DropWait: 3 * time.Second, PassLimit: 250 * time.Millisecond, Charge: "declared",
		Hist: policy.HistOptions{Bin: 2 * time.Minute, Range: 2 * time.Hour, Fixed: 30 * time.Minute, MinSamples: 5,
			MinCV: 1.5, Margin: 0.2, SeriesMin: -1, SeriesMargin: 0.3},
	})

	rc, err := resourceConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	check("resources", rc, worker.ResourceConfig{NoPools: true, Cgroups: 4, NetNS: 2,
		Subnet: netip.MustParsePrefix("10.201.0.0/16"), NoEgress: false})

	check("zygote", zygoteConfig(cfg.Zygote), zygote.Config{MemoryBudget: 512 << 20, Window: 50, Promote: 2,
		IdleTimeout: 5 * time.Minute, MaxZygotes: 16, MinZygotes: 1, MaxReplicas: 2})

	check("snapshot", cfg.Snapshot, SnapshotConfig{Threshold: 250 * time.Millisecond, MaxMB: 100, CRIURoot: "/srv/criu",
		S3: S3Config{Endpoint: "s3.example:9000", Bucket: "snaps", Prefix: "w1/", AccessKey: "ak", SecretKey: "sk",
			Region: "eu-west-1", TLS: true, CAFile: "/srv/ca.pem"}})

	check("packages", cfg.Packages, PackagesConfig{Index: packages.Index{URL: "http://pypi.example/simple",
		ExtraURLs: []string{"http://extra.example/simple"}, FindLinks: []string{"/srv/wheels"},
		TrustedHosts: []string{"pypi.example"}, NoIndex: true}, BudgetMB: 700, Disabled: true})

	cc, err := compileConfig(cfg.Compile)
	if err != nil {
		t.Fatal(err)
	}
	check("compile", cc, packages.CompileConfig{Timeout: 45 * time.Second, MemoryBytes: 300 << 20})

	l, err := httpLimits(cfg.HTTP, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	l.MaxConns = 100 // lowered to half the open-files limit where that is below
	check("http", l, api.Limits{ReadHeaderTimeout: 5 * time.Second, ReadTimeout: -1, WriteTimeout: 90 * time.Second,
		IdleTimeout: 3 * time.Minute, MaxConns: 100, MaxConnsPerIP: -1, MaxRequestsPerIP: 8})

	check("lambda", []any{cfg.Lambda.Credentials, cfg.Lambda.Insecure, cfg.Lambda.Region, cfg.Lambda.AccountID, cfg.Lambda.Async},
		[]any{"/srv/lambda-keys", true, "eu-west-1", "123456789012", lambda.AsyncConfig{MaxQueued: 10, Concurrency: 3,
			RetryBackoff: 20 * time.Second, MaxAge: time.Hour, KeepRecords: 50}})
}

// TestConfigDefaults: an empty file keeps the CLI's defaults, and every
// package's zero values.
func TestConfigDefaults(t *testing.T) {
	cfg, err := loadConfig(writeYAML(t, "{}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(cfg, defaultConfig()) {
		t.Errorf("got %+v, want the defaults %+v", cfg, defaultConfig())
	}
	if cfg.DataDir != image.DefaultDataDir || cfg.Listen != DefaultListen {
		t.Errorf("data dir %q, listen %q", cfg.DataDir, cfg.Listen)
	}
	if !firstCome(cfg) {
		t.Error("first-come CPU weights off by default")
	}
	cfg.ShortFirst = true
	if firstCome(cfg) {
		t.Error("first-come CPU weights on with short_first")
	}
	pc, err := poolConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(pc.Fractions, []float64{0.8, 0.2}) || !reflect.DeepEqual(pc.Thresholds, []int64{worker.DefaultThreshold}) {
		t.Errorf("default split %v / %v, want 80/20 at the default threshold", pc.Fractions, pc.Thresholds)
	}
}

// TestConfigRefused: unknown keys, the packages' fields that are not
// settings, malformed and negative durations are refused, naming the
// key or the line.
func TestConfigRefused(t *testing.T) {
	for _, c := range []struct{ yaml, want string }{
		{"nosuch: 1\n", "nosuch"},
		{"zygote:\n  python: /bin/sh\n", "python"},
		{"zygote:\n  memory_budget: 1\n", "memory_budget"},
		{"hist:\n  head: 0.1\n", "head"},
		{"fractions: [1]\n", "fractions"},
		{"lambda:\n  async:\n    max_payload: 1\n", "max_payload"},
		{"queue_timeout: soon\n", "line 1"},
		{"queue_timeout: 10\n", "line 1"},
		{"zygote:\n  idle_timeout: 5x\n", "line 2"},
		{"netns_subnet: 10.0.0.0\n", `"10.0.0.0"`},
	} {
		_, err := loadConfig(writeYAML(t, c.yaml))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: %v, want an error with %q", c.yaml, err, c.want)
		}
	}
	for _, c := range []struct{ yaml, want string }{
		{"ttl: -1s\n", "ttl"},
		{"drop_wait: -1s\n", "drop_wait"},
		{"pool_charge: measured\n", "pool_charge"},
		{"hist:\n  fixed: -1m\n", "hist.fixed"},
	} {
		cfg, err := loadConfig(writeYAML(t, c.yaml))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := poolConfig(cfg); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: %v, want an error naming %s", c.yaml, err, c.want)
		}
	}
	cfg, err := loadConfig(writeYAML(t, "compile:\n  timeout: -1s\nlambda:\n  async:\n    max_age: -1h\n"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := compileConfig(cfg.Compile); err == nil || !strings.Contains(err.Error(), "compile.timeout") {
		t.Errorf("compile.timeout -1s: %v", err)
	}
	if err := lambdaAsync(cfg.Lambda.Async); err == nil || !strings.Contains(err.Error(), "lambda.async.max_age") {
		t.Errorf("lambda.async.max_age -1h: %v", err)
	}
}

// TestFlagsOverrideFile: a flag given on the command line beats
// hearth.yaml, of every kind the flags have; a flag not given leaves the
// file's value, whatever its default; --fresh sets its switches unless a
// flag names one.
func TestFlagsOverrideFile(t *testing.T) {
	path := writeYAML(t, `listen: 127.0.0.1:9999
warm_budget_mb: 3000
policy: gd
pools: unified
cgroup_pool: 4
netns_subnet: 10.201.0.0/16
no_egress: true
compile:
  timeout: 45s
http:
  read_timeout: 5s
  write_timeout: 90s
lambda:
  async:
    retry_backoff: 20s
packages:
  find_links: [/srv/wheels]
  extra_index_urls: [http://extra.example/simple]
`)
	var got Config
	cmd := newUpCmd()
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		var err error
		got, err = upConfig(cmd, path, true)
		return err
	}
	cmd.SetArgs([]string{"--listen", "127.0.0.1:1", "--policy", "freq", "--cgroup-pool", "7",
		"--netns-subnet", "10.202.0.0/16", "--no-egress=false", "--compile-timeout", "2s", "--read-timeout", "off",
		"--lambda-retry-backoff", "3s", "--find-links", "/a", "--find-links", "/b", "--no-pools=false"})
	if err := cmd.Execute(); err != nil {
		t.Fatal(err)
	}
	check := func(what string, got, want any) {
		t.Helper()
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s: got %v, want %v", what, got, want)
		}
	}
	check("listen", got.Listen, "127.0.0.1:1")
	check("policy", got.Pool.Policy, "freq")
	check("cgroup_pool", got.Resources.Cgroups, 7)
	check("netns_subnet", got.Resources.Subnet, netip.MustParsePrefix("10.202.0.0/16"))
	check("no_egress", got.Resources.NoEgress, false)
	check("compile.timeout", got.Compile.Timeout, 2*time.Second)
	check("http.read_timeout", got.HTTP.ReadTimeout, offDuration(-1))
	check("lambda.async.retry_backoff", got.Lambda.Async.RetryBackoff, 3*time.Second)
	check("packages.find_links", got.Packages.FindLinks, []string{"/a", "/b"})
	// Not given: the file's values stand, not the flags' defaults.
	check("warm_budget_mb", got.WarmBudgetMB, int64(3000))
	check("pools", got.Pools, "unified")
	check("http.write_timeout", got.HTTP.WriteTimeout, offDuration(90*time.Second))
	check("packages.extra_index_urls", got.Packages.ExtraURLs, []string{"http://extra.example/simple"})
	check("data_dir", got.DataDir, image.DefaultDataDir)
	// --fresh, with --no-pools=false.
	check("fresh", []bool{got.NoWarm, got.NoZygotes, got.NoSnapshots, got.Resources.NoPools, got.FirstCome}, []bool{true, true, true, false, false})

	cmd = newUpCmd()
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		_, err := upConfig(cmd, path, false)
		return err
	}
	cmd.SetArgs([]string{"--read-timeout", "soon"})
	cmd.SetOut(io.Discard)
	cmd.SetErr(io.Discard)
	if err := cmd.Execute(); err == nil || !strings.Contains(err.Error(), "soon") {
		t.Errorf("--read-timeout soon: %v", err)
	}
}
