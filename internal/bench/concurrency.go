package bench

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/hearth-run/hearth/internal/cgroup"
	"github.com/hearth-run/hearth/internal/netns"
)

// ConcurrencyOptions configures the concurrency benchmark.
type ConcurrencyOptions struct {
	// Hearth is the hearth binary; Base the base image.
	Hearth, Base string
	// Ns are the burst sizes (default 1, 10, 50, 100).
	Ns []int
	// Rounds is how many bursts of each size are fired (default 3); the
	// latencies of all of them make up p50 and p99, and the median round
	// gives the total.
	Rounds int
	// Subnet is the isolated sandboxes' subnet (default 10.199.0.0/16).
	Subnet netip.Prefix
	// Out receives the tables.
	Out io.Writer
}

// Burst is one burst of concurrent cold starts.
type Burst struct {
	Config string        `json:"config"`
	N      int           `json:"n"`
	P50    time.Duration `json:"p50"`
	P99    time.Duration `json:"p99"`
	Total  time.Duration `json:"total"`
	// PerSec is cold starts per second: N / Total.
	PerSec float64 `json:"per_sec"`
	// InitP50 is the median start time the worker reported (sandbox to
	// handler loaded), without queueing and HTTP.
	InitP50 time.Duration `json:"init_p50"`
	// Paths counts the start paths the worker reported (fork, cold).
	Paths map[string]int `json:"paths"`
	// Spares counts the fork starts that took a spare zygote child
	// (forked ahead of need), over all rounds.
	Spares int `json:"spares"`

	lat, inits []time.Duration
}

// NetnsRow is one row of the PCPM Table 1 reproduction.
type NetnsRow struct {
	N            int           `json:"n"`
	Create       time.Duration `json:"create"`
	Cleanup      time.Duration `json:"cleanup"`
	PaperCreate  float64       `json:"paper_create_s"`
	PaperCleanup float64       `json:"paper_cleanup_s"`
}

// ConcurrencyResult holds everything the benchmark measured.
type ConcurrencyResult struct {
	Bursts  []Burst    `json:"bursts"`
	Netns   []NetnsRow `json:"netns"`
	Acquire []Sample   `json:"-"`
}

// concurrencyConfig is one worker setup.
type concurrencyConfig struct {
	name    string
	network string
	flags   []string
}

// paperTable1 is PCPM's Table 1 (kernel 4.4): seconds to create and to
// clean up N network namespaces concurrently.
var paperTable1 = map[int][2]float64{1: {0.28, 0.20}, 10: {1.27, 0.71}, 50: {6.28, 3.24}, 100: {14.41, 7.77}}

