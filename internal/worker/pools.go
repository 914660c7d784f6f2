package worker

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/hearth-run/hearth/internal/cgroup"
	"github.com/hearth-run/hearth/internal/function"
	"github.com/hearth-run/hearth/internal/ident"
	"github.com/hearth-run/hearth/internal/netns"
	"github.com/hearth-run/hearth/internal/registry"
)

// ResourceConfig configures the pre-made resources that keep cold starts flat
// under concurrency (cgroups, network namespaces). The zero value pools
// both with their default reserves. Its yaml tags are the keys of
// hearth.yaml; fields tagged "-" are not settings of the file.
type ResourceConfig struct {
	// NoPools makes every cgroup and namespace on the critical path and
	// deletes it afterwards: the unpooled baseline.
	NoPools bool `yaml:"no_pools"`
	// Cgroups is the cgroup reserve (default 16).
	Cgroups int `yaml:"cgroup_pool"`
	// NetNS is the network-namespace reserve for `network: isolated`
	// functions, the default (default 8). The namespace pool, and its
	// nftables table, start with the worker.
	NetNS int `yaml:"netns_pool"`
	// Subnet is the private subnet of isolated sandboxes (default
	// netns.DefaultSubnet). Workers on one host need distinct subnets.
	Subnet netip.Prefix `yaml:"netns_subnet"`
	// NoEgress keeps isolated sandboxes from reaching anything beyond
	// their bridge. By default they get out through the host's NAT
	// (masquerade, with the host's IPv4 forwarding on).
	NoEgress bool `yaml:"no_egress"`
	// Guard are the host uids whose sockets in the host's network
	// namespace must not reach the host's own addresses (the worker's
	// API included) or isolated sandboxes: the uids sandboxes,
	// installers and zygotes run as. The worker adds ident.Default and
	// its handlers' uid.
	Guard []netns.UIDRange `yaml:"-"`
	// Prefix names the worker's bridges and veths (default: derived from
	// CgroupParent, so a restarted worker sweeps what it left).
	Prefix string `yaml:"-"`
}

// resources holds the worker's resource pools.
type resources struct {
	cfg ResourceConfig
	cg  *cgroup.Pool // nil with NoPools

	mu  sync.Mutex
	ns  *netns.Pool // made on first use; guarded by mu
	err error       // why ns could not be made; guarded by mu
}

// initResources sweeps the namespaces' bridges a crashed predecessor left and
// starts the cgroup and namespace pools. The namespace pool's nftables
// table is what keeps sandboxes of every network kind off the host, so
// the worker does not start without it.
func (w *Worker) initResources(ctx context.Context) error {
	c := w.cfg.Resources
	if c.Prefix == "" {
		c.Prefix = NetPrefix(w.cfg.CgroupParent)
	}
	if n, err := netns.Sweep(c.Prefix); err != nil {
		return fmt.Errorf("sweeping network namespaces: %w", err)
	} else if n > 0 {
		w.log.Info("swept network objects left by a previous worker", "count", n)
	}
	c.Guard = append(slices.Clone(c.Guard), netns.UIDRange{First: uint32(ident.Default.First), Last: uint32(ident.Default.Last())})
	if u := w.cfg.UID; u != 0 && !ident.Default.Contains(u) {
		c.Guard = append(c.Guard, netns.UIDRange{First: uint32(u), Last: uint32(u)})
	}
	w.res = &resources{cfg: c}
	if err := w.metrics.Registry.Register(newResourceCollector(w)); err != nil {
		return fmt.Errorf("registering metrics: %w", err)
	}
	if _, err := w.netPool(ctx); err != nil {
		return err
	}
	if c.NoPools {
		return nil
	}
	reserve := c.Cgroups
	if reserve <= 0 {
		reserve = 16
	}
	p, err := w.cg.NewPool(cgroup.PoolConfig{
		Reserve: reserve,
		OnQuarantine: func(name string, err error) {
			w.log.Error("cgroup quarantined: it could not be cleaned and will not be reused", "cgroup", name, "err", err)
		},
	})
	if err != nil {
		return err
	}
	w.res.cg = p
	return nil
}

