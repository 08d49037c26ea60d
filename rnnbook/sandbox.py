"""The sandbox of ``rnnbook grade``: where students' notebooks run.

    coordinator (rnnbook.grade)  --control socket-->  zygote  --fork-->  one child per notebook
          ^                                                                   |
          +--------------- pipe: cell events and the checks' return values ---+

- The **zygote** is a fresh interpreter (``python -I``, scrubbed environment) started by the
  coordinator before the secret seed exists. It imports NumPy, torch and matplotlib (Agg)
  once, runs no torch operation, and forks one child per submission on request. It is a
  child subreaper: descendants that escape their process group come back to it and are
  killed. It never reads a notebook and never sees the seed or the references.
- The **child** (``_child_main``) gives itself a new session, limits (address space, file
  size, CPU, no core), a Landlock sandbox where the kernel has it (writes only in its own
  working directory; no reading of the grader's files, the other submissions or the
  solutions; no TCP; no signals to processes outside it), a Python audit hook and an import
  blocker with the same rules, and its own working directory holding a copy of the notebook
  only. It runs the notebook's code cells in one namespace (an exception, even
  ``SystemExit``, is recorded and the next cell runs), then calls the student's functions on
  the inputs it was given and writes the return values to the pipe.
- The **wire format** is JSON (never pickle) with arrays as dtype/shape/base64, in frames
  ``b"<length>\\n<json>"``. ``decode_value`` parses the untrusted side strictly, with caps.

Nothing in this module is secret: students may read it. What is secret (the seed, the
checks, the references) lives in the coordinator's process only.
"""
import base64
import builtins
import ctypes
import json
import linecache
import os
import resource
import signal
import socket
import struct
import sys
import time
import traceback
import types

import numpy as np

# Bound once, so that a notebook that monkeypatches them changes nothing here.
_dumps, _b64encode = json.dumps, base64.b64encode
_asarray = np.asarray
_ndarray, _generic, _integer, _floating = np.ndarray, np.generic, np.integer, np.floating

# ---------------------------------------------------------------------------------------
# Wire format

MAX_FRAME = 32 << 20          # bytes in one frame
MAX_VALUE_BYTES = 16 << 20    # array bytes in one check's return value
MAX_DEPTH = 8                 # nesting of tuples/lists/dicts in a return value
MAX_ITEMS = 256               # items in one tuple/list/dict
MAX_TEXT = 4000               # characters of one message string
DTYPES = {s: s for s in ("<f8", "<f4", "<f2", "<i8", "<i4", "<i2", "|i1",
                         "<u8", "<u4", "<u2", "|u1", "|b1")}


class WireError(ValueError):
    """Bytes from a child that do not follow the protocol."""


def frame(message):
    data = _dumps(message, separators=(",", ":"), allow_nan=False).encode()
    return b"%d\n" % len(data) + data


class FrameReader:
    """Splits a byte stream into frames; raises WireError on anything malformed."""

    def __init__(self, max_total):
        self.buffer = bytearray()
        self.total = 0
        self.max_total = max_total

    def feed(self, data):
        """The complete messages in the stream so far; raises WireError (with the messages
        that came before the bad bytes in ``.messages``) on anything malformed."""
        messages = []
        try:
            self._feed(data, messages)
        except WireError as e:
            e.messages = messages
            raise
        return messages

    def _feed(self, data, messages):
        self.total += len(data)
        if self.total > self.max_total:
            raise WireError(f"sent more than {self.max_total >> 20} MB to the grader")
        self.buffer += data
        while True:
            newline = self.buffer.find(b"\n", 0, 12)
            if newline < 0:
                if len(self.buffer) >= 12:
                    raise WireError("malformed frame header")
                return messages
            header = bytes(self.buffer[:newline])
            if not header.isdigit():
                raise WireError("malformed frame header")
            length = int(header)
            if length > MAX_FRAME:
                raise WireError("frame too large")
            if len(self.buffer) < newline + 1 + length:
                return messages
            payload = bytes(self.buffer[newline + 1:newline + 1 + length])
            del self.buffer[:newline + 1 + length]
            try:
                message = json.loads(payload)
            except (ValueError, RecursionError) as e:
                raise WireError(f"not JSON: {str(e)[:100]}") from None
            if not isinstance(message, dict):
                raise WireError("a message is not a JSON object")
            messages.append(message)


