package lambda

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"log/slog"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/hearth-run/hearth/internal/registry"
	"github.com/hearth-run/hearth/internal/worker"
)

// Registry is what the Lambda API needs of the function registry.
type Registry interface {
	Deploy(ctx context.Context, name string, src registry.Source) (registry.Function, error)
	Get(name string) (registry.Function, error)
	List() ([]registry.Function, error)
	Delete(name string) error
	// Lease holds the current revision's code until release.
	Lease(name string) (registry.Function, func(), error)
}

// Worker is what the Lambda API needs of the worker.
type Worker interface {
	InvokeID(ctx context.Context, name string, event []byte, id string) (worker.Result, error)
	Retire(name, keep string)
	Logs(name string, n int, since uint64) worker.LogTail
}

// Config configures the Lambda API. Zero values mean the defaults.
type Config struct {
	// DataDir holds lambda.db and, while they are checked, uploads
	// (required).
	DataDir string
	// Keys are the access keys requests may be signed with. Without
	// keys every request is refused, unless Insecure.
	Keys Keys
	// Insecure, with no Keys, accepts requests without checking their
	// signature. With Keys it changes nothing.
	Insecure bool
	// Region is the region in ARNs when a request is not signed (default
	// us-east-1); a signed request's ARNs name the region it was signed
	// for.
	Region string
	// AccountID is the account in ARNs (default 000000000000).
	AccountID string
	// Runtime is reported for functions deployed through /v1, which
	// name none (default "python3"; the worker passes its base image's
	// python3.x).
	Runtime string
	// MaxBody bounds a RequestResponse invocation's payload and response
	// (default 6 MB, Lambda's).
	MaxBody int64
	// MaxArchive bounds an uploaded zip (default 50 MB, Lambda's).
	MaxArchive int64
	// Async configures Event invocations.
	Async AsyncConfig
	// Logger (default slog.Default()).
	Logger *slog.Logger
	// HostPaths are host paths kept out of responses (shown as "[worker
	// path]"); DataDir is always one.
	HostPaths []string
	// Now is the clock signatures are checked against (default time.Now).
	Now func() time.Time
}

// Server serves the Lambda API. Create it with New.
type Server struct {
	cfg     Config
	reg     Registry
	wk      Worker
	ver     *Verifier // nil: no keys
	db      *bolt.DB
	q       *queue
	mux     *http.ServeMux
	records *http.ServeMux
	paths   []string // host paths to redact, longest first
	// locks serialise the changes of one function name through this API
	// (create, updates, delete), by a hash of the name.
	locks [64]sync.Mutex
}

// New opens lambda.db in cfg.DataDir and returns the API. The caller must
// Close it; Start runs the asynchronous invocations.
func New(cfg Config, reg Registry, wk Worker) (*Server, error) {
	if cfg.DataDir == "" {
		return nil, errors.New("lambda API: no data dir")
	}
	if cfg.Region == "" {
		cfg.Region = "us-east-1"
	}
	if cfg.AccountID == "" {
		cfg.AccountID = "000000000000"
	}
	if cfg.Runtime == "" {
		cfg.Runtime = "python3"
	}
	if cfg.MaxBody <= 0 {
		cfg.MaxBody = 6 << 20
	}
	if cfg.MaxArchive <= 0 {
		cfg.MaxArchive = 50 << 20
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	cfg.Async.setDefaults()
	db, err := openDB(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, reg: reg, wk: wk, db: db, mux: http.NewServeMux(), records: http.NewServeMux()}
	if len(cfg.Keys) > 0 {
		s.ver = NewVerifier(cfg.Keys, cfg.Now)
	}
	s.paths = append(slices.Clone(cfg.HostPaths), cfg.DataDir)
	slices.SortFunc(s.paths, func(a, b string) int { return len(b) - len(a) })
	if s.q, err = openQueue(db, cfg.Async, s.attempt, cfg.Logger, cfg.Now); err != nil {
		db.Close()
		return nil, err
	}
	// The body a zip upload may take: base64 and the JSON around it.
	upload := cfg.MaxArchive/3*4 + 64<<10
	small := int64(64 << 10)
	const p = "/2015-03-31/functions"
	s.mux.HandleFunc("POST "+p, s.signed(upload, s.createFunction))
	s.mux.HandleFunc("POST "+p+"/{$}", s.signed(upload, s.createFunction))
	s.mux.HandleFunc("GET "+p, s.signed(small, s.listFunctions))
	s.mux.HandleFunc("GET "+p+"/{$}", s.signed(small, s.listFunctions))
	s.mux.HandleFunc("GET "+p+"/{name}", s.signed(small, s.getFunction))
	s.mux.HandleFunc("DELETE "+p+"/{name}", s.signed(small, s.deleteFunction))
	s.mux.HandleFunc("GET "+p+"/{name}/configuration", s.signed(small, s.getConfiguration))
	s.mux.HandleFunc("PUT "+p+"/{name}/configuration", s.signed(small, s.updateConfiguration))
	s.mux.HandleFunc("PUT "+p+"/{name}/code", s.signed(upload, s.updateCode))
	s.mux.HandleFunc("POST "+p+"/{name}/invocations", s.signed(max(cfg.MaxBody, cfg.Async.MaxPayload), s.invoke))
	s.mux.HandleFunc("/", s.signed(small, func(w http.ResponseWriter, r *http.Request, c *call) {
		newError(http.StatusNotFound, typeUnknownOp, "Hearth's Lambda API has no operation "+r.Method+" "+r.URL.Path).write(w, c.id)
	}))
	s.records.HandleFunc("GET /v1/async-invocations", s.listRecords)
	s.records.HandleFunc("GET /v1/async-invocations/{id}", s.getRecord)
	return s, nil
}

// MaxBody is the largest request body the API takes (a zip upload); mount
// it with at least that bound.
func (s *Server) MaxBody() int64 { return s.cfg.MaxArchive/3*4 + 64<<10 }

// ServeHTTP serves the Lambda API (/2015-03-31/...).
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

// Records serves the records of asynchronous invocations under
// /v1/async-invocations, in Hearth's own API (behind its token).
func (s *Server) Records() http.Handler { return s.records }

// Start runs the asynchronous invocations until ctx (the worker's
// lifetime) ends or Close.
func (s *Server) Start(ctx context.Context) { s.q.Start(ctx) }

// Close stops the asynchronous invocations (what runs is run again by
// the next worker) and closes lambda.db.
func (s *Server) Close() error {
	s.q.Close()
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("closing %s: %w", DBFile, err)
	}
	return nil
}

