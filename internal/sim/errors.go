package sim

import "errors"

// ErrConfig reports an invalid simulation configuration.
var ErrConfig = errors.New("sim: invalid configuration")
