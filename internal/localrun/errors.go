package localrun

import "errors"

var (
	// ErrNotRoot: a session makes namespaces, cgroups and mounts, as the
	// worker does, and needs root.
	ErrNotRoot = errors.New("hearth run must run as root")
	// ErrNoBase: the base image is missing or broken.
	ErrNoBase = errors.New("no usable base image")
	// ErrPackages: the function needs packages that the base image does
	// not have; a session installs none.
	ErrPackages = errors.New("requirements not satisfied by the base image")
	// ErrLoad: the handler failed to load (an import error, a syntax
	// error); the *runtime.HandlerError says where.
	ErrLoad = errors.New("handler failed to load")
	// ErrStart: the sandbox or its runtime did not start.
	ErrStart = errors.New("sandbox start failed")
	// ErrTimeout: a call ran past the function's timeout_s.
	ErrTimeout = errors.New("function timed out")
	// ErrCrashed: the sandbox died during a call (out of memory, a
	// crash, os._exit).
	ErrCrashed = errors.New("sandbox died during the call")
)
