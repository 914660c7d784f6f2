"""Hearth Python runtime: loads one handler and serves invocations.

The worker passes an already-listening AF_UNIX stream socket as fd 3. The
runtime accepts one connection at a time, sends a READY (or LOAD-ERROR)
frame, then answers INVOKE frames until the connection closes, and accepts
the next connection (after a snapshot restore the worker reconnects).

Frames, both directions: u32 little-endian payload length, u8 type, payload.

  worker -> runtime
    I  invoke: i64 deadline (unix ms, 0 = none), u16 id length, id, event
  runtime -> worker
    R  ready: u64 handler load time (us), u64 its CPU time (us)
    L  load error: JSON {errorType, errorMessage, stackTrace}
    O  result: u64 run time (us), JSON result
    X  error: u64 run time (us), JSON {errorType, errorMessage, stackTrace}

The protocol never touches stdout or stderr, so handler output cannot
corrupt it; both are flushed after every invocation, and both go to fd 1
as tagged lines (see tag_output), so that their order survives.

Startup cost is the product: this module imports nothing beyond what a bare
`python3 -S` has already loaded plus the _socket and _json C modules.
traceback and json are imported lazily, on error paths only.

A zygote reuses the pieces: setup_path and tag_output, then its imports,
then in the child after the fork run (load the handler, serve a socket).
Importing this module only defines things and builds the JSON scanner.
"""

import sys
import posix
import time
import _socket

try:
    import _json
except ImportError:  # pragma: no cover - CPython always has it
    _json = None

LISTEN_FD = 3

_FRAME_INVOKE = 0x49  # 'I'
_READY = b"R"
_LOAD_ERROR = b"L"
_RESULT = b"O"
_ERROR = b"X"

_MAX_FRAME = 1 << 30


def _env(environ, key, default=""):
    """Read key from environ, keyed by bytes (posix.environ) or str."""
    v = environ.get(key.encode())
    if v is None:
        v = environ.get(key)
        if v is None:
            return default
    if isinstance(v, bytes):
        return v.decode("utf-8", "surrogateescape")
    return v


def _exists(p):
    try:
        posix.stat(p)
    except OSError:
        return False
    return True


def setup_path(environ=None, code=None):
    """Set sys.path as site would, without paying for the site import.

    Order: the function code (HEARTH_CODE, default /code), the standard
    library, HEARTH_PATH entries (the package install cache; before the
    base image so pinned versions win), then the Debian dist-packages
    directories. The runtime's own directory is dropped so it cannot
    shadow the function's modules. .pth files are not processed.
    """
    if environ is None:
        environ = posix.environ
    if code is None:
        code = _env(environ, "HEARTH_CODE", "/code")
    here = __file__.rpartition("/")[0] or "."
    std = [p for p in sys.path if p and p != here and p != code]
    extra = [p for p in _env(environ, "HEARTH_PATH").split(":") if p]
    v = "python%d.%d" % sys.version_info[:2]
    dist = [
        "/usr/local/lib/%s/dist-packages" % v,
        "/usr/lib/python3/dist-packages",
        "/usr/lib/%s/dist-packages" % v,
    ]
    # here/lib holds hearth_snapshot (handlers may import it), last so it
    # shadows nothing.
    lib = [p for p in (here + "/lib",) if _exists(p)]
    path = [code] + std + extra + [p for p in dist if _exists(p)] + lib
    seen = set()
    sys.path[:] = [p for p in path if not (p in seen or seen.add(p))]


# JSON. The json package imports re, enum and friends (~5 ms cold); the
# _json C accelerators it wraps cost ~0.4 ms. Errors are re-raised through
# the json package so messages match json.loads/json.dumps exactly.


class _DecodeCtx:
    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = {
        "-Infinity": float("-inf"),
        "Infinity": float("inf"),
        "NaN": float("nan"),
    }.__getitem__


_scan = None
if _json is not None:
    try:
        _scan = _json.make_scanner(_DecodeCtx)
    except Exception:  # pragma: no cover
        _scan = None


def loads(b):
    """Decode a JSON request body; empty input gives None."""
    if not b:
        return None
    s = b.decode("utf-8-sig") if b[:3] == b"\xef\xbb\xbf" else b.decode("utf-8")
    s = s.strip(" \t\n\r")
    if not s:
        return None
    if _scan is not None:
        try:
            obj, end = _scan(s, 0)
            if end == len(s):
                return obj
        except (StopIteration, ValueError):
            pass
    import json  # slow path; also produces json's exact error message

    return json.loads(s)


def _default(o):
    raise TypeError("Object of type %s is not JSON serializable" % o.__class__.__name__)


