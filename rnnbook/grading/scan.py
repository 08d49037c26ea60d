"""A static scan of a notebook's code (the coordinator reads it; nothing runs): lines that
use what could defeat the hand-written rule or the grader's pipes are listed for a human
to read, in the feedback and in OUT/review.csv. A flag changes no score: the constructs
have honest uses, and the hand-written rule is a rule, not a wall (README).

Flagged: importing rnnbook.grading; frame introspection (sys._getframe, inspect's frame
functions, f_back/f_locals/f_globals, tb_frame, gi_frame); gc's object lists; _thread and
thread starts; ctypes; os.read/os.write/os.dup* (also imported by name: from os import
write), io.FileIO, os.fdopen, socket.fromfd, open() of a file descriptor or with closefd,
and other ways to file descriptors (the grader's pipes); exec, eval
and compile; __import__ or importlib of a computed name; __torch_function__; the autograd
engine and saved-tensor hooks by their private names; sys.setprofile/settrace; writing
__code__, __closure__ or a cell's contents.
"""
import ast
import re

from rnnbook.grading.defaults import MAX_REVIEW
from rnnbook.grading.notebooks import where

_ATTRIBUTES = {
    "_getframe": "sys._getframe (frame introspection)",
    "_current_frames": "sys._current_frames (frame introspection)",
    "currentframe": "inspect.currentframe (frame introspection)",
    "getouterframes": "inspect.getouterframes (frame introspection)",
    "stack": None,                                   # inspect.stack only (below)
    "f_back": "a frame's f_back (frame introspection)",
    "f_locals": "a frame's f_locals (frame introspection)",
    "f_globals": "a frame's f_globals (frame introspection)",
    "tb_frame": "a traceback's tb_frame (frame introspection)",
    "gi_frame": "a generator's gi_frame (frame introspection)",
    "get_objects": "gc.get_objects (reaches any object)",
    "get_referrers": "gc.get_referrers (reaches any object)",
    "get_referents": "gc.get_referents (reaches any object)",
    "start_new_thread": "_thread.start_new_thread (a thread)",
    "setprofile": "sys.setprofile (the grader's monitor)",
    "settrace": "sys.settrace (the grader's monitor)",
    "run_backward": "the autograd engine's run_backward",
    "_execution_engine": "the autograd engine (_execution_engine)",
    "_push_saved_tensors_default_hooks": "autograd's saved-tensor hooks (private)",
    "_pop_saved_tensors_default_hooks": "autograd's saved-tensor hooks (private)",
    "__torch_function__": "__torch_function__ (a tensor subclass)",
    "cell_contents": "a closure cell's contents",
}
_ASSIGNED = {"__code__": "replaces a function's __code__", "__closure__": "a function's __closure__",
             "__globals__": "a function's __globals__"}
_OS_FD = {"write", "writev", "pwrite", "pwritev", "read", "readv", "pread", "dup", "dup2",
          "fdopen", "close", "closerange", "sendfile", "splice", "set_inheritable"}
_MODULES = {"_thread": "imports _thread (threads)", "ctypes": "imports ctypes (raw memory and C)",
            "rnnbook.grading": "imports the grader (rnnbook.grading)",
            "gc": None, "inspect": None}


def review(cells):
    """[{cell, where, line, what}] for a notebook's cells that run (at most MAX_REVIEW)."""
    out = []
    for cell in cells:
        source = "\n".join(("pass" if ln.lstrip().startswith(("%", "!")) else ln)
                           for ln in cell.source.split("\n"))
        try:
            tree = ast.parse(source)
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            continue
        seen = set()
        for line, what in sorted(_visit(tree)):
            if (line, what) not in seen and len(out) < MAX_REVIEW:
                seen.add((line, what))
                out.append({"cell": cell.number, "where": where(cell), "line": line, "what": what})
    return out


def _name(node):
    """'os.write' for an attribute chain, '' for anything else."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return ""


def _module_flag(name):
    for module, what in _MODULES.items():
        if what and (name == module or name.startswith(module + ".")):
            return what
    return None


def _visit(tree):
    for node in ast.walk(tree):
        line = getattr(node, "lineno", 0)
        if isinstance(node, ast.Import):
            for a in node.names:
                if _module_flag(a.name):
                    yield line, _module_flag(a.name)
        elif isinstance(node, ast.ImportFrom) and node.module:
            full = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            what = next((_module_flag(n) for n in full if _module_flag(n)), None)
            if what:
                yield line, what
            if node.module in ("os", "posix"):
                for a in node.names:
                    if a.name in _OS_FD or a.name == "*":
                        yield line, f"imports os.{a.name} (file descriptors)"
            elif node.module in ("io", "_io") and any(a.name in ("FileIO", "open", "*") for a in node.names):
                yield line, "imports io.FileIO/io.open (file descriptors)"
        elif isinstance(node, ast.Attribute):
            what = _ATTRIBUTES.get(node.attr)
            if node.attr == "stack" and _name(node) == "inspect.stack":
                what = "inspect.stack (frame introspection)"
            if what:
                yield line, what
            if node.attr in _ASSIGNED and isinstance(node.ctx, ast.Store):
                yield line, _ASSIGNED[node.attr]
        elif isinstance(node, ast.FunctionDef) and node.name == "__torch_function__":
            yield line, _ATTRIBUTES["__torch_function__"]
        elif isinstance(node, ast.Call):
            yield from _call(node, line)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) \
                and re.search(r"rnnbook\.grading|/proc/(self|\d|\*)|/dev/fd/", node.value):
            yield line, f"the text {node.value[:40]!r}"


def _call(node, line):
    name = _name(node.func)
    base = name.rsplit(".", 1)[-1]
    literal = bool(node.args) and isinstance(node.args[0], ast.Constant)
    if name in ("exec", "eval", "compile", "builtins.exec", "builtins.eval"):
        yield line, f"{base}() of code given as text or an object"
    elif name in ("__import__", "importlib.import_module") and not literal:
        yield line, f"{base}() of a computed module name"
    elif name.startswith(("os.", "posix.")) and base in _OS_FD:
        yield line, f"os.{base}() on a file descriptor"
    elif name in ("open", "io.open", "os.fdopen") and node.args and isinstance(node.args[0], ast.Constant) \
            and isinstance(node.args[0].value, int):
        yield line, "open() of a file descriptor"
    elif base in ("FileIO", "fdopen", "fromfd") or name.endswith("socket.socket") and \
            any(k.arg == "fileno" for k in node.keywords):
        yield line, f"{base}() (a file descriptor as a file or socket)"
    elif name in ("open", "io.open") and any(k.arg in ("closefd", "opener") for k in node.keywords):
        yield line, "open() with closefd or opener (file descriptors)"
