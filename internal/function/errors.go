package function

import "errors"

var (
	// ErrInvalid reports a malformed or out-of-range function
	// configuration: bad YAML, unknown fields, limits outside their range,
	// a handler whose module is missing.
	ErrInvalid = errors.New("invalid function configuration")

	// ErrUnsupported reports a configuration that is well formed but not
	// supported yet, such as a requirements.txt option line. It exists so these can be lifted later without
	// changing callers.
	ErrUnsupported = errors.New("not supported yet")

	// ErrUnsatisfied reports a requirement that no distribution in the
	// base image satisfies.
	ErrUnsatisfied = errors.New("requirement not satisfied by the base image")

	// ErrRequirements marks a failure to install a function's
	// requirements that the function is at fault for (nothing satisfies
	// a requirement, a distribution does not build, a malformed name or
	// version): the install cache's errors of that kind match it, so
	// that a deploy refuses the function as bad input without knowing
	// the cache.
	ErrRequirements = errors.New("requirements cannot be installed")
)
