package runtime

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Frame types; see python/hearthrt.py.
const (
	hdrLen         = 5
	frameInvoke    = 'I'
	frameReady     = 'R'
	frameLoadError = 'L'
	frameResult    = 'O'
	frameError     = 'X'

	// maxID bounds a request id (u16 length on the wire).
	maxID = math.MaxUint16
	// maxFrame is the largest invoke frame payload the runtime accepts
	// (_MAX_FRAME in hearthrt.py).
	maxFrame = 1 << 30
	// maxReadyFrame bounds ready frames: two figures now, room for more.
	maxReadyFrame = 64
	// maxErrorFrame bounds load-error frames, which carry a stack trace.
	maxErrorFrame = 1 << 20
	// inlineEvent is the largest event copied into the write buffer so the
	// frame goes out in one write; larger ones are written separately.
	inlineEvent = 64 << 10
)

// DefaultMaxResponse is the largest result a Conn accepts unless
// MaxResponse says otherwise: 6 MiB, as Lambda.
const DefaultMaxResponse = 6 << 20

// Ready describes a runtime that has loaded its handler.
type Ready struct {
	// Load is how long importing the handler module took, measured by the
	// runtime.
	Load time.Duration
	// LoadCPU is the CPU time the import took, measured by the runtime
	// (zero from a runtime that does not say). The runtime's own word:
	// a handler could make it say anything, so it is capped at Load.
	LoadCPU time.Duration
}

// Request is one invocation.
type Request struct {
	// ID is the request id (context.aws_request_id); at most 65535 bytes.
	ID string
	// Event is the JSON request body; empty means None.
	Event []byte
	// Deadline is when the caller will give up, for
	// get_remaining_time_in_millis. Zero means the ctx deadline, or the
	// function timeout if ctx has none.
	Deadline time.Time
}

// Response is the outcome of an invocation that reached the handler.
// Exactly one of Body and Err is set.
type Response struct {
	// Body is the JSON-encoded result. It is owned by the caller.
	Body []byte
	// Err is the handler's error (or the load error, for a runtime that
	// failed to load its handler).
	Err *HandlerError
	// Run is the run time measured by the runtime: decoding the event,
	// running the handler and encoding the result.
	Run time.Duration
}

// HandlerError is an error raised by function code, in Lambda's shape.
type HandlerError struct {
	// Type is the exception class, or Runtime.* for errors the runtime
	// found (Runtime.ImportModuleError, Runtime.HandlerNotFound,
	// Runtime.UserCodeSyntaxError, Runtime.MalformedHandlerName,
	// Runtime.MarshalError, Runtime.UnmarshalError) and
	// Function.ResponseSizeTooLarge.
	Type string `json:"errorType"`
	// Message is the exception's message.
	Message string `json:"errorMessage"`
	// StackTrace holds formatted frames, innermost last, one string each.
	StackTrace []string `json:"stackTrace"`
}

// Error returns "Type: Message".
func (e *HandlerError) Error() string { return e.Type + ": " + e.Message }

// MarshalJSON returns the Lambda error shape
// {"errorType":..,"errorMessage":..,"stackTrace":[..]}; stackTrace is
// always an array.
func (e *HandlerError) MarshalJSON() ([]byte, error) {
	type plain HandlerError // no methods: avoids recursion
	p := plain(*e)
	if p.StackTrace == nil {
		p.StackTrace = []string{}
	}
	return json.Marshal(p)
}

// Conn is the worker's end of a connection to a runtime. It serves one
// request at a time; a concurrent call returns ErrBusy. Once a call fails
// with a transport error (timeout, cancellation, crash, protocol error)
// the Conn is broken and keeps returning that error. Handler errors do
// not break it.
type Conn struct {
	// MaxResponse is the largest result accepted; a larger one is drained
	// and reported as a Function.ResponseSizeTooLarge handler error.
	// Zero means DefaultMaxResponse. Set it before the first call.
	MaxResponse int

	c    net.Conn
	busy atomic.Bool

	// The fields below belong to the call holding busy.
	pending  string // ID of a request sent ahead (Pipeline), not yet answered
	sent     bool   // a request was pipelined (see Pipeline)
	ready    bool
	info     Ready
	loadErr  *HandlerError
	broken   error
	hdr      [hdrLen]byte
	buf      []byte
	cancelWG sync.WaitGroup
}

