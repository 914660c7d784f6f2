// Package api is Hearth's HTTP API, on the standard library's net/http.
//
// Every endpoint but /healthz needs the bearer token (Config.Token; the
// worker makes one at its first start, see LoadOrCreateToken); invoke
// endpoints can be opened to anyone (Config.OpenInvoke), as they are on a
// public FaaS gateway, so every route but /healthz is bounded (Limits): its
// body, its client address's requests in flight, its response's write
// time; HTTPServer and LimitListener bound the rest (header and read
// timeouts, connections in total and per address). Errors are mapped to
// status codes in one place, status.
package api

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/hearth-run/hearth/api/types"
	"github.com/hearth-run/hearth/internal/archive"
	"github.com/hearth-run/hearth/internal/function"
	"github.com/hearth-run/hearth/internal/packages"
	"github.com/hearth-run/hearth/internal/registry"
	"github.com/hearth-run/hearth/internal/snapshot"
	"github.com/hearth-run/hearth/internal/worker"
	"github.com/hearth-run/hearth/internal/zygote"
)

// Registry is what the API needs of the function registry.
type Registry interface {
	Deploy(ctx context.Context, name string, src registry.Source) (registry.Function, error)
	Get(name string) (registry.Function, error)
	List() ([]registry.Function, error)
	Delete(name string) error
}

// Worker is what the API needs of the worker.
type Worker interface {
	Invoke(ctx context.Context, name string, event []byte) (worker.Result, error)
	Retire(name, keep string)
	Logs(name string, n int, since uint64) worker.LogTail
	Status() worker.Status
	Metrics() *worker.Metrics
	Zygotes() []zygote.NodeInfo
	// Snapshots lists the local snapshots (nil when snapshots are off);
	// CreateSnapshot snapshots a function now.
	Snapshots() []worker.SnapshotInfo
	CreateSnapshot(ctx context.Context, name string) (worker.SnapshotInfo, error)
	// RemoveSnapshot deletes a snapshot from the local cache.
	RemoveSnapshot(key string) error
}

// Config configures the API. Zero values mean the defaults.
type Config struct {
	// Token, if set, is required as "Authorization: Bearer TOKEN" on
	// every endpoint but /healthz (and the invoke endpoints with
	// OpenInvoke). Empty switches authentication off: only for tests; a
	// worker always has one.
	Token string
	// OpenInvoke serves the invoke endpoints without the token.
	OpenInvoke bool
	// MaxBody bounds invoke request and response bodies (default 6 MB).
	MaxBody int64
	// MaxArchive bounds a deployed archive (default 50 MB).
	MaxArchive int64
	// TempDir receives uploads while they are checked (default os.TempDir()).
	TempDir string
	// Logger (default slog.Default()).
	Logger *slog.Logger
	// Packages, if set, is the worker's package install cache, which
	// GET /v1/packages lists; nil when the cache is off.
	Packages Packages
	// HostPaths are host directories and files (the data dir, the base
	// image, the binaries) whose paths the API keeps out of its
	// responses: error messages and log lines name them as "[worker
	// path]", and the worker's log gets the full error. TempDir is
	// always one.
	HostPaths []string
	// Limits bound clients' connections, requests and timeouts; New
	// applies their defaults. Serve the handler with HTTPServer on a
	// LimitListener with the same Limits (see Server.Limits).
	Limits Limits
}

// Packages is what the API needs of the package install cache.
type Packages interface {
	List() ([]packages.Entry, error)
}

func publicFunction(fn registry.Function) types.FunctionInfo {
	spec := fn.Spec
	keys := slices.Sorted(maps.Keys(spec.Env))
	spec.Env = nil
	return types.FunctionInfo{Function: fn, Spec: types.PublicSpec{Spec: spec, EnvKeys: keys}}
}

// Server serves the API.
type Server struct {
	cfg Config
	reg Registry
	wk  Worker
	mux *http.ServeMux
	red redactor
	// requests counts each client address's requests in flight.
	requests ipCounter
}

// Limits returns the server's limits, defaults applied.
func (s *Server) Limits() Limits { return s.cfg.Limits }