// Concurrency runs N concurrent cold starts of distinct functions (the
// warm cache off) under each configuration, then reproduces PCPM's Table 1
// and measures what taking a resource from a pool costs.
func Concurrency(ctx context.Context, o ConcurrencyOptions) (*ConcurrencyResult, error) {
	if len(o.Ns) == 0 {
		o.Ns = []int{1, 10, 50, 100}
	}
	if o.Rounds <= 0 {
		o.Rounds = 3
	}
	if !o.Subnet.IsValid() {
		o.Subnet = netip.MustParsePrefix("10.199.0.0/16")
	}
	if o.Out == nil {
		o.Out = io.Discard
	}
	maxN := 0
	for _, n := range o.Ns {
		if n < 1 {
			return nil, fmt.Errorf("bench concurrency: burst size %d", n)
		}
		maxN = max(maxN, n)
	}
	reserve := strconv.Itoa(maxN + 8)
	subnet := []string{"--netns-subnet", o.Subnet.String()}
	cfgs := []concurrencyConfig{
		{"host network, cgroups pooled", "host", append([]string{"--allow-host-network", "--cgroup-pool", reserve}, subnet...)},
		{"host network, cgroups fresh", "host", append([]string{"--allow-host-network", "--no-pools"}, subnet...)},
		{"isolated, netns on critical path", "isolated", append([]string{"--no-pools"}, subnet...)},
		{"isolated, netns+cgroups pooled", "isolated", append([]string{"--cgroup-pool", reserve, "--netns-pool", reserve}, subnet...)},
	}
	res := &ConcurrencyResult{}
	fmt.Fprintf(o.Out, "Concurrent cold starts of distinct functions (warm cache off), client-side latency over %d rounds after one uncounted burst\n"+
		"of the same size; total is the median round's\n", o.Rounds)
	fmt.Fprintf(o.Out, "%-34s %5s %10s %10s %10s %10s %10s %7s  %s\n", "config", "N", "p50 ms", "p99 ms", "init p50", "total ms", "starts/s", "spares", "paths")
	for _, c := range cfgs {
		bs, err := runConfig(ctx, o, c, maxN)
		if err != nil {
			return res, fmt.Errorf("%s: %w", c.name, err)
		}
		for _, b := range bs {
			fmt.Fprintf(o.Out, "%-34s %5d %10s %10s %10s %10s %10.0f %7d  %v\n", b.Config, b.N, ms(b.P50), ms(b.P99), ms(b.InitP50), ms(b.Total), b.PerSec, b.Spares, b.Paths)
		}
		res.Bursts = append(res.Bursts, bs...)
	}
	byKey := map[string]Burst{}
	for _, b := range res.Bursts {
		byKey[b.Config+"/"+strconv.Itoa(b.N)] = b
	}
	fmt.Fprintf(o.Out, "\nIsolated bursts, pooled vs namespaces on the critical path (total time)\n")
	for _, n := range o.Ns {
		u, p := byKey[cfgs[2].name+"/"+strconv.Itoa(n)], byKey[cfgs[3].name+"/"+strconv.Itoa(n)]
		if p.Total > 0 {
			fmt.Fprintf(o.Out, "N=%-4d unpooled %9s ms  pooled %9s ms  speed-up %.2fx\n", n, ms(u.Total), ms(p.Total), float64(u.Total)/float64(p.Total))
		}
	}

	rows, err := netnsTable(ctx, o.Ns, o.Subnet)
	if err != nil {
		return res, err
	}
	res.Netns = rows
	fmt.Fprintf(o.Out, "\nPCPM Table 1 on this kernel: N network namespaces (veth, address, bridge) created concurrently, then removed\n")
	fmt.Fprintf(o.Out, "%5s %18s %18s %16s %16s\n", "N", "paper create s", "paper cleanup s", "here create ms", "here cleanup ms")
	for _, r := range rows {
		fmt.Fprintf(o.Out, "%5d %18.2f %18.2f %16s %16s\n", r.N, r.PaperCreate, r.PaperCleanup, ms(r.Create), ms(r.Cleanup))
	}

	acq, err := acquireCosts(ctx, o.Subnet)
	if err != nil {
		return res, err
	}
	res.Acquire = acq
	fmt.Fprintf(o.Out, "\nGetting one resource for a sandbox (in-process, 200 each)\n")
	Table(o.Out, acq, [][2]string{{"cgroup from pool", "cgroup created"}, {"netns from pool", "netns created"}})
	return res, nil
}

// probeHandler is a trivial handler: the benchmark measures starts.
const probeHandler = "def f(e):\n    return 1\n"