// NewConn returns a Conn speaking the runtime protocol over c, which it
// owns from now on.
func NewConn(c net.Conn) *Conn { return &Conn{c: c} }

// Dial connects to the runtime listening on the unix socket at path.
func Dial(ctx context.Context, path string) (*Conn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, fmt.Errorf("dialing runtime: %w", err)
	}
	return NewConn(c), nil
}

// Close closes the connection. The runtime then waits for the next one.
func (c *Conn) Close() error { return c.c.Close() }

// WaitReady waits for the runtime to load its handler and returns the
// load time. If the handler failed to load it returns a *HandlerError;
// the Conn stays usable and every Invoke returns that error as
// Response.Err. Later calls return the first answer again.
func (c *Conn) WaitReady(ctx context.Context) (Ready, error) {
	if !c.busy.CompareAndSwap(false, true) {
		return Ready{}, ErrBusy
	}
	defer c.busy.Store(false)
	return c.waitReady(ctx)
}

func (c *Conn) waitReady(ctx context.Context) (Ready, error) {
	if c.broken != nil {
		return Ready{}, c.broken
	}
	if !c.ready {
		if err := c.fail(c.readReady(ctx)); err != nil {
			return Ready{}, fmt.Errorf("waiting for runtime: %w", err)
		}
	}
	if c.loadErr != nil {
		return Ready{}, c.loadErr
	}
	return c.info, nil
}

func (c *Conn) readReady(ctx context.Context) (err error) {
	defer c.watch(ctx)(&err)
	typ, n, err := c.readHeader()
	if err != nil {
		return err
	}
	switch {
	case typ == frameReady && n >= 8 && n <= maxReadyFrame:
		// The load time, then the load's CPU time (a runtime made before
		// it sends the first alone), in microseconds; what follows is for
		// a later client (an older one refused a longer frame, from a
		// snapshot made by a newer runtime, say).
		var p [maxReadyFrame]byte
		if _, err := io.ReadFull(c.c, p[:n]); err != nil {
			return err
		}
		us := func(b []byte) time.Duration {
			return time.Duration(min(binary.LittleEndian.Uint64(b), math.MaxInt64/1000)) * time.Microsecond
		}
		c.info = Ready{Load: us(p[:8])}
		if n >= 16 {
			c.info.LoadCPU = min(us(p[8:16]), c.info.Load)
		}
	case typ == frameLoadError && n <= maxErrorFrame:
		p := make([]byte, n)
		if _, err := io.ReadFull(c.c, p); err != nil {
			return err
		}
		e, err := decodeError(p)
		if err != nil {
			return err
		}
		c.loadErr = e
	default:
		return fmt.Errorf("unexpected frame %q (%d bytes) before ready: %w", typ, n, ErrProtocol)
	}
	c.ready = true
	return nil
}

// PipelineMax is the largest event Pipeline sends: it must fit in the
// socket's buffer, or the write would wait for the runtime's load.
const PipelineMax = 64 << 10

