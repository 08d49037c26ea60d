"""The hand-written rule (Check.hand_written), enforced inside the notebook's process while
the grader calls the student's function (the *window*). Runs in the sandbox.

Python reports every function call of the window to a profile hook, whatever route led to
the function: an import, importlib, ``__import__`` of a computed name, an object found
through gc, a module the fork server imported before. The hook reports a violation
(``report(text)``, at once, over the grader's pipe) when the student's code

- enters the autograd machinery: the autograd engine itself (any path to backward() or
  grad(), also from torch.func or torch.autograd.functional), forward-mode AD, or the
  code of torch.func, torch._functorch, torch.fx (and the code it generates),
  torch.jit, torch._dynamo, torch._inductor, torch.export, torch.autograd's functional
  entry points and saved-tensor hooks -- for call="function"/"backward" the window also
  runs under torch.inference_mode, and turning grad mode on in it is a violation;
- records an autograd graph, however grad mode was turned on (even from C): a
  saved-tensor hook sees each tensor autograd saves; only the Function's own
  ctx.save_for_backward (call="autograd") is allowed;
- enters a forbidden module of the library (rnnbook.rnn, every rnnbook module, ...),
  except the functions the rule allows, or runs a copy of one of its functions (same
  bytecode, names and constants: the source exec'd under another file name);
- does what would blind the hook: starts a thread, leaves one running, calls C through
  ctypes, changes or reads the profiler or tracer, walks gc's object lists.

For call="autograd" the grader's own backward() of the output is the one engine run
allowed; the Function's forward and backward run inside it under the same rule.
This is a rule, not a wall: see the README ("What the hand-written rule catches").
"""
import _thread
import gc
import hashlib
import importlib.util
import os
import sys

import torch

_setprofile, _getprofile, _addaudithook = sys.setprofile, sys.getprofile, sys.addaudithook
_current_frames, _getframe = sys._current_frames, sys._getframe
_ENGINE = type(torch.autograd.Variable._execution_engine)
_is_grad_enabled = torch.is_grad_enabled
_saved_tensors_hooks = torch.autograd.graph.saved_tensors_hooks
_top_hooks = getattr(torch._C._autograd, "_top_saved_tensors_default_hooks", None)
_TORCH = os.path.dirname(torch.__file__) + os.sep
_AUTOGRAD = tuple(_TORCH + p for p in (
    "func" + os.sep, "_functorch" + os.sep, "fx" + os.sep, "jit" + os.sep, "_dynamo" + os.sep,
    "_inductor" + os.sep, "export" + os.sep, "_export" + os.sep, "_higher_order_ops" + os.sep,
    os.path.join("autograd", "__init__.py"), os.path.join("autograd", "functional.py"),
    os.path.join("autograd", "forward_ad.py"), os.path.join("autograd", "gradcheck.py"),
    os.path.join("autograd", "graph.py")))
_OWN_DIR = os.path.dirname(os.path.realpath(__file__)) + os.sep
_TENSOR_BACKWARD = torch.Tensor.backward.__code__
_FORWARD_AD = frozenset({"_make_dual", "_unpack_dual", "_enter_dual_level", "_exit_dual_level"})
_BLINDING = {(sys, "setprofile"), (sys, "settrace"), (sys, "getprofile"), (sys, "gettrace"),
             (sys, "_current_frames"), (gc, "get_objects"), (gc, "get_referrers"),
             (gc, "get_referents")}
_BLINDING = frozenset((id(m), n) for m, n in _BLINDING)
_THREAD_ID = id(_thread)
_AUDIT = ("ctypes.", "sys.setprofile", "sys.settrace", "os.fork", "os.exec", "os.posix_spawn",
          "subprocess.Popen", "os.system")
_ANY_RNNBOOK = "rnnbook"
_EXCLUDED_PACKAGE = "rnnbook.grading"
_MIN_CODE = 40           # bytes of bytecode: shorter functions are not fingerprinted

_FILES, _PRINTS = {}, {}


def prepare():
    """Find (and fingerprint) the whole library once, in the fork server before it forks."""
    for f in _module_files(_ANY_RNNBOOK):
        _file_prints(f)