// runConfig starts a worker for c, deploys maxN distinct functions and
// fires one burst per N.
func runConfig(ctx context.Context, o ConcurrencyOptions, c concurrencyConfig, maxN int) ([]Burst, error) {
	// The worker admits sandboxes against a memory budget by their
	// declared limits: give it room for every sandbox of a burst. No
	// snapshots: the benchmark measures zygote starts, and a snapshot
	// taken mid-burst (CRIU) would steal its CPU.
	flags := append([]string{"--no-warm-cache", "--no-snapshots", "--warm-budget-mb", strconv.Itoa(64 * (maxN + 16)), "--pools", "unified"}, c.flags...)
	w, err := StartWorker(ctx, o.Hearth, o.Base, flags...)
	if err != nil {
		return nil, err
	}
	defer w.Stop()
	yaml := "network: " + c.network + "\nmax_concurrency: 1\nmemory_mb: 48\n"
	for i := range maxN {
		if err := w.Deploy(ctx, fmt.Sprintf("c%d", i), map[string]string{"f.py": probeHandler, "function.yaml": yaml}); err != nil {
			return nil, fmt.Errorf("deploy: %w", err)
		}
	}
	// A warm-up burst starts the zygote and fills the pools; it is not
	// counted.
	if _, err := burst(ctx, w, c.name, min(maxN, 10)); err != nil {
		return nil, err
	}
	var out []Burst
	// Time for the last burst's teardown and the reserves' refill (about
	// 0.4 s of two cores for a hundred spares) before the next.
	settle := time.Duration(maxN)*15*time.Millisecond + 500*time.Millisecond
	for _, n := range o.Ns {
		var rounds []Burst
		var lat, inits []time.Duration
		// One uncounted burst of this size first: pools that size
		// themselves by demand (spare zygote children) see it, as they
		// would have in steady state.
		time.Sleep(settle)
		if _, err := burst(ctx, w, c.name, n); err != nil {
			return nil, err
		}
		spares := 0
		for range o.Rounds {
			// Let the pools refill and the last burst's teardown finish
			// off the clock.
			time.Sleep(settle)
			before, err := w.Metric(ctx, "hearth_spare_starts_total")
			if err != nil {
				return nil, err
			}
			b, err := burst(ctx, w, c.name, n)
			if err != nil {
				return nil, err
			}
			after, err := w.Metric(ctx, "hearth_spare_starts_total")
			if err != nil {
				return nil, err
			}
			spares += int(after - before)
			rounds = append(rounds, b)
			lat, inits = append(lat, b.lat...), append(inits, b.inits...)
		}
		slices.SortFunc(rounds, func(a, b Burst) int { return cmp.Compare(a.Total, b.Total) })
		b := rounds[len(rounds)/2]
		b.P50, b.P99 = Sample{D: lat}.P50(), Sample{D: lat}.P99()
		b.InitP50 = Sample{D: inits}.P50()
		b.PerSec = float64(n) / b.Total.Seconds()
		b.Spares = spares
		b.Paths = map[string]int{}
		for _, r := range rounds {
			for p, k := range r.Paths {
				b.Paths[p] += k
			}
		}
		out = append(out, b)
	}
	return out, nil
}

// burst invokes functions c0..c(n-1) at once.
func burst(ctx context.Context, w *Worker, name string, n int) (Burst, error) {
	lat := make([]time.Duration, n)
	inits := make([]time.Duration, n)
	paths := make([]string, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			inv, err := w.Client.Invoke(ctx, fmt.Sprintf("c%d", i), []byte("{}"))
			lat[i], paths[i], errs[i] = inv.Latency, inv.Path, err
			inits[i] = time.Duration(inv.InitMs * float64(time.Millisecond))
		}()
	}
	t0 := time.Now()
	close(start)
	wg.Wait()
	total := time.Since(t0)
	if err := errors.Join(errs...); err != nil {
		return Burst{}, fmt.Errorf("burst of %d: %w", n, err)
	}
	s := Sample{D: lat}
	b := Burst{Config: name, N: n, P50: s.P50(), P99: s.P99(), InitP50: Sample{D: inits}.P50(), Total: total, lat: lat, inits: inits, PerSec: float64(n) / total.Seconds(), Paths: map[string]int{}}
	for _, p := range paths {
		b.Paths[p]++
	}
	return b, nil
}

