"""What the sandbox sees, staged by the coordinator in its private work folder:

- ``stage_library``  the students' copy of the rnnbook library: every module but
                     rnnbook.reference (replaced by a module that refuses every name), the
                     course tools and the whole of rnnbook.grading;
- ``stage_grader``   the sandbox's side of the grader (fork server, runner, monitor, wire,
                     confine, defaults), kept apart: the fork server loads it as the package
                     ``rnnbook.grading`` and each notebook's process forgets it before the
                     first cell, so a notebook cannot import it (nor patch it by name);
- ``mirror_python``  without namespaces, as root, when the Python environment is out of
                     reach of other users (say a pyenv under /root, mode 0700): a private,
                     read-only copy of the interpreter and its standard library (hard
                     links where the file system allows, else copies) that the notebooks'
                     own unprivileged users can run.
"""
import glob
import os
import shutil
import site
import stat
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1]          # rnnbook/
SANDBOX_MODULES = ("defaults", "wire", "confine", "monitor", "child", "runner", "zygote")
NOT_FOR_STUDENTS = ("reference", "assign", "autograder", "bench", "grade", "sandbox", "__main__")

STUB = '''"""{name} is not available while grading: it holds the grader's references.
(A notebook may import it; self-check cells, which use it, do not run while grading.)"""


def __getattr__(name):
    raise AttributeError(f"{name}.{{name}} is not available while grading (the grader's "
                         "references); self-check cells do not run while grading")
'''


def _copy(src, dst):
    Path(dst).parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)
    os.chmod(dst, 0o644)


def stage_library(dest):
    """Copy into dest/rnnbook what notebooks may import (never rnnbook.grading)."""
    target = Path(dest) / "rnnbook"
    for src in sorted(PACKAGE.rglob("*")):
        rel = src.relative_to(PACKAGE)
        parts = rel.parts
        if "__pycache__" in parts or src.suffix == ".pyc" or src.is_symlink() or parts[0] == "grading":
            continue
        if len(parts) == 1 and Path(parts[0]).stem.startswith(NOT_FOR_STUDENTS):
            if src.suffix == ".py" and src.stem.startswith("reference"):
                (target / rel).parent.mkdir(parents=True, exist_ok=True)
                (target / rel).write_text(STUB.format(name=f"rnnbook.{src.stem}"))
                os.chmod(target / rel, 0o644)
            continue
        if src.is_dir():
            (target / rel).mkdir(parents=True, exist_ok=True)
            os.chmod(target / rel, 0o755)
        elif src.is_file():
            _copy(src, target / rel)
    for d in (Path(dest), target):
        d.mkdir(parents=True, exist_ok=True)
        os.chmod(d, 0o755)
    return target


def stage_grader(dest):
    """Copy the sandbox's modules of rnnbook.grading into dest (a package's folder)."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    for name in SANDBOX_MODULES:
        _copy(PACKAGE / "grading" / f"{name}.py", dest / f"{name}.py")
    (dest / "__init__.py").write_text('"""The sandbox side of rnnbook.grading."""\n')
    os.chmod(dest / "__init__.py", 0o644)
    os.chmod(dest, 0o755)
    return dest


def python_paths():
    """(folders to mount read-only, site-packages folders to put on sys.path)."""
    sites = [p for p in site.getsitepackages() if os.path.isdir(p)]
    roots = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix,
             os.path.dirname(os.path.dirname(os.path.realpath(sys.executable)))} | set(sites)
    roots = sorted(({os.path.realpath(p) for p in roots if os.path.isdir(p)}
                    | {os.path.abspath(p) for p in roots if os.path.isdir(p)}) - {"/"})
    keep = [p for p in roots if not any(p != q and p.startswith(q.rstrip("/") + "/") for q in roots)]
    return keep, sites


def open_to_others(path):
    """Whether a user who owns nothing and is in no group can read path: every folder
    above it searchable by others, and path itself readable (and searchable) by them."""
    path = os.path.realpath(path)
    try:
        parts = Path(path).parents
        if not all(os.stat(p).st_mode & stat.S_IXOTH for p in parts):
            return False
        mode = os.stat(path).st_mode
    except OSError:
        return False
    need = stat.S_IROTH | (stat.S_IXOTH if stat.S_ISDIR(mode) else 0)
    return mode & need == need


def _link_tree(src, dst, skip=()):
    """dst: the tree of src, hard-linked where possible (copied where not), read-only."""
    os.makedirs(dst, mode=0o755, exist_ok=True)
    for root, dirs, files in os.walk(src):
        dirs[:] = [d for d in dirs if not (root == src and d in skip)]
        out = os.path.join(dst, os.path.relpath(root, src))
        os.makedirs(out, mode=0o755, exist_ok=True)
        os.chmod(out, 0o755)
        for f in files:
            s, d = os.path.join(root, f), os.path.join(out, f)
            _link_file(s, d)


def _link_file(s, d):
    if os.path.lexists(d):
        return
    if os.path.islink(s):
        os.symlink(os.readlink(s), d)
        return
    try:
        os.link(s, d)
    except OSError:                     # another file system
        shutil.copy2(s, d)
        os.chmod(d, 0o644 | (0o111 if os.stat(s).st_mode & 0o100 else 0))


def mirror_python(dest):
    """(interpreter, LD_LIBRARY_PATH, site-packages folders) of a private copy of this
    Python that other users can run, or None when they can run it as it is. Only what
    cannot be reached is copied: the interpreter with its standard library (without its
    tests and its own site-packages), and site-packages folders out of reach."""
    _, sites = python_paths()
    exe = os.path.realpath(sys.executable)
    stdlib = os.path.dirname(os.path.realpath(os.__file__))
    if open_to_others(exe) and open_to_others(stdlib) and all(open_to_others(s) for s in sites):
        return None
    dest = Path(dest)
    lib = dest / "lib"
    version = os.path.basename(stdlib)                 # python3.X
    _link_tree(os.path.dirname(exe), str(dest / "bin"), ())
    for f in glob.glob(os.path.join(os.path.realpath(sys.base_prefix), "lib", "libpython*")):
        lib.mkdir(parents=True, exist_ok=True)
        _link_file(f, str(lib / os.path.basename(f)))
    _link_tree(stdlib, str(lib / version), skip=("site-packages", "test"))
    out_sites = []
    for i, s in enumerate(sites):
        if open_to_others(s):
            out_sites.append(s)
        else:
            _link_tree(s, str(dest / f"site{i}"))
            out_sites.append(str(dest / f"site{i}"))
    for d in (dest, lib):
        os.chmod(d, 0o755)
    return str(dest / "bin" / os.path.basename(exe)), str(lib), out_sites
