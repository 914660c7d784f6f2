package packages

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hearth-run/hearth/internal/cgroup"
	"github.com/hearth-run/hearth/internal/image"
	"github.com/hearth-run/hearth/internal/runtime"
	"github.com/hearth-run/hearth/internal/sandbox"
)

// CompileConfig configures a Compiler.
type CompileConfig struct {
	// Sandboxes creates the compiler's sandboxes; its Base is the image
	// whose Python compiles, the one function sandboxes run. Required,
	// with a seccomp filter (Seccomp).
	Sandboxes *sandbox.Factory
	// Cgroups holds one group per compile. Required. A worker shares
	// both with its install cache (the installer sandboxes and cgroup
	// parent), so that its reaper sweeps compiles too.
	Cgroups *cgroup.Manager
	// Python is the interpreter inside the sandbox (default
	// /usr/bin/python3).
	Python string
	// Timeout bounds one compile (default 30 s).
	Timeout time.Duration
	// MemoryBytes limits a compile's cgroup (default 256 MiB); the
	// compiled caches, in the sandbox's /tmp, count towards it.
	MemoryBytes int64
}

// Defaults of CompileConfig.
const (
	DefaultCompileTimeout = 30 * time.Second
	DefaultCompileMemory  = 256 << 20
)

// maxPyc bounds the size of one cache file a compile may hand back.
const maxPyc = 64 << 20

// Compiler byte-compiles function code in installer sandboxes (see
// runner): the compiler is CPython's, and a small source can make it use
// gigabytes and minutes (a list display of millions of constants), so it
// runs as the sandbox's unprivileged user, in a cgroup with memory and
// pids limits, under a deadline, with the code bound read-only. It
// writes its caches into its own /tmp; the worker, as root, copies back
// only what it expects: see Compile. A Compiler is safe for concurrent
// use.
type Compiler struct {
	cfg    CompileConfig
	tag    string // the image Python's cache tag, e.g. cpython-313
	runner *runner
}

// NewCompiler returns a compiler for the base image of cfg.Sandboxes,
// whose /code mount point must exist (see image.Prepare).
func NewCompiler(cfg CompileConfig) (*Compiler, error) {
	if cfg.Sandboxes == nil || cfg.Cgroups == nil {
		return nil, fmt.Errorf("compiler: sandbox factory and cgroup manager are required: %w", ErrInvalid)
	}
	if cfg.Sandboxes.Seccomp == "" {
		return nil, fmt.Errorf("compiler: its sandboxes need a seccomp filter: %w", ErrInvalid)
	}
	if cfg.Python == "" {
		cfg.Python = "/usr/bin/python3"
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultCompileTimeout
	}
	if cfg.MemoryBytes <= 0 {
		cfg.MemoryBytes = DefaultCompileMemory
	}
	v, err := image.PythonVersion(cfg.Sandboxes.Base)
	if err != nil {
		return nil, fmt.Errorf("compiler: %w", err)
	}
	return &Compiler{
		cfg:    cfg,
		tag:    "cpython-" + strings.ReplaceAll(v, ".", ""),
		runner: &runner{sandboxes: cfg.Sandboxes, cgroups: cfg.Cgroups},
	}, nil
}

// Config returns the configuration in force, defaults filled in.
func (c *Compiler) Config() CompileConfig { return c.cfg }

// pycPoint is where the compiler writes its caches: in its /tmp, a
// tmpfs charged to its cgroup, so the output is bounded by the memory
// limit and never touches the host's disk.
const pycPoint = "/tmp/pyc"

// Compile byte-compiles every Python file under dir, a function's staged
// code, and installs the caches as runtime.Compile would: unchecked-hash
// caches (PEP 552) at dir/<rel>/__pycache__/<module>.<tag>.pyc, where
// the image's Python imports them without reading the source. It returns
// how many it installed. Files that do not compile get none.
//
// The compiler runs in a sandbox (see Compiler) with dir bound read-only
// at /code. A compile that fails, runs out of memory (ErrOutOfMemory) or
// time (ErrTimeout), or whose ctx ends, is killed with its sandbox and
// installs nothing; the code works without caches, only its imports
// compile. The compiler reads untrusted code and may be subverted by it,
// so of what it wrote only a regular file, reached without a symbolic
// link, named as the cache of a .py file of dir, at most 64 MiB, with an
// unchecked-hash header, is copied, and writes stay inside dir (see
// install). dir must not change during Compile.
func (c *Compiler) Compile(ctx context.Context, dir string) (int, error) {
	if fi, err := os.Stat(dir); err != nil {
		return 0, fmt.Errorf("compiling: %w", err)
	} else if !fi.IsDir() {
		return 0, fmt.Errorf("compiling: %s is not a directory", dir)
	}
	argv := append([]string{c.cfg.Python, "-I", "-S", "-B"}, runtime.CompileArgs(codePoint, pycPoint)...)
	n := 0
	err := c.runner.run(ctx, job{
		kind:    "compile",
		prog:    "the compiler",
		argv:    argv,
		env:     []string{"PATH=/usr/bin:/bin", "LANG=C.UTF-8", "HOME=/tmp"},
		dir:     "/tmp",
		binds:   []sandbox.Bind{{Source: dir, Target: codePoint}},
		limits:  cgroup.Limits{MemoryBytes: c.cfg.MemoryBytes, Pids: 16, CPUWeight: 100},
		timeout: c.cfg.Timeout,
		scratch: c.cfg.MemoryBytes,
		collect: func(res result) error {
			if res.status != 0 {
				return fmt.Errorf("the compiler exited with status %d: %s", res.status, tailLines(res.output, 5))
			}
			var err error
			n, err = c.install(filepath.Join(res.scratch, filepath.Base(pycPoint)), dir)
			return err
		},
	})
	if err != nil {
		return n, fmt.Errorf("compiling: %w", err)
	}
	return n, nil
}

