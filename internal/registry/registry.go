package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"

	"github.com/hearth-run/hearth/internal/archive"
	"github.com/hearth-run/hearth/internal/function"
)

// Layout below the data directory.
const (
	dbFile     = "registry.db"
	codeRoot   = "functions"
	stagingDir = ".staging" // below codeRoot, so renames stay on one file system
)

var bucket = []byte("functions")

var nameRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// ValidName reports whether name is a valid function name: AWS Lambda's
// rule, 1 to 64 letters, digits, "_" and "-". Names are case-sensitive:
// "Foo" and "foo" are two functions.
func ValidName(name string) bool { return nameRE.MatchString(name) }

func checkName(name string) error {
	if !ValidName(name) {
		return fmt.Errorf("function name %q: want 1-64 letters, digits, _ and -: %w", name, ErrInvalid)
	}
	return nil
}

// lookupName checks a name to look up. An invalid name is not bad input
// there: it names no deployed function, so it is not found.
func lookupName(name string) error {
	if !ValidName(name) {
		return fmt.Errorf("function %q: %w", name, ErrNotFound)
	}
	return nil
}

// dirName is the directory of function name's code: the name with each
// capital letter written as "^" and the letter in lower case, so that two
// names that differ only in case never share a directory, even on a file
// system that folds case. Names without capitals are their own directory.
func dirName(name string) string {
	if strings.IndexFunc(name, isUpper) < 0 {
		return name
	}
	var b strings.Builder
	for _, c := range name {
		if isUpper(c) {
			b.WriteByte('^')
			c += 'a' - 'A'
		}
		b.WriteRune(c)
	}
	return b.String()
}

// nameOfDir inverts dirName; ok is false for a directory no valid name
// maps to.
func nameOfDir(dir string) (name string, ok bool) {
	var b strings.Builder
	for i := 0; i < len(dir); i++ {
		c := dir[i]
		if c == '^' {
			if i+1 == len(dir) || dir[i+1] < 'a' || dir[i+1] > 'z' {
				return "", false
			}
			i++
			c = dir[i] - ('a' - 'A')
		} else if c >= 'A' && c <= 'Z' {
			return "", false
		}
		b.WriteByte(c)
	}
	name = b.String()
	return name, ValidName(name)
}

func isUpper(c rune) bool { return c >= 'A' && c <= 'Z' }

// Options configures a Registry. The zero value is valid.
type Options struct {
	// CheckRequirements, if set, is called during Deploy with the
	// function's requirement lines (only when there are some); an error
	// fails the deploy. Typically function.CheckRequirements bound to
	// the base image.
	CheckRequirements func(reqs []string) error
	// Validate, if set, is called during Deploy with the function's loaded
	// Spec; an error fails the deploy as bad input (it matches ErrInvalid
	// and keeps its own class). The worker checks there that it could
	// ever run the function (memory_mb within its warm budget).
	Validate func(function.Spec) error
	// Resolve, if set, replaces CheckRequirements: Deploy calls it with
	// the staged code directory when the function has requirements, and
	// stores what it returns as Function.Packages. It resolves the
	// requirements and installs what is missing (packages.Cache.Install).
	// Errors matching function.ErrRequirements (the install cache's
	// ErrResolve, ErrInstall and ErrInvalid do) are the code's fault and
	// match ErrInvalid; others, such as an unreachable index, are not.
	Resolve func(ctx context.Context, codeDir string) ([]function.Package, error)
	// Deployed, if set, is called after a deploy commits a new revision,
	// and Deleted after a function is deleted, to keep the package
	// cache's record of users current. They cannot fail the operation.
	Deployed func(Function)
	Deleted  func(name string)
	// MaxBytes and MaxFiles limit uploaded code; zero means the
	// archive package defaults (50 MB, 10000 files).
	MaxBytes int64
	MaxFiles int
	// Prepare, if set, runs on the staged code of the function called
	// name after it is validated and hashed, so what it adds (bytecode
	// caches) does not change the revision. An error fails the deploy.
	Prepare func(ctx context.Context, name, dir string) error
	// LockTimeout bounds the wait for the database file lock held by
	// another process. Zero means one second.
	LockTimeout time.Duration
}

