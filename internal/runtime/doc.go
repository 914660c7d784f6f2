// Package runtime holds Hearth's embedded Python runtime and the Go client
// that talks to it.
//
// The runtime is a small Python server (python/server.py and
// python/hearthrt.py, embedded with go:embed). Install writes it to a
// directory the sandbox bind-mounts read-only at MountPoint; Compile
// byte-compiles it there, and should also compile each function's code at
// deploy, so that a start compiles nothing (worth 1-3 ms per cold start). The
// sandbox starts Argv with Env's variables, the function code as the
// working directory and an already-listening AF_UNIX stream socket as fd 3
// (ListenFD). The runtime loads the handler once, then serves one
// connection at a time on that socket; when a connection closes it accepts
// the next, so a restored snapshot can be reconnected. The caller should
// close its own copy of the listening socket once the runtime has started:
// then a runtime that dies before accepting resets the pending connection
// (ErrCrashed) instead of leaving it queued until ctx ends.
//
// Every connection starts with a READY frame carrying the handler's
// import time and its CPU time, or a LOAD-ERROR frame; a runtime whose handler failed to
// load stays up and answers every invocation with that error, as Lambda
// does.
//
// The wire protocol is length-prefixed binary frames (see hearthrt.py):
// no HTTP parsing and no process per call. It never touches the handler's
// stdout or stderr, which stay free for logs and are flushed after each
// invocation. The runtime writes both sys.stdout and sys.stderr to fd 1,
// each line tagged with its stream, so that the order in which they were
// written survives two pipes read apart; Output parses a pipe back into
// lines and streams.
//
// A Conn is the worker's end of one connection. It is not safe for
// concurrent use: it serves one request at a time, and a concurrent call
// fails with ErrBusy. After a transport failure (timeout, cancellation,
// crash) the Conn is broken and every later call returns the same error;
// the caller is expected to destroy the sandbox.
package runtime
