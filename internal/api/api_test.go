package api_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/hearth-run/hearth/api/types"
	"github.com/hearth-run/hearth/internal/api"
	"github.com/hearth-run/hearth/internal/client"
	"github.com/hearth-run/hearth/internal/function"
	"github.com/hearth-run/hearth/internal/packages"
	"github.com/hearth-run/hearth/internal/registry"
	"github.com/hearth-run/hearth/internal/worker"
	"github.com/hearth-run/hearth/internal/zygote"
)

// The fakes answer with fixed values and errors: these tests are about
// the HTTP layer (routes, bodies, status codes, redaction), which needs
// no sandbox.

type fakeRegistry struct {
	fn       registry.Function
	err      error  // returned by every call when set
	deployed []byte // the last archive Deploy got
}

func (r *fakeRegistry) Deploy(ctx context.Context, name string, src registry.Source) (registry.Function, error) {
	b, _ := io.ReadAll(io.NewSectionReader(src.Archive, 0, src.Size))
	r.deployed = b
	if r.err != nil {
		return registry.Function{}, r.err
	}
	fn := r.fn
	fn.Name = name
	return fn, nil
}

func (r *fakeRegistry) Get(name string) (registry.Function, error) {
	if r.err != nil || name != r.fn.Name {
		return registry.Function{}, fmt.Errorf("function %s: %w", name, registry.ErrNotFound)
	}
	return r.fn, nil
}

func (r *fakeRegistry) List() ([]registry.Function, error) { return []registry.Function{r.fn}, r.err }
func (r *fakeRegistry) Delete(name string) error           { return r.err }

type fakeWorker struct {
	res     worker.Result
	err     error
	status  worker.Status
	tail    worker.LogTail
	nodes   []zygote.NodeInfo
	snaps   []worker.SnapshotInfo
	metrics *worker.Metrics
	retired []string
}

func (w *fakeWorker) Invoke(ctx context.Context, name string, event []byte) (worker.Result, error) {
	return w.res, w.err
}
func (w *fakeWorker) Retire(name, keep string)                             { w.retired = append(w.retired, name+"@"+keep) }
func (w *fakeWorker) Logs(name string, n int, since uint64) worker.LogTail { return w.tail }
func (w *fakeWorker) Status() worker.Status                                { return w.status }
func (w *fakeWorker) Metrics() *worker.Metrics                             { return w.metrics }
func (w *fakeWorker) Zygotes() []zygote.NodeInfo                           { return w.nodes }
func (w *fakeWorker) Snapshots() []worker.SnapshotInfo                     { return w.snaps }
func (w *fakeWorker) CreateSnapshot(ctx context.Context, name string) (worker.SnapshotInfo, error) {
	return w.snaps[0], w.err
}
func (w *fakeWorker) RemoveSnapshot(key string) error { return w.err }

type fakePackages []packages.Entry

func (p fakePackages) List() ([]packages.Entry, error) { return p, nil }

var when = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// serve serves the API on the fakes; it returns a client and the URL.
func serve(t *testing.T, cfg api.Config, reg *fakeRegistry, wk *fakeWorker) (*client.Client, string) {
	t.Helper()
	if wk.metrics == nil {
		wk.metrics = &worker.Metrics{Registry: prometheus.NewRegistry()}
	}
	if cfg.TempDir == "" {
		cfg.TempDir = t.TempDir()
	}
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	srv := httptest.NewServer(api.New(cfg, reg, wk))
	t.Cleanup(srv.Close)
	return client.New(srv.URL, cfg.Token), srv.URL
}

