"""The notebook's code and the checks, inside the confined process (rnnbook.grading.child).
Runs in the sandbox; nothing here is secret.

The code cells run in one namespace (an exception, even SystemExit, is recorded and the
next cell runs); then the grader's checks call the student's functions on the inputs
the job's spec holds, and each return value is written to the pipe (fd 3) as a frame of
rnnbook.grading.wire. Hand-written checks run under rnnbook.grading.monitor.
"""
import builtins
import linecache
import mmap
import os
import sys
import traceback
import types

from rnnbook.grading import monitor
from rnnbook.grading.defaults import MAX_TEXT
from rnnbook.grading.wire import decode_value, encode_value, frame

_write, _exit, _getpid = os.write, os._exit, os.getpid        # safe from monkeypatching


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
    outs = tuple(out) if isinstance(out, (tuple, list)) else (out,)
    grads = tuple(grad) if isinstance(grad, (tuple, list)) else (grad,)
    if len(outs) != len(grads) or not all(isinstance(o, torch.Tensor) for o in outs):
        raise TypeError(f"apply() must return {len(grads)} tensor(s), got "
                        f"{type(out).__name__}{f' of {len(outs)}' if len(outs) > 1 else ''}")
    for o, g in zip(outs, grads):
        if tuple(o.shape) != tuple(g.shape):
            raise ValueError(f"apply() returned shape {tuple(o.shape)}, expected {tuple(g.shape)}")
    _RUN_BACKWARD(outs, tuple(g.to(o.dtype) for o, g in zip(outs, grads)), False, False, (),
                  allow_unreachable=True, accumulate_grad=True)


def _call(spec, ns, run):
    """Call the student's function as the check describes; return what it returned.
    run(f, inference, engine_caller) calls f, under the hand-written rule if there is one."""
    fn = ns.get(spec["function"])
    if fn is None:
        raise LookupError(f"the notebook defines no `{spec['function']}` "
                          "(was it deleted or renamed, or did its cell fail?)")
    args = decode_value(spec["args"])
    if spec["call"] == "function":
        return run(lambda: fn(*args), True, None)
    if spec["call"] == "backward":
        forward = ns.get(spec["forward"])
        if forward is None:
            raise LookupError(f"the notebook defines no `{spec['forward']}` (it is given in the "
                              "exercise: restore it)")
        out = forward(*decode_value(spec["forward_args"]))
        if not (isinstance(out, tuple) and len(out) == 2):
            raise TypeError(f"{spec['forward']} must return (output, cache)")
        return run(lambda: fn(*args, out[1]), True, None)
    if spec["call"] == "autograd":
        import torch
        leaves = [torch.tensor(a, requires_grad=True) for a in args]
        grad = decode_value(spec["grad_output"])
        grad = [torch.tensor(g) for g in grad] if isinstance(grad, (list, tuple)) else torch.tensor(grad)

        def both():
            out = fn.apply(*leaves)
            _backward(out, grad)
            return out
        out = run(both, False, _backward.__code__)
        return {"out": out, "grads": [t.grad for t in leaves]}
    raise ValueError(f"unknown call kind {spec['call']!r}")


def _engine_method():
    import torch
    return torch.autograd.Variable._execution_engine.run_backward


_RUN_BACKWARD = _engine_method()      # bound before any notebook runs


class Notebook:
    """The cells, then the checks, of one job's spec; reports over fd 3, then exits."""

    def __init__(self, spec, vm_size, limit, ballast_size):
        self.spec, self.vm_size, self.limit = spec, vm_size, limit
        self.ballast_size = ballast_size
        self.leader = _getpid()
        self.state = {"cap": spec["output_cap"], "written": 0, "dropped": 0}
        self.ballast = [mmap.mmap(-1, ballast_size)]   # address space only, never touched

    def send(self, message):
        if _getpid() != self.leader:
            _exit(0)              # a fork made by the notebook: only the original process reports
        try:
            _write_all(3, frame(message))
        except BaseException:
            _exit(0)

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
        sys.stdout, sys.stderr = _Capped(1, self.state), _Capped(2, self.state)
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
            _, error = self.attempt(lambda: exec(compile(source, name, "exec", dont_inherit=True), ns))
            builtins.__dict__.update(saved_builtins)    # undo monkeypatching of builtins
            held = self.still_held() if error is not None and error["memory"] else False
            self.send({"op": "cell", "index": index, "event": "end", "error": error})
            if held:
                self.send({"op": "stop", "reason": "memory"})
                self.send({"op": "done", "dropped": self.state["dropped"]})
                _exit(0)
        for k, check in enumerate(self.spec["checks"]):
            builtins.__dict__.update(saved_builtins)
            run = self.runner(k, check.get("hand_written"))
            value, error = self.attempt(lambda: encode_value(_call(check, ns, run)))
            message = ({"op": "check", "index": k, "value": value} if error is None
                       else {"op": "check", "index": k, "error": error})
            held = self.still_held() if error is not None and error["memory"] else False
            self.send(message)
            if held:
                self.send({"op": "stop", "reason": "memory"})
                break
        self.send({"op": "done", "dropped": self.state["dropped"]})
        _exit(0)

    def runner(self, k, rule):
        """How check k calls the student's code: directly, or watched by the monitor."""
        if not rule:
            return lambda f, inference, engine_caller: f()

        def report(text):
            self.send({"op": "rule", "index": k, "what": str(text)[:500]})

        return lambda f, inference, engine_caller: monitor.watch(
            f, rule, report, inference=inference, engine_caller=engine_caller)
