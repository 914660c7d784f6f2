package replay_test

import (
	"bufio"
	"context"
	"encoding/csv"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hearth-run/hearth/internal/bench"
	"github.com/hearth-run/hearth/internal/replay"
	"github.com/hearth-run/hearth/internal/trace"
)

// hearthBin is the hearth binary built by TestMain, or "" if the build
// failed (buildErr says why).
var hearthBin, buildErr = "", error(nil)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "hearth-replay-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	out, err := exec.Command("go", "build", "-o", dir+"/", "github.com/hearth-run/hearth/cmd/...").CombinedOutput()
	if err != nil {
		buildErr = fmt.Errorf("building hearth: %v\n%s", err, out)
	} else {
		hearthBin = filepath.Join(dir, "hearth")
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func baseImage(t *testing.T) string {
	t.Helper()
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	if os.Geteuid() != 0 {
		t.Fatal("the live replay test runs a real worker and needs root")
	}
	base := os.Getenv("HEARTH_TEST_BASE")
	if base == "" {
		base = "/var/lib/hearth/base"
	}
	if _, err := os.Stat(filepath.Join(base, "usr/bin/python3")); err != nil {
		t.Fatalf("base image %s: %v (set HEARTH_TEST_BASE)", base, err)
	}
	return base
}

// metricPaths reads hearth_invocations_total from the worker's /metrics
// and sums it by path over statuses.
func metricPaths(t *testing.T, url, token string) map[string]int {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url+"/metrics", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %s", resp.Status)
	}
	defer resp.Body.Close()
	m := map[string]int{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "hearth_invocations_total{") {
			continue
		}
		labels, val, _ := strings.Cut(line[len("hearth_invocations_total{"):], "} ")
		path := ""
		for _, kv := range strings.Split(labels, ",") {
			if k, v, _ := strings.Cut(kv, "="); k == "path" {
				path = strings.Trim(v, `"`)
			}
		}
		n, err := strconv.ParseFloat(val, 64)
		if err != nil {
			t.Fatalf("metric line %q: %v", line, err)
		}
		m[path] += int(n)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return m
}

// TestReplayLive replays 12 trace minutes of three functions at 72x
// against a real worker and checks the CSV and the start paths against the
// worker's own counters.
func TestReplayLive(t *testing.T) {
	base := baseImage(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	// Three functions of 2, 1 and 0.33 calls/min with short
	// execution times, so the test is quick.
	full, err := trace.LoadAzure2019(traceDir)
	if err != nil {
		t.Fatal(err)
	}
	sel, err := full.Select(hashesByPrefix(t, full, "91af80a966", "a83ddb3654", "52dd9c592f")...)
	if err != nil {
		t.Fatal(err)
	}
	win, err := sel.Window(480, 492)
	if err != nil {
		t.Fatal(err)
	}
	pop, err := replay.ParsePopularity("none=1,numpy=1")
	if err != nil {
		t.Fatal(err)
	}
	plan, err := replay.NewPlan(win, replay.PlanConfig{Speed: 72, Seed: 3, Arrival: trace.Exponential,
		Popularity: pop, MemCapMB: 16, ExecCap: 300 * time.Millisecond, Prefix: "rt-"})
	if err != nil {
		t.Fatal(err)
	}
	if len(plan.Calls) != 40 {
		t.Fatalf("%d calls scheduled, want the window's 40", len(plan.Calls))
	}

	w, err := bench.StartWorker(ctx, hearthBin, base)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := w.Stop(); err != nil {
			t.Error(err)
		}
	}()
	if err := replay.Deploy(ctx, w.Client, plan); err != nil {
		t.Fatal(err)
	}
	res, err := replay.Run(ctx, w.Client, plan, replay.Options{MaxInFlight: 16})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d calls over %v: %s", len(plan.Calls), plan.Duration(), res.Stats)

	dir := t.TempDir()
	f, err := os.Create(filepath.Join(dir, "calls.csv"))
	if err != nil {
		t.Fatal(err)
	}
	if err := replay.WriteCSV(f, plan, res.Records); err != nil {
		t.Fatal(err)
	}
	f.Close()
	rf, err := os.Open(filepath.Join(dir, "calls.csv"))
	if err != nil {
		t.Fatal(err)
	}
	defer rf.Close()
	rows, err := csv.NewReader(rf).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if got, want := len(rows)-1, len(plan.Calls); got != want {
		t.Fatalf("csv has %d rows, want one per scheduled call: %d", got, want)
	}
	col := map[string]int{}
	for i, h := range rows[0] {
		col[h] = i
	}
	csvPaths := map[string]int{}
	perFunc := map[string]int{}
	for _, row := range rows[1:] {
		if row[col["status"]] != "200" {
			t.Errorf("call failed: %v", row)
		}
		p := row[col["path"]]
		if p == "" {
			p = "none"
		}
		csvPaths[p]++
		perFunc[row[col["function"]]]++
	}
	for _, c := range plan.Calls {
		perFunc[plan.Funcs[c.Func].Name]--
	}
	for name, n := range perFunc {
		if n != 0 {
			t.Errorf("function %s: csv rows minus scheduled calls = %d", name, n)
		}
	}
	metrics := metricPaths(t, w.URL, w.Token)
	if fmt.Sprint(metrics) != fmt.Sprint(csvPaths) {
		t.Errorf("start paths: csv %v, worker metrics %v", csvPaths, metrics)
	}
	if csvPaths["warm"] == 0 || csvPaths["warm"] == len(plan.Calls) {
		t.Errorf("want both warm and non-warm starts, got %v", csvPaths)
	}
	var sb strings.Builder
	if err := replay.WriteSummary(&sb, res); err != nil {
		t.Fatal(err)
	}
	t.Log("\n" + sb.String())
	sums := replay.Summarize(plan, res.Records)
	total := 0
	for _, s := range sums {
		total += s.N
		if s.ColdPath < 1 {
			t.Errorf("%s: %d cold starts by path; its first call must start cold", s.Name, s.ColdPath)
		}
	}
	if total != len(plan.Calls) {
		t.Errorf("summaries count %d calls, want %d", total, len(plan.Calls))
	}
	files, err := replay.Plot(dir, res)
	if d := os.Getenv("HEARTH_REPLAY_KEEP"); d != "" {
		replay.Plot(d, res) // for looking at the figures by hand
	}
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != len(plan.Funcs)+1 {
		t.Errorf("plots: %v", files)
	}
	for _, f := range files {
		if st, err := os.Stat(f); err != nil || st.Size() < 1000 {
			t.Errorf("plot %s: %v", f, err)
		}
	}
	if err := replay.Remove(ctx, w.Client, plan); err != nil {
		t.Error(err)
	}
}

// traceDir is the shared 2019 excerpt, relative to this package.
const traceDir = "../../../shared/data/azure2019/sample100-min480-959"

// hashesByPrefix returns the full hashes of t's functions that start with
// each prefix, failing unless each matches exactly one.
func hashesByPrefix(t *testing.T, tr *trace.Trace, prefixes ...string) []string {
	t.Helper()
	var out []string
	for _, pre := range prefixes {
		var m []string
		for _, f := range tr.Functions {
			if strings.HasPrefix(f.Hash, pre) {
				m = append(m, f.Hash)
			}
		}
		if len(m) != 1 {
			t.Fatalf("prefix %s matches %d functions", pre, len(m))
		}
		out = append(out, m...)
	}
	return out
}
