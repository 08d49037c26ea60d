"""The notebook's code and the checks, inside the confined process (rnnbook.grading.child).
Runs in the sandbox; nothing here is secret.

The code cells run in one namespace (an exception, even SystemExit, is recorded and the
next cell runs). Then, and only then, the runner asks the grader for the checks' inputs,
one check at a time (fd 4): no input exists in this process before its check, and each is
dropped after it. The runner calls the student's function (under
rnnbook.grading.monitor for a hand-written check, with the forward of call="backward"
inside the watch too), turns the return value into plain arrays inside that call, and
writes it to the grader (fd 3) as a frame of rnnbook.grading.wire. From the first check on,
no thread can start (a seccomp filter). The grader's modules are gone from sys.modules
before the first cell; what the runner uses is bound here, at import.

The notebook's code runs in this process, so it could write frames to fd 3 itself, or
change what the runner's code looks up. Hence:

- every frame is authenticated with the job's key (rnnbook.grading.wire.signer): the key
  leaves the spec before the first cell and lives only in the sender's closure, which
  calls only what it bound when it was made;
- the grader's modules (this one, monitor, wire, confine, defaults) and classes are put
  back as they were before the first cell (``_restorer``) after every cell, before every
  check and as soon as a watched call returns: a notebook that replaces, say,
  ``monitor._ENGINE`` or ``Notebook.send`` changes nothing the grader runs later;
- a check's inputs are decoded, and a Function's leaves made, inside the watch: nothing a
  notebook replaced (np.frombuffer, torch.tensor, ...) runs with the inputs unwatched.
"""
import builtins
import gc
import linecache
import mmap
import os
import sys
import traceback
import types

from rnnbook.grading import confine, defaults, monitor, wire
from rnnbook.grading.defaults import MAX_FRAME, MAX_TEXT
from rnnbook.grading.wire import decode_value, encode_value, loads_c, signer

_write, _read, _exit, _getpid, _fstat = os.write, os.read, os._exit, os.getpid, os.fstat
_watch, _no_threads, _encode, _decode = monitor.watch, confine.no_threads, encode_value, decode_value
_tuple, _isinstance, _len, _exec, _compile = tuple, isinstance, len, exec, compile
_loads = loads_c
CHANNEL_EXIT = 86     # exit status: the notebook replaced or closed the grader's pipes (fd 3, 4)


def _refused(*args, **kwargs):
    raise PermissionError("gc's object lists are not available while grading")


class _Capped:
    """sys.stdout/sys.stderr of a child: writes at most ``cap`` bytes in all, drops the rest."""
    encoding, errors = "utf-8", "replace"

    def __init__(self, fd, state):
        self.fd, self.state = fd, state

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
        view = view[_write(fd, view):]


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
    """IPython magics and shell escapes (lines starting with % or !) do not run: each
    becomes `pass` (an `except ImportError:` around `%pip install` stays valid)."""
    return "\n".join(line[:len(line) - len(line.lstrip())] + "pass"
                     if line.lstrip().startswith(("%", "!")) else line
                     for line in source.split("\n"))


def _backward(out, grad):
    """The grader's own backward() of a Function's output (a tensor, or a tuple of them
    with one gradient each): the one engine run a hand-written call="autograd" check
    allows (rnnbook.grading.monitor)."""
    import torch
    outs = _tuple(out) if _isinstance(out, (tuple, list)) else (out,)
    grads = _tuple(grad) if _isinstance(grad, (tuple, list)) else (grad,)
    if _len(outs) != _len(grads) or not all(type(o) is torch.Tensor for o in outs):
        raise TypeError(f"apply() must return {_len(grads)} tensor(s), got "
                        f"{type(out).__name__}{f' of {_len(outs)}' if _len(outs) > 1 else ''}")
    for o, g in zip(outs, grads):
        if _tuple(o.shape) != _tuple(g.shape):
            raise ValueError(f"apply() returned shape {_tuple(o.shape)}, expected {_tuple(g.shape)}")
    _RUN_BACKWARD(outs, _tuple(g.to(o.dtype) for o, g in zip(outs, grads)), False, False, (),
                  allow_unreachable=True, accumulate_grad=True)