// Source is code to deploy: either an archive (Archive and Size; tar.gz,
// tar or zip) or a directory (Dir). Exactly one must be set.
type Source struct {
	Archive io.ReaderAt
	Size    int64
	Dir     string
}

// Function is a deployed function (see function.Function; Packages is
// what Options.Resolve returned).
type Function = function.Function

// record is what the database stores; CodeDir is derived on read.
type record struct {
	Name       string             `json:"name"`
	Revision   string             `json:"revision"`
	Spec       function.Spec      `json:"spec"`
	Packages   []function.Package `json:"packages,omitempty"`
	Size       int64              `json:"size"`
	Files      int                `json:"files"`
	DeployedAt time.Time          `json:"deployed_at"`
	Warnings   []string           `json:"warnings,omitempty"`
	// Slot numbers the function among those deployed, from 1, for the
	// whole life of its name here: the worker runs it as the host user
	// of that slot. Records from before slots get one at their next
	// deploy.
	Slot int `json:"slot,omitempty"`
}

// Registry stores functions. Create one with Open and Close it when done.
type Registry struct {
	dir  string // data directory
	db   *bolt.DB
	opts Options

	mu    sync.Mutex           // guards locks
	locks map[string]*nameLock // per-name deploy/delete locks

	// recs caches decoded records: Get is on every invocation's path, and
	// this process is the database's only writer.
	recMu  sync.RWMutex
	recs   map[string]record
	recGen uint64 // bumped by forget: a read of the database that began before must not be cached

	leaseMu sync.Mutex            // guards leases
	leases  map[string]*codeLease // by code dir
}

// codeLease counts the holders of one revision's code directory.
type codeLease struct {
	n       int
	retired bool // no longer deployed: removed when n drops to 0
}

type nameLock struct {
	ch   chan struct{} // holds a token while locked
	refs int           // holders and waiters
}

// Open opens (creating if needed) the registry in dataDir and sweeps what
// an interrupted deploy or delete left behind. The caller must Close it.
func Open(dataDir string, opts Options) (*Registry, error) {
	if dataDir == "" {
		return nil, fmt.Errorf("opening registry: empty data directory")
	}
	if opts.LockTimeout <= 0 {
		opts.LockTimeout = time.Second
	}
	r := &Registry{dir: dataDir, opts: opts, locks: map[string]*nameLock{}, leases: map[string]*codeLease{}}
	if err := os.MkdirAll(filepath.Join(dataDir, codeRoot), 0o755); err != nil {
		return nil, fmt.Errorf("opening registry: %w", err)
	}
	db, err := bolt.Open(filepath.Join(dataDir, dbFile), 0o600, &bolt.Options{Timeout: opts.LockTimeout})
	if err != nil {
		if errors.Is(err, bolterrors.ErrTimeout) {
			return nil, fmt.Errorf("opening registry: %s is in use by another process", filepath.Join(dataDir, dbFile))
		}
		return nil, fmt.Errorf("opening registry: %w", err)
	}
	r.db = db
	err = db.Update(func(tx *bolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists(bucket)
		return err
	})
	if err == nil {
		err = r.sweep()
	}
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("opening registry: %w", err)
	}
	return r, nil
}

// Close closes the database. Functions' code stays on disk.
func (r *Registry) Close() error {
	if err := r.db.Close(); err != nil {
		return fmt.Errorf("closing registry: %w", err)
	}
	return nil
}