// install copies the caches the compiler wrote below out into dir and
// returns how many. For each .py file under dir, walked as the compiler
// walked it (no __pycache__, no symlinked directories), the cache is the
// file at the same relative place below out; it is opened with openat2
// beneath out with no symbolic link anywhere on the path, and must be a
// regular file of at most maxPyc bytes with an unchecked-hash header.
// dir is written through an os.Root, so nothing outside it is touched
// whatever symbolic links it holds; a __pycache__ that is not a directory
// is left alone. Caches are 0644 and their new __pycache__ directories
// 0755, owned by the caller.
func (c *Compiler) install(out, dir string) (int, error) {
	ofd, err := unix.Open(out, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.ENOENT) {
		return 0, nil // no file compiled
	}
	if err != nil {
		return 0, fmt.Errorf("reading the compiler's output: %w", err)
	}
	defer unix.Close(ofd)
	root, err := os.OpenRoot(dir)
	if err != nil {
		return 0, fmt.Errorf("installing caches: %w", err)
	}
	defer root.Close()
	n := 0
	var errs []error // one per cache that could not be written; the others still are
	err = fs.WalkDir(os.DirFS(dir), ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if d.Name() == "__pycache__" {
				return fs.SkipDir
			}
			return nil
		}
		mod, ok := strings.CutSuffix(d.Name(), ".py")
		if !ok || mod == "" {
			return nil
		}
		rel := path.Join(path.Dir(p), "__pycache__", mod+"."+c.tag+".pyc")
		src, err := openBeneath(ofd, rel)
		if err != nil {
			return nil // not compiled, or not a plain file: no cache
		}
		defer src.Close()
		ok, err = installPyc(root, rel, src)
		if ok {
			n++
		}
		if err != nil && len(errs) < 3 {
			errs = append(errs, err)
		}
		return nil
	})
	if err := errors.Join(append(errs, err)...); err != nil {
		return n, fmt.Errorf("installing caches: %w", err)
	}
	return n, nil
}

// openBeneath opens the regular file rel below the directory dirfd,
// refusing symbolic links on the whole path and anything but a regular
// file of at most maxPyc bytes.
func openBeneath(dirfd int, rel string) (*os.File, error) {
	fd, err := unix.Openat2(dirfd, rel, &unix.OpenHow{
		Flags:   unix.O_RDONLY | unix.O_NOFOLLOW | unix.O_NONBLOCK | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS | unix.RESOLVE_NO_XDEV,
	})
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fd), rel)
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() || fi.Size() > maxPyc {
		f.Close()
		return nil, fmt.Errorf("%s: not a regular file of at most %d bytes", rel, maxPyc)
	}
	return f, nil
}

// pycUncheckedHash is the flags word of an unchecked hash-based cache
// (PEP 552: bit 0 hash-based, bit 1 check_source clear).
const pycUncheckedHash = 1

// installPyc writes src to rel inside root, atomically (a temporary file
// renamed into place), and reports whether it did. A source that is not
// an unchecked-hash cache, and a place whose __pycache__ or cache name is
// taken by something else than a directory and a file, are skipped.
func installPyc(root *os.Root, rel string, src io.Reader) (bool, error) {
	var hdr [16]byte
	if _, err := io.ReadFull(src, hdr[:]); err != nil || binary.LittleEndian.Uint32(hdr[4:8]) != pycUncheckedHash {
		return false, nil
	}
	cache := path.Dir(rel)
	switch fi, err := root.Lstat(cache); {
	case errors.Is(err, fs.ErrNotExist):
		if err := root.Mkdir(cache, 0o755); err != nil {
			return false, err
		}
		// Mkdir applies the umask.
		if err := root.Chmod(cache, 0o755); err != nil {
			return false, err
		}
	case err != nil:
		return false, err
	case !fi.IsDir():
		return false, nil
	}
	if fi, err := root.Lstat(rel); err == nil && !fi.Mode().IsRegular() && fi.Mode()&fs.ModeSymlink == 0 {
		return false, nil // a directory, say: rename cannot replace it
	}
	tmp := path.Join(cache, ".hearth-tmp-"+path.Base(rel))
	root.Remove(tmp) // a leftover, or the code's own file of that name
	f, err := root.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return false, err
	}
	_, err = f.Write(hdr[:])
	if err == nil {
		_, err = io.Copy(f, io.LimitReader(src, maxPyc))
	}
	if err == nil {
		err = f.Chmod(0o644)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = root.Rename(tmp, rel)
	}
	if err != nil {
		root.Remove(tmp)
		return false, err
	}
	return true, nil
}