def _call(check, inputs, ns, run):
    """Call the student's function as the check describes; return its value, already
    encoded (inside the watch: a lazy value cannot compute later). run(f, inference,
    engine_caller, rule) calls f, watched if the check (or rule) says so."""
    fn = ns.get(check["function"])
    if fn is None:
        raise LookupError(f"the notebook defines no `{check['function']}` "
                          "(was it deleted or renamed, or did its cell fail?)")
    raw = inputs["args"]
    if check["call"] == "function":
        return run(lambda: _encode(fn(*_decode(raw))), True, None)
    if check["call"] == "backward":
        forward = ns.get(check["forward"])
        if forward is None:
            raise LookupError(f"the notebook defines no `{check['forward']}` (it is given in the "
                              "exercise: restore it)")
        raw_forward = inputs["forward_args"]
        rule = check.get("hand_written")
        autograd = ["autograd"] if rule and "autograd" in rule.get("forbid", ()) else []
        out = run(lambda: forward(*_decode(raw_forward)), True, None,
                  {"forbid": autograd, "allow": []} if rule else None)
        if not (type(out) is tuple and _len(out) == 2):
            raise TypeError(f"{check['forward']} must return (output, cache)")
        cache = out[1]
        del out
        return run(lambda: _encode(fn(*_decode(raw), cache)), True, None)
    if check["call"] == "autograd":
        raw_grad = inputs["grad_output"]

        def both():
            leaves = [_tensor(a, requires_grad=True) for a in _decode(raw)]
            grad = _decode(raw_grad)
            grad = [_tensor(g) for g in grad] if type(grad) in (list, tuple) else _tensor(grad)
            out = fn.apply(*leaves)
            _backward(out, grad)
            return _encode({"out": out, "grads": [t.grad for t in leaves]})
        return run(both, False, _backward.__code__)
    raise ValueError(f"unknown call kind {check['call']!r}")


def _engine_method():
    import torch
    return torch.autograd.Variable._execution_engine.run_backward


_RUN_BACKWARD = _engine_method()      # bound before any notebook runs


def _torch_tensor():
    import torch
    return torch.tensor


_tensor = _torch_tensor()
_THIS = sys.modules[__name__]         # (gone from sys.modules before the first cell)


def _restorer(modules, classes):
    """restore(): the modules' globals and the classes' attributes as they are now. Only
    what is bound here runs in it."""
    saved_modules = [(m.__dict__, dict(m.__dict__)) for m in modules]
    saved_classes = [(c, dict(c.__dict__)) for c in classes]
    clear, update, items = dict.clear, dict.update, dict.items
    set_attr, del_attr, get_dict, lst = type.__setattr__, type.__delattr__, type.__dict__["__dict__"].__get__, list
    fixed = ("__dict__", "__weakref__")

    def restore():
        for d, copy in saved_modules:
            clear(d)
            update(d, copy)
        for c, copy in saved_classes:
            current = get_dict(c)
            for k in lst(current):
                if k not in copy:
                    del_attr(c, k)
            for k, v in items(copy):
                if k not in fixed and current.get(k) is not v:
                    set_attr(c, k, v)
    return restore


def _sender(key, leader, channels, sign_with=signer, getpid=_getpid, fstat=_fstat, write=_write,
            exit_=_exit, memoryview_=memoryview, base=BaseException, os_error=OSError,
            tampered=CHANNEL_EXIT):
    """send(message): one authenticated frame on fd 3 (only from the job's own process,
    only while fd 3 and 4 are the grader's pipes). Calls only what is bound here."""
    sign = sign_with(key)

    def same(fd):
        try:
            st = fstat(fd)
        except os_error:
            return False
        return (st.st_dev, st.st_ino) == channels[fd]

    def send(message):
        if getpid() != leader:
            exit_(0)              # a fork made by the notebook: only the original process reports
        if not same(3) or not same(4):
            exit_(tampered)
        try:
            view = memoryview_(sign(message))
            while view:
                view = view[write(3, view):]
        except base:
            exit_(0)
    return send


def _identity(fd):
    st = _fstat(fd)
    return st.st_dev, st.st_ino