// sweep removes staging directories and code directories that no record
// names. Only called from Open, before anything else can use r.
func (r *Registry) sweep() error {
	root := filepath.Join(r.dir, codeRoot)
	if err := os.RemoveAll(filepath.Join(root, stagingDir)); err != nil {
		return fmt.Errorf("sweeping staging: %w", err)
	}
	if err := os.Mkdir(filepath.Join(root, stagingDir), 0o700); err != nil {
		return fmt.Errorf("sweeping staging: %w", err)
	}
	names, err := os.ReadDir(root)
	if err != nil {
		return fmt.Errorf("sweeping: %w", err)
	}
	for _, n := range names {
		if n.Name() == stagingDir {
			continue
		}
		dir := filepath.Join(root, n.Name())
		name, ok := nameOfDir(n.Name())
		var rec record
		if ok {
			rec, err = r.get(name)
		}
		if !ok || errors.Is(err, ErrNotFound) {
			if err := os.RemoveAll(dir); err != nil {
				return fmt.Errorf("sweeping: %w", err)
			}
			continue
		}
		if err != nil {
			return fmt.Errorf("sweeping: %w", err)
		}
		revs, err := os.ReadDir(dir)
		if err != nil {
			return fmt.Errorf("sweeping: %w", err)
		}
		for _, rev := range revs {
			if rev.Name() != rec.Revision {
				if err := os.RemoveAll(filepath.Join(dir, rev.Name())); err != nil {
					return fmt.Errorf("sweeping: %w", err)
				}
			}
		}
	}
	return nil
}

func (r *Registry) codeDir(name, rev string) string {
	return filepath.Join(r.dir, codeRoot, dirName(name), rev)
}

func (r *Registry) fn(rec record) Function {
	return Function{
		Name: rec.Name, Revision: rec.Revision, Spec: rec.Spec, Packages: rec.Packages,
		CodeDir: r.codeDir(rec.Name, rec.Revision),
		Size:    rec.Size, Files: rec.Files, DeployedAt: rec.DeployedAt, Warnings: rec.Warnings,
		Slot: rec.Slot,
	}
}

// get reads a record; ErrNotFound when absent.
func (r *Registry) get(name string) (record, error) {
	r.recMu.RLock()
	rec, ok := r.recs[name]
	gen := r.recGen
	r.recMu.RUnlock()
	if ok {
		return rec, nil
	}
	err := r.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucket).Get([]byte(name))
		if v == nil {
			return fmt.Errorf("function %s: %w", name, ErrNotFound)
		}
		if err := json.Unmarshal(v, &rec); err != nil {
			return fmt.Errorf("function %s: decoding metadata: %w", name, err)
		}
		return nil
	})
	if err == nil {
		r.recMu.Lock()
		if r.recs == nil {
			r.recs = map[string]record{}
		}
		// A deploy or delete that committed while we read may have
		// forgotten the record already: what we read may be stale.
		if r.recGen == gen {
			r.recs[name] = rec
		}
		r.recMu.Unlock()
	}
	return rec, err
}

// forget drops name's cached record after its metadata changed.
func (r *Registry) forget(name string) {
	r.recMu.Lock()
	delete(r.recs, name)
	r.recGen++
	r.recMu.Unlock()
}

// Get returns the deployed function called name.
func (r *Registry) Get(name string) (Function, error) {
	if err := lookupName(name); err != nil {
		return Function{}, err
	}
	rec, err := r.get(name)
	if err != nil {
		return Function{}, err
	}
	return r.fn(rec), nil
}

// Lease returns the deployed function called name, as Get does, and
// keeps its revision's code directory on disk until release is called,
// even if a newer revision is deployed or the function is deleted
// meanwhile: sandboxes that run the revision read their code from it.
// release may be called more than once; the directory of a revision no
// longer deployed goes with the last release.
func (r *Registry) Lease(name string) (Function, func(), error) {
	for {
		fn, err := r.Get(name)
		if err != nil {
			return Function{}, nil, err
		}
		dir := fn.CodeDir
		r.leaseMu.Lock()
		l := r.leases[dir]
		if l == nil {
			l = &codeLease{}
			r.leases[dir] = l
		}
		l.n++
		r.leaseMu.Unlock()
		// A deploy or delete that committed before the count may have
		// removed the directory already; one that commits after it sees
		// the count. So the revision must still be current now.
		cur, err := r.get(name)
		if err == nil && cur.Revision == fn.Revision {
			var once sync.Once
			return fn, func() { once.Do(func() { r.unlease(name, dir) }) }, nil
		}
		r.unlease(name, dir)
		if err != nil {
			return Function{}, nil, err
		}
	}
}