// TestClientReadsWhatTheAPIWrites runs every management route through
// the client: what the server's values become on the wire is what the
// client decodes (host paths excepted).
func TestClientReadsWhatTheAPIWrites(t *testing.T) {
	fn := registry.Function{
		Name: "fn", Revision: strings.Repeat("ab", 32), CodeDir: "/srv/hearth/functions/fn",
		Spec:     function.Spec{Handler: "f.handler", MemoryMB: 128, TimeoutS: 3, Env: map[string]string{"A": "b"}},
		Packages: []function.Package{{Name: "numpy", Version: "2.1.0"}, {Name: "six", Version: "1.16.0", Base: true}},
		Size:     10, Files: 1, DeployedAt: when, Warnings: []string{"ol.yaml: limits.procs"},
	}
	wk := &fakeWorker{
		status: worker.Status{CgroupMode: "v1", Tiers: worker.Tiers{Warm: true, SnapshotsOff: "no CRIU"},
			Sandboxes: []worker.SandboxInfo{{ID: "sb-1", Function: "fn", State: "paused", Memory: 5, Pids: []int{7}}},
			Pools:     []worker.PoolStatus{{Name: "all", Capacity: 1 << 30, Hits: 3}}},
		tail:  worker.LogTail{Epoch: "e1", Lines: []worker.LogLine{{Seq: 1, Time: when, Stream: "stdout", Text: "hi"}}, Next: 2, Limit: 100},
		nodes: []zygote.NodeInfo{{ID: 0, Parent: -1, Packages: []string{}, Modules: []string{"json"}, Pids: []int{9}, Spares: 2}},
		snaps: []worker.SnapshotInfo{{Key: "k1", Function: "fn", Bytes: 42, Created: when, Local: true}},
	}
	pk := fakePackages{{Package: function.Package{Name: "numpy", Version: "2.1.0"}, Dir: "/srv/hearth/packages/numpy-2.1.0", Size: 99, Installed: when, LastUse: when, Users: []string{"fn"}}}
	reg := &fakeRegistry{fn: fn}
	c, url := serve(t, api.Config{Packages: pk}, reg, wk)
	ctx := context.Background()

	// What a client gets back: no host path, and no env values (the
	// API sends the keys only, in spec.env_keys).
	public := fn
	public.CodeDir = ""
	public.Spec.Env = nil
	got, err := c.Deploy(ctx, "fn", strings.NewReader("archive bytes"))
	if err != nil || !reflect.DeepEqual(got, public) || string(reg.deployed) != "archive bytes" {
		t.Errorf("Deploy = %+v, %v (archive %q); want %+v", got, err, reg.deployed, public)
	}
	if !reflect.DeepEqual(wk.retired, []string{"fn@" + fn.Revision}) {
		t.Errorf("Deploy retired %v, want the older revisions of fn", wk.retired)
	}
	if got, err := c.Get(ctx, "fn"); err != nil || !reflect.DeepEqual(got, public) {
		t.Errorf("Get = %+v, %v", got, err)
	}
	if got, err := c.List(ctx); err != nil || !reflect.DeepEqual(got, []types.Function{public}) {
		t.Errorf("List = %+v, %v", got, err)
	}
	if got, err := c.Status(ctx); err != nil || !reflect.DeepEqual(got, wk.status) {
		t.Errorf("Status = %+v, %v; want %+v", got, err, wk.status)
	}
	if got, err := c.Logs(ctx, "fn", 10, 0); err != nil || !reflect.DeepEqual(got, wk.tail) {
		t.Errorf("Logs = %+v, %v; want %+v", got, err, wk.tail)
	}
	if got, err := c.Zygotes(ctx); err != nil || !got.Enabled || !reflect.DeepEqual(got.Nodes, wk.nodes) {
		t.Errorf("Zygotes = %+v, %v", got, err)
	}
	wantPk := types.PackageList{Enabled: true, Packages: []types.PackageInfo{{Package: pk[0].Package, Size: 99, Installed: when, LastUse: when, Users: []string{"fn"}}}}
	if got, err := c.Packages(ctx); err != nil || !reflect.DeepEqual(got, wantPk) {
		t.Errorf("Packages = %+v, %v; want %+v", got, err, wantPk)
	}
	var snaps types.SnapshotList
	getJSON(t, url+"/v1/snapshots", &snaps)
	wantSnaps := types.SnapshotList{Off: "no CRIU", Snapshots: []types.Snapshot{types.Snapshot(wk.snaps[0])}}
	if !reflect.DeepEqual(snaps, wantSnaps) {
		t.Errorf("snapshots = %+v, want %+v", snaps, wantSnaps)
	}
}