// Pipeline sends req now, on a Conn that has not read the ready frame
// yet: the runtime finds it as soon as it has sent that frame and runs
// it at once, so a start does not pay a round trip between its ready and
// its first call, two wake-ups that each wait their turn on a busy CPU.
// The next Invoke must be for req (its ID): it reads req's result rather
// than send it again. If the handler fails to load, that Invoke returns
// the load error as Response.Err, as for any request. A Conn takes one
// pipelined request in its life, before anything else, of at most
// PipelineMax bytes of event. ctx bounds the write only: a zero
// req.Deadline lets the runtime count the function's timeout from when
// it runs the request, after the load, as for any call.
func (c *Conn) Pipeline(ctx context.Context, req Request) error {
	if !c.busy.CompareAndSwap(false, true) {
		return ErrBusy
	}
	defer c.busy.Store(false)
	switch {
	case c.sent || c.ready || c.broken != nil:
		return fmt.Errorf("pipelining request %q after the ready frame or another request: %w", req.ID, ErrInvalid)
	case req.ID == "" || len(req.ID) > maxID:
		return fmt.Errorf("request id of %d bytes: %w", len(req.ID), ErrInvalid)
	case len(req.Event) > PipelineMax:
		return fmt.Errorf("pipelining an event of %d bytes: %w", len(req.Event), ErrInvalid)
	}
	c.sent = true
	if err := c.fail(c.pipeline(ctx, req)); err != nil {
		return fmt.Errorf("pipelining request %q: %w", req.ID, err)
	}
	c.pending = req.ID
	return nil
}

func (c *Conn) pipeline(ctx context.Context, req Request) (err error) {
	defer c.watch(ctx)(&err)
	return c.send(req)
}

// Invoke runs one request and waits for its result. A handler error is
// returned as Response.Err with a nil error. If ctx ends first, Invoke
// returns promptly with an error wrapping ctx.Err() (so
// context.DeadlineExceeded on a timeout) and the Conn is broken: the
// caller should kill the sandbox. If the runtime dies mid-request the
// error wraps ErrCrashed. Invoke waits for the ready frame first if
// WaitReady was not called.
func (c *Conn) Invoke(ctx context.Context, req Request) (Response, error) {
	if !c.busy.CompareAndSwap(false, true) {
		return Response{}, ErrBusy
	}
	defer c.busy.Store(false)
	if len(req.ID) > maxID {
		return Response{}, fmt.Errorf("request id of %d bytes: %w", len(req.ID), ErrInvalid)
	}
	if 10+len(req.ID)+len(req.Event) > maxFrame {
		return Response{}, fmt.Errorf("event of %d bytes: %w", len(req.Event), ErrInvalid)
	}
	if c.pending != "" && req.ID != c.pending {
		return Response{}, fmt.Errorf("request %q while pipelined request %q is unanswered: %w", req.ID, c.pending, ErrInvalid)
	}
	if _, err := c.waitReady(ctx); err != nil {
		var he *HandlerError
		if !errors.As(err, &he) {
			return Response{}, err
		}
	}
	r, err := c.invoke(ctx, req)
	if err = c.fail(err); err != nil {
		return Response{}, fmt.Errorf("invoking request %q: %w", req.ID, err)
	}
	return r, nil
}

func (c *Conn) invoke(ctx context.Context, req Request) (r Response, err error) {
	defer c.watch(ctx)(&err)
	if c.pending != "" {
		c.pending = "" // sent ahead, with its deadline then
		return c.receive()
	}
	if req.Deadline.IsZero() {
		req.Deadline, _ = ctx.Deadline()
	}
	if err := c.send(req); err != nil {
		return r, err
	}
	return c.receive()
}

// send writes req's invoke frame. A zero deadline lets the runtime count
// the function's timeout from when it runs the request.
func (c *Conn) send(req Request) error {
	dl := req.Deadline
	var ms int64
	if !dl.IsZero() {
		ms = max(dl.UnixMilli(), 1)
	}

	n := 10 + len(req.ID) + len(req.Event)
	inline := len(req.Event) <= inlineEvent
	size := hdrLen + 10 + len(req.ID)
	if inline {
		size += len(req.Event)
	}
	b := c.buf[:0]
	if cap(b) < size {
		b = make([]byte, 0, max(size, 512))
	}
	b = binary.LittleEndian.AppendUint32(b, uint32(n))
	b = append(b, frameInvoke)
	b = binary.LittleEndian.AppendUint64(b, uint64(ms))
	b = binary.LittleEndian.AppendUint16(b, uint16(len(req.ID)))
	b = append(b, req.ID...)
	if inline {
		b = append(b, req.Event...)
	}
	c.buf = b
	if _, err := c.c.Write(b); err != nil {
		return err
	}
	if !inline {
		if _, err := c.c.Write(req.Event); err != nil {
			return err
		}
	}
	return nil
}