// netPool returns the namespace pool, making it on first use (at start).
func (w *Worker) netPool(ctx context.Context) (*netns.Pool, error) {
	p := w.res
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ns != nil || p.err != nil {
		return p.ns, p.err
	}
	reserve, offline := p.cfg.NetNS, 0
	if p.cfg.NoPools {
		reserve, offline = -1, -1
	}
	p.ns, p.err = netns.New(ctx, netns.Config{Prefix: p.cfg.Prefix, Subnet: p.cfg.Subnet, Reserve: reserve,
		OfflineReserve: offline, NAT: !p.cfg.NoEgress, Guard: p.cfg.Guard})
	if p.err != nil {
		p.err = fmt.Errorf("network namespaces: %w", p.err)
	}
	return p.ns, p.err
}

// CheckNetwork refuses a function in the host's network namespace
// (network: host, or none in an old record) unless the operator allows
// it (allowHost). The error wraps ErrHostNetwork.
func CheckNetwork(allowHost bool, s function.Spec) error {
	if s.HostNetwork() && !allowHost {
		return fmt.Errorf("network: %q runs the function in the host's network namespace, which this worker does not allow "+
			"(its operator can, with allow_host_network); use the default, isolated, or offline: %w", s.Network, ErrHostNetwork)
	}
	return nil
}

// newGroup gives a sandbox its cgroup: from the pool, or made now.
func (w *Worker) newGroup(ctx context.Context, id string, lim cgroup.Limits) (*cgroup.Group, error) {
	if w.res.cg != nil {
		return w.res.cg.Get(ctx, lim)
	}
	return w.cg.Create(id, lim)
}

// dropGroup hands a dead sandbox's cgroup back to the pool, which cleans
// it in the background once starts quieten down, or deletes it.
func (w *Worker) dropGroup(ctx context.Context, g *cgroup.Group) error {
	if w.res.cg != nil {
		w.res.cg.Release(g)
		return nil
	}
	return g.Delete(ctx)
}

// putGroup is dropGroup on a failure path, which has nobody to return
// an error to: it logs it.
func (w *Worker) putGroup(g *cgroup.Group, id string) {
	if err := w.dropGroup(context.Background(), g); err != nil {
		w.log.Warn("deleting cgroup", "sandbox", id, "err", err)
	}
}

// network returns the namespace a sandbox of fn enters (nil: the host's)
// and, for isolated and offline functions, the namespace to give back
// afterwards.
func (w *Worker) network(ctx context.Context, fn registry.Function) (*os.File, *netns.NS, error) {
	return w.networkFor(ctx, netKind(fn))
}

// networkFor is network for a function.Spec.Network value.
func (w *Worker) networkFor(ctx context.Context, kind string) (*os.File, *netns.NS, error) {
	switch kind {
	case function.NetworkIsolated, function.NetworkOffline:
	default:
		return nil, nil, nil
	}
	p, err := w.netPool(ctx)
	if err != nil {
		return nil, nil, err
	}
	var ns *netns.NS
	switch {
	case kind == function.NetworkOffline && w.res.cfg.NoPools:
		ns, err = p.CreateOffline(ctx)
	case kind == function.NetworkOffline:
		ns, err = p.GetOffline(ctx)
	case w.res.cfg.NoPools:
		ns, err = p.Create(ctx)
	default:
		ns, err = p.Get(ctx)
	}
	if err != nil {
		return nil, nil, err
	}
	return ns.File(), ns, nil
}

// dropNet hands a dead sandbox's namespace back to the pool, or destroys
// it.
func (w *Worker) dropNet(ctx context.Context, ns *netns.NS) {
	if ns == nil {
		return
	}
	p, _ := w.netPool(ctx)
	if w.res.cfg.NoPools || p == nil {
		ns.Destroy()
		return
	}
	// Scrubbed in the background; a namespace that is not clean is
	// discarded and counted (hearth_resource_pool_unclean_total).
	p.Release(ns)
}

