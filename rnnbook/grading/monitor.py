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

Nothing of the student's runs inside the hooks (Python does not profile them): the hook,
pack and audit use only what ``watch`` bound when it started (a notebook that replaces a
module attribute during the window changes nothing in them), look at the student's
objects only through ``type()`` and ``id()`` (never isinstance, getattr, ==, hash or a
method of an object whose class the student wrote: a ``__class__`` property, a str
subclass as a code object's file name), and gc's automatic collections are off during
the window (a finalizer or a gc callback could run inside a hook otherwise).
"""
import _thread
import gc
import hashlib
import importlib.util
import os
import sys
import types

import torch

_setprofile, _getprofile, _addaudithook = sys.setprofile, sys.getprofile, sys.addaudithook
_current_frames, _getframe = sys._current_frames, sys._getframe
_ENGINE = type(torch.autograd.Variable._execution_engine)
_is_grad_enabled = torch.is_grad_enabled
_push_hooks = torch._C._autograd._push_saved_tensors_default_hooks
_pop_hooks = torch._C._autograd._pop_saved_tensors_default_hooks
_top_hooks = getattr(torch._C._autograd, "_top_saved_tensors_default_hooks", None)
_InferenceMode = torch._C._InferenceMode
_im_enter, _im_exit = _InferenceMode.__enter__, _InferenceMode.__exit__
_gc_enable, _gc_disable, _gc_isenabled = gc.enable, gc.disable, gc.isenabled
_str = str.__str__                      # an exact str, whatever str subclass it is given
_HOOK_CALLS = frozenset({"_push_saved_tensors_default_hooks", "_pop_saved_tensors_default_hooks"})
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
             (gc, "get_referents"), (gc, "enable")}
_BLINDING = frozenset((id(m), n) for m, n in _BLINDING)
_THREAD_ID = id(_thread)
_AUDIT = ("ctypes.", "sys.setprofile", "sys.settrace", "os.fork", "os.exec", "os.posix_spawn",
          "subprocess.Popen", "os.system")
_ANY_RNNBOOK = "rnnbook"
_EXCLUDED_PACKAGE = "rnnbook.grading"
_MIN_CODE = 40           # bytes of bytecode: shorter functions are not fingerprinted

_FILES, _PRINTS = {}, {}


def prepare():
    """Find (and fingerprint) the whole library once, in the fork server before it forks;
    the caches are then read-only (a notebook cannot empty them)."""
    global _FILES, _PRINTS
    for f in _module_files(_ANY_RNNBOOK):
        _file_prints(f)
    _FILES = types.MappingProxyType(dict(_FILES))
    _PRINTS = types.MappingProxyType({k: types.MappingProxyType(v) for k, v in _PRINTS.items()})


def _module_files(name):
    """The source files of module or package ``name`` (without importing it); for
    'rnnbook', every module of the library except the grader's own package."""
    if name in _FILES:
        return _FILES[name]
    found = frozenset(_find_files(name))
    if type(_FILES) is dict:
        _FILES[name] = found
    return found


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


def _make_printable(str_=_str, length=len, minimum=_MIN_CODE):
    def printable(code):
        """Whether a code object is fingerprinted: a named function (not a lambda, a
        comprehension or a generator expression, whose few bytes an honest student's code
        shares with the library's) of at least _MIN_CODE bytes of bytecode."""
        return not str_(code.co_name).startswith("<") and length(code.co_code) >= minimum
    return printable


def _make_fingerprint(sha256=hashlib.sha256, str_=_str, repr_=repr, tuple_=tuple, map_=map,
                      code_type=types.CodeType):
    plain = (int, float, bool, str, bytes, type(None))
    named = ((tuple, "tuple"), (frozenset, "frozenset"), (code_type, "code"))

    def const(c):
        t = type(c)
        for p in plain:
            if t is p:
                return c
        for n, name in named:
            if t is n:
                return name
        return "other"

    def fingerprint(code):
        """What a copy of a function keeps whatever its file name, its own name or its
        docstring: bytecode, names (global, local, free), constants (only values of exact
        built-in types are read: nothing of a student's class runs)."""
        consts = tuple_(map_(const, code.co_consts[1:]))     # [0]: the docstring (or None)
        names = tuple_(tuple_(map_(str_, ns)) for ns in (code.co_names, code.co_varnames,
                                                         code.co_freevars, code.co_cellvars))
        return sha256(str_(repr_((code.co_code, *names, consts, code.co_argcount))).encode()).hexdigest()
    return fingerprint


_printable, fingerprint = _make_printable(), _make_fingerprint()


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
        if type(_PRINTS) is not dict:
            return out
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


def _make_describe(str_=_str, sep=os.sep):
    def describe(code):
        return f"{str_(code.co_qualname)} ({str_(code.co_filename).rpartition(sep)[2]})"
    return describe


_describe_code = _make_describe()


def watch(fn, rule, report, inference=True, engine_caller=None):
    """fn() under the rule {"forbid": [...], "allow": [...]}; report(text) for the first
    violation (the check then scores 0, and watching stops). inference: run under
    torch.inference_mode (call="function" and "backward"). engine_caller: the code object
    allowed one engine run (call="autograd")."""
    # Everything the hooks use, bound now (before the student's code runs): locals of this
    # call, never this module's globals, which the watched code could replace.
    ENGINE, FORWARD_AD, BLINDING, THREAD_ID, HOOK_CALLS = _ENGINE, _FORWARD_AD, _BLINDING, _THREAD_ID, _HOOK_CALLS
    OWN, AUTOGRAD, TORCH, OWN_DIR, TENSOR_BACKWARD = _OWN, _AUTOGRAD, _TORCH, _OWN_DIR, _TENSOR_BACKWARD
    AUDIT, GC_ID = _AUDIT, id(gc)
    is_grad_enabled, setprofile, getprofile, getframe = _is_grad_enabled, _setprofile, _getprofile, _getframe
    push_hooks, pop_hooks, top_hooks = _push_hooks, _pop_hooks, _top_hooks
    im_enter, im_exit = _im_enter, _im_exit
    gc_enable, gc_disable, gc_isenabled = _gc_enable, _gc_disable, _gc_isenabled
    str_, type_, id_, get_attr = _str, type, id, getattr
    printable, fprint, describe = _make_printable(), _make_fingerprint(), _make_describe()
    forbid = list(rule.get("forbid", ()))
    autograd = "autograd" in forbid
    library = frozenset(f for name in forbid if name != "autograd" for f in _module_files(name))
    allowed_codes = _allowed_codes(rule.get("allow", ()))
    allowed = {id(c): c for c in allowed_codes}
    allowed_prints = frozenset(fingerprint(c) for c in allowed_codes)
    prints = {p: n for f in library for p, n in _file_prints(f).items() if p not in allowed_prints}
    seen = set()
    engine_runs = [1 if engine_caller is not None else 0]
    verdicts = {}                          # id(code) -> (code, verdict): never hashes a code object

    def flag(kind, text):
        """Report the first violation; the check scores 0, so watching stops there."""
        if not seen:
            seen.add(kind)
            report(text)
            if installed[0]:
                setprofile(None)

    def classify(code):
        """'torch' for torch's code, 'autograd' for its autograd entry points, 'library'
        for a forbidden library module (or a copy of one of its functions), 'allowed',
        'grader' for this package, '' for anything else (the student's code)."""
        key = id_(code)
        entry = verdicts.get(key)
        if entry is not None and entry[0] is code:
            return entry[1]
        name = str_(code.co_filename)
        if key in allowed and allowed[key] is code:
            v = "allowed"
        elif name in library:
            v = "library"
        elif name.startswith(AUTOGRAD) or code is TENSOR_BACKWARD or name.startswith("<eval_with_key>"):
            v = "autograd"
        elif name.startswith(TORCH):
            v = "torch"
        elif name.startswith(OWN_DIR):
            v = "grader"
        elif prints and printable(code):
            p = fprint(code)
            v = "library" if p in prints else "allowed" if p in allowed_prints else ""
        else:
            v = ""
        verdicts[key] = (code, v)
        return v

    def hook(frame, event, arg):
        if inference and autograd and is_grad_enabled():
            flag("grad", "turned autograd on (torch.enable_grad or set_grad_enabled)")
        if event == "call":
            code = frame.f_code
            v = classify(code)
            if v == "library" or v == "autograd":
                caller = frame.f_back
                c = classify(caller.f_code) if caller is not None else ""
                if v == "library" and c != "library" and c != "allowed":
                    copied = str_(code.co_filename) not in library
                    flag("library", f"called the library's {describe(code)}" + (", copied" if copied else ""))
                elif v == "autograd" and autograd and c != "torch" and c != "autograd":
                    flag("autograd", f"used torch autograd ({describe(code)})")
        elif event == "c_call" and frame.f_code is not OWN:
            owner = get_attr(arg, "__self__", None)      # arg: a built-in function (C)
            name = str_(get_attr(arg, "__name__", ""))
            if type_(owner) is ENGINE:                   # type(), not isinstance: no __class__
                if engine_runs[0] and frame.f_code is engine_caller and name == "run_backward":
                    engine_runs[0] -= 1
                elif autograd:
                    flag("autograd", "used torch autograd (the autograd engine: backward or grad)")
            elif autograd and name in FORWARD_AD:
                flag("autograd", "used torch forward-mode autograd")
            elif autograd and name in HOOK_CALLS:
                flag("autograd", "changed autograd's saved-tensor hooks")
            elif (id_(owner), name) in BLINDING:
                module = "gc" if id_(owner) == GC_ID else "sys"
                flag("blind", f"called {module}.{name}, which could blind the grader's check")
            elif id_(owner) == THREAD_ID and name.startswith("start"):
                flag("thread", "started a thread (the grader cannot check code in threads)")

    def pack(tensor):
        """Autograd saves a tensor: recording a graph. Allowed only where no student
        frame is on the stack (a Function's ctx.save_for_backward, saved after its
        forward returned)."""
        f = getframe(1)
        while f is not None and f.f_code is not OWN:
            if classify(f.f_code) == "" or inference:
                flag("autograd", "recorded an autograd graph (grad mode was turned on)")
                break
            f = f.f_back
        return tensor

    def audit(event, args):
        if active[0] and (event if type_(event) is str else str_(event)).startswith(AUDIT):
            flag("audit", f"did `{str_(event)}` (not allowed in a hand-written function)")

    active, installed = [False], [False]
    _addaudithook(audit)
    if len(_current_frames()) > 1:
        flag("thread", "left a thread running (the grader cannot check code in threads)")
    gc_was = gc_isenabled()
    guard = _InferenceMode(True) if inference else None
    pushed = False
    try:
        gc_disable()              # no finalizer or gc callback of the student's inside a hook
        if guard is not None:
            im_enter(guard)
        if autograd:
            push_hooks(pack, _unpack)
            pushed = True
        if not seen:
            setprofile(hook)
            installed[0] = active[0] = True
        try:
            return fn()
        finally:
            active[0] = False
            if installed[0] and not seen and getprofile() is not hook:
                flag("blind", "removed the grader's profile hook")
            setprofile(None)
            if pushed and top_hooks is not None and not seen:
                top = top_hooks(False)
                if not top or top[0] is not pack:
                    flag("blind", "removed the grader's saved-tensor hooks")
    finally:
        try:
            if pushed:
                pop_hooks()
        finally:
            try:
                if guard is not None:
                    im_exit(guard, None, None, None)
            finally:
                if gc_was:
                    gc_enable()


def _unpack(tensor):
    return tensor


_OWN = watch.__code__
