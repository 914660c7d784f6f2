package bench

import (
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"text/tabwriter"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"

	"github.com/hearth-run/hearth/api/types"
	"github.com/hearth-run/hearth/internal/client"
	"github.com/hearth-run/hearth/internal/pool"
	"github.com/hearth-run/hearth/internal/pool/policy"
	"github.com/hearth-run/hearth/internal/replay"
	"github.com/hearth-run/hearth/internal/sim"
	"github.com/hearth-run/hearth/internal/trace"
	"github.com/hearth-run/hearth/internal/worker"
)

// MemSample is the warm pool's state at one time of a run.
type MemSample struct {
	// At is the time since the replay started.
	At time.Duration
	// Paused is what the pool charges its paused sandboxes (the status's
	// warm_bytes: each at the memory measured when it was paused), and
	// PausedN how many there are.
	Paused  int64
	PausedN int
	// Used is what the pool charges all its sandboxes, busy and paused.
	Used int64
	// Zygotes is the memory charged to the zygotes' cgroups, all nodes
	// together (0 without zygotes).
	Zygotes int64
}

// sampler reads a worker's status periodically during a run.
type sampler struct {
	cancel context.CancelFunc
	done   chan struct{}

	mu  sync.Mutex // guards the fields below
	mem []MemSample
	sum []int64 // per function: paused sandboxes' memory, summed over samples
	cnt []int64 // per function: paused sandboxes seen, over samples
}

// startSampler reads c's status every period until stop. Reading the
// status costs the worker a little CPU (a cgroup and smaps read per
// sandbox); a period of seconds keeps that out of the way.
func startSampler(ctx context.Context, c *client.Client, plan *replay.Plan, every time.Duration) *sampler {
	ctx, cancel := context.WithCancel(ctx)
	s := &sampler{cancel: cancel, done: make(chan struct{}),
		sum: make([]int64, len(plan.Funcs)), cnt: make([]int64, len(plan.Funcs))}
	index := map[string]int{}
	for i, f := range plan.Funcs {
		index[f.Name] = i
	}
	start := time.Now()
	go func() {
		defer close(s.done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			if st, err := c.Status(ctx); err == nil {
				m := MemSample{At: time.Since(start), Paused: st.WarmBytes}
				for _, p := range st.Pools {
					m.Used += p.Used
				}
				if z, err := c.Zygotes(ctx); err == nil {
					for _, n := range z.Nodes {
						m.Zygotes += n.Memory
					}
				} else if k := len(s.mem); k > 0 {
					m.Zygotes = s.mem[k-1].Zygotes // not read: as last read
				}
				s.mu.Lock()
				for _, sb := range st.Sandboxes {
					if sb.State != "paused" {
						continue
					}
					m.PausedN++
					if i, ok := index[sb.Function]; ok && sb.Memory > 0 {
						s.sum[i] += sb.Memory
						s.cnt[i]++
					}
				}
				s.mem = append(s.mem, m)
				s.mu.Unlock()
			}
			select {
			case <-t.C:
			case <-ctx.Done():
				return
			}
		}
	}()
	return s
}

// stop ends the sampling and returns the samples and each function's mean
// memory per paused sandbox (0 if none was seen).
func (s *sampler) stop() ([]MemSample, []int64) {
	s.cancel()
	<-s.done
	s.mu.Lock()
	defer s.mu.Unlock()
	paused := make([]int64, len(s.sum))
	for i := range s.sum {
		if s.cnt[i] > 0 {
			paused[i] = s.sum[i] / s.cnt[i]
		}
	}
	return s.mem, paused
}

// memStats returns the run's mean and peak memory charged for paused
// sandboxes, and their mean number, over its samples.
func (r *ReplayRun) memStats() (mean, peak, count float64) {
	if len(r.Mem) == 0 {
		return 0, 0, 0
	}
	for _, m := range r.Mem {
		mean += float64(m.Paused)
		count += float64(m.PausedN)
		peak = max(peak, float64(m.Paused))
	}
	n := float64(len(r.Mem))
	return mean / n, peak, count / n
}

