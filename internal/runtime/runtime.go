package runtime

import (
	"bytes"
	"context"
	"embed"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/hearth-run/hearth/internal/seccomp"
)

//go:embed python
var files embed.FS

const (
	// MountPoint is where the sandbox mounts the directory Install wrote.
	MountPoint = "/hearth"

	// CodeDir is where the sandbox mounts the function code; it is put
	// first on sys.path unless Options.CodeDir overrides it.
	CodeDir = "/code"

	// ListenFD is the descriptor on which the runtime expects its
	// listening socket.
	ListenFD = 3

	// Script is the entry point, relative to MountPoint.
	Script = "server.py"

	// SeccompFile is the tenant seccomp filter Install writes, relative
	// to MountPoint (see internal/seccomp). The zygote installs it in
	// each function child; a cold-started runtime gets it from
	// hearth-init (sandbox.Factory.Seccomp).
	SeccompFile = "seccomp.bpf"
	// ZygoteSeccompFile is the zygotes' own filter (seccomp.ZygoteFilter),
	// which hearth-init installs on a root zygote.
	ZygoteSeccompFile = "seccomp-zygote.bpf"
	// NetSeccompFile is the network filter (seccomp.NetFilter) a zygote
	// child installs on itself when the worker asks it to watch for its
	// first socket; the zygote reads it once.
	NetSeccompFile = "seccomp-net.bpf"
)

// FS returns the runtime's files, rooted at the directory holding
// server.py.
func FS() fs.FS {
	sub, err := fs.Sub(files, "python")
	if err != nil {
		// fs.Sub only fails on an invalid path, and "python" is valid.
		return files
	}
	return sub
}

// Install writes the runtime files and the seccomp filter (SeccompFile)
// into dir (created 0755 if missing; files 0644) so it can be
// bind-mounted read-only at MountPoint. Files are replaced atomically, so
// a running runtime that has dir mounted never sees a partial file.
// Install is idempotent.
func Install(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("installing runtime: %w", err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		return fmt.Errorf("installing runtime: %w", err)
	}
	if err := seccomp.WriteFile(filepath.Join(dir, SeccompFile)); err != nil {
		return fmt.Errorf("installing runtime: %w", err)
	}
	if err := seccomp.WriteZygoteFile(filepath.Join(dir, ZygoteSeccompFile)); err != nil {
		return fmt.Errorf("installing runtime: %w", err)
	}
	if err := seccomp.WriteNetFile(filepath.Join(dir, NetSeccompFile)); err != nil {
		return fmt.Errorf("installing runtime: %w", err)
	}
	src := FS()
	return fs.WalkDir(src, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		dst := filepath.Join(dir, filepath.FromSlash(p))
		if d.IsDir() {
			if err := os.MkdirAll(dst, 0o755); err != nil {
				return fmt.Errorf("installing runtime: %w", err)
			}
			return nil
		}
		b, err := fs.ReadFile(src, p)
		if err != nil {
			return fmt.Errorf("installing runtime: %w", err)
		}
		if old, err := os.ReadFile(dst); err == nil && bytes.Equal(old, b) {
			// Unchanged: keep it, and with it a valid compiled cache.
			return os.Chmod(dst, 0o644)
		}
		// A changed module loses its compiled caches first: they are
		// unchecked (see Compile) and would otherwise shadow it.
		if name, ok := strings.CutSuffix(filepath.Base(dst), ".py"); ok {
			stale, _ := filepath.Glob(filepath.Join(filepath.Dir(dst), "__pycache__", name+".*.pyc"))
			for _, c := range stale {
				if err := os.Remove(c); err != nil {
					return fmt.Errorf("installing runtime: %w", err)
				}
			}
		}
		return writeFile(dst, b)
	})
}

func writeFile(dst string, b []byte) error {
	f, err := os.CreateTemp(filepath.Dir(dst), ".tmp-*")
	if err != nil {
		return fmt.Errorf("installing runtime: %w", err)
	}
	tmp := f.Name()
	_, err = f.Write(b)
	if err == nil {
		err = f.Chmod(0o644)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, dst)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("installing runtime file %s: %w", dst, err)
	}
	return nil
}