def encode_value(obj, budget=None, depth=0):
    """A return value (arrays, tensors, numbers, tuples, lists, dicts, None) as JSON."""
    if budget is None:
        budget = [MAX_VALUE_BYTES]
    if depth > MAX_DEPTH:
        raise ValueError("the value is nested too deeply")
    if obj is None:
        return {"t": "none"}
    if isinstance(obj, bool):
        return {"t": "bool", "v": bool(obj)}
    if isinstance(obj, str):
        return {"t": "str", "v": obj[:200]}
    if isinstance(obj, int) and not isinstance(obj, _integer):
        if not -2**63 <= obj < 2**63:
            raise ValueError("an integer too large to send")
        return {"t": "int", "v": int(obj)}
    if isinstance(obj, float) and not isinstance(obj, _floating):
        return {"t": "float", "v": repr(float(obj))}
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(obj, torch.Tensor):
        obj = obj.detach().cpu().resolve_conj().resolve_neg().numpy()
    if isinstance(obj, (_ndarray, _generic)):
        a = _asarray(obj)
        if a.dtype.kind not in "biuf":
            raise ValueError(f"arrays of dtype {a.dtype} are not accepted")
        dt = a.dtype.newbyteorder("<") if a.dtype.byteorder == ">" else a.dtype
        a = a.astype(dt, copy=False)
        if dt.str not in DTYPES:
            raise ValueError(f"arrays of dtype {a.dtype} are not accepted")
        if a.nbytes > budget[0]:
            raise ValueError(f"the value is larger than {MAX_VALUE_BYTES >> 20} MB")
        budget[0] -= a.nbytes
        return {"t": "array", "dtype": dt.str, "shape": list(a.shape),
                "data": _b64encode(a.tobytes(order="C")).decode()}
    if isinstance(obj, (tuple, list)):
        if len(obj) > MAX_ITEMS:
            raise ValueError(f"a {type(obj).__name__} of {len(obj)} items is too long")
        return {"t": "list", "kind": "tuple" if isinstance(obj, tuple) else "list",
                "items": [encode_value(x, budget, depth + 1) for x in obj]}
    if isinstance(obj, dict):
        if len(obj) > MAX_ITEMS:
            raise ValueError(f"a dict of {len(obj)} items is too long")
        items = []
        for k, v in obj.items():
            if not isinstance(k, str):
                raise ValueError(f"dict keys must be strings, got {type(k).__name__}")
            items.append([k[:100], encode_value(v, budget, depth + 1)])
        return {"t": "dict", "items": items}
    return {"t": "other", "type": type(obj).__name__[:100]}