// unlease drops a holder of dir, a code directory of function name, and
// removes the directory if it was the last of a retired revision.
func (r *Registry) unlease(name, dir string) {
	r.leaseMu.Lock()
	l := r.leases[dir]
	var trash string
	if l.n--; l.n <= 0 {
		delete(r.leases, dir)
		if l.retired {
			trash = r.trashLocked(dir)
		}
	}
	r.leaseMu.Unlock()
	if trash == "" {
		return
	}
	os.RemoveAll(trash)
	// The function's own directory goes with its last revision, unless it
	// was deployed again meanwhile.
	unlock, err := r.lock(context.Background(), name)
	if err != nil {
		return
	}
	defer unlock()
	if _, err := r.get(name); errors.Is(err, ErrNotFound) {
		os.Remove(filepath.Dir(dir))
	}
}

// retireLocked retires the code directory dir of a revision that is no
// longer deployed: at once if no lease holds it (it returns the trash
// directory for the caller to remove after unlocking), else when the
// last lease is released. Called with leaseMu held.
func (r *Registry) retireLocked(dir string) string {
	if l := r.leases[dir]; l != nil && l.n > 0 {
		l.retired = true
		return ""
	}
	return r.trashLocked(dir)
}

// trashLocked moves dir into a fresh directory under staging and returns
// that; a rename, so that a deploy of the same revision that follows
// never meets a half-removed tree. Open sweeps staging, so a crash leaves
// nothing. Called with leaseMu held.
func (r *Registry) trashLocked(dir string) string {
	trash, err := os.MkdirTemp(filepath.Join(r.dir, codeRoot, stagingDir), "retired.")
	if err != nil {
		os.RemoveAll(dir) // best effort; a leftover is swept by the next Open
		return ""
	}
	os.Rename(dir, filepath.Join(trash, "code"))
	return trash
}

// List returns every deployed function, ordered by name.
func (r *Registry) List() ([]Function, error) {
	var out []Function
	err := r.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucket).ForEach(func(k, v []byte) error {
			var rec record
			if err := json.Unmarshal(v, &rec); err != nil {
				return fmt.Errorf("function %s: decoding metadata: %w", k, err)
			}
			out = append(out, r.fn(rec))
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("listing functions: %w", err)
	}
	return out, nil
}

