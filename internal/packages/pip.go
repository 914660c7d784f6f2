package packages

import (
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hearth-run/hearth/internal/fsutil"

	"github.com/hearth-run/hearth/internal/cgroup"
	"github.com/hearth-run/hearth/internal/function"
	"github.com/hearth-run/hearth/internal/sandbox"
)

// pipRun is one pip run in an installer sandbox.
type pipRun struct {
	// code, if set, is bound read-only at /code.
	code string
	// argv is the command; out is the host path of /hearth-out, made
	// before the run and removed after collect.
	argv []string
	// collect reads results from out after the command exited with
	// status; its error is the run's.
	collect func(out string, status int, output string) error
}

// exec runs r in a fresh installer sandbox and cgroup (see runner) with
// a writable output directory at /hearth-out, and cleans all up.
func (c *Cache) exec(ctx context.Context, r pipRun) error {
	c.pipRuns.Add(1)
	out, err := os.MkdirTemp(filepath.Join(c.Dir(), tmpDir), "run-")
	if err != nil {
		return fmt.Errorf("installer: %w", err)
	}
	defer os.RemoveAll(out)
	uid, gid := c.ids()
	for _, d := range []string{"home", "tmp", "t", "log"} {
		if err := os.Mkdir(filepath.Join(out, d), 0o755); err != nil {
			return fmt.Errorf("installer: %w", err)
		}
	}
	if err := chownTree(out, uid, gid); err != nil {
		return fmt.Errorf("installer: %w", err)
	}
	binds := []sandbox.Bind{{Source: out, Target: outPoint, Writable: true}}
	// Mount points for host find-links directories, inside the output
	// bind so the base image needs none; root-owned so pip cannot swap
	// them.
	for i, l := range c.cfg.Index.FindLinks {
		if isURL(l) {
			continue
		}
		mp := filepath.Join(out, "links", strconv.Itoa(i))
		if err := os.MkdirAll(mp, 0o755); err != nil {
			return fmt.Errorf("installer: %w", err)
		}
		binds = append(binds, sandbox.Bind{Source: l, Target: linkPoint(i)})
	}
	if r.code != "" {
		binds = append(binds, sandbox.Bind{Source: r.code, Target: codePoint})
	}
	return c.runner.run(ctx, job{
		kind:    "pip",
		prog:    "pip",
		argv:    r.argv,
		binds:   binds,
		limits:  cgroup.Limits{MemoryBytes: c.cfg.MemoryBytes, Pids: 512, CPUWeight: 100},
		timeout: c.cfg.Timeout,
		env: []string{
			"HOME=" + outPoint + "/home",
			"TMPDIR=" + outPoint + "/tmp",
			"PATH=/usr/local/bin:/usr/bin:/bin",
			"LANG=C.UTF-8",
			"PYTHONNOUSERSITE=1",
			"PIP_CONFIG_FILE=/dev/null",
			"PIP_DISABLE_PIP_VERSION_CHECK=1",
			"PIP_NO_CACHE_DIR=1",
			"PIP_NO_INPUT=1",
			"PIP_PROGRESS_BAR=off",
			"PIP_NO_COLOR=1",
			// Nothing lands in the base (it is read-only); PEP 668 guards
			// against installs that do.
			"PIP_BREAK_SYSTEM_PACKAGES=1",
			"PIP_RETRIES=" + strconv.Itoa(c.cfg.Retries),
			"PIP_TIMEOUT=" + strconv.Itoa(int(max(c.cfg.NetTimeout/time.Second, 1))),
		},
		dir: outPoint,
		collect: func(res result) error {
			return r.collect(out, res.status, res.output)
		},
	})
}

func (c *Cache) ids() (int, int) {
	uid, gid := c.cfg.Sandboxes.UID, c.cfg.Sandboxes.GID
	if uid == 0 {
		uid = 65534
	}
	if gid == 0 {
		gid = 65534
	}
	return uid, gid
}

