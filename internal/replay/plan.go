package replay

import (
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/hearth-run/hearth/internal/function"
	"github.com/hearth-run/hearth/internal/trace"
)

// PlanConfig says how to turn a trace into a replay. The zero value of
// each field is documented; Speed must be set.
type PlanConfig struct {
	// Arrival places invocations inside a minute; the zero value is
	// equidistant.
	Arrival trace.Arrival
	// Seed seeds arrivals, execution times and package sets.
	Seed int64
	// Speed compresses trace time: 1 is real time, 4 replays an hour in
	// 15 minutes. It must be positive.
	Speed float64
	// MemCapMB bounds the memory a handler touches; 0 means 64.
	MemCapMB int
	// ExecCap bounds a sampled execution time; 0 means 10 s.
	ExecCap time.Duration
	// Popularity assigns package sets; nil means DefaultPopularity.
	Popularity Popularity
	// Prefix starts every function name; empty means "replay-".
	Prefix string
	// Concurrency is each function's max_concurrency; 0 means 8.
	Concurrency int
}

// Func is one synthetic function standing for a trace function.
type Func struct {
	// Name is the deployed name.
	Name string
	// Hash is the trace's HashFunction.
	Hash string
	// Rate is the trace function's mean invocations per trace minute
	// over the replayed window.
	Rate float64
	// Packages are the base image packages its handler imports.
	Packages []string
	// TouchMB is the memory the handler touches on each call: the trace's
	// average allocated memory, rounded up, bounded by the cap.
	TouchMB int
	// MemoryMB is the sandbox limit in function.yaml: TouchMB plus room
	// for the interpreter and the imports.
	MemoryMB int
	// TimeoutS is the function's timeout in seconds.
	TimeoutS int
	// Concurrency is the function's max_concurrency.
	Concurrency int
}

// Call is one scheduled invocation.
type Call struct {
	// Func indexes Plan.Funcs.
	Func int
	// At is the arrival time in trace time since the window's start.
	At time.Duration
	// Wall is At divided by the speed factor: when the call is due after
	// the replay starts.
	Wall time.Duration
	// Exec is the execution time the handler runs for, sampled from the
	// duration percentiles and bounded by the cap.
	Exec time.Duration
}

// Plan is a replay ready to run: functions to deploy and calls in time
// order.
type Plan struct {
	Funcs []Func
	Calls []Call
	// Speed is the speed factor the calls were scheduled with.
	Speed float64
	// Minutes is the length of the replayed window in trace minutes.
	Minutes int
}

// Duration returns the wall time the schedule spans at its speed.
func (p *Plan) Duration() time.Duration {
	return time.Duration(float64(p.Minutes) * float64(trace.Minute) / p.Speed)
}

// interpMB is the memory a synthetic function needs beyond what it
// touches: the interpreter, the runtime and the imports (numpy and Pillow
// together stay under this with room to spare).
const interpMB = 128