def dumps(o):
    """Encode a handler result as compact ASCII JSON bytes.

    NaN and the infinities raise ValueError: JSON has no such numbers, and
    a client's parser would reject the body (AWS Lambda fails the call)."""
    if _json is not None:
        # A fresh encoder per call: the circular-reference markers dict can
        # be left dirty by an exception. The last argument is allow_nan.
        enc = _json.make_encoder(
            {}, _default, _json.encode_basestring_ascii, None, ":", ",", False, False, False
        )
        return "".join(enc(o, 0)).encode()
    import json

    return json.dumps(o, separators=(",", ":"), allow_nan=False).encode()


# Errors in Lambda's shape.


def _error(etype, msg, trace=None):
    return {"errorType": etype, "errorMessage": msg, "stackTrace": trace or []}


def _trace(tb):
    import traceback

    here = __file__
    frames = [
        f
        for f in traceback.extract_tb(tb)
        if f.filename != here and not f.filename.startswith("<frozen ")
    ]
    return traceback.format_list(frames)


def _exc_error(e, etype=None):
    return _error(etype or type(e).__name__, str(e), _trace(e.__traceback__))


def _log_error(err):
    # Lambda prints unhandled errors to the function's log as well.
    try:
        f = sys.stderr
        f.write("[ERROR] %s: %s\n" % (err["errorType"], err["errorMessage"]))
        if err["stackTrace"]:
            f.write("Traceback (most recent call last):\n")
            f.write("".join(err["stackTrace"]))
        f.flush()
    except Exception:
        pass


# Handler loading.


def _nargs(fn):
    """Positional parameters fn takes: 1 for f(event), 2 for (event, context).

    Read from the code object: inspect costs far more than the handler.
    """
    c = getattr(fn, "__code__", None)
    drop = 0
    if c is None:
        f = getattr(fn, "__func__", None)  # bound method
        if f is not None:
            c, drop = getattr(f, "__code__", None), 1
    if c is None:
        call = getattr(type(fn), "__call__", None)  # callable instance
        c, drop = getattr(call, "__code__", None), 1
    if c is None:
        return 2
    if c.co_flags & 0x04:  # *args
        return 2
    return max(0, min(2, c.co_argcount - drop))


class Handler:
    """A loaded handler: fn and its convention, or the load error."""

    __slots__ = ("fn", "nargs", "err", "load_us", "load_cpu_us")

    def __init__(self, fn=None, nargs=0, err=None, load_us=0):
        self.fn = fn
        self.nargs = nargs
        self.err = err
        self.load_us = load_us
        self.load_cpu_us = 0


def load(spec):
    """Import the handler named by spec ("module.func"); never raises."""
    t0, c0 = time.perf_counter_ns(), time.thread_time_ns()
    try:
        h = _load(spec)
    except BaseException as e:  # noqa: B036 - a module may sys.exit at import
        h = Handler(err=_exc_error(e))
    h.load_us = (time.perf_counter_ns() - t0) // 1000
    # Its CPU, which the worker cannot read while this process runs on:
    # the kernel adds a running task's time to what /proc shows only at
    # a tick or when it stops, and with the first call sent ahead it
    # runs straight from its import into the call.
    h.load_cpu_us = (time.thread_time_ns() - c0) // 1000
    return h


def _import_from_code(name):
    """Import top-level module name from the code dir (sys.path[0]) as
    sys.path's search would find it there, without the search: in a fresh
    process every meta path finder and path hook is tried, and the code
    dir's finder is built, on the start's critical path. Returns False,
    having done nothing, unless the search would surely end at
    CODE/name.py: not a builtin or frozen module, no package or extension
    module of that name beside it."""
    if "." in name or name in sys.modules or name in sys.builtin_module_names:
        return False
    imp = sys.modules.get("_imp")
    boot = sys.modules.get("_frozen_importlib")
    ext = sys.modules.get("_frozen_importlib_external")
    if imp is None or boot is None or ext is None or imp.is_frozen(name):
        return False
    code = sys.path[0] if sys.path else ""
    try:
        names = set(posix.listdir(code))
    except (OSError, TypeError):
        return False
    if name + ".py" not in names or name in names:
        return False
    for suffix in imp.extension_suffixes():
        if name + suffix in names:
            return False
    path = code + "/" + name + ".py"
    loader = ext.SourceFileLoader(name, path)
    boot._load(ext.spec_from_file_location(name, path, loader=loader))
    return True