// zygoteStats returns the run's mean and peak memory of all zygotes, over
// its samples.
func (r *ReplayRun) zygoteStats() (mean, peak float64) {
	if len(r.Mem) == 0 {
		return 0, 0
	}
	for _, m := range r.Mem {
		mean += float64(m.Zygotes)
		peak = max(peak, float64(m.Zygotes))
	}
	return mean / float64(len(r.Mem)), peak
}

// SimInputs returns the simulator's functions for a run: each admitted
// at its declared memory until its first call ends, and then at the
// start charge the run's worker had learned for it by the end of the
// run, if it charges peaks (as the worker charges a new sandbox), charged
// from the end of its first call the memory its paused sandboxes held in
// the run, and delayed on a non-warm start by its mean measured start
// time over the run's non-warm starts: the worker's init_ms, and its
// turn_wait_ms, the wait for a turn to start, which the worker spends
// holding the start's room in the pool (the simulator has no turns). A
// call is charged, from as far into it as the worker's growth charges
// came on average (StartCharge.GrowthMs) to its end, what the worker
// charges a call that grows to its function's peak (StartCharge.Grown),
// if the worker charged any of its calls' growth.
// Under pool_charge
// peak, the functions with the same packages are kin (sim.Func.Kin): the
// worker charges a new function like them. Not the
// response time: that includes the wait for memory, which the simulator
// has itself. A function with no paused sandbox seen takes the median of
// the others with its package set (else its declared memory); one with
// no non-warm start takes the run's mean.
func SimInputs(plan *replay.Plan, run *ReplayRun) []sim.Func {
	var all []time.Duration
	per := make([][]time.Duration, len(plan.Funcs))
	for _, rec := range run.Result.Records {
		if !rec.OK() || rec.Path == "warm" || rec.Path == "" {
			continue
		}
		d := time.Duration((rec.InitMs + rec.TurnWaitMs) * float64(time.Millisecond))
		per[rec.Func] = append(per[rec.Func], d)
		all = append(all, d)
	}
	meanOf := func(d []time.Duration) time.Duration {
		var s time.Duration
		for _, v := range d {
			s += v
		}
		return s / time.Duration(max(len(d), 1))
	}
	bySet := map[string][]int64{}
	for i, f := range plan.Funcs {
		if i < len(run.Paused) && run.Paused[i] > 0 {
			bySet[pkgLabel(f.Packages)] = append(bySet[pkgLabel(f.Packages)], run.Paused[i])
		}
	}
	// A worker that reports when its growth charges came (growth_ms) had
	// none for a function without it: its calls were too short to be
	// sampled, or stayed within their charge. An older one reports none.
	timed := slices.ContainsFunc(run.Charges, func(sc types.StartCharge) bool { return sc.GrowthMs > 0 })
	kin := map[string]int32{} // package sets numbered from 1
	out := make([]sim.Func, len(plan.Funcs))
	for i, f := range plan.Funcs {
		c := meanOf(per[i])
		if len(per[i]) == 0 {
			c = meanOf(all)
		}
		out[i] = sim.Func{Size: int64(f.MemoryMB) << 20, Cold: c}
		if run.Charge == "peak" {
			l := pkgLabel(f.Packages)
			if kin[l] == 0 {
				kin[l] = int32(len(kin) + 1)
			}
			out[i].Kin = kin[l]
		}
		for _, sc := range run.Charges {
			if sc.Function == f.Name && sc.Peak > 0 {
				out[i].Start = max(out[i].Start, sc.Start)
				if sc.GrowthMs > 0 || !timed {
					out[i].Busy = max(out[i].Busy, sc.Grown)
					out[i].GrowAt = max(out[i].GrowAt, time.Duration(sc.GrowthMs*float64(time.Millisecond)))
				}
			}
		}
		switch {
		case i < len(run.Paused) && run.Paused[i] > 0:
			out[i].Paused = run.Paused[i]
		case len(bySet[pkgLabel(f.Packages)]) > 0:
			v := slices.Clone(bySet[pkgLabel(f.Packages)])
			slices.Sort(v)
			out[i].Paused = v[len(v)/2]
		}
	}
	return out
}

// workerDropWait is how long a worker's request waits for memory before
// it is refused (worker.PoolConfig.DropWait's default).
const workerDropWait = 10 * time.Second

