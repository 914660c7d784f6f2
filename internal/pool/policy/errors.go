package policy

import "errors"

// ErrUnknown reports a policy name that Constructors does not know.
var ErrUnknown = errors.New("policy: unknown policy")