// ResourceStats describes the worker's resource pools.
type ResourceStats struct {
	Cgroups *cgroup.PoolStats `json:"cgroups,omitempty"`
	NetNS   *netns.Stats      `json:"netns,omitempty"`
}

// ResourceStats returns the pools' counters (nil fields for pools not in use).
func (w *Worker) ResourceStats() ResourceStats {
	var s ResourceStats
	if w.res == nil {
		return s
	}
	if w.res.cg != nil {
		c := w.res.cg.Stats()
		s.Cgroups = &c
	}
	w.res.mu.Lock()
	ns := w.res.ns
	w.res.mu.Unlock()
	if ns != nil {
		n := ns.Stats()
		s.NetNS = &n
	}
	return s
}

// closeResources removes what the pools hold; sandboxes must be gone.
// Each pool's end is logged through stage.
func (w *Worker) closeResources(ctx context.Context, stage func(string)) error {
	if w.res == nil {
		return nil
	}
	var errs []error
	if w.res.cg != nil {
		if err := w.res.cg.Close(ctx); err != nil {
			errs = append(errs, err)
		}
		stage("cgroup pool")
	}
	w.res.mu.Lock()
	ns := w.res.ns
	w.res.mu.Unlock()
	if ns != nil {
		if err := ns.Close(ctx); err != nil {
			errs = append(errs, err)
		}
		stage("network pool")
	}
	return errors.Join(errs...)
}

// resourceCollector reports the resource pools at scrape time.
type resourceCollector struct {
	w                        *Worker
	ready, gets, created     *prometheus.Desc
	reused, dropped, removed *prometheus.Desc
}

func newResourceCollector(w *Worker) *resourceCollector {
	l := []string{"pool"}
	return &resourceCollector{
		w:       w,
		ready:   prometheus.NewDesc("hearth_resource_pool_ready", "Pre-made cgroups or network namespaces ready.", l, nil),
		gets:    prometheus.NewDesc("hearth_resource_pool_gets_total", "Resources handed to sandboxes: hit (pre-made) or miss (made on demand).", []string{"pool", "result"}, nil),
		created: prometheus.NewDesc("hearth_resource_pool_created_total", "Resources made by the pool.", l, nil),
		reused:  prometheus.NewDesc("hearth_resource_pool_reused_total", "Resources cleaned and returned to the pool.", l, nil),
		dropped: prometheus.NewDesc("hearth_resource_pool_unclean_total", "Resources that could not be cleaned: quarantined cgroups, discarded namespaces.", l, nil),
		removed: prometheus.NewDesc("hearth_resource_pool_removed_total", "Resources deleted on return because the pool was full.", l, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *resourceCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.ready, c.gets, c.created, c.reused, c.dropped, c.removed} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *resourceCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.w.ResourceStats()
	emit := func(pool string, ready int, hits, misses, created, reused, dropped, removed int64) {
		g, ct := prometheus.GaugeValue, prometheus.CounterValue
		ch <- prometheus.MustNewConstMetric(c.ready, g, float64(ready), pool)
		ch <- prometheus.MustNewConstMetric(c.gets, ct, float64(hits), pool, "hit")
		ch <- prometheus.MustNewConstMetric(c.gets, ct, float64(misses), pool, "miss")
		ch <- prometheus.MustNewConstMetric(c.created, ct, float64(created), pool)
		ch <- prometheus.MustNewConstMetric(c.reused, ct, float64(reused), pool)
		ch <- prometheus.MustNewConstMetric(c.dropped, ct, float64(dropped), pool)
		ch <- prometheus.MustNewConstMetric(c.removed, ct, float64(removed), pool)
	}
	if cg := s.Cgroups; cg != nil {
		emit("cgroup", cg.Ready, cg.Hits, cg.Misses, cg.Created, cg.Reused, int64(cg.Quarantined), cg.Removed)
	}
	if ns := s.NetNS; ns != nil {
		emit("netns", ns.Ready, ns.Hits, ns.Misses, ns.Created, ns.Reused, ns.Discarded, ns.Removed)
	}
}