// simulateRun runs the run's calls through the simulator's engine with
// an LRU policy and a unified pool of budgetMB (0: the worker's default
// budget, which the simulator cannot know, so nothing is simulated). The
// calls arrive at their wall-clock times and hold their sandbox for the
// run time the worker measured (the requested execution time for a call
// that failed), plus, on a non-warm start, the start time (SimInputs).
// With events set, the pool's events go to that file (pool.EventWriter),
// with the revision column empty.
func simulateRun(ctx context.Context, plan *replay.Plan, run *ReplayRun, budgetMB int, events string) (res *sim.Result, err error) {
	if budgetMB <= 0 {
		return nil, nil
	}
	invs := make([]trace.Invocation, len(plan.Calls))
	for i, c := range plan.Calls {
		invs[i] = trace.Invocation{Func: int32(c.Func), At: c.Wall, Exec: c.Exec}
		if i < len(run.Result.Records) && run.Result.Records[i].OK() {
			invs[i].Exec = time.Duration(run.Result.Records[i].RunMs * float64(time.Millisecond))
		}
	}
	wl, err := sim.FromInvocations(SimInputs(plan, run), invs)
	if err != nil {
		return nil, err
	}
	np, err := policy.New("lru", policy.Options{})
	if err != nil {
		return nil, err
	}
	cfg := sim.Config{Policy: "lru", NewPolicy: np, Memory: int64(budgetMB) << 20,
		PerFunc: true, SampleEvery: -1, Queue: workerDropWait, PassLimit: run.Config.PassLimit, PassHold: worker.PassHold, BusyAfter: run.GrowthEvery}
	if events != "" {
		f, ferr := os.Create(events)
		if ferr != nil {
			return nil, ferr
		}
		ew := pool.NewEventWriter(f)
		defer func() {
			if cerr := errors.Join(ew.Flush(), f.Close()); cerr != nil && err == nil {
				err = fmt.Errorf("simulator's pool events: %w", cerr)
			}
		}()
		cfg.Observe = func(ev pool.Event) { ew.Write(ev, plan.Funcs[ev.Fn].Name, "") }
	}
	r, err := sim.Run(ctx, wl, cfg)
	if err != nil {
		return nil, err
	}
	return &r, nil
}

