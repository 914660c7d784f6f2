package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"
)

// SocketFn makes one internet socket, which gives its sandbox its
// network if it waits for its first (its round trip to the worker is
// not timed), then times "n" more, made and closed one after the other,
// and returns the mean per socket.
var SocketFn = map[string]string{"f.py": `import socket, time

def f(event):
    n = int(event.get("n", 50))
    socket.socket(socket.AF_INET, socket.SOCK_DGRAM).close()
    t0 = time.perf_counter_ns()
    for _ in range(n):
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM).close()
    return {"ns": (time.perf_counter_ns() - t0) // n}
`}

// NetworkOptions configures Network.
type NetworkOptions struct {
	Hearth string // the hearth binary
	Base   string // the base image
	N      int    // sandboxes per method
	Out    io.Writer
}

// Sockets made per call: a few, within the burst the worker answers a
// filtered sandbox at once (the round trip), and many, past it (the
// bound of 2000 a second).
var networkSockets = []int{50, 2000}

// Network measures what an internet socket costs a forked sandbox of an
// isolated function: under the network filter, where each socket is a
// round trip to the worker (a function's sandboxes until one has used the
// network), and in a sandbox with its network from the start (those of a
// function that has: forked on demand, or from a spare of their kind).
// Every call gets a new sandbox. The filtered ones are each a new
// function's first; the others are one function's, after a first call.
func Network(ctx context.Context, o NetworkOptions) ([]Sample, error) {
	if o.N <= 0 {
		o.N = 20
	}
	samples, used, err := perStart(ctx, o)
	if err != nil {
		return nil, err
	}
	warm, retired, err := warmCalls(ctx, o)
	if err != nil {
		return nil, err
	}
	samples = append(samples, warm...)
	if o.Out != nil {
		fmt.Fprintf(o.Out, "hearth bench network: %d sandboxes per method, each a fork start of its own, then %d calls of\n", o.N, warmCallsN)
		fmt.Fprintf(o.Out, "one function kept warm; the mean time a sandbox of an isolated function takes to make and close an internet socket\n\n")
		width := 0
		for _, s := range samples {
			width = max(width, len(s.Name))
		}
		fmt.Fprintf(o.Out, "%-*s %6s %10s %10s\n", width, "method", "n", "p50 us", "p99 us")
		for _, s := range samples {
			fmt.Fprintf(o.Out, "%-*s %6d %10.2f %10.2f\n", width, s.Name, len(s.D), us(s.P50()), us(s.P99()))
		}
		fmt.Fprintln(o.Out)
		for i := 0; i+1 < len(samples); i += 2 {
			a, b := samples[i], samples[i+1]
			if a.P50() > 0 && b.P50() > 0 {
				fmt.Fprintf(o.Out, "p50 %s / %s = %.2fx\n", a.Name, b.Name, float64(a.P50())/float64(b.P50()))
			}
		}
		fmt.Fprintf(o.Out, "\n%s\n%s\n", used, retired)
	}
	return samples, nil
}