// NewPlan builds the replay of t. t should already be restricted to the
// window and functions to replay (Trace.Window, Sample, Select); it is not
// modified.
func NewPlan(t *trace.Trace, c PlanConfig) (*Plan, error) {
	if !(c.Speed > 0) || math.IsInf(c.Speed, 0) {
		return nil, fmt.Errorf("speed %v must be a positive number: %w", c.Speed, ErrBadConfig)
	}
	if len(t.Functions) == 0 || t.Minutes <= 0 {
		return nil, fmt.Errorf("trace has no functions or minutes: %w", ErrBadConfig)
	}
	if c.MemCapMB < 0 || c.ExecCap < 0 || c.Concurrency < 0 {
		return nil, fmt.Errorf("negative cap or concurrency: %w", ErrBadConfig)
	}
	memCap := cmpOr(c.MemCapMB, 64)
	execCap := cmpOr(c.ExecCap, 10*time.Second)
	conc := cmpOr(c.Concurrency, 8)
	if memCap+interpMB > function.MaxMemoryMB {
		return nil, fmt.Errorf("memory cap %d MB too large: %w", memCap, ErrBadConfig)
	}
	if conc > function.MaxMaxConcurrency {
		return nil, fmt.Errorf("concurrency %d above %d: %w", conc, function.MaxMaxConcurrency, ErrBadConfig)
	}
	timeout := int(math.Ceil(execCap.Seconds())) + 30
	if timeout > function.MaxTimeoutS {
		return nil, fmt.Errorf("execution cap %v too long for the %d s timeout limit: %w", execCap, function.MaxTimeoutS, ErrBadConfig)
	}
	pop := c.Popularity
	if pop == nil {
		var err error
		if pop, err = ParsePopularity(DefaultPopularity); err != nil {
			return nil, err
		}
	}
	sets, err := pop.Assign(len(t.Functions), c.Seed)
	if err != nil {
		return nil, err
	}
	prefix := c.Prefix
	if prefix == "" {
		prefix = "replay-"
	}
	p := &Plan{Speed: c.Speed, Minutes: t.Minutes, Funcs: make([]Func, len(t.Functions))}
	for i := range t.Functions {
		f := &t.Functions[i]
		touch := min(int(math.Ceil(f.MemMB)), memCap)
		mem := (touch + interpMB + 15) / 16 * 16
		p.Funcs[i] = Func{
			Name:        funcName(prefix, i, f.Hash),
			Hash:        f.Hash,
			Rate:        f.Rate(),
			Packages:    sets[i],
			TouchMB:     touch,
			MemoryMB:    max(mem, function.MinMemoryMB),
			TimeoutS:    timeout,
			Concurrency: conc,
		}
	}
	g := trace.NewGenerator(t, c.Arrival, c.Seed)
	p.Calls = make([]Call, 0, g.Total())
	var inv trace.Invocation
	for g.Next(&inv) {
		p.Calls = append(p.Calls, Call{
			Func: int(inv.Func),
			At:   inv.At,
			Wall: time.Duration(float64(inv.At) / c.Speed),
			Exec: min(inv.Exec, execCap),
		})
	}
	return p, nil
}

func cmpOr[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

// funcName makes a valid function name (lowercase letters, digits, '-')
// from the prefix, the index and the start of the hash.
func funcName(prefix string, i int, hash string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(hash) {
		if b.Len() == 12 {
			break
		}
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' {
			b.WriteRune(r)
		}
	}
	name := fmt.Sprintf("%s%02d", prefix, i)
	if b.Len() > 0 {
		name += "-" + b.String()
	}
	return name
}

// Files returns the synthetic function's source tree: f.py,
// function.yaml and, when it imports packages, requirements.txt.
func (f Func) Files() map[string]string {
	var src strings.Builder
	src.WriteString(`# Synthetic function generated by hearth replay for trace function
# ` + f.Hash + `.
import time
`)
	for _, p := range f.Packages {
		src.WriteString("import " + importName[p] + "\n")
	}
	src.WriteString(`

def f(event):
    t0 = time.perf_counter()
    event = event or {}
    ms = float(event.get("ms", 0))
    mb = int(event.get("mb", 0))
    if mb > 0:
        # Write one byte per page so the memory is really touched
        # (a fresh bytearray is calloc'ed and may not be).
        buf = bytearray(mb << 20)
        buf[::4096] = b"\x01" * ((len(buf) + 4095) // 4096)
        del buf
    # Sleep out the rest rather than spin: on a small machine spinning
    # handlers would queue for the CPU and distort every latency.
    left = ms / 1000 - (time.perf_counter() - t0)
    if left > 0:
        time.sleep(left)
    return {"ms": ms, "mb": mb}
`)
	files := map[string]string{
		"f.py": src.String(),
		"function.yaml": fmt.Sprintf("memory_mb: %d\ntimeout_s: %d\nmax_concurrency: %d\n",
			f.MemoryMB, f.TimeoutS, f.Concurrency),
	}
	if len(f.Packages) > 0 {
		files["requirements.txt"] = strings.Join(f.Packages, "\n") + "\n"
	}
	return files
}

// Event returns the JSON event of a call to f running for exec.
func (f Func) Event(exec time.Duration) []byte {
	return fmt.Appendf(nil, `{"ms":%.3f,"mb":%d}`, float64(exec)/1e6, f.TouchMB)
}