def _load(spec):
    modname, _, fname = spec.rpartition(".")
    if not modname or not fname:
        return Handler(err=_error(
            "Runtime.MalformedHandlerName",
            "Bad handler '%s': expected module.function" % spec,
        ))
    modname = modname.replace("/", ".")
    try:
        if not _import_from_code(modname):
            __import__(modname)
        m = sys.modules[modname]
    except ImportError as e:
        return Handler(err=_error(
            "Runtime.ImportModuleError",
            "Unable to import module '%s': %s" % (modname, e),
            _trace(e.__traceback__),
        ))
    except SyntaxError as e:
        return Handler(err=_error(
            "Runtime.UserCodeSyntaxError",
            "Syntax error in module '%s': %s" % (modname, e),
            ['  File "%s" Line %s\n    %s' % (e.filename, e.lineno, (e.text or "").strip())],
        ))
    fn = getattr(m, fname, None)
    if fn is None:
        return Handler(err=_error(
            "Runtime.HandlerNotFound",
            "Handler '%s' missing on module '%s'" % (fname, modname),
        ))
    if not callable(fn):
        return Handler(err=_error(
            "Runtime.HandlerNotFound",
            "Handler '%s' on module '%s' is not callable" % (fname, modname),
        ))
    return Handler(fn=fn, nargs=_nargs(fn))


# Invocation.


class Meta:
    """Per-function facts shared by every invocation's context."""

    __slots__ = ("name", "version", "memory_mb", "timeout_ms", "arn", "log_group", "log_stream")

    def __init__(self, environ=None):
        if environ is None:
            environ = posix.environ
        self.name = _env(environ, "HEARTH_FUNCTION", "function")
        self.version = _env(environ, "HEARTH_REVISION", "$LATEST")
        self.memory_mb = _env(environ, "HEARTH_MEMORY_MB", "128")
        try:
            self.timeout_ms = int(_env(environ, "HEARTH_TIMEOUT_S", "30")) * 1000
        except ValueError:
            self.timeout_ms = 30000
        self.arn = "arn:hearth:lambda:local:000000000000:function:" + self.name
        self.log_group = "/hearth/" + self.name
        self.log_stream = "%s/%d" % (self.version, posix.getpid())