// SimTable prints the simulator's non-warm starts (misses) against the
// live runs': per run, and per function summed over the repetitions.
func (r *ReplayReport) SimTable(w io.Writer) error {
	var simmed []int // config indexes with a prediction
	for k := range r.Configs {
		for _, runs := range r.Runs {
			if k < len(runs) && runs[k] != nil && runs[k].Sim != nil {
				simmed = append(simmed, k)
				break
			}
		}
	}
	if len(simmed) == 0 {
		return nil
	}
	fmt.Fprintf(w, "=== Simulator (internal/sim: LRU, one unified %d MB pool; a new sandbox charged its declared memory, or once a call of its function (else of one with its packages) has ended the start charge its worker learned (pool_charge: peak), until its first call ends, then its paused memory measured in the run, and a call, from as far into it as the worker's growth charges came on average, its function's peak with the worker's growth slack; calls held for their measured run time, non-warm starts for their measured start time and wait for a turn besides; a call with no room waits up to 10 s for one, as the worker's do) vs live ===\n\n", r.BudgetMB)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "config\trep\tlive non-warm\tsim misses\tsim - live\tlive evictions\tsim evictions\tlive drops\tsim drops\tlive growth charges\tsim growth charges\t")
	for _, k := range simmed {
		for _, runs := range r.Runs {
			run := runs[k]
			if run == nil || run.Sim == nil {
				continue
			}
			live := coldPath(run)
			fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%s\t%d\t%d\t%d\t%d\t%d\t%d\t\n", run.Config.Name, run.Rep, live, run.Sim.All.Misses,
				relDiff(float64(run.Sim.All.Misses), float64(live)), run.Evictions(), run.Sim.Evictions, run.Drops(), run.Sim.All.Drops, run.GrowthCharges, run.Sim.Growths)
		}
	}
	fmt.Fprintln(tw)
	fmt.Fprintln(tw, "The simulator's inputs as measured: start time by path (mean init, ms, and starts) and memory per paused sandbox")
	fmt.Fprintln(tw, "config\trep\tsnapshot\tfork\tcold\tpaused MiB per sandbox\tstart charge MiB mean (functions measured)\t")
	for _, k := range simmed {
		for _, runs := range r.Runs {
			run := runs[k]
			if run == nil || run.Sim == nil {
				continue
			}
			line := fmt.Sprintf("%s\t%d\t", run.Config.Name, run.Rep)
			for _, p := range []string{"snapshot", "fork", "cold"} {
				var sum time.Duration
				n := 0
				for _, rec := range run.Result.Records {
					if rec.OK() && rec.Path == p {
						sum += time.Duration(rec.InitMs * float64(time.Millisecond))
						n++
					}
				}
				if n == 0 {
					line += "-\t"
					continue
				}
				line += fmt.Sprintf("%.0f (%d)\t", float64(sum)/float64(n)/1e6, n)
			}
			mean, _, cnt := run.memStats()
			per := "-"
			if cnt > 0 {
				per = fmt.Sprintf("%.1f", mean/cnt/(1<<20))
			}
			var sum float64
			n := 0
			for _, sc := range run.Charges {
				if sc.Peak > 0 {
					sum += float64(sc.Start) / (1 << 20)
					n++
				}
			}
			charge := "- (declared)"
			if n > 0 && run.Charge != "declared" {
				charge = fmt.Sprintf("%.1f (%d)", sum/float64(n), n)
			}
			fmt.Fprintln(tw, line+per+"\t"+charge+"\t")
		}
	}
	fmt.Fprintln(tw)
	fmt.Fprintln(tw, "Per function, summed over the repetitions: live non-warm starts / simulator's misses")
	line := "function\tcalls\t"
	for _, k := range simmed {
		line += r.Configs[k].Name + "\t"
	}
	fmt.Fprintln(tw, line)
	for fi, f := range r.Plan.Funcs {
		calls := 0
		line := f.Name + "\t"
		cells := ""
		for _, k := range simmed {
			var live, pred uint64
			for _, runs := range r.Runs {
				if run := runs[k]; run != nil && run.Sim != nil {
					live += uint64(run.Sums[fi].ColdPath)
					pred += run.Sim.Funcs[fi].Misses
					if k == simmed[0] {
						calls += run.Sums[fi].N
					}
				}
			}
			cells += fmt.Sprintf("%d / %d\t", live, pred)
		}
		fmt.Fprintln(tw, line+strconv.Itoa(calls)+"\t"+cells)
	}
	return tw.Flush()
}

// coldPath returns the run's non-warm starts.
func coldPath(run *ReplayRun) int {
	n := 0
	for _, s := range run.Sums {
		n += s.ColdPath
	}
	return n
}

// relDiff formats (x - base) / base in percent.
func relDiff(x, base float64) string {
	if base == 0 {
		if x == 0 {
			return "0.0%"
		}
		return "-"
	}
	return fmt.Sprintf("%+.1f%%", 100*(x-base)/base)
}

// writeMemory writes memory.csv (every run's samples) and, per
// repetition, paused-memory-rep<N>.png: the memory held by paused
// sandboxes over the run, one line per configuration.
func (r *ReplayReport) writeMemory(dir string, speed float64) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("creating %s: %w", dir, err)
	}
	f, err := os.Create(filepath.Join(dir, "memory.csv"))
	if err != nil {
		return err
	}
	cw := csv.NewWriter(f)
	cw.Write([]string{"rep", "config", "t_s", "paused_bytes", "paused_sandboxes", "used_bytes", "zygote_bytes"})
	for _, runs := range r.Runs {
		for _, run := range runs {
			if run == nil {
				continue
			}
			for _, m := range run.Mem {
				cw.Write([]string{strconv.Itoa(run.Rep), run.Config.Name, strconv.FormatFloat(m.At.Seconds(), 'f', 3, 64),
					strconv.FormatInt(m.Paused, 10), strconv.Itoa(m.PausedN), strconv.FormatInt(m.Used, 10), strconv.FormatInt(m.Zygotes, 10)})
			}
		}
	}
	cw.Flush()
	if err := errors.Join(cw.Error(), f.Close()); err != nil {
		return fmt.Errorf("writing memory.csv: %w", err)
	}
	for i := range r.Runs {
		if _, err := r.PlotMemory(filepath.Join(dir, fmt.Sprintf("paused-memory-rep%d.png", i+1)), i, speed); err != nil {
			return err
		}
	}
	return nil
}

