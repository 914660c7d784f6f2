package packages

import (
	"errors"

	"github.com/hearth-run/hearth/internal/function"
)

// codeFault is a sentinel error that also matches
// function.ErrRequirements: the function being deployed, not the worker,
// is at fault.
type codeFault string

func (e codeFault) Error() string { return string(e) }

// Is reports whether target is function.ErrRequirements.
func (e codeFault) Is(target error) bool { return target == function.ErrRequirements }

var (
	// ErrResolve reports requirements pip could not resolve: a malformed
	// requirement, a conflict, or no matching distribution. The error
	// carries the tail of pip's output. It matches
	// function.ErrRequirements.
	ErrResolve error = codeFault("install cache: cannot resolve requirements")

	// ErrInstall reports a distribution pip could not install. The error
	// carries the tail of pip's output. It matches
	// function.ErrRequirements.
	ErrInstall error = codeFault("install cache: cannot install package")

	// ErrIndexUnreachable reports that pip could not reach a package
	// index (connection refused, no route, name resolution, TLS): the
	// requirements may be fine, the index or the network is not. The
	// error names the index and every requirement left unresolved.
	ErrIndexUnreachable = errors.New("install cache: package index unreachable")

	// ErrInvalid reports a malformed package name, version or config. It
	// matches function.ErrRequirements.
	ErrInvalid error = codeFault("invalid package")

	// ErrOutOfMemory reports a sandboxed run (pip or the compiler) that
	// the kernel killed at its cgroup's memory limit.
	ErrOutOfMemory = errors.New("ran out of memory")

	// ErrTimeout reports a sandboxed run (pip or the compiler) killed at
	// its time limit.
	ErrTimeout = errors.New("time limit exceeded")

	// ErrNotInstalled reports a package Mounts was asked for that is not
	// in the cache (for example removed by GC).
	ErrNotInstalled = errors.New("package not installed")
)