// compileScript byte-compiles every .py file under a tree with unchecked
// hash-based caches (PEP 552): an import then neither stats nor reads and
// hashes the source. That is safe because the trees compiled never change
// afterwards (a function revision's code, staged and hashed before it is
// compiled; the runtime, installed and compiled at start-up), and bind
// mounts and mtimes do not matter to it. Files that do not compile are
// skipped: the runtime reports their syntax error at load, as Lambda
// does. With a second argument the caches go below that directory
// instead, at the same relative places (see CompileArgs), and a cache
// that cannot be written (a full disk) is skipped too.
const compileScript = `import os, sys, py_compile
src = sys.argv[1]
out = sys.argv[2] if len(sys.argv) > 2 else None
mode = py_compile.PycInvalidationMode.UNCHECKED_HASH
tag = sys.implementation.cache_tag
skip = (py_compile.PyCompileError, OSError) if out else py_compile.PyCompileError
for root, dirs, files in os.walk(src):
    dirs[:] = [d for d in dirs if d != "__pycache__"]
    for f in files:
        if f.endswith(".py"):
            cfile = None
            if out:
                cfile = os.path.join(out, os.path.relpath(root, src), "__pycache__", f[:-3] + "." + tag + ".pyc")
            try:
                py_compile.compile(os.path.join(root, f), cfile=cfile, doraise=True, invalidation_mode=mode)
            except skip:
                pass
`

// CompileArgs returns the arguments, after an interpreter and its own
// options, that byte-compile every Python file under src as Compile
// does. With out set the caches are written below out instead of src,
// each at the path it would have below src
// (out/<dir>/__pycache__/<module>.<cache tag>.pyc): for a compiler that
// may only read src, whose output the caller checks and copies back.
func CompileArgs(src, out string) []string {
	args := []string{"-c", compileScript, src}
	if out != "" {
		args = append(args, out)
	}
	return args
}

// Compile byte-compiles every Python file under dir into __pycache__
// directories (0755; each cache file gets its source's mode), with the
// interpreter that the command line python runs, in environment env. It
// must be the version the sandbox runs (see image.Python): the cache is
// per Python version and another version ignores it.
//
// Compile runs the interpreter on the host, as the caller: use it only
// on trusted trees (the runtime dir, after Install). Untrusted code (a
// function's) may make the compiler use any amount of memory and time;
// packages.Compiler compiles it in a sandbox. It is optional but pays:
// without a cache every start compiles the runtime (about 2 ms), and the
// first source compile in a fresh interpreter also pays about 0.7 ms of
// one-time compiler set-up, so even a one-line handler costs ~1 ms to
// import from source and ~0.2 ms from its cache. Files with syntax errors
// are skipped, not reported.
func Compile(ctx context.Context, python, env []string, dir string) error {
	if _, err := os.Stat(dir); err != nil {
		return fmt.Errorf("compiling %s: %w", dir, err)
	}
	if len(python) == 0 {
		return fmt.Errorf("compiling %s: no interpreter", dir)
	}
	args := append(python[1:len(python):len(python)], "-S", "-B")
	args = append(args, CompileArgs(dir, "")...)
	cmd := exec.CommandContext(ctx, python[0], args...)
	cmd.Env = append([]string{}, env...)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("compiling %s with %s: %w: %s", dir, python[len(python)-1], err, bytes.TrimSpace(out))
	}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && d.Name() == "__pycache__" {
			return os.Chmod(p, 0o755)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("compiling %s: %w", dir, err)
	}
	return nil
}

// Argv returns the command line that starts the runtime with the given
// interpreter (inside the sandbox, e.g. /usr/bin/python3). -S skips the
// site import (about 3 ms; the runtime sets sys.path itself) and -B stops
// Python writing bytecode into read-only mounts.
func Argv(python string) []string {
	return []string{python, "-S", "-B", MountPoint + "/" + Script}
}

// Options describes the function the runtime serves.
type Options struct {
	// Handler is "module.func"; dotted or slash-separated module paths
	// are allowed. Empty means "f.f".
	Handler string
	// Function is the function's name (context.function_name).
	Function string
	// Revision is the deployed revision (context.function_version).
	Revision string
	// MemoryMB is the memory limit (context.memory_limit_in_mb); zero
	// leaves the runtime's default of 128.
	MemoryMB int
	// Timeout is the invocation timeout, used for
	// get_remaining_time_in_millis when a request has no deadline. It
	// is rounded up to whole seconds; zero leaves the default of 30 s.
	Timeout time.Duration
	// Path lists extra absolute directories for sys.path, searched after
	// the standard library and before the base image's dist-packages
	// (the package install cache).
	Path []string
	// CodeDir overrides CodeDir, the directory put first on sys.path.
	CodeDir string
}