// receive reads the answer to the request sent last.
func (c *Conn) receive() (r Response, err error) {
	typ, n, err := c.readHeader()
	if err != nil {
		return r, err
	}
	if (typ != frameResult && typ != frameError) || n < 8 {
		return r, fmt.Errorf("unexpected frame %q (%d bytes): %w", typ, n, ErrProtocol)
	}
	limit := c.MaxResponse
	if limit <= 0 {
		limit = DefaultMaxResponse
	}
	if typ == frameError {
		limit = max(limit, maxErrorFrame)
	}
	if n-8 > limit {
		// Too big to keep: drain it so the connection stays in step.
		if _, err := io.CopyN(io.Discard, c.c, int64(n)); err != nil {
			return r, err
		}
		r.Err = &HandlerError{
			Type:    "Function.ResponseSizeTooLarge",
			Message: fmt.Sprintf("Response payload size (%d bytes) exceeded maximum allowed payload size (%d bytes).", n-8, limit),
		}
		return r, nil
	}
	p := make([]byte, n)
	if _, err := io.ReadFull(c.c, p); err != nil {
		return r, err
	}
	us := binary.LittleEndian.Uint64(p[:8])
	r.Run = time.Duration(min(us, math.MaxInt64/1000)) * time.Microsecond
	if typ == frameResult {
		r.Body = p[8:]
		return r, nil
	}
	r.Err, err = decodeError(p[8:])
	return r, err
}

// readHeader reads one frame header.
func (c *Conn) readHeader() (typ byte, n int, err error) {
	if _, err := io.ReadFull(c.c, c.hdr[:]); err != nil {
		return 0, 0, err
	}
	return c.hdr[4], int(binary.LittleEndian.Uint32(c.hdr[:4])), nil
}

// aLongTimeAgo is a deadline in the past, to wake blocked I/O at once.
var aLongTimeAgo = time.Unix(1, 0)

// watch applies ctx to the connection for one call: its deadline becomes
// the I/O deadline and its cancellation interrupts blocked I/O. The
// returned func undoes that and turns the resulting timeout into ctx's
// error.
func (c *Conn) watch(ctx context.Context) func(*error) {
	dl, _ := ctx.Deadline()
	c.c.SetDeadline(dl) // zero clears a previous call's deadline
	if ctx.Done() == nil {
		return func(*error) {}
	}
	c.cancelWG.Add(1)
	stop := context.AfterFunc(ctx, func() {
		defer c.cancelWG.Done()
		c.c.SetDeadline(aLongTimeAgo)
	})
	return func(errp *error) {
		if stop() {
			c.cancelWG.Done()
		} else {
			c.cancelWG.Wait() // it may still be setting the deadline
		}
		if *errp == nil {
			return
		}
		if errors.Is(*errp, os.ErrDeadlineExceeded) {
			if err := ctx.Err(); err != nil {
				*errp = err
			} else if !dl.IsZero() {
				// The socket deadline can fire a hair before ctx's timer.
				*errp = context.DeadlineExceeded
			}
		}
	}
}

// fail classifies a transport error and breaks the Conn with it.
func (c *Conn) fail(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) {
		err = fmt.Errorf("%w: %w", ErrCrashed, err)
	}
	c.broken = err
	return err
}

func decodeError(p []byte) (*HandlerError, error) {
	var e HandlerError
	if err := json.Unmarshal(p, &e); err != nil {
		return nil, fmt.Errorf("decoding handler error: %w: %w", err, ErrProtocol)
	}
	return &e, nil
}
