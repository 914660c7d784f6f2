package packages

import "errors"

var (
	// ErrResolve reports requirements pip could not resolve: a malformed
	// requirement, a conflict, or no matching distribution. The error
	// carries the tail of pip's output.
	ErrResolve = errors.New("install cache: cannot resolve requirements")

	// ErrInstall reports a distribution pip could not install. The error
	// carries the tail of pip's output.
	ErrInstall = errors.New("install cache: cannot install package")

	// ErrIndexUnreachable reports that pip could not reach a package
	// index (connection refused, no route, name resolution, TLS): the
	// requirements may be fine, the index or the network is not. The
	// error names the index and every requirement left unresolved.
	ErrIndexUnreachable = errors.New("install cache: package index unreachable")

	// ErrInvalid reports a malformed package name, version or config.
	ErrInvalid = errors.New("invalid package")

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