// Deploy stores the code in src as the function called name and returns
// it. Deploying the code of the current revision again returns the
// current Function unchanged. Errors caused by the code match ErrInvalid
// (see its documentation). If Deploy fails, or ctx ends before the
// metadata commit, the previous revision stays in place.
func (r *Registry) Deploy(ctx context.Context, name string, src Source) (Function, error) {
	if err := checkName(name); err != nil {
		return Function{}, err
	}
	if (src.Archive == nil) == (src.Dir == "") {
		return Function{}, fmt.Errorf("deploying %s: source needs exactly one of an archive or a directory: %w", name, ErrInvalid)
	}
	if err := ctx.Err(); err != nil {
		return Function{}, fmt.Errorf("deploying %s: %w", name, err)
	}
	stage, err := os.MkdirTemp(filepath.Join(r.dir, codeRoot, stagingDir), dirName(name)+".")
	if err != nil {
		return Function{}, fmt.Errorf("deploying %s: %w", name, err)
	}
	defer os.RemoveAll(stage)
	code := filepath.Join(stage, "code")
	lim := archive.Limits{MaxBytes: r.opts.MaxBytes, MaxFiles: r.opts.MaxFiles}
	if src.Archive != nil {
		err = archive.Extract(src.Archive, src.Size, code, lim)
	} else {
		err = archive.CopyDir(src.Dir, code, lim)
	}
	if err != nil {
		return Function{}, fmt.Errorf("deploying %s: %w", name, classify(err))
	}
	spec, warnings, err := function.Load(code)
	if err == nil && r.opts.Validate != nil {
		err = r.opts.Validate(spec)
	}
	if err != nil {
		return Function{}, fmt.Errorf("deploying %s: %w", name, badInput{err})
	}
	var pkgs []function.Package
	switch {
	case len(spec.Requirements) == 0:
	case r.opts.Resolve != nil:
		if pkgs, err = r.opts.Resolve(ctx, code); err != nil {
			return Function{}, fmt.Errorf("deploying %s: %w", name, classifyResolve(err))
		}
	case r.opts.CheckRequirements != nil:
		if err := r.opts.CheckRequirements(spec.Requirements); err != nil {
			return Function{}, fmt.Errorf("deploying %s: %w", name, badInput{err})
		}
	}
	sum, err := digest(code)
	if err != nil {
		return Function{}, fmt.Errorf("deploying %s: %w", name, err)
	}

	unlock, err := r.lock(ctx, name)
	if err != nil {
		return Function{}, fmt.Errorf("deploying %s: %w", name, err)
	}
	defer unlock()
	cur, err := r.get(name)
	found := err == nil
	if err != nil && !errors.Is(err, ErrNotFound) {
		return Function{}, fmt.Errorf("deploying %s: %w", name, err)
	}
	if found && cur.Revision == sum.rev {
		if fi, err := os.Stat(r.codeDir(name, cur.Revision)); err == nil && fi.IsDir() {
			return r.fn(cur), nil
		}
	}
	if err := ctx.Err(); err != nil {
		return Function{}, fmt.Errorf("deploying %s: %w", name, err)
	}
	if r.opts.Prepare != nil {
		if err := r.opts.Prepare(ctx, name, code); err != nil {
			return Function{}, fmt.Errorf("deploying %s: %w", name, err)
		}
	}
	// One syncfs makes every staged file durable before the rename; an
	// fsync per file costs about a millisecond each.
	if err := syncFS(code); err != nil {
		return Function{}, fmt.Errorf("deploying %s: %w", name, err)
	}
	final := r.codeDir(name, sum.rev)
	// An earlier deploy of this code may still be on disk, retired but
	// held by sandboxes of that revision: it serves again (the revision
	// is the content's hash), so they keep their code.
	r.leaseMu.Lock()
	l := r.leases[final]
	reused := l != nil && l.retired
	if reused {
		l.retired = false
	}
	r.leaseMu.Unlock()
	if !reused {
		if err := r.install(code, final); err != nil {
			return Function{}, fmt.Errorf("deploying %s: %w", name, err)
		}
	}
	rec := record{Name: name, Revision: sum.rev, Spec: spec, Packages: pkgs, Size: sum.size, Files: sum.files,
		DeployedAt: time.Now().UTC().Truncate(time.Millisecond), Warnings: warnings}
	if found {
		rec.Slot = cur.Slot
	}
	if err := r.put(&rec); err != nil {
		r.leaseMu.Lock()
		trash := r.retireLocked(final)
		r.leaseMu.Unlock()
		os.RemoveAll(trash)
		return Function{}, fmt.Errorf("deploying %s: %w", name, err)
	}
	if found && cur.Revision != sum.rev {
		// Removed now, or by the release of its last lease. Best effort:
		// a leftover is swept by the next Open.
		r.leaseMu.Lock()
		trash := r.retireLocked(r.codeDir(name, cur.Revision))
		r.leaseMu.Unlock()
		if trash != "" {
			os.RemoveAll(trash)
		}
	}
	fn := r.fn(rec)
	if r.opts.Deployed != nil {
		r.opts.Deployed(fn)
	}
	return fn, nil
}

// classifyResolve marks resolution and install failures as bad input.
func classifyResolve(err error) error {
	if errors.Is(err, function.ErrRequirements) {
		return badInput{err}
	}
	return err
}

// classify marks archive errors about the upload as bad input.
func classify(err error) error {
	if errors.Is(err, archive.ErrUnsafe) || errors.Is(err, archive.ErrTooLarge) || errors.Is(err, archive.ErrFormat) {
		return badInput{err}
	}
	return err
}