def _module_files(name):
    """The source files of module or package ``name`` (without importing it); for
    'rnnbook', every module of the library except the grader's own package."""
    if name not in _FILES:
        _FILES[name] = frozenset(_find_files(name))
    return _FILES[name]


def _find_files(name):
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return set()
    if spec is None or not spec.origin:
        return set()
    if not spec.submodule_search_locations:
        return {os.path.realpath(spec.origin)}
    excluded = None
    if name == _ANY_RNNBOOK:
        try:
            grading = importlib.util.find_spec(_EXCLUDED_PACKAGE)
        except (ImportError, ValueError):
            grading = None
        excluded = os.path.dirname(os.path.realpath(grading.origin)) + os.sep if grading and grading.origin else None
    out = set()
    for root in spec.submodule_search_locations:
        for folder, _, files in os.walk(root):
            for f in files:
                path = os.path.realpath(os.path.join(folder, f))
                if f.endswith(".py") and not (excluded and path.startswith(excluded)):
                    out.add(path)
    return out


def _printable(code):
    """Whether a code object is fingerprinted: a named function (not a lambda, a
    comprehension or a generator expression, whose few bytes an honest student's code
    shares with the library's) of at least _MIN_CODE bytes of bytecode."""
    return not code.co_name.startswith("<") and len(code.co_code) >= _MIN_CODE


def fingerprint(code):
    """What a copy of a function keeps whatever its file name, its own name or its
    docstring: bytecode, names (global, local, free), constants."""
    consts = tuple(c if isinstance(c, (int, float, str, bytes, type(None))) else type(c).__name__
                   for c in code.co_consts[1:])     # [0]: the docstring (or None)
    return hashlib.sha256(repr((code.co_code, code.co_names, code.co_varnames,
                                code.co_freevars, code.co_cellvars, consts,
                                code.co_argcount)).encode()).hexdigest()


def _file_prints(path):
    """{fingerprint: qualified name} of every function of a library file."""
    if path not in _PRINTS:
        out = {}
        try:
            with open(path, encoding="utf-8") as f:
                stack = [compile(f.read(), path, "exec", dont_inherit=True)]
        except (OSError, SyntaxError, ValueError):
            stack = []
        while stack:
            code = stack.pop()
            stack.extend(c for c in code.co_consts if hasattr(c, "co_code"))
            if _printable(code):
                out[fingerprint(code)] = getattr(code, "co_qualname", code.co_name)
        _PRINTS[path] = out
    return _PRINTS[path]


def _allowed_codes(names):
    out = set()
    for name in names:
        module, _, attr = name.rpartition(".")
        obj = sys.modules.get(module)
        code = getattr(getattr(obj, attr, None), "__code__", None)
        if code is not None:
            out.add(code)
    return frozenset(out)


def _describe_code(code):
    return f"{code.co_qualname if hasattr(code, 'co_qualname') else code.co_name} " \
           f"({os.path.basename(code.co_filename)})"