// Validate reports whether o can be passed to the runtime.
func (o Options) Validate() error {
	if o.Handler != "" {
		if _, _, err := ParseHandler(o.Handler); err != nil {
			return err
		}
	}
	if o.MemoryMB < 0 {
		return fmt.Errorf("memory %d MB: %w", o.MemoryMB, ErrInvalid)
	}
	if o.Timeout < 0 {
		return fmt.Errorf("timeout %v: %w", o.Timeout, ErrInvalid)
	}
	for _, p := range o.Path {
		if !filepath.IsAbs(p) || strings.ContainsAny(p, ":\x00") {
			return fmt.Errorf("path entry %q must be absolute and contain no ':': %w", p, ErrInvalid)
		}
	}
	if o.CodeDir != "" && (!filepath.IsAbs(o.CodeDir) || strings.ContainsRune(o.CodeDir, 0)) {
		return fmt.Errorf("code dir %q must be absolute: %w", o.CodeDir, ErrInvalid)
	}
	for _, s := range []string{o.Handler, o.Function, o.Revision} {
		if strings.ContainsRune(s, 0) {
			return fmt.Errorf("option %q contains NUL: %w", s, ErrInvalid)
		}
	}
	return nil
}

// Env returns the HEARTH_* environment variables for o, to be appended
// to the function's own environment. Call Validate first: Env does not
// check its input.
func Env(o Options) []string {
	h := o.Handler
	if h == "" {
		h = "f.f"
	}
	env := []string{
		"HEARTH_HANDLER=" + h,
		"HEARTH_FUNCTION=" + o.Function,
		"HEARTH_REVISION=" + o.Revision,
	}
	if o.MemoryMB > 0 {
		env = append(env, "HEARTH_MEMORY_MB="+strconv.Itoa(o.MemoryMB))
	}
	if o.Timeout > 0 {
		s := (o.Timeout + time.Second - 1) / time.Second
		env = append(env, "HEARTH_TIMEOUT_S="+strconv.FormatInt(int64(s), 10))
	}
	if len(o.Path) > 0 {
		env = append(env, "HEARTH_PATH="+strings.Join(o.Path, ":"))
	}
	if o.CodeDir != "" {
		env = append(env, "HEARTH_CODE="+o.CodeDir)
	}
	return env
}

// ParseHandler splits a handler spec "module.func" (module may be dotted
// or use '/' for packages, as Lambda allows) and checks that every part
// is a Python identifier.
func ParseHandler(h string) (module, fn string, err error) {
	i := strings.LastIndexByte(h, '.')
	if i <= 0 || i == len(h)-1 {
		return "", "", fmt.Errorf("handler %q: want module.function: %w", h, ErrInvalid)
	}
	module, fn = h[:i], h[i+1:]
	if !isIdent(fn) {
		return "", "", fmt.Errorf("handler %q: function %q is not an identifier: %w", h, fn, ErrInvalid)
	}
	for _, p := range strings.FieldsFunc(module, func(r rune) bool { return r == '.' || r == '/' }) {
		if !isIdent(p) {
			return "", "", fmt.Errorf("handler %q: module %q is not a module path: %w", h, module, ErrInvalid)
		}
	}
	if strings.Contains(module, "..") || strings.Contains(module, "//") ||
		strings.ContainsAny(module[:1], "./") || strings.ContainsAny(module[len(module)-1:], "./") {
		return "", "", fmt.Errorf("handler %q: module %q is not a module path: %w", h, module, ErrInvalid)
	}
	return module, fn, nil
}

// isIdent reports whether s is an ASCII Python identifier. Non-ASCII
// identifiers are legal Python but not worth the ambiguity in a handler
// name.
func isIdent(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '_', 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z':
		case '0' <= c && c <= '9' && i > 0:
		default:
			return false
		}
	}
	return true
}