// install renames the staged tree to final and makes the rename durable.
func (r *Registry) install(code, final string) error {
	parent := filepath.Dir(final)
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return fmt.Errorf("installing code: %w", err)
	}
	// No record names final (it is not the current revision), so a copy
	// there is a leftover of an earlier deploy of the same code.
	if err := os.RemoveAll(final); err != nil {
		return fmt.Errorf("installing code: %w", err)
	}
	if err := os.Rename(code, final); err != nil {
		return fmt.Errorf("installing code: %w", err)
	}
	for _, d := range []string{parent, filepath.Dir(parent)} {
		if err := syncDir(d); err != nil {
			os.RemoveAll(final)
			return fmt.Errorf("installing code: %w", err)
		}
	}
	return nil
}

func (r *Registry) put(rec *record) error {
	defer r.forget(rec.Name)
	err := r.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucket)
		if rec.Slot == 0 {
			// In the write transaction, which is the only one: no other
			// deploy can take the same slot meanwhile.
			var err error
			if rec.Slot, err = freeSlot(b); err != nil {
				return err
			}
		}
		v, err := json.Marshal(rec)
		if err != nil {
			return fmt.Errorf("encoding metadata: %w", err)
		}
		return b.Put([]byte(rec.Name), v)
	})
	if err != nil {
		return fmt.Errorf("committing metadata: %w", err)
	}
	return nil
}

// freeSlot returns the lowest slot no record of b holds.
func freeSlot(b *bolt.Bucket) (int, error) {
	used := map[int]bool{}
	err := b.ForEach(func(_, v []byte) error {
		var rec record
		if err := json.Unmarshal(v, &rec); err == nil && rec.Slot > 0 {
			used[rec.Slot] = true
		}
		return nil
	})
	n := 1
	for used[n] {
		n++
	}
	return n, err
}

// Delete removes the function called name and its code.
func (r *Registry) Delete(name string) error {
	if err := lookupName(name); err != nil {
		return err
	}
	unlock, err := r.lock(context.Background(), name)
	if err != nil {
		return fmt.Errorf("deleting %s: %w", name, err)
	}
	defer unlock()
	defer r.forget(name)
	err = r.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucket)
		if b.Get([]byte(name)) == nil {
			return fmt.Errorf("function %s: %w", name, ErrNotFound)
		}
		return b.Delete([]byte(name))
	})
	if err != nil {
		return fmt.Errorf("deleting %s: %w", name, err)
	}
	if r.opts.Deleted != nil {
		r.opts.Deleted(name)
	}
	// Each revision's code goes now, or with the release of its last
	// lease (a call or sandbox still running it); the function's
	// directory goes with the last.
	fdir := filepath.Join(r.dir, codeRoot, dirName(name))
	revs, err := os.ReadDir(fdir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("deleting %s: metadata removed, code left for the next sweep: %w", name, err)
	}
	var trash []string
	r.leaseMu.Lock()
	for _, rev := range revs {
		if t := r.retireLocked(filepath.Join(fdir, rev.Name())); t != "" {
			trash = append(trash, t)
		}
	}
	r.leaseMu.Unlock()
	var errs []error
	for _, t := range trash {
		if err := os.RemoveAll(t); err != nil {
			errs = append(errs, err)
		}
	}
	if err := os.Remove(fdir); err != nil && !errors.Is(err, os.ErrNotExist) && !errors.Is(err, syscall.ENOTEMPTY) {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("deleting %s: metadata removed, code left for the next sweep: %w", name, err)
	}
	return nil
}

// lock takes the per-name lock, waiting until ctx ends. The returned func
// releases it.
func (r *Registry) lock(ctx context.Context, name string) (func(), error) {
	r.mu.Lock()
	l := r.locks[name]
	if l == nil {
		l = &nameLock{ch: make(chan struct{}, 1)}
		r.locks[name] = l
	}
	l.refs++
	r.mu.Unlock()
	select {
	case l.ch <- struct{}{}:
		return func() {
			<-l.ch
			r.release(name, l)
		}, nil
	case <-ctx.Done():
		r.release(name, l)
		return nil, ctx.Err()
	}
}

func (r *Registry) release(name string, l *nameLock) {
	r.mu.Lock()
	l.refs--
	if l.refs == 0 {
		delete(r.locks, name)
	}
	r.mu.Unlock()
}