// New returns the API handler.
func New(cfg Config, reg Registry, wk Worker) *Server {
	if cfg.MaxBody <= 0 {
		cfg.MaxBody = 6 << 20
	}
	if cfg.MaxArchive <= 0 {
		cfg.MaxArchive = 50 << 20
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	cfg.Limits = cfg.Limits.WithDefaults()
	s := &Server{cfg: cfg, reg: reg, wk: wk, mux: http.NewServeMux(),
		red:      newRedactor(append(slices.Clone(cfg.HostPaths), cfg.TempDir)),
		requests: ipCounter{max: cfg.Limits.MaxRequestsPerIP}}
	// Every route but /healthz is bounded (see bounded): the body by
	// what the route takes, none but a small one for most.
	small := func(h http.HandlerFunc) http.HandlerFunc { return s.bounded(maxSmallBody, h) }
	s.mux.HandleFunc("PUT /v1/functions/{name}", s.bounded(cfg.MaxArchive, s.auth(s.deploy)))
	s.mux.HandleFunc("GET /v1/functions", small(s.auth(s.list)))
	s.mux.HandleFunc("GET /v1/functions/{name}", small(s.auth(s.get)))
	s.mux.HandleFunc("DELETE /v1/functions/{name}", small(s.auth(s.delete)))
	s.mux.HandleFunc("GET /v1/functions/{name}/logs", small(s.auth(s.logs)))
	invoke := s.auth(s.invoke)
	if cfg.OpenInvoke {
		invoke = s.invoke
	}
	s.mux.HandleFunc("POST /v1/functions/{name}/invoke", s.bounded(cfg.MaxBody, invoke))
	s.mux.HandleFunc("POST /run/{name}", s.bounded(cfg.MaxBody, invoke))
	s.mux.HandleFunc("GET /v1/status", small(s.auth(s.status)))
	s.mux.HandleFunc("GET /v1/zygotes", small(s.auth(func(w http.ResponseWriter, r *http.Request) {
		nodes := s.wk.Zygotes()
		enabled := len(nodes) > 0 // the root exists whenever zygotes are on
		if nodes == nil {
			nodes = []zygote.NodeInfo{}
		}
		writeJSON(w, http.StatusOK, types.ZygoteTree{Enabled: enabled, Nodes: nodes})
	})))
	s.mux.HandleFunc("GET /v1/packages", small(s.auth(s.packages)))
	s.mux.HandleFunc("GET /v1/snapshots", small(s.auth(s.snapshots)))
	s.mux.HandleFunc("POST /v1/functions/{name}/snapshot", small(s.auth(s.createSnapshot)))
	s.mux.HandleFunc("DELETE /v1/snapshots/{key}", small(s.auth(func(w http.ResponseWriter, r *http.Request) {
		if err := s.wk.RemoveSnapshot(r.PathValue("key")); err != nil {
			s.fail(w, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})))
	s.mux.Handle("GET /metrics", small(s.auth(promhttp.HandlerFor(wk.Metrics().Registry, promhttp.HandlerOpts{}).ServeHTTP)))
	// Unbounded: a liveness probe must get through whatever clients hold.
	s.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok\n")
	})
	return s
}

// Handle serves pattern with h, bounded as the API's own routes are (its
// body to maxBody, its client's requests in flight, its write time); with
// auth, behind the management endpoints' bearer token. It is how the
// worker mounts other APIs on the same port (the Lambda API).
func (s *Server) Handle(pattern string, maxBody int64, auth bool, h http.Handler) {
	f := h.ServeHTTP
	if auth {
		f = s.auth(f)
	}
	s.mux.HandleFunc(pattern, s.bounded(maxBody, f))
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

func (s *Server) auth(h http.HandlerFunc) http.HandlerFunc {
	if s.cfg.Token == "" {
		return h
	}
	want := []byte("Bearer " + s.cfg.Token)
	return func(w http.ResponseWriter, r *http.Request) {
		if subtle.ConstantTimeCompare([]byte(r.Header.Get("Authorization")), want) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="hearth"`)
			s.writeError(w, http.StatusUnauthorized, "unauthorized", "missing or wrong bearer token")
			return
		}
		h(w, r)
	}
}

func (s *Server) deploy(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	f, err := os.CreateTemp(s.cfg.TempDir, "hearth-upload-*")
	if err != nil {
		s.fail(w, err)
		return
	}
	defer os.Remove(f.Name())
	defer f.Close()
	n, err := io.Copy(f, io.LimitReader(r.Body, s.cfg.MaxArchive+1))
	if err != nil {
		s.bodyError(w, "archive", "TooLarge", err)
		return
	}
	if n > s.cfg.MaxArchive {
		s.writeError(w, http.StatusRequestEntityTooLarge, "TooLarge",
			fmt.Sprintf("archive larger than %d bytes", s.cfg.MaxArchive))
		return
	}
	fn, err := s.reg.Deploy(r.Context(), name, registry.Source{Archive: f, Size: n})
	if err != nil {
		// Every failed deploy is in the log, the caller's mistakes too:
		// the worker's operator sees why a deploy did not take.
		code, typ := status(err)
		s.cfg.Logger.Warn("deploy failed", "function", name, "status", code, "err", err)
		s.writeFailure(w, code, typ, err)
		return
	}
	s.wk.Retire(fn.Name, fn.Revision)
	if len(fn.Warnings) > 0 {
		s.cfg.Logger.Info("deployed", "function", fn.Name, "revision", fn.Revision, "warnings", fn.Warnings)
	} else {
		s.cfg.Logger.Info("deployed", "function", fn.Name, "revision", fn.Revision)
	}
	writeJSON(w, http.StatusOK, publicFunction(fn))
}

func (s *Server) list(w http.ResponseWriter, r *http.Request) {
	fns, err := s.reg.List()
	if err != nil {
		s.fail(w, err)
		return
	}
	out := make([]types.FunctionInfo, 0, len(fns))
	for _, fn := range fns {
		out = append(out, publicFunction(fn))
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) get(w http.ResponseWriter, r *http.Request) {
	fn, err := s.reg.Get(r.PathValue("name"))
	if err != nil {
		s.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, publicFunction(fn))
}

func (s *Server) delete(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if err := s.reg.Delete(name); err != nil {
		s.fail(w, err)
		return
	}
	s.wk.Retire(name, "")
	w.WriteHeader(http.StatusNoContent)
}

// logs answers a slice of a function's log: ?n= lines (default 100, 0
// for all the worker keeps), the newest, or with ?since=SEQ the first
// from that line on. The answer says how many older lines were left out
// or dropped, and the since that follows it (worker.LogTail).
func (s *Server) logs(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if _, err := s.reg.Get(name); err != nil {
		s.fail(w, err)
		return
	}
	q := r.URL.Query()
	n := 100
	if v := q.Get("n"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 0 {
			s.writeError(w, http.StatusBadRequest, "BadRequest", "n must be a non-negative integer")
			return
		}
	}
	var since uint64
	if v := q.Get("since"); v != "" {
		var err error
		if since, err = strconv.ParseUint(v, 10, 64); err != nil {
			s.writeError(w, http.StatusBadRequest, "BadRequest", "since must be a non-negative integer (a line's seq)")
			return
		}
	}
	// The worker's own lines in a function's log (a zygote child's
	// failure to join its sandbox) may name host paths.
	tail := s.wk.Logs(name, n, since)
	for i := range tail.Lines {
		tail.Lines[i].Text = s.red.redact(tail.Lines[i].Text)
	}
	writeJSON(w, http.StatusOK, types.FunctionLog{Function: name, LogTail: tail})
}

// packages answers {"enabled": bool, "packages": [...]}: this worker's
// install cache, wherever its data dir is.
func (s *Server) packages(w http.ResponseWriter, r *http.Request) {
	l := []types.PackageInfo{}
	if s.cfg.Packages != nil {
		ents, err := s.cfg.Packages.List()
		if err != nil {
			s.fail(w, err)
			return
		}
		for _, e := range ents {
			users := e.Users
			if users == nil {
				users = []string{}
			}
			l = append(l, types.PackageInfo{Package: e.Package, Size: e.Size, Installed: e.Installed, LastUse: e.LastUse, Users: users})
		}
	}
	writeJSON(w, http.StatusOK, types.PackageList{Enabled: s.cfg.Packages != nil, Packages: l})
}

// snapshots answers {"enabled": bool, "snapshots": [...]}.
func (s *Server) snapshots(w http.ResponseWriter, r *http.Request) {
	tiers := s.wk.Status().Tiers
	l := types.SnapshotList{Enabled: tiers.Snapshots, Off: tiers.SnapshotsOff, Snapshots: []types.Snapshot{}}
	for _, info := range s.wk.Snapshots() {
		l.Snapshots = append(l.Snapshots, types.Snapshot(info))
	}
	writeJSON(w, http.StatusOK, l)
}

// createSnapshot snapshots a function now and answers when the snapshot
// is stored (and uploaded, with a remote store).
func (s *Server) createSnapshot(w http.ResponseWriter, r *http.Request) {
	info, err := s.wk.CreateSnapshot(r.Context(), r.PathValue("name"))
	if err != nil {
		s.fail(w, err)
		return
	}
	s.cfg.Logger.Info("snapshot created", "function", info.Function, "key", info.Key)
	writeJSON(w, http.StatusOK, types.Snapshot(info))
}

func (s *Server) status(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, s.wk.Status())
}

func (s *Server) invoke(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, s.cfg.MaxBody+1))
	if err != nil {
		s.bodyError(w, "request body", "RequestTooLarge", err)
		return
	}
	if int64(len(body)) > s.cfg.MaxBody {
		s.writeError(w, http.StatusRequestEntityTooLarge, "RequestTooLarge",
			fmt.Sprintf("request body larger than %d bytes", s.cfg.MaxBody))
		return
	}
	if len(body) > 0 && !json.Valid(body) {
		s.writeError(w, http.StatusBadRequest, "InvalidRequestContent", "request body is not valid JSON")
		return
	}
	res, err := s.wk.Invoke(r.Context(), r.PathValue("name"), body)
	h := w.Header()
	if res.Wait > 0 {
		h.Set("X-Hearth-Wait-Ms", ms(res.Wait))
	}
	if res.TurnWait > 0 {
		h.Set("X-Hearth-Turn-Wait-Ms", ms(res.TurnWait))
	}
	if res.Path != "" {
		h.Set("X-Hearth-Start-Path", res.Path)
		h.Set("X-Hearth-Init-Ms", ms(res.Init))
		if !res.InitFailed {
			h.Set("X-Hearth-Run-Ms", ms(res.Run))
		}
		h.Set("X-Hearth-Revision", res.Revision)
	}
	if err != nil {
		var le *worker.LoadError
		if errors.As(err, &le) {
			h.Set("X-Hearth-Error", "LoadError")
			h.Set("X-Hearth-Init-Error", le.Err.Type)
			writeJSON(w, http.StatusBadGateway, le.Err)
			return
		}
		if res.InitFailed {
			_, typ := status(err)
			h.Set("X-Hearth-Init-Error", typ)
		}
		s.fail(w, err)
		return
	}
	if res.Err != nil {
		h.Set("X-Hearth-Error", "Unhandled")
		writeJSON(w, http.StatusInternalServerError, res.Err)
		return
	}
	if int64(len(res.Body)) > s.cfg.MaxBody {
		s.writeError(w, http.StatusBadGateway, "ResponseTooLarge",
			fmt.Sprintf("handler response larger than %d bytes", s.cfg.MaxBody))
		return
	}
	h.Set("Content-Type", "application/json")
	w.Write(res.Body)
}

func ms(d time.Duration) string { return strconv.FormatFloat(d.Seconds()*1000, 'f', 3, 64) }

// status maps an error class to an HTTP status code and an error type.
func status(err error) (int, string) {
	switch {
	case errors.Is(err, registry.ErrNotFound), errors.Is(err, worker.ErrNotFound), errors.Is(err, worker.ErrNoSnapshot):
		return http.StatusNotFound, "NotFound"
	case errors.Is(err, worker.ErrTooMany):
		return http.StatusTooManyRequests, "TooManyRequests"
	case errors.Is(err, worker.ErrTimeout):
		return http.StatusGatewayTimeout, "Timeout"
	case errors.Is(err, worker.ErrOOM):
		return http.StatusBadGateway, "OutOfMemory"
	case errors.Is(err, worker.ErrCrashed), errors.Is(err, worker.ErrStart):
		return http.StatusBadGateway, "SandboxError"
	case errors.Is(err, worker.ErrClosed):
		return http.StatusServiceUnavailable, "ShuttingDown"
	case errors.Is(err, worker.ErrDrop):
		return http.StatusServiceUnavailable, "PoolFull"
	case errors.Is(err, worker.ErrMemoryTooLarge):
		// At deploy and, for a function deployed under a larger budget,
		// at invoke: retrying cannot help.
		return http.StatusUnprocessableEntity, "MemoryTooLarge"
	case errors.Is(err, worker.ErrHostNetwork):
		return http.StatusForbidden, "HostNetworkNotAllowed"
	case errors.Is(err, worker.ErrSnapshotsOff):
		return http.StatusConflict, "SnapshotsOff"
	case errors.Is(err, worker.ErrNotSnapshottable):
		return http.StatusBadRequest, "NotSnapshottable"
	case errors.Is(err, worker.ErrBadSnapshotKey):
		return http.StatusBadRequest, "BadRequest"
	case errors.Is(err, snapshot.ErrBusy):
		return http.StatusConflict, "SnapshotBusy"
	case errors.Is(err, context.Canceled):
		return 499, "Canceled"
	case errors.Is(err, packages.ErrIndexUnreachable):
		return http.StatusBadGateway, "IndexUnreachable"
	}
	if code, typ, ok := registryStatus(err); ok {
		return code, typ
	}
	return http.StatusInternalServerError, "InternalError"
}

func (s *Server) fail(w http.ResponseWriter, err error) {
	code, typ := status(err)
	msg := err.Error()
	switch {
	case code >= 500 && code != http.StatusBadGateway && code != http.StatusGatewayTimeout:
		s.cfg.Logger.Error("request failed", "err", err)
	case s.red.redact(msg) != msg:
		// The client gets the message without host paths; the log keeps them.
		s.cfg.Logger.Warn("request failed", "status", code, "err", err)
	}
	s.writeFailure(w, code, typ, err)
}

func (s *Server) writeFailure(w http.ResponseWriter, code int, typ string, err error) {
	if code == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", "1")
	}
	s.writeError(w, code, typ, err.Error())
}

// writeError sends an error response; host paths in msg are replaced.
func (s *Server) writeError(w http.ResponseWriter, code int, typ, msg string) {
	writeJSON(w, code, types.Error{Type: typ, Message: strings.TrimSpace(s.red.redact(msg))})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

// registryStatus maps deploy errors: the caller's bad input is 400 (413
// when too large), anything else is the server's.
func registryStatus(err error) (int, string, bool) {
	switch {
	case errors.Is(err, archive.ErrTooLarge):
		return http.StatusRequestEntityTooLarge, "TooLarge", true
	case errors.Is(err, archive.ErrUnsafe):
		return http.StatusBadRequest, "UnsafeArchive", true
	case errors.Is(err, archive.ErrFormat):
		return http.StatusBadRequest, "BadArchive", true
	case errors.Is(err, function.ErrUnsupported):
		return http.StatusBadRequest, "Unsupported", true
	case errors.Is(err, function.ErrUnsatisfied):
		return http.StatusBadRequest, "UnsatisfiedRequirement", true
	case errors.Is(err, function.ErrInvalid):
		return http.StatusBadRequest, "InvalidFunction", true
	case errors.Is(err, registry.ErrInvalid):
		return http.StatusBadRequest, "InvalidDeploy", true
	}
	return 0, "", false
}