class Notebook:
    """The cells, then the checks, of one job's spec; reports over fd 3, then exits."""

    def __init__(self, spec, vm_size, limit, ballast_size, threads_filter=False):
        self.spec, self.vm_size, self.limit = spec, vm_size, limit
        self.ballast_size, self.threads_filter = ballast_size, threads_filter
        self.leader = _getpid()
        self.state = {"cap": spec["output_cap"], "written": 0, "dropped": 0}
        self.ballast = [mmap.mmap(-1, ballast_size)]   # address space only, never touched
        self.channels = {3: _identity(3), 4: _identity(4)}
        self.buffer = b""
        # the key leaves the spec here; only the sender's closure keeps it
        self._send = _sender(bytes.fromhex(spec.pop("key")), self.leader, dict(self.channels))
        self._restore = _restorer([_THIS, monitor, wire, confine, defaults],
                                  [Notebook, _Capped])

    def _check_channel(self, fd):
        try:
            same = _identity(fd) == self.channels[fd]
        except OSError:
            same = False
        if not same:
            _exit(CHANNEL_EXIT)

    def send(self, message):
        self._send(message)

    def receive(self):
        """The next frame from the grader (fd 4): a check's inputs, or {"end": true}."""
        self._check_channel(4)
        while b"\n" not in self.buffer[:12]:
            data = _read(4, 1 << 16)
            if not data:
                return {"end": True}
            self.buffer += data
        header, _, rest = self.buffer.partition(b"\n")
        if not header.isdigit() or int(header) > MAX_FRAME:
            _exit(CHANNEL_EXIT)
        length = int(header)
        chunks, have = [rest], _len(rest)
        while have < length:
            data = _read(4, min(1 << 20, length - have))
            if not data:
                return {"end": True}
            chunks.append(data)
            have += _len(data)
        data = b"".join(chunks)
        self.buffer = data[length:]
        return _loads(data[:length])

    def free_ballast(self):
        for b in self.ballast:
            b.close()
        self.ballast.clear()

    def still_held(self):
        """After a memory error: free the ballast so that reporting works; True if the
        notebook still holds the memory."""
        self.free_ballast()
        import gc
        gc.collect()
        held = self.limit - self.vm_size() < (self.spec["memory_mb"] << 20) // 4
        if not held:
            try:
                self.ballast.append(mmap.mmap(-1, self.ballast_size))
            except OSError:
                held = True
        return held

    def attempt(self, fn):
        """(fn(), None), or (None, error) if it raised; a memory error frees the ballast
        first, so that the error can be described."""
        try:
            return fn(), None
        except BaseException as e:
            memory = _is_memory_error(e)
            if memory:
                self.free_ballast()
            return None, _describe(e, memory)

    def run(self):
        send, restore = self._send, self._restore       # bound before any cell runs
        sys.stdout, sys.stderr = _Capped(1, self.state), _Capped(2, self.state)
        for name in ("get_objects", "get_referrers", "get_referents"):
            setattr(gc, name, _refused)
        main = types.ModuleType("__main__")
        main.__dict__["__builtins__"] = builtins
        main.__dict__["display"] = lambda *objects, **kwargs: None     # IPython's, a no-op here
        sys.modules["__main__"] = main
        ns = main.__dict__
        saved_builtins = dict(builtins.__dict__)
        for cell in self.spec["cells"]:
            index = cell["index"]
            self.send({"op": "cell", "index": index, "event": "start"})
            source = _strip_magics(cell["source"])
            name = f"<cell {cell['number']}>"
            linecache.cache[name] = (len(source), None, source.splitlines(True), name)
            _, error = self.attempt(lambda: _exec(_compile(source, name, "exec", dont_inherit=True), ns))
            restore()                     # undo monkeypatching of the grader's code
            builtins.__dict__.update(saved_builtins)    # and of builtins
            held = self.still_held() if error is not None and error["memory"] else False
            restore()
            send({"op": "cell", "index": index, "event": "end", "error": error})
            if held:
                send({"op": "stop", "reason": "memory"})
                send({"op": "done", "dropped": self.state["dropped"]})
                _exit(0)
        if self.threads_filter:
            _no_threads()
        send({"op": "checks"})
        checks = self.spec["checks"]
        while True:
            restore()
            builtins.__dict__.update(saved_builtins)
            inputs = self.receive()
            k = inputs.get("index")
            if type(k) is not int or not 0 <= k < _len(checks):
                break
            run = self.runner(k, checks[k].get("hand_written"))
            value, error = self.attempt(lambda: _call(checks[k], inputs, ns, run))
            restore()
            del inputs
            message = ({"op": "check", "index": k, "value": value} if error is None
                       else {"op": "check", "index": k, "error": error})
            del value
            held = self.still_held() if error is not None and error["memory"] else False
            restore()
            send(message)
            if held:
                send({"op": "stop", "reason": "memory"})
                break
        restore()
        send({"op": "done", "dropped": self.state["dropped"]})
        _exit(0)

    def runner(self, k, rule):
        """How check k calls the student's code: directly, or watched by the monitor (under
        the check's rule, or the one given for that call)."""
        send, restore, watch = self._send, self._restore, _watch

        def report(text):
            send({"op": "rule", "index": k, "what": text[:500]})

        def run(f, inference, engine_caller, this_rule=None):
            this_rule = this_rule or rule
            if not this_rule:
                return f()
            try:
                return watch(f, this_rule, report, inference=inference, engine_caller=engine_caller)
            finally:
                restore()          # what the watched code replaced is back before anything else runs
        return run