// report is the part of pip's installation report (format version 1)
// that Resolve reads.
type report struct {
	Version string `json:"version"`
	Install []struct {
		Metadata struct {
			Name    string `json:"name"`
			Version string `json:"version"`
		} `json:"metadata"`
	} `json:"install"`
}

// satisfiedRE matches pip's line for a requirement an installed
// distribution satisfies, such as
// "Requirement already satisfied: numpy in /usr/lib/python3/dist-packages (from -r ...) (1.24.2)".
var satisfiedRE = regexp.MustCompile(`(?m)^Requirement already satisfied: ([A-Za-z0-9][A-Za-z0-9._-]*).* in (/\S+)(?: \(from .*\))? \(([^()\s]+)\)\s*$`)

// resolve runs pip install --dry-run --report over the function's
// requirements.txt in an installer sandbox.
func (c *Cache) resolve(ctx context.Context, codeDir string) ([]Package, error) {
	argv := append([]string{c.cfg.Python, "-m", "pip", "install", "--dry-run",
		"--report", outPoint + "/report.json",
		"-r", codeDir0(function.RequirementsFile)}, c.cfg.Index.args()...)
	var set []Package
	err := c.exec(ctx, pipRun{code: codeDir, argv: argv, collect: func(out string, status int, output string) error {
		if status != 0 {
			if why := unreachable(output); why != "" {
				return c.unreachableErr(codeDir, output, why)
			}
			return fmt.Errorf("%w: pip: %s", ErrResolve, pipTail(output))
		}
		b, err := os.ReadFile(filepath.Join(out, "report.json"))
		if err != nil {
			return fmt.Errorf("resolving requirements: reading pip's report: %w", err)
		}
		var rep report
		if err := json.Unmarshal(b, &rep); err != nil {
			return fmt.Errorf("resolving requirements: decoding pip's report: %w", err)
		}
		if rep.Version != "1" {
			return fmt.Errorf("resolving requirements: pip report version %q, want 1", rep.Version)
		}
		for _, it := range rep.Install {
			p := Package{Name: function.NormalizeName(it.Metadata.Name), Version: it.Metadata.Version}
			if err := checkPackage(p); err != nil {
				return fmt.Errorf("%w: pip chose %s==%s: %w", ErrResolve, it.Metadata.Name, it.Metadata.Version, err)
			}
			set = append(set, p)
		}
		inst := map[string]bool{}
		for _, p := range set {
			inst[p.Name] = true
		}
		for _, m := range satisfiedRE.FindAllStringSubmatch(output, -1) {
			p := Package{Name: function.NormalizeName(m[1]), Version: m[3], Base: true}
			if !inst[p.Name] && checkPackage(p) == nil {
				set = append(set, p)
			}
		}
		return nil
	}})
	if err != nil {
		return nil, err
	}
	return dedupe(set), nil
}

func codeDir0(name string) string { return codePoint + "/" + name }

// driver runs one pip install per job, a few at a time, and writes each
// exit status to rc/<i>. argv[1] is the JSON job list, argv[2] the JSON
// common pip arguments.
const driver = `
import json, os, subprocess, sys, threading
jobs = json.loads(sys.argv[1]); common = json.loads(sys.argv[2]); par = int(sys.argv[3])
sem = threading.Semaphore(par)
def one(i, req):
    with sem:
        with open("/hearth-out/log/%d" % i, "wb") as log:
            rc = subprocess.call([sys.executable, "-m", "pip", "install", "--no-deps",
                "--target", "/hearth-out/t/%d" % i, req] + common,
                stdout=log, stderr=subprocess.STDOUT)
        with open("/hearth-out/log/%d.rc" % i, "w") as f:
            f.write(str(rc))
ts = [threading.Thread(target=one, args=(i, r)) for i, r in enumerate(jobs)]
for t in ts: t.start()
for t in ts: t.join()
`