// netnsTable creates, then removes, n namespaces concurrently for each n:
// each with a veth pair to a bridge and an address. Cleanup runs until
// the kernel has removed every veth.
func netnsTable(ctx context.Context, ns []int, subnet netip.Prefix) ([]NetnsRow, error) {
	var rows []NetnsRow
	for _, n := range ns {
		p, err := netns.New(ctx, netns.Config{Prefix: "hbt" + strconv.Itoa(os.Getpid()%10000), Subnet: subnet, Reserve: -1})
		if err != nil {
			return nil, err
		}
		made := make([]*netns.NS, n)
		errs := make([]error, n)
		var wg sync.WaitGroup
		t0 := time.Now()
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				made[i], errs[i] = p.Create(ctx)
			}()
		}
		wg.Wait()
		create := time.Since(t0)
		if err := errors.Join(errs...); err != nil {
			p.Close(ctx)
			return nil, fmt.Errorf("creating %d namespaces: %w", n, err)
		}
		t1 := time.Now()
		for _, m := range made {
			wg.Add(1)
			go func() {
				defer wg.Done()
				m.Destroy()
			}()
		}
		wg.Wait()
		// Close waits for the kernel to remove the veths, then removes
		// the bridge.
		if err := p.Close(ctx); err != nil {
			return nil, err
		}
		cleanup := time.Since(t1)
		pr := paperTable1[n]
		rows = append(rows, NetnsRow{N: n, Create: create, Cleanup: cleanup, PaperCreate: pr[0], PaperCleanup: pr[1]})
	}
	return rows, nil
}

// acquireCosts measures taking a cgroup and a namespace for a sandbox,
// created on the spot and taken from a pool.
func acquireCosts(ctx context.Context, subnet netip.Prefix) ([]Sample, error) {
	const n = 200
	m, err := cgroup.NewManager(fmt.Sprintf("hearth-bench-acq-%d", os.Getpid()))
	if err != nil {
		return nil, err
	}
	defer m.Close(ctx)
	lim := cgroup.Limits{MemoryBytes: 128 << 20, Pids: 64, CPUWeight: 100}
	created := Sample{Name: "cgroup created"}
	for i := range n {
		t0 := time.Now()
		g, err := m.Create("c"+strconv.Itoa(i), lim)
		created.D = append(created.D, time.Since(t0))
		if err != nil {
			return nil, err
		}
		if err := g.Delete(ctx); err != nil {
			return nil, err
		}
	}
	pool, err := m.NewPool(cgroup.PoolConfig{Reserve: 4})
	if err != nil {
		return nil, err
	}
	defer pool.Close(ctx)
	pooled := Sample{Name: "cgroup from pool"}
	for range n {
		if err := pool.Fill(ctx); err != nil {
			return nil, err
		}
		t0 := time.Now()
		g, err := pool.Get(ctx, lim)
		pooled.D = append(pooled.D, time.Since(t0))
		if err != nil {
			return nil, err
		}
		if err := pool.Put(ctx, g); err != nil {
			return nil, err
		}
	}

	p, err := netns.New(ctx, netns.Config{Prefix: "hba" + strconv.Itoa(os.Getpid()%10000), Subnet: subnet, Reserve: 4})
	if err != nil {
		return nil, err
	}
	defer p.Close(ctx)
	nsCreated := Sample{Name: "netns created"}
	nsPooled := Sample{Name: "netns from pool"}
	for range n {
		t0 := time.Now()
		x, err := p.Create(ctx)
		nsCreated.D = append(nsCreated.D, time.Since(t0))
		if err != nil {
			return nil, err
		}
		x.Destroy()
		if err := p.Fill(ctx); err != nil {
			return nil, err
		}
		t0 = time.Now()
		y, err := p.Get(ctx)
		nsPooled.D = append(nsPooled.D, time.Since(t0))
		if err != nil {
			return nil, err
		}
		if err := p.Put(ctx, y); err != nil {
			return nil, err
		}
	}
	return []Sample{created, pooled, nsCreated, nsPooled}, nil
}