// perStart measures new sandboxes, one per call.
func perStart(ctx context.Context, o NetworkOptions) ([]Sample, string, error) {
	// A subnet of its own: its sandboxes get veth pairs, which would
	// clash with those of a worker on the default one.
	w, err := StartWorker(ctx, o.Hearth, o.Base, "--no-warm-cache", "--no-snapshots", "--netns-subnet", "10.251.0.0/16")
	if err != nil {
		return nil, "", err
	}
	defer w.Stop()
	call := func(fn string, n int) (time.Duration, error) {
		inv, err := w.Client.Invoke(ctx, fn, fmt.Appendf(nil, `{"n": %d}`, n))
		if err != nil {
			return 0, fmt.Errorf("%s: %w", fn, err)
		}
		if inv.Path != "fork" {
			return 0, fmt.Errorf("%s: path %q, want a fork (no zygotes on this host?)", fn, inv.Path)
		}
		var r struct{ NS int64 }
		if err := json.Unmarshal(inv.Body, &r); err != nil || r.NS <= 0 {
			return 0, fmt.Errorf("%s: answer %q", fn, inv.Body)
		}
		return time.Duration(r.NS), nil
	}
	if err := w.Deploy(ctx, "used", SocketFn); err != nil {
		return nil, "", err
	}
	if _, err := call("used", 1); err != nil { // it has used the network
		return nil, "", err
	}
	var samples []Sample
	fromSpares := 0 // of the used function's sandboxes
	for _, n := range networkSockets {
		filtered := Sample{Name: fmt.Sprintf("%d sockets, under the filter", n)}
		used := Sample{Name: fmt.Sprintf("%d sockets, network at start", n)}
		for i := range o.N {
			// Interleaved, so that a change in the host's load weighs on
			// both alike.
			fn := fmt.Sprintf("new-%d-%d", n, i)
			if err := w.Deploy(ctx, fn, SocketFn); err != nil {
				return nil, "", err
			}
			d, err := call(fn, n)
			if err != nil {
				return nil, "", err
			}
			filtered.D = append(filtered.D, d)
			time.Sleep(settle)
			before, err := w.Metric(ctx, "hearth_spare_starts_total")
			if err != nil {
				return nil, "", err
			}
			if d, err = call("used", n); err != nil {
				return nil, "", err
			}
			used.D = append(used.D, d)
			after, err := w.Metric(ctx, "hearth_spare_starts_total")
			if err != nil {
				return nil, "", err
			}
			fromSpares += int(after - before)
			time.Sleep(settle)
		}
		samples = append(samples, filtered, used)
	}
	attached, err := w.Metric(ctx, `hearth_network_first_socket_total{result="attached"}`)
	if err != nil {
		return nil, "", err
	}
	starts := len(networkSockets) * o.N
	// Each new function's sandbox, and the used one's first, got its
	// network at its first socket; any more did too, under the filter.
	return samples, fmt.Sprintf("the used function's %d sandboxes: %d from spares, the rest forked on demand; under the filter: %.0f",
		starts, fromSpares, attached-float64(starts)-1), nil
}

// warmCallsN calls are made to one function kept warm, warmSockets
// sockets each.
const (
	warmCallsN   = 12
	warmSockets  = 300
	warmCallsGap = 200 * time.Millisecond
)

// warmCalls measures one function's warm sandbox: its first, under the
// filter, until the worker replaces it (its sockets' round trips came to
// a start's cost), then the one without the filter that replaced it.
func warmCalls(ctx context.Context, o NetworkOptions) ([]Sample, string, error) {
	w, err := StartWorker(ctx, o.Hearth, o.Base, "--no-snapshots", "--netns-subnet", "10.252.0.0/16")
	if err != nil {
		return nil, "", err
	}
	defer w.Stop()
	if err := w.Deploy(ctx, "warm", SocketFn); err != nil {
		return nil, "", err
	}
	filtered := Sample{Name: fmt.Sprintf("%d sockets a warm call, under the filter", warmSockets)}
	after := Sample{Name: fmt.Sprintf("%d sockets a warm call, after its replacement", warmSockets)}
	var paths []string
	for i := range warmCallsN {
		inv, err := w.Client.Invoke(ctx, "warm", fmt.Appendf(nil, `{"n": %d}`, warmSockets))
		if err != nil {
			return nil, "", fmt.Errorf("warm: %w", err)
		}
		var r struct{ NS int64 }
		if err := json.Unmarshal(inv.Body, &r); err != nil || r.NS <= 0 {
			return nil, "", fmt.Errorf("warm: answer %q", inv.Body)
		}
		paths = append(paths, inv.Path)
		// The first sandbox serves until a call takes a new one.
		if i == 0 || (len(after.D) == 0 && inv.Path == "warm") {
			filtered.D = append(filtered.D, time.Duration(r.NS))
		} else {
			after.D = append(after.D, time.Duration(r.NS))
		}
		time.Sleep(warmCallsGap)
	}
	retired, err := w.Metric(ctx, "hearth_network_filter_retired_total")
	if err != nil {
		return nil, "", err
	}
	return []Sample{filtered, after}, fmt.Sprintf("the warm function's calls took paths %s; sandboxes retired for their filter: %.0f",
		strings.Join(paths, " "), retired), nil
}

func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