// install installs pkgs, each into its own target directory, in one
// installer sandbox, and commits those that succeeded. It returns one
// error (or nil) per package.
func (c *Cache) install(ctx context.Context, pkgs []Package) []error {
	errs := make([]error, len(pkgs))
	jobs := make([]string, len(pkgs))
	for i, p := range pkgs {
		jobs[i] = p.String()
	}
	jb, _ := json.Marshal(jobs)
	ab, _ := json.Marshal(c.cfg.Index.args())
	argv := []string{c.cfg.Python, "-c", driver, string(jb), string(ab), strconv.Itoa(c.cfg.Parallel)}
	t0 := time.Now()
	err := c.exec(ctx, pipRun{argv: argv, collect: func(out string, status int, output string) error {
		if status != 0 {
			return fmt.Errorf("installer exited with status %d: %s", status, tailLines(output, 10))
		}
		for i, p := range pkgs {
			errs[i] = c.collect(out, i, p)
		}
		return nil
	}})
	if err != nil {
		for i := range errs {
			errs[i] = fmt.Errorf("installing %s: %w", pkgs[i], err)
		}
	}
	c.log.Info("installed packages", "packages", jobs, "took", time.Since(t0), "err", err)
	return errs
}

// collect checks job i's result and commits it: ownership to root, no
// write bits for group and others, then an atomic rename into place.
func (c *Cache) collect(out string, i int, p Package) error {
	rcb, err := os.ReadFile(filepath.Join(out, "log", strconv.Itoa(i)+".rc"))
	if err != nil {
		return fmt.Errorf("installing %s: pip left no exit status: %w", p, err)
	}
	logb, _ := os.ReadFile(filepath.Join(out, "log", strconv.Itoa(i)))
	if rc := strings.TrimSpace(string(rcb)); rc != "0" {
		if why := unreachable(string(logb)); why != "" {
			return fmt.Errorf("%w: installing %s: the %s could not be reached (%s)", ErrIndexUnreachable, p, c.cfg.Index.indexes(), why)
		}
		return fmt.Errorf("%w: %s: pip exited with status %s: %s", ErrInstall, p, rc, pipTail(string(logb)))
	}
	t := filepath.Join(out, "t", strconv.Itoa(i))
	if err := seal(t); err != nil {
		return fmt.Errorf("installing %s: %w", p, err)
	}
	size, err := fsutil.DiskUsage(t)
	if err != nil {
		return fmt.Errorf("installing %s: %w", p, err)
	}
	if err := syncFS(t); err != nil {
		return fmt.Errorf("installing %s: %w", p, err)
	}
	if err := c.commit(p, t, size); err != nil {
		return err
	}
	c.installed.Add(1)
	return nil
}

// seal makes the tree at dir owned by root and not writable by anyone
// else, and refuses special files.
func seal(dir string) error {
	return filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := os.Lchown(p, 0, 0); err != nil {
			return err
		}
		t := d.Type()
		switch {
		case t&fs.ModeSymlink != 0:
			return nil
		case t.IsDir() || t.IsRegular():
			fi, err := d.Info()
			if err != nil {
				return err
			}
			// Chown clears set-id bits; drop them and write bits anyway.
			return os.Chmod(p, fi.Mode().Perm()&^0o022)
		default:
			return fmt.Errorf("%s: unexpected file type %s", p, t)
		}
	})
}

func chownTree(dir string, uid, gid int) error {
	return filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, uid, gid)
	})
}

// tailBuffer keeps the last 1 MiB written to it.
type tailBuffer struct {
	mu sync.Mutex
	b  []byte
}

const tailMax = 1 << 20

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if len(t.b) > tailMax {
		t.b = append(t.b[:0:0], t.b[len(t.b)-tailMax:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.b)
}

func (t *tailBuffer) tail(n int) string { return tailLines(t.String(), n) }

// pipTail picks the useful end of pip's output: its ERROR lines if it
// printed any, else the last lines.
func pipTail(out string) string {
	var errs []string
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "ERROR:") {
			errs = append(errs, strings.TrimSpace(strings.TrimPrefix(l, "ERROR:")))
		}
	}
	if len(errs) > 0 {
		if len(errs) > 8 {
			errs = errs[len(errs)-8:]
		}
		return strings.Join(errs, "; ")
	}
	return tailLines(out, 8)
}

func tailLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}