def decode_value(node, budget=None, depth=0):
    """Inverse of encode_value for UNTRUSTED input: strict checks, caps, no code runs.

    Returns None, bool, str, int, float, numpy arrays, tuples/lists, dicts, or
    ``Other(type_name)``. Raises WireError on anything else."""
    if budget is None:
        budget = [MAX_VALUE_BYTES]
    if depth > MAX_DEPTH or not isinstance(node, dict):
        raise WireError("malformed value")
    t = node.get("t")
    if t == "none":
        return None
    if t == "bool" and isinstance(node.get("v"), bool):
        return node["v"]
    if t == "str" and isinstance(node.get("v"), str):
        return node["v"][:200]
    if t == "int" and type(node.get("v")) is int and -2**63 <= node["v"] < 2**63:
        return node["v"]
    if t == "float" and isinstance(node.get("v"), str) and len(node["v"]) <= 32:
        try:
            return float(node["v"])
        except ValueError:
            raise WireError("malformed float") from None
    if t == "other" and isinstance(node.get("type"), str):
        return Other(node["type"][:100])
    if t == "array":
        dtype, shape, data = node.get("dtype"), node.get("shape"), node.get("data")
        if dtype not in DTYPES or not isinstance(shape, list) or not isinstance(data, str):
            raise WireError("malformed array")
        if len(shape) > 16 or not all(type(n) is int and 0 <= n <= MAX_VALUE_BYTES for n in shape):
            raise WireError("malformed array shape")
        dt = np.dtype(DTYPES[dtype])
        count = 1
        for n in shape:
            count *= n
        if count * dt.itemsize > budget[0] or len(data) > 4 * (budget[0] // 3 + 4):
            raise WireError("array too large")
        try:
            raw = base64.b64decode(data, validate=True)
        except ValueError:
            raise WireError("malformed array data") from None
        if len(raw) != count * dt.itemsize:
            raise WireError("array data does not match its shape")
        budget[0] -= len(raw)
        return np.frombuffer(raw, dtype=dt).reshape(shape).copy()
    if t == "list" and isinstance(node.get("items"), list) and len(node["items"]) <= MAX_ITEMS:
        items = [decode_value(x, budget, depth + 1) for x in node["items"]]
        return tuple(items) if node.get("kind") == "tuple" else items
    if t == "dict" and isinstance(node.get("items"), list) and len(node["items"]) <= MAX_ITEMS:
        out = {}
        for pair in node["items"]:
            if not (isinstance(pair, list) and len(pair) == 2 and isinstance(pair[0], str)):
                raise WireError("malformed dict")
            out[pair[0][:100]] = decode_value(pair[1], budget, depth + 1)
        return out
    raise WireError("malformed value")


class Other:
    """A return value of a type the wire does not carry (only its type's name)."""

    def __init__(self, type_name):
        self.type_name = type_name

    def __repr__(self):
        return f"<{self.type_name}>"


def describe_value(v):
    """Short human description of a decoded value, for feedback."""
    if isinstance(v, _ndarray):
        return f"array {v.dtype} of shape {v.shape}" if v.ndim else f"{v.dtype} scalar"
    if isinstance(v, tuple):
        return f"tuple of {len(v)}"
    if isinstance(v, list):
        return f"list of {len(v)}"
    if isinstance(v, dict):
        return "dict with keys " + ", ".join(map(repr, list(v)[:10]))
    if v is None:
        return "None"
    if isinstance(v, Other):
        return f"a {v.type_name} object"
    return type(v).__name__


# ---------------------------------------------------------------------------------------
# Landlock (Linux >= 5.13): an unprivileged process restricts itself and its descendants.

_SYS_CREATE, _SYS_ADD_RULE, _SYS_RESTRICT = 444, 445, 446   # same on every architecture
_FS = dict(EXECUTE=1 << 0, WRITE_FILE=1 << 1, READ_FILE=1 << 2, READ_DIR=1 << 3,
           REMOVE_DIR=1 << 4, REMOVE_FILE=1 << 5, MAKE_CHAR=1 << 6, MAKE_DIR=1 << 7,
           MAKE_REG=1 << 8, MAKE_SOCK=1 << 9, MAKE_FIFO=1 << 10, MAKE_BLOCK=1 << 11,
           MAKE_SYM=1 << 12, REFER=1 << 13, TRUNCATE=1 << 14)
_libc = None


def _syscall(*args):
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    result = _libc.syscall(*args)
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return result


def landlock_abi():
    """The kernel's Landlock ABI version, 0 when Landlock is unavailable."""
    if not sys.platform.startswith("linux"):
        return 0
    try:
        return _syscall(ctypes.c_long(_SYS_CREATE), None, ctypes.c_size_t(0), ctypes.c_uint32(1))
    except (OSError, AttributeError):
        return 0


def _prctl(option, arg):
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    return _libc.prctl(option, ctypes.c_ulong(arg), 0, 0, 0)


def read_rules(blocked, keep):
    """Paths to grant reading on so that everything is readable except the ``blocked``
    trees, minus the ``keep`` trees inside them. Landlock only grants, so a blocked tree
    is carved out by granting each sibling along the path from / to it."""
    blocked = sorted({os.path.realpath(p) for p in blocked})
    keep = sorted({os.path.realpath(p) for p in keep})

    def under(p, root):
        return p == root or p.startswith(root.rstrip("/") + "/")

    keep = [k for k in keep if not any(under(b, k) for b in blocked)]   # ancestors of blocked: no
    grants = []

    def walk(d):
        if any(under(d, b) for b in blocked):
            return
        if not any(under(b, d) for b in blocked):
            grants.append(d)
            return
        try:
            entries = sorted(os.listdir(d))
        except OSError:
            return
        for e in entries:
            path = os.path.join(d, e)
            if os.path.islink(path):
                # a grant follows the link: never to a blocked tree or to one of its ancestors
                target = os.path.realpath(path)
                if not any(under(target, b) or under(b, target) for b in blocked):
                    grants.append(path)
                continue
            walk(path)

    walk("/")
    grants += [k for k in keep if any(under(k, b) for b in blocked)]
    return grants


def landlock_restrict(abi, readable, workdir, devices=("/dev/null", "/dev/zero", "/dev/urandom")):
    """Confine this process: write only under ``workdir``; read only under ``readable``
    (None: read anywhere); no TCP; no signals or abstract sockets outside (ABI >= 6)."""
    write = (_FS["WRITE_FILE"] | _FS["REMOVE_DIR"] | _FS["REMOVE_FILE"] | _FS["MAKE_CHAR"]
             | _FS["MAKE_DIR"] | _FS["MAKE_REG"] | _FS["MAKE_SOCK"] | _FS["MAKE_FIFO"]
             | _FS["MAKE_BLOCK"] | _FS["MAKE_SYM"])
    if abi >= 2:
        write |= _FS["REFER"]
    if abi >= 3:
        write |= _FS["TRUNCATE"]
    handled = write | (_FS["READ_FILE"] if readable is not None else 0)
    net = 0b11 if abi >= 4 else 0            # BIND_TCP | CONNECT_TCP, with no rule: denied
    scoped = 0b11 if abi >= 6 else 0         # ABSTRACT_UNIX_SOCKET | SIGNAL
    size = 24 if abi >= 6 else 16 if abi >= 4 else 8
    attr = ctypes.create_string_buffer(struct.pack("<QQQ", handled, net, scoped)[:size], size)
    ruleset = _syscall(ctypes.c_long(_SYS_CREATE), attr, ctypes.c_size_t(size), ctypes.c_uint32(0))
    try:
        def grant(path, access):
            try:
                fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            except OSError:
                return
            try:
                if not os.path.isdir(path):
                    access &= _FS["WRITE_FILE"] | _FS["READ_FILE"] | _FS["TRUNCATE"]
                rule = ctypes.create_string_buffer(struct.pack("<Qi", access & handled, fd), 12)
                _syscall(ctypes.c_long(_SYS_ADD_RULE), ctypes.c_int(ruleset), ctypes.c_int(1),
                         rule, ctypes.c_uint32(0))
            finally:
                os.close(fd)

        for path in readable or ():
            grant(path, _FS["READ_FILE"])
        grant(workdir, handled)
        for dev in devices:
            grant(dev, _FS["READ_FILE"] | _FS["WRITE_FILE"] | _FS["TRUNCATE"])
        if _prctl(38, 1) != 0:            # PR_SET_NO_NEW_PRIVS, required by restrict_self
            raise OSError("prctl(PR_SET_NO_NEW_PRIVS) failed")
        _syscall(ctypes.c_long(_SYS_RESTRICT), ctypes.c_int(ruleset), ctypes.c_uint32(0))
    finally:
        os.close(ruleset)


# ---------------------------------------------------------------------------------------
# The zygote

_write, _exit, _getpid = os.write, os._exit, os.getpid        # safe from monkeypatching
_BLOCKED_MODULES = ("rnnbook.grade", "rnnbook.autograder", "rnnbook.bench")
_BLOCKED_EVENTS = ("subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn",
                   "pty.spawn")


def zygote_main(control_fd):
    """Entry point of the zygote process (see the module docstring)."""
    os.environ.setdefault("MPLBACKEND", "Agg")
    sys.dont_write_bytecode = True
    import numpy  # noqa: F401
    import torch  # noqa: F401  (imported, never run: forking after running it is unsafe)
    import torch.fx.experimental.symbolic_shapes  # noqa: F401  (what a first backward(grad) imports)
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot  # noqa: F401
    import rnnbook.gradcheck  # noqa: F401
    import rnnbook.rnn  # noqa: F401
    _prctl(1, signal.SIGKILL)      # PR_SET_PDEATHSIG: die with the coordinator
    _prctl(36, 1)                  # PR_SET_CHILD_SUBREAPER: escaped descendants come back here
    sock = socket.socket(fileno=control_fd)
    config = json.loads(sock.recv(1 << 20))
    abi = landlock_abi()
    if abi and not _landlock_works(abi):
        abi = 0                     # e.g. a container whose seccomp profile refuses it
    keep = list(config["keep"]) + [p for p in sys.path if p and os.path.isdir(p)] + \
        [sys.prefix, sys.base_prefix, sys.exec_prefix, os.path.dirname(os.__file__)]
    readable = read_rules(config["blocked"], keep) if abi else None
    if readable is not None and len(readable) > 20000:
        readable = None                      # too many siblings to carve out: read anywhere
    config.update(abi=abi, readable=readable, keep=keep)
    sock.send(json.dumps({"op": "ready", "landlock": abi, "pid": os.getpid(),
                          "read_isolation": readable is not None}).encode())
    jobs = {}          # pid -> job id, for the children not yet reaped
    last_sweep = 0.0
    import select
    wake_r, wake_w = os.pipe()                 # SIGCHLD wakes the loop up
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.set_wakeup_fd(wake_w)
    config["wake"] = (wake_r, wake_w)
    try:
        while True:
            ready, _, _ = select.select([sock, wake_r], [], [], 0.5)
            if wake_r in ready:
                try:
                    while os.read(wake_r, 512):
                        pass
                except BlockingIOError:
                    pass
            if sock in ready:
                data = sock.recv(1 << 16)
                if not data:
                    break
                msg = json.loads(data)
                if msg["op"] == "run":
                    r, w = os.pipe()
                    pid = os.fork()
                    if pid == 0:
                        try:
                            os.close(r)
                            sock.close()
                            _child_main(msg, w, config)
                        finally:
                            _exit(70)
                    os.close(w)
                    jobs[pid] = msg["job"]
                    socket.send_fds(sock, [json.dumps({"op": "started", "job": msg["job"],
                                                       "pid": pid}).encode()], [r])
                    os.close(r)
                elif msg["op"] == "kill":
                    for pid, job in jobs.items():
                        if job == msg["job"]:
                            _kill_group(pid)
            _reap(sock, jobs)
            now = time.monotonic()
            if now - last_sweep > 0.5:
                _sweep(jobs)
                last_sweep = now
    finally:
        for pid in list(jobs):
            _kill_group(pid)
        _sweep({})


def _landlock_works(abi):
    """Try the whole confinement in a throwaway child."""
    import tempfile
    work = tempfile.mkdtemp(prefix="rnnbook-landlock-")
    try:
        pid = os.fork()
        if pid == 0:
            try:
                landlock_restrict(abi, read_rules([work + "/none"], []), work)
                try:
                    open(work + "-probe", "w")
                    _exit(1)                          # a write outside was not refused
                except PermissionError:
                    _exit(0)
            except BaseException:
                _exit(1)
        return os.waitpid(pid, 0)[1] == 0
    finally:
        os.rmdir(work)
        if os.path.exists(work + "-probe"):
            os.unlink(work + "-probe")


def _kill_group(pid):
    for kill, target in ((os.killpg, pid), (os.kill, pid)):
        try:
            kill(target, signal.SIGKILL)
        except OSError:
            pass


def _reap(sock, jobs):
    while True:
        try:
            info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return
        if info is None or info.si_pid == 0:
            return
        pid = info.si_pid
        if pid in jobs:
            try:
                os.killpg(pid, signal.SIGKILL)    # forks left in its group (before the pid is freed)
            except OSError:
                pass
        _, status, usage = os.wait4(pid, 0)
        job = jobs.pop(pid, None)
        if job is not None:
            sock.send(json.dumps({"op": "exited", "job": job, "status": status,
                                  "maxrss_kb": usage.ru_maxrss}).encode())


def _sweep(jobs):
    """Kill every child of the zygote that is not a job's own process: descendants that
    left their process group (setsid after fork) and were reparented here."""
    me = os.getpid()
    try:
        with open(f"/proc/{me}/task/{me}/children") as f:
            children = [int(p) for p in f.read().split()]
    except OSError:
        children = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    with open(f"/proc/{entry}/stat") as f:
                        if int(f.read().rsplit(")", 1)[1].split()[1]) == me:
                            children.append(int(entry))
                except (OSError, ValueError, IndexError):
                    pass
    for pid in children:
        if pid not in jobs:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass


# ---------------------------------------------------------------------------------------
# The child: one notebook

class _Capped:
    """sys.stdout/sys.stderr of a child: writes at most ``cap`` bytes in all, drops the rest."""

    def __init__(self, fd, state):
        self.fd, self.state = fd, state
        self.encoding, self.errors = "utf-8", "replace"

    def write(self, s):
        if not isinstance(s, str):
            raise TypeError(f"write() argument must be str, not {type(s).__name__}")
        room = self.state["cap"] - self.state["written"]
        if room > 0:
            data = s[:room].encode("utf-8", "replace")[:room]
            try:
                _write_all(self.fd, data)
            except OSError:
                pass
            self.state["written"] += len(data)
            self.state["dropped"] += max(0, len(s) - room)
        else:
            self.state["dropped"] += len(s)
        return len(s)

    def writelines(self, lines):
        for line in lines:
            self.write(line)

    def flush(self):
        pass

    def isatty(self):
        return False

    def fileno(self):
        return self.fd

    def writable(self):
        return True

    def readable(self):
        return False


def _write_all(fd, data):
    view = memoryview(data)
    while view:
        n = _write(fd, view)
        view = view[n:]


def _under(path, roots):
    return any(path == r or path.startswith(r + os.sep) for r in roots)


def _install_guards(blocked, keep):
    """Python-level rules, active with or without Landlock: the grader's modules cannot be
    imported; blocked files cannot be opened or listed; no new programs can be started."""
    realpath, fsdecode, PathLike = os.path.realpath, os.fsdecode, os.PathLike
    blocked = tuple(realpath(p) for p in blocked)
    keep = tuple(realpath(p) for p in keep if not any(_under(b, (realpath(p),)) for b in blocked))

    def forbidden(path):
        if not isinstance(path, (str, bytes, PathLike)):
            return False
        p = realpath(fsdecode(path))
        return _under(p, blocked) and not _under(p, keep)

    def hook(event, args):
        if event == "open" or event in ("os.listdir", "os.scandir"):
            if args and forbidden(args[0] if args[0] is not None else "."):
                raise PermissionError(f"{args[0]}: not accessible while grading")
        elif event in _BLOCKED_EVENTS:
            raise PermissionError(f"{event}: starting programs is not allowed while grading")

    class Blocker:
        @staticmethod
        def find_spec(name, path=None, target=None):
            if any(name == m or name.startswith(m + ".") for m in _BLOCKED_MODULES):
                raise ModuleNotFoundError(f"{name} is not available inside a graded notebook "
                                          "(implement the function yourself)", name=name)
            return None

    for name in list(sys.modules):
        if any(name == m or name.startswith(m + ".") for m in _BLOCKED_MODULES):
            del sys.modules[name]
    sys.meta_path.insert(0, Blocker)
    sys.addaudithook(hook)


def _vm_size():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


def _is_memory_error(e):
    if isinstance(e, MemoryError):
        return True
    try:
        return isinstance(e, RuntimeError) and "allocate memory" in str(e)[:500]
    except Exception:
        return False


def _describe(e, memory):
    try:
        message = str(e)
    except BaseException:
        message = "<the exception's message could not be printed>"
    try:
        frames = [f for f in traceback.extract_tb(e.__traceback__) if f.filename.startswith("<cell ")]
        tb = "".join(traceback.format_list(frames[-6:]))
    except BaseException:
        tb = ""
    return {"type": type(e).__name__[:100], "message": message[:MAX_TEXT],
            "traceback": tb[-MAX_TEXT:], "memory": memory}


def _strip_magics(source):
    """IPython magics and shell escapes (lines starting with % or !) do not run."""
    return "\n".join("" if line.lstrip().startswith(("%", "!")) else line
                     for line in source.split("\n"))


def _call(spec, ns):
    """Call the student's function as the check describes; return what it returned."""
    fn = ns.get(spec["function"])
    if fn is None:
        raise LookupError(f"the notebook defines no `{spec['function']}` "
                          "(was it deleted or renamed, or did its cell fail?)")
    args = decode_value(spec["args"])
    if spec["call"] == "function":
        return fn(*args)
    if spec["call"] == "backward":
        forward = ns.get(spec["forward"])
        if forward is None:
            raise LookupError(f"the notebook defines no `{spec['forward']}` (it is given in the "
                              "exercise: restore it)")
        out = forward(*decode_value(spec["forward_args"]))
        if not (isinstance(out, tuple) and len(out) == 2):
            raise TypeError(f"{spec['forward']} must return (output, cache)")
        return fn(*args, out[1])
    if spec["call"] == "autograd":
        import torch
        leaves = [torch.tensor(a, requires_grad=True) for a in args]
        out = fn.apply(*leaves)
        out.backward(torch.tensor(decode_value(spec["grad_output"])))
        return {"out": out, "grads": [t.grad for t in leaves]}
    raise ValueError(f"unknown call kind {spec['call']!r}")


def _child_main(msg, wfd, config):
    signal.set_wakeup_fd(-1)
    os.setsid()
    _prctl(1, signal.SIGKILL)                                   # die with the zygote
    with open(msg["spec"], "rb") as f:
        spec = json.loads(f.read())
    if wfd != 3:
        os.dup2(wfd, 3)
        os.close(wfd)
    null = os.open("/dev/null", os.O_RDONLY)
    out = os.open(spec["output"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o600)
    os.dup2(null, 0)
    os.dup2(out, 1)
    os.dup2(out, 2)
    os.closerange(4, 1 << 16)
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGCHLD, signal.SIGALRM):
        signal.signal(sig, signal.SIG_DFL)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)   # oversized writes fail instead of killing
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)   # coordinator gone: just die

    leader = _getpid()

    def send(message):
        if _getpid() != leader:
            _exit(0)              # a fork made by the notebook: only the original process reports
        try:
            _write_all(3, frame(message))
        except BaseException:
            _exit(0)

    workdir = spec["workdir"]
    os.chdir(workdir)
    os.environ.clear()
    os.environ.update(HOME=workdir, TMPDIR=workdir, PATH="/usr/bin:/bin", LANG="C.UTF-8",
                      MPLBACKEND="Agg", OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
                      MKL_NUM_THREADS="1", PYTHONHASHSEED="0")
    import tempfile
    tempfile.tempdir = None
    sys.argv = [spec["notebook"]]
    try:
        with open("/proc/self/oom_score_adj", "w") as f:   # first to go if the machine runs out
            f.write("1000")
    except OSError:
        pass
    import torch
    torch.set_num_threads(1)
    import faulthandler
    faulthandler.enable(file=sys.__stderr__ if sys.__stderr__ else None, all_threads=False)

    ballast_size = 16 << 20
    limit = _vm_size() + (spec["memory_mb"] << 20) + ballast_size
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    resource.setrlimit(resource.RLIMIT_FSIZE, (spec["fsize_mb"] << 20,) * 2)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    cpu = int(spec["timeout"]) + 5
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 5))
    if os.geteuid() != 0:
        try:
            count = sum(1 for e in os.listdir("/proc") if e.isdigit())
            resource.setrlimit(resource.RLIMIT_NPROC, (count + 256, count + 256))
        except (OSError, ValueError):
            pass
    if config["abi"]:
        landlock_restrict(config["abi"], config["readable"], workdir)
    _install_guards(config["blocked"], list(config["keep"]) + [workdir])
    state = {"cap": spec["output_cap"], "written": 0, "dropped": 0}
    sys.stdout, sys.stderr = _Capped(1, state), _Capped(2, state)

    main = types.ModuleType("__main__")
    main.__dict__["__builtins__"] = builtins
    main.__dict__["display"] = lambda *objects, **kwargs: None     # IPython's, a no-op here
    sys.modules["__main__"] = main
    ns = main.__dict__
    saved_builtins = dict(builtins.__dict__)
    import mmap
    ballast = [mmap.mmap(-1, ballast_size)]    # address space only (RLIMIT_AS), never touched

    def after_memory_error():
        """Free the ballast so reporting works; True if the notebook still holds the memory."""
        for b in ballast:
            b.close()
        ballast.clear()
        import gc
        gc.collect()
        held = limit - _vm_size() < (spec["memory_mb"] << 20) // 4
        if not held:
            try:
                ballast.append(mmap.mmap(-1, ballast_size))
            except OSError:
                held = True
        return held

    def attempt(fn):
        """(fn(), None), or (None, error) if it raised; a memory error frees the ballast
        first, so that the error can be described."""
        try:
            return fn(), None
        except BaseException as e:
            memory = _is_memory_error(e)
            if memory:
                for b in ballast:
                    b.close()
                ballast.clear()
            return None, _describe(e, memory)

    for cell in spec["cells"]:
        index = cell["index"]
        send({"op": "cell", "index": index, "event": "start"})
        source = _strip_magics(cell["source"])
        name = f"<cell {index + 1}>"
        linecache.cache[name] = (len(source), None, source.splitlines(True), name)
        _, error = attempt(lambda: exec(compile(source, name, "exec", dont_inherit=True), ns))
        builtins.__dict__.update(saved_builtins)    # undo monkeypatching of builtins
        held = after_memory_error() if error is not None and error["memory"] else False
        send({"op": "cell", "index": index, "event": "end", "error": error})
        if held:
            send({"op": "stop", "reason": "memory"})
            send({"op": "done", "dropped": state["dropped"]})
            _exit(0)

    for k, check in enumerate(spec["checks"]):
        builtins.__dict__.update(saved_builtins)    # undo monkeypatching of builtins
        value, error = attempt(lambda: encode_value(_call(check, ns)))
        message = ({"op": "check", "index": k, "value": value} if error is None
                   else {"op": "check", "index": k, "error": error})
        held = after_memory_error() if error is not None and error["memory"] else False
        send(message)
        if held:
            send({"op": "stop", "reason": "memory"})
            break
    send({"op": "done", "dropped": state["dropped"]})
    _exit(0)