// PlotMemory draws repetition i's memory held by paused sandboxes over
// time, one line per configuration that keeps sandboxes, into file.
func (r *ReplayReport) PlotMemory(file string, i int, speed float64) (string, error) {
	p := plot.New()
	budget := "default warm budget"
	if r.BudgetMB > 0 {
		budget = fmt.Sprintf("warm budget %d MB", r.BudgetMB)
	}
	p.Title.Text = fmt.Sprintf("Memory held by paused sandboxes, repetition %d\n%d functions, speed %g, %s, LRU", i+1, len(r.Plan.Funcs), speed, budget)
	p.X.Label.Text = "time since replay start (s)"
	p.Y.Label.Text = "paused sandboxes' charge (MiB)"
	p.Y.Min = 0
	p.Legend.Top = true
	p.Legend.Left = true
	top := 0.0
	for k, run := range r.Runs[i] {
		if run == nil || !warmCached(run.Config) {
			continue
		}
		xy := make(plotter.XYs, len(run.Mem))
		for j, m := range run.Mem {
			xy[j] = plotter.XY{X: m.At.Seconds(), Y: float64(m.Paused) / (1 << 20)}
			top = max(top, xy[j].Y)
		}
		if len(xy) == 0 {
			continue
		}
		l, err := plotter.NewLine(xy)
		if err != nil {
			return "", fmt.Errorf("plotting memory: %w", err)
		}
		l.Color = plotutil.Color(k)
		l.Dashes = plotutil.Dashes(k)
		l.Width = vg.Points(1.5)
		p.Add(l)
		mean, _, _ := run.memStats()
		p.Legend.Add(fmt.Sprintf("%s (mean %.0f MiB)", run.Config.Name, mean/(1<<20)), l)
	}
	if r.BudgetMB > 0 {
		// The budget as a line, with room above it for the legend.
		b := float64(r.BudgetMB)
		l, err := plotter.NewLine(plotter.XYs{{X: 0, Y: b}, {X: r.Plan.Duration().Seconds(), Y: b}})
		if err == nil {
			l.Color = plotutil.Color(len(r.Configs))
			l.Dashes = []vg.Length{vg.Points(2), vg.Points(2)}
			p.Add(l)
			p.Legend.Add("warm budget", l)
			top = max(top, b)
		}
	}
	p.Y.Max = math.Max(top*1.35, 1)
	p.Y.Tick.Marker = stepTicks{}
	p.X.Tick.Marker = stepTicks{}
	p.Add(plotter.NewGrid())
	if err := p.Save(8*vg.Inch, 4.5*vg.Inch, file); err != nil {
		return "", fmt.Errorf("saving plot: %w", err)
	}
	return file, nil
}

// stepTicks labels about eight round values (1, 2 or 5 times a power of
// ten apart) across an axis: gonum's default gives three or four, too few
// to read a level off.
type stepTicks struct{}

// Ticks implements plot.Ticker.
func (stepTicks) Ticks(lo, hi float64) []plot.Tick {
	if !(hi > lo) {
		return []plot.Tick{{Value: lo, Label: strconv.FormatFloat(lo, 'g', 4, 64)}}
	}
	raw := (hi - lo) / 8
	mag := math.Pow(10, math.Floor(math.Log10(raw)))
	step := mag
	for _, m := range []float64{1, 2, 5, 10} {
		if step = m * mag; step >= raw {
			break
		}
	}
	dec := max(0, int(-math.Floor(math.Log10(step))))
	var out []plot.Tick
	for k := math.Ceil(lo / step); k*step <= hi+step/1e6; k++ {
		v := k * step
		out = append(out, plot.Tick{Value: v, Label: strconv.FormatFloat(v, 'f', dec, 64)})
	}
	return out
}
