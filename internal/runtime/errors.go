package runtime

import "errors"

var (
	// ErrCrashed reports that the runtime process went away (the
	// connection hit EOF or was reset) while a request was in flight. The
	// caller should check whether the sandbox was OOM-killed.
	ErrCrashed = errors.New("runtime crashed")

	// ErrProtocol reports a malformed frame from the runtime.
	ErrProtocol = errors.New("runtime protocol error")

	// ErrBusy reports a call on a Conn that is already serving a request.
	ErrBusy = errors.New("runtime connection busy")

	// ErrInvalid reports a request or option that cannot be sent.
	ErrInvalid = errors.New("invalid runtime request")
)