def watch(fn, rule, report, inference=True, engine_caller=None):
    """fn() under the rule {"forbid": [...], "allow": [...]}; report(text) for the first
    violation (the check then scores 0, and watching stops). inference: run under
    torch.inference_mode (call="function" and "backward"). engine_caller: the code object
    allowed one engine run (call="autograd")."""
    forbid = list(rule.get("forbid", ()))
    autograd = "autograd" in forbid
    library = frozenset(f for name in forbid if name != "autograd" for f in _module_files(name))
    allowed = _allowed_codes(rule.get("allow", ()))
    allowed_prints = {fingerprint(c) for c in allowed}
    prints = {p: n for f in library for p, n in _file_prints(f).items() if p not in allowed_prints}
    seen = set()
    engine_runs = [1 if engine_caller is not None else 0]
    verdicts = {}

    def flag(kind, text):
        """Report the first violation; the check scores 0, so watching stops there."""
        if not seen:
            seen.add(kind)
            report(text)
            if installed[0]:
                _setprofile(None)

    def classify(code):
        """'torch' for torch's code, 'autograd' for its autograd entry points, 'library'
        for a forbidden library module (or a copy of one of its functions), 'allowed',
        'grader' for this package, '' for anything else (the student's code)."""
        v = verdicts.get(code)
        if v is None:
            name = code.co_filename
            if code in allowed:
                v = "allowed"
            elif name in library:
                v = "library"
            elif name.startswith(_AUTOGRAD) or code is _TENSOR_BACKWARD or name.startswith("<eval_with_key>"):
                v = "autograd"
            elif name.startswith(_TORCH):
                v = "torch"
            elif name.startswith(_OWN_DIR):
                v = "grader"
            elif prints and _printable(code):
                p = fingerprint(code)
                v = "library" if p in prints else "allowed" if p in allowed_prints else ""
            else:
                v = ""
            verdicts[code] = v
        return v

    def hook(frame, event, arg):
        if inference and autograd and _is_grad_enabled():
            flag("grad", "turned autograd on (torch.enable_grad or set_grad_enabled)")
        if event == "call":
            v = classify(frame.f_code)
            if v in ("library", "autograd"):
                caller = frame.f_back
                c = classify(caller.f_code) if caller is not None else ""
                if v == "library" and c not in ("library", "allowed"):
                    what = frame.f_code.co_filename if frame.f_code.co_filename in library else "a copy"
                    flag("library " + what, f"called the library's {_describe_code(frame.f_code)}"
                         + ("" if what != "a copy" else ", copied"))
                elif v == "autograd" and autograd and c not in ("torch", "autograd"):
                    flag("autograd", f"used torch autograd ({_describe_code(frame.f_code)})")
        elif event == "c_call" and frame.f_code is not _OWN:
            owner = getattr(arg, "__self__", None)
            name = getattr(arg, "__name__", "")
            if isinstance(owner, _ENGINE):
                if engine_runs[0] and frame.f_code is engine_caller and name == "run_backward":
                    engine_runs[0] -= 1
                elif autograd:
                    flag("autograd", "used torch autograd (the autograd engine: backward or grad)")
            elif autograd and name in _FORWARD_AD:
                flag("autograd", "used torch forward-mode autograd")
            elif (id(owner), name) in _BLINDING:
                flag("blind", f"called {owner.__name__}.{name}, which could blind the grader's check")
            elif id(owner) == _THREAD_ID and name.startswith("start"):
                flag("thread", "started a thread (the grader cannot check code in threads)")

    def pack(tensor):
        """Autograd saves a tensor: recording a graph. Allowed only where no student
        frame is on the stack (a Function's ctx.save_for_backward, saved after its
        forward returned)."""
        f = _getframe(1)
        while f is not None and f.f_code is not _OWN:
            if classify(f.f_code) == "" or inference:
                flag("autograd", "recorded an autograd graph (grad mode was turned on)")
                break
            f = f.f_back
        return tensor

    def audit(event, args):
        if active[0] and event.startswith(_AUDIT):
            flag("audit " + event, f"did `{event}` (not allowed in a hand-written function)")

    active, installed = [False], [False]
    _addaudithook(audit)
    if len(_current_frames()) > 1:
        flag("thread", "left a thread running (the grader cannot check code in threads)")
    guard = torch.inference_mode() if inference else None
    hooks = _saved_tensors_hooks(pack, _unpack) if autograd else None
    try:
        if guard is not None:
            guard.__enter__()
        if hooks is not None:
            hooks.__enter__()
        if not seen:
            _setprofile(hook)
            installed[0] = active[0] = True
        try:
            return fn()
        finally:
            active[0] = False
            if installed[0] and not seen and _getprofile() is not hook:
                flag("blind", "removed the grader's profile hook")
            _setprofile(None)
            if hooks is not None and _top_hooks is not None and not seen:
                top = _top_hooks(False)
                if not top or top[0] is not pack:
                    flag("blind", "removed the grader's saved-tensor hooks")
    finally:
        try:
            if hooks is not None:
                hooks.__exit__(None, None, None)
        finally:
            if guard is not None:
                guard.__exit__(None, None, None)


def _unpack(tensor):
    return tensor


_OWN = watch.__code__