// getJSON decodes the answer to GET url (a route the client has no call
// for).
func getJSON(t *testing.T, url string, out any) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", url, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
}

// TestErrorsMapToStatus checks the error classes' status codes and error
// types, as a client sees them, and that host paths stay out of messages.
func TestErrorsMapToStatus(t *testing.T) {
	for _, tt := range []struct {
		err    error
		code   int
		typ    string
		header string // Retry-After
	}{
		{fmt.Errorf("function x: %w", worker.ErrNotFound), 404, "NotFound", ""},
		{worker.ErrTooMany, 429, "TooManyRequests", ""},
		{worker.ErrTimeout, 504, "Timeout", ""},
		{worker.ErrOOM, 502, "OutOfMemory", ""},
		{fmt.Errorf("start in /srv/hearth/sandboxes/sb-1: %w", worker.ErrStart), 502, "SandboxError", ""},
		{worker.ErrDrop, 503, "PoolFull", "1"},
		{worker.ErrClosed, 503, "ShuttingDown", "1"},
		{worker.ErrMemoryTooLarge, 422, "MemoryTooLarge", ""},
		{errors.New("disk on fire at /srv/hearth/x"), 500, "InternalError", ""},
	} {
		t.Run(tt.typ, func(t *testing.T) {
			c, _ := serve(t, api.Config{HostPaths: []string{"/srv/hearth"}}, &fakeRegistry{}, &fakeWorker{err: tt.err})
			_, err := c.Invoke(context.Background(), "x", []byte(`{}`))
			var e *client.Error
			if !errors.As(err, &e) || e.Status != tt.code || e.Type != tt.typ {
				t.Fatalf("Invoke error %v; want %d %s", err, tt.code, tt.typ)
			}
			if strings.Contains(e.Message, "/srv/hearth") || !strings.Contains(string(e.Body), `"errorMessage"`) {
				t.Errorf("body %s: want an error body without host paths", e.Body)
			}
		})
	}
	t.Run("deploy of bad code is 400", func(t *testing.T) {
		reg := &fakeRegistry{err: fmt.Errorf("deploying x: %w", fmt.Errorf("%w: %w", registry.ErrInvalid, packages.ErrResolve))}
		c, _ := serve(t, api.Config{}, reg, &fakeWorker{})
		_, err := c.Deploy(context.Background(), "x", strings.NewReader("x"))
		var e *client.Error
		if !errors.As(err, &e) || e.Status != 400 || e.Type != "InvalidDeploy" {
			t.Fatalf("Deploy error %v; want 400 InvalidDeploy", err)
		}
	})
}

func TestBadRequests(t *testing.T) {
	c, url := serve(t, api.Config{Token: "s3cret"}, &fakeRegistry{fn: registry.Function{Name: "x"}}, &fakeWorker{})
	ctx := context.Background()
	var e *client.Error
	if _, err := c.Invoke(ctx, "x", []byte(`{not json`)); !errors.As(err, &e) || e.Status != 400 || e.Type != "InvalidRequestContent" {
		t.Errorf("Invoke with bad JSON: %v; want 400 InvalidRequestContent", err)
	}
	bad := client.New(url, "wrong")
	if _, err := bad.Status(ctx); !errors.As(err, &e) || e.Status != 401 || e.Type != "unauthorized" {
		t.Errorf("Status with a wrong token: %v; want 401", err)
	}
	if _, err := c.Logs(ctx, "x", -1, 0); !errors.As(err, &e) || e.Status != 400 {
		t.Errorf("Logs with n=-1: %v; want 400", err)
	}
}