class Context:
    """The AWS Lambda context object passed to f(event, context) handlers."""

    __slots__ = (
        "function_name", "function_version", "invoked_function_arn",
        "memory_limit_in_mb", "aws_request_id", "log_group_name",
        "log_stream_name", "identity", "client_context", "_deadline_ms",
    )

    def __init__(self, meta, request_id, deadline_ms):
        self.function_name = meta.name
        self.function_version = meta.version
        self.invoked_function_arn = meta.arn
        # A string, as in AWS's runtime (it comes from the environment there).
        self.memory_limit_in_mb = meta.memory_mb
        self.aws_request_id = request_id
        self.log_group_name = meta.log_group
        self.log_stream_name = meta.log_stream
        self.identity = None
        self.client_context = None
        self._deadline_ms = deadline_ms

    def get_remaining_time_in_millis(self):
        """Milliseconds left before the worker kills this invocation."""
        return max(0, self._deadline_ms - time.time_ns() // 1000000)


def _frame(t, payload):
    return len(payload).to_bytes(4, "little") + t + payload


def invoke(h, meta, payload):
    """Run one INVOKE payload through h; returns the response frame."""
    if h.err is not None:
        return _frame(_ERROR, bytes(8) + dumps(h.err))
    deadline = int.from_bytes(payload[0:8], "little", signed=True)
    n = payload[8] | payload[9] << 8
    rid = bytes(payload[10:10 + n]).decode("utf-8", "replace")
    if deadline <= 0:
        deadline = time.time_ns() // 1000000 + meta.timeout_ms
    t0 = time.perf_counter_ns()
    try:
        event = loads(payload[10 + n:])
    except Exception as e:
        err = _error("Runtime.UnmarshalError", "Unable to unmarshal input: %s" % e)
        return _frame(_ERROR, bytes(8) + dumps(err))
    try:
        if h.nargs == 2:
            r = h.fn(event, Context(meta, rid, deadline))
        elif h.nargs == 1:
            r = h.fn(event)
        else:
            r = h.fn()
    except Exception as e:
        err = _exc_error(e)
        _log_error(err)
        t = ((time.perf_counter_ns() - t0) // 1000).to_bytes(8, "little")
        return _frame(_ERROR, t + dumps(err))
    try:
        body = dumps(r)
    except Exception as e:
        err = _error("Runtime.MarshalError", "Unable to marshal response: %s" % e)
        _log_error(err)
        t = ((time.perf_counter_ns() - t0) // 1000).to_bytes(8, "little")
        return _frame(_ERROR, t + dumps(err))
    t = ((time.perf_counter_ns() - t0) // 1000).to_bytes(8, "little")
    return _frame(_RESULT, t + body)


def flush():
    """Flush stdout and stderr, ignoring errors."""
    for f in (sys.stdout, sys.stderr):
        if f is not None:
            try:
                f.flush()
            except Exception:
                pass


def _read(c, buf):
    view = memoryview(buf)
    n = len(buf)
    got = 0
    while got < n:
        k = c.recv_into(view[got:], n - got)
        if not k:
            raise EOFError
        got += k


# A zygote's child sets this: it runs once, after the first answer is sent
# and before the worker pauses the idle sandbox.
after_first_call = None


def _ready_frame(h):
    return _frame(_READY, h.load_us.to_bytes(8, "little") + h.load_cpu_us.to_bytes(8, "little"))


def serve_conn(c, h, meta):
    """Answer invocations on one connection until the worker closes it."""
    if h.err is not None:
        c.sendall(_frame(_LOAD_ERROR, dumps(h.err)))
    else:
        c.sendall(_ready_frame(h))
    hdr = bytearray(5)
    while True:
        try:
            _read(c, hdr)
        except EOFError:
            return
        n = int.from_bytes(hdr[0:4], "little")
        if hdr[4] != _FRAME_INVOKE or n < 10 or n > _MAX_FRAME:
            return  # protocol error: drop the connection
        payload = bytearray(n)
        _read(c, payload)
        resp = invoke(h, meta, payload)
        flush()
        c.sendall(resp)
        global after_first_call
        if after_first_call is not None:
            f, after_first_call = after_first_call, None
            f()


def serve(lsock, h, meta):
    """Accept connections on lsock one at a time, forever."""
    while True:
        fd, _ = lsock._accept()
        c = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM, 0, fd)
        try:
            serve_conn(c, h, meta)
        except (OSError, EOFError):
            pass  # the worker went away mid-frame; wait for the next one
        finally:
            c.close()


# Output. The worker reads fd 1 and fd 2 from two pipes, so it cannot tell
# which of two writes to different pipes came first. Python's sys.stdout
# and sys.stderr therefore both write to fd 1, each line framed as
# _MARK + tag + text + "\n": tag o or e for a whole line of stdout or
# stderr, O or E for a piece of a line whose end is still to come (what a
# flush wrote before the newline). One pipe keeps the order; the tag keeps
# the stream. Writes to the descriptors themselves (C extensions,
# subprocesses, os.write) stay untagged on their own pipes.

_MARK = b"\x1e"
_out_lock = None  # set by tag_output (made ahead by premake_output in a zygote)


class _Tagged(object):
    """The binary layer under a tagged sys.stdout or sys.stderr: each write
    goes to fd 1 at once, framed line by line with its stream's tag."""

    __slots__ = ("_fd", "_line", "_part", "name")

    def __init__(self, fd, tag, name):
        self._fd = fd
        self.name = name
        self._line = _MARK + tag
        self._part = _MARK + tag.upper()

    def write(self, b):
        b = bytes(b)
        if not b:
            return 0
        lines = b.split(b"\n")
        last = lines.pop()
        out = [self._line + l + b"\n" for l in lines]
        if last:
            out.append(self._part + last + b"\n")
        data = b"".join(out)
        with _out_lock:
            while data:
                n = posix.write(1, data)
                data = data[n:]
        return len(b)

    def flush(self):
        pass

    def fileno(self):
        return self._fd  # raw writes to it go to its own pipe, untagged

    def isatty(self):
        return False

    def readable(self):
        return False

    def writable(self):
        return True

    def seekable(self):
        return False

    def close(self):
        pass

    @property
    def closed(self):
        return False


def premake_output():
    """Make the streams tag_output installs, ahead: a zygote does before
    it forks, so that each child only installs them (about 0.07 ms of a
    child's CPU, most of it the first touches of what making them runs).
    Once per zygote: a node forked from another has its parent's."""
    global _premade
    if _premade is None:
        _premade = _tagged_streams()


def _tagged_streams():
    import _io
    import _thread

    streams = []
    for name, fd, tag in (("stdout", 1, b"o"), ("stderr", 2, b"e")):
        old = getattr(sys, name)
        enc = getattr(old, "encoding", None) or "utf-8"
        errors = getattr(old, "errors", None) or "backslashreplace"
        try:
            f = _io.TextIOWrapper(_Tagged(fd, tag, "<%s>" % name), encoding=enc, errors=errors,
                                  newline="\n", line_buffering=True)
        except Exception:
            continue
        streams.append((name, f))
    return _thread.allocate_lock(), streams


_premade = None  # (lock, streams) made by premake_output, for tag_output


def tag_output():
    """Replace sys.stdout and sys.stderr with line-buffered streams that
    write tagged lines to fd 1 (see _Tagged), so that lines reach the
    worker in the order they were printed, with their stream, and survive
    a timeout kill. It installs the streams premake_output made, if any:
    each process does so once, and its copies are its own."""
    global _out_lock, _premade
    made, _premade = _premade, None
    if made is None:
        made = _tagged_streams()
    _out_lock, streams = made
    for name, f in streams:
        old = getattr(sys, name)
        if old is not None:
            try:
                old.flush()
            except Exception:
                pass
        setattr(sys, name, f)
        setattr(sys, "__%s__" % name, f)


def snapshot_install():
    """Install hearth_snapshot's after-restore handler (reseed and hooks)
    before the handler loads. A runtime without the module carries on."""
    try:
        import hearth_snapshot
    except ImportError:
        return
    hearth_snapshot.install()


def set_environ(env):
    """Replace the process environment with env (str: str): posix.environ,
    os.environ and the C library's, which extensions read with getenv.

    Only what changes is put or unset: this runs on every zygote start."""
    new = {k.encode(): v.encode() for k, v in env.items()}
    old = posix.environ
    for k in [k for k in old if k not in new]:
        posix.unsetenv(k)
    for k, v in new.items():
        if old.get(k) != v:
            posix.putenv(k, v)
    old.clear()
    old.update(new)
    os_mod = sys.modules.get("os")
    if os_mod is not None and getattr(os_mod.environ, "_data", None) is not old:
        # os.environ keeps its own copy (not so on CPython for POSIX).
        os_mod.environ._data.clear()
        os_mod.environ._data.update(new)


def rehearse(scratch="/tmp"):
    """Run once, on throwaway data, what a start and its first call run:
    environment and sys.path set-up, a handler import, an invocation.

    A zygote calls this before its first fork (settle), so that the
    interpreter's caches and the specialized bytecode along these paths
    are set in pages its children share rather than written by each
    child on a start's critical path. It leaves nothing behind: the
    module, its file and its path finder are removed and sys.path is put
    back (setup_path keeps what it finds there: the scratch directory
    would stay on a function's path); the caller sets the environment
    again afterwards."""
    name = "_hearth_rehearsal"
    path = "%s/%s.py" % (scratch, name)
    env = {
        "HEARTH_HANDLER": name + ".f", "HEARTH_FUNCTION": "rehearsal",
        "HEARTH_REVISION": "0", "HEARTH_MEMORY_MB": "128", "HEARTH_TIMEOUT_S": "30",
        "HEARTH_PATH": "", "HEARTH_CODE": scratch, "PATH": "/usr/bin:/bin",
        "HOME": scratch, "LANG": "C.UTF-8",
    }
    saved = list(sys.path)
    fd = posix.open(path, posix.O_WRONLY | posix.O_CREAT | posix.O_TRUNC, 0o600)
    try:
        posix.write(fd, b"def f(event, context):\n    return {'ok': event}\n")
    finally:
        posix.close(fd)
    try:
        set_environ(env)
        setup_path(env)
        h = load(env["HEARTH_HANDLER"])
        rid = b"rehearsal"
        payload = bytearray(bytes(8) + len(rid).to_bytes(2, "little") + rid + b'{"a": [1, 2.5, "x"]}')
        invoke(h, Meta(env), payload)
        _ready_frame(h)
    finally:
        posix.unlink(path)
        sys.modules.pop(name, None)
        sys.path_importer_cache.pop(scratch, None)
        sys.path[:] = saved


def run(lsock, environ=None):
    """Load the handler named by HEARTH_HANDLER and serve lsock forever.

    This is what a zygote's child calls after the fork, once sys.path
    (setup_path) and the output (tag_output) are set up.
    """
    if environ is None:
        environ = posix.environ
    meta = Meta(environ)
    if posix.getpid() == 1:
        # Only a sandbox to be checkpointed runs the runtime as its pid 1;
        # elsewhere the signal module's imports (~3 ms) would be wasted.
        snapshot_install()
    h = load(_env(environ, "HEARTH_HANDLER", "f.f"))
    if h.err is not None:
        _log_error(h.err)
    flush()
    serve(lsock, h, meta)


def main():
    """Entry point for server.py: set up, then serve fd 3."""
    setup_path()
    tag_output()
    posix.set_inheritable(LISTEN_FD, False)
    run(_socket.socket(fileno=LISTEN_FD))