// call is a verified request.
type call struct {
	id     string // request id
	body   []byte
	region string
}

// newRequestID returns a random UUID (version 4), as Lambda's request ids.
func newRequestID() string {
	var b [16]byte
	rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// signed reads the request's body (at most limit bytes), checks its
// signature and passes it on.
func (s *Server) signed(limit int64, h func(http.ResponseWriter, *http.Request, *call)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		c := &call{id: newRequestID(), region: s.cfg.Region}
		w.Header().Set("X-Amzn-Requestid", c.id)
		if s.ver == nil && !s.cfg.Insecure {
			forbidden(typeAccessDenied, "the Lambda API is off on this worker: it has no access keys "+
				"(lambda.credentials in hearth.yaml, or --lambda-credentials), and it was not started with --lambda-api-insecure").write(w, c.id)
			return
		}
		body, err := io.ReadAll(io.LimitReader(r.Body, limit+1))
		var mbe *http.MaxBytesError
		switch {
		case errors.As(err, &mbe) || int64(len(body)) > limit:
			w.Header().Set("Connection", "close")
			newError(http.StatusRequestEntityTooLarge, typeTooLarge,
				fmt.Sprintf("Request must be smaller than %d bytes for this operation", limit)).write(w, c.id)
			return
		case err != nil:
			newError(http.StatusBadRequest, typeInvalidContent, "reading the request body: "+err.Error()).write(w, c.id)
			return
		}
		c.body = body
		if s.ver != nil {
			key, region, err := s.ver.Verify(r, body)
			if err != nil {
				var ae *awsError
				errors.As(err, &ae)
				s.cfg.Logger.Info("lambda API: request refused", "remote", r.RemoteAddr, "path", r.URL.Path, "err", err)
				ae.write(w, c.id)
				return
			}
			c.region = region
			s.cfg.Logger.Debug("lambda API", "op", r.Method+" "+r.URL.Path, "key", key.Name, "request_id", c.id)
		}
		h(w, r, c)
	}
}

// lock takes the lock of name's changes; the func releases it.
func (s *Server) lock(name string) func() {
	h := fnv.New32a()
	h.Write([]byte(name))
	m := &s.locks[h.Sum32()%uint32(len(s.locks))]
	m.Lock()
	return m.Unlock
}

// redact replaces host paths in msg.
func (s *Server) redact(msg string) string {
	for _, p := range s.paths {
		if p != "" && p != "/" {
			msg = strings.ReplaceAll(msg, p, "[worker path]")
		}
	}
	return msg
}

func (s *Server) arn(c *call, name string) string {
	return "arn:aws:lambda:" + c.region + ":" + s.cfg.AccountID + ":function:" + name
}

// nameRE is a FunctionName in a path: a name, a partial ARN or an ARN,
// with an optional qualifier (the service model's pattern).
var nameRE = regexp.MustCompile(`^(?:arn:aws[a-zA-Z-]*:lambda:)?(?:[a-z]{2}(?:-gov)?-[a-z]+-\d:)?(?:\d{12}:)?(?:function:)?([a-zA-Z0-9_-]{1,64})(?::(\$LATEST|[a-zA-Z0-9_-]+))?$`)

// functionName parses the {name} of r's path (and ?Qualifier=). Hearth
// keeps one version of a function, $LATEST: another qualifier names
// none.
func (s *Server) functionName(r *http.Request, c *call) (string, *awsError) {
	raw := r.PathValue("name")
	m := nameRE.FindStringSubmatch(raw)
	if m == nil {
		return "", invalidParam(fmt.Sprintf("1 validation error detected: Value '%s' at 'functionName' failed to satisfy constraint: "+
			"Member must satisfy regular expression pattern: (arn:(aws[a-zA-Z-]*)?:lambda:)?([a-z]{2}(-gov)?-[a-z]+-\\d{1}:)?(\\d{12}:)?(function:)?([a-zA-Z0-9-_]+)(:(\\$LATEST|[a-zA-Z0-9-_]+))?", raw))
	}
	name, qual := m[1], m[2]
	if q := r.URL.Query().Get("Qualifier"); q != "" {
		if qual != "" && q != qual {
			return "", invalidParam("The derived qualifier from the function name does not match the specified qualifier.")
		}
		qual = q
	}
	if qual != "" && qual != "$LATEST" {
		return "", notFound("Function not found: " + s.arn(c, name) + ":" + qual)
	}
	return name, nil
}

// fail answers err, mapped to Lambda's types.
func (s *Server) fail(w http.ResponseWriter, c *call, err error) {
	var ae *awsError
	if !errors.As(err, &ae) {
		ae = s.classify(err)
	}
	if ae.Status >= 500 {
		s.cfg.Logger.Error("lambda API: request failed", "request_id", c.id, "err", err)
	}
	ae.Msg = s.redact(ae.Msg)
	ae.write(w, c.id)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}
