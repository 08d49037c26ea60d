"""Starting the sandbox, from the coordinator's side.

With bubblewrap (``bwrap``) on a Linux host that allows namespaces, the fork server
(rnnbook.grading.zygote) starts inside a container of its own: new mount, PID, IPC,
network, UTS and cgroup namespaces; a read-only root holding only the Python environment
(the virtual environment, the interpreter it points to, /usr and the libraries), a
students' copy of the rnnbook library (without rnnbook.reference or the grader's own
modules) and nothing else of the host. When the grader runs as root, bubblewrap gives
the fork server only CAP_SETUID and CAP_SETGID, which it uses at once to become the
unprivileged user ``defaults.SANDBOX_UID``; otherwise bubblewrap maps the grader's own
user into a user namespace. Each notebook's process then gets namespaces of its own
(rnnbook.grading.confine). The isolation mode is "namespaces".

Without bubblewrap, or where it cannot make namespaces, the fork server runs as a plain
process: as the unprivileged user SANDBOX_UID when the grader is root and that user can
run the Python environment (as in Gradescope's container), else as the grader's user.
The notebook's process keeps its rlimits and, on x86-64, its seccomp filter, but can
read what that user can. The isolation mode is "none".
"""
import json
import os
import select
import shutil
import site
import socket
import subprocess
import sys
import time
from pathlib import Path

from rnnbook.grading.defaults import JOB_DIR, LIB_DIR, MPL_DIR, SANDBOX_UID, START_TIMEOUT_S

PACKAGE = Path(__file__).resolve().parents[1]          # rnnbook/
SANDBOX_MODULES = ("defaults", "wire", "confine", "monitor", "child", "runner", "zygote")
NOT_FOR_STUDENTS = ("reference", "assign", "autograder", "bench", "grade", "sandbox", "__main__")


STUB = '''"""{name} is not available while grading: it holds the grader's references.
(A notebook may import it; self-check cells, which use it, do not run while grading.)"""


def __getattr__(name):
    raise AttributeError(f"{name}.{{name}} is not available while grading (the grader's "
                         "references); self-check cells do not run while grading")
'''


def stage_library(dest):
    """Copy into dest/rnnbook what notebooks may import: every module of the library but
    rnnbook.reference (the answers: replaced by a module that refuses every attribute) and
    the course tools; of rnnbook.grading only the modules that run in the sandbox."""
    target = Path(dest) / "rnnbook"
    for src in sorted(PACKAGE.rglob("*")):
        rel = src.relative_to(PACKAGE)
        parts = rel.parts
        if "__pycache__" in parts or src.suffix == ".pyc" or src.is_symlink():
            continue
        if len(parts) == 1 and Path(parts[0]).stem.startswith(NOT_FOR_STUDENTS):
            if src.suffix == ".py" and src.stem.startswith("reference"):
                (target / rel).parent.mkdir(parents=True, exist_ok=True)
                (target / rel).write_text(STUB.format(name=f"rnnbook.{src.stem}"))
                os.chmod(target / rel, 0o644)
            continue
        if parts[0] == "grading" and (len(parts) != 2 or Path(parts[1]).stem not in SANDBOX_MODULES):
            continue
        out = target / rel
        if src.is_dir():
            out.mkdir(parents=True, exist_ok=True)
            os.chmod(out, 0o755)
        elif src.is_file():
            out.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, out)
            os.chmod(out, 0o644)
    (target / "grading").mkdir(parents=True, exist_ok=True)
    (target / "grading" / "__init__.py").write_text('"""The sandbox side of rnnbook.grading."""\n')
    for d in (Path(dest), target, target / "grading"):
        os.chmod(d, 0o755)
    os.chmod(target / "grading" / "__init__.py", 0o644)
    return target


def python_paths():
    """(folders to mount read-only, site-packages folders to put on sys.path)."""
    sites = [p for p in site.getsitepackages() if os.path.isdir(p)]
    roots = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix,
             os.path.dirname(os.path.dirname(os.path.realpath(sys.executable)))} | set(sites)
    roots = sorted(({os.path.realpath(p) for p in roots if os.path.isdir(p)}
                    | {os.path.abspath(p) for p in roots if os.path.isdir(p)}) - {"/"})
    keep = [p for p in roots if not any(p != q and p.startswith(q.rstrip("/") + "/") for q in roots)]
    return keep, sites


def bwrap_command(lib, mpl, as_root):
    binds, _ = python_paths()
    cmd = ["bwrap", "--die-with-parent", "--new-session", "--unshare-pid", "--unshare-ipc",
           "--unshare-net", "--unshare-uts", "--unshare-cgroup-try"]
    if as_root:
        cmd += ["--cap-drop", "ALL", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
    else:
        cmd += ["--unshare-user"]
    if os.path.isdir("/usr"):
        cmd += ["--ro-bind", "/usr", "/usr"]
    for d in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(d):
            cmd += ["--symlink", os.readlink(d), d]
        elif os.path.isdir(d):
            cmd += ["--ro-bind", d, d]
    cmd += ["--perms", "0755", "--dir", "/etc",
            "--ro-bind-try", "/etc/ld.so.cache", "/etc/ld.so.cache",
            "--ro-bind-try", "/etc/fonts", "/etc/fonts"]
    made = {"/", "/usr", "/etc"}
    for path in binds:
        if path == "/usr" or path.startswith("/usr/"):
            continue
        parents = Path(path).parents
        for parent in reversed(parents):
            p = str(parent)
            if p not in made:
                cmd += ["--perms", "0755", "--dir", p]
                made.add(p)
        cmd += ["--ro-bind", path, path]
    cmd += ["--perms", "0755", "--dir", "/sandbox", "--ro-bind", str(lib), LIB_DIR,
            "--dir", JOB_DIR, "--dir", "/tmp", "--proc", "/proc", "--dev", "/dev",
            "--bind", str(mpl), MPL_DIR,
            "--remount-ro", "/", "--chdir", "/", "--clearenv"]
    for k, v in sandbox_env(MPL_DIR).items():
        cmd += ["--setenv", k, v]
    return cmd


def matplotlib_cache(folder):
    """A folder for the fork server's matplotlib cache, holding a copy of this user's font
    list when there is one (building it costs the fork server a second)."""
    folder = Path(folder)
    folder.mkdir(exist_ok=True)
    home = os.environ.get("MPLCONFIGDIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "matplotlib")
    try:
        for f in Path(home).glob("fontlist-v*.json"):
            if f.is_file() and f.stat().st_size < (8 << 20):
                shutil.copyfile(f, folder / f.name)
                os.chmod(folder / f.name, 0o644)
    except OSError:
        pass
    return folder


def sandbox_env(mpl_dir):
    return {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": mpl_dir, "MPLCONFIGDIR": mpl_dir,
            "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1"}


def boot_code(lib, drop_to, fd, namespaces):
    _, sites = python_paths()
    drop = (f"os.setgroups([]); os.setgid({drop_to}); os.setuid({drop_to})\n"
            if drop_to is not None else "")
    return (f"import os, sys\n{drop}sys.path[:0] = [{str(lib)!r}]\nsys.path += {sites!r}\n"
            f"from rnnbook.grading import zygote\nzygote.main({fd}, {namespaces!r})\n")


class Sandbox:
    """The fork server process and its control socket. ``how`` is "bwrap", "nobody" (a
    plain process as SANDBOX_UID) or "plain" (as the grader's user), tried in that order."""

    def __init__(self, base, isolation="auto", log=print):
        self.base, self.log = Path(base), log
        self.lib = self.base / "lib"
        if not self.lib.exists():
            stage_library(self.lib)
        self.ways = []
        if isolation == "auto" and shutil.which("bwrap"):
            self.ways.append("bwrap")
        if os.geteuid() == 0:
            self.ways.append("nobody")
        self.ways.append("plain")
        self.namespaces, self.seccomp = False, False
        self.why = "" if self.ways[0] == "bwrap" or isolation == "none" else \
            "bubblewrap (bwrap) is not installed"
        self._spawn()

    def _spawn(self):
        while True:
            try:
                return self._spawn_next()
            except OSError as e:            # e.g. the user cannot run this Python
                self.why = f"{self.how}: {e}"
                if not self.ways:
                    raise RuntimeError(f"the grading sandbox did not start ({e})") from e

    def _spawn_next(self):
        self.how = self.ways.pop(0)
        self.sock, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        as_root = os.geteuid() == 0
        fd, user = theirs.fileno(), None
        mpl = matplotlib_cache(self.base / f"mpl-{self.how}")
        if self.how != "plain" and as_root:
            os.chown(mpl, SANDBOX_UID, SANDBOX_UID)
        if self.how == "nobody":
            os.chmod(self.base, 0o711)          # to its lib, mpl and work folders only
        if self.how == "bwrap":
            boot = boot_code(LIB_DIR, SANDBOX_UID if as_root else None, fd, True)
            cmd, env = bwrap_command(self.lib, mpl, as_root), None
        else:
            user = SANDBOX_UID if self.how == "nobody" else None
            boot = boot_code(self.lib, None, fd, False)
            cmd, env = [], sandbox_env(str(mpl))
        cmd += [sys.executable, "-I", "-S", "-B", "-c", boot]
        self.log_path = self.base / "sandbox.log"
        try:
            with open(self.log_path, "ab") as log:
                self.proc = subprocess.Popen(cmd, env=env, cwd="/", pass_fds=[fd],
                                             stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                             start_new_session=True, user=user, group=user,
                                             extra_groups=[] if user else None)
        except OSError:
            self.sock.close()
            raise
        finally:
            theirs.close()
        self.sock.settimeout(30)

    def workdir(self, path):
        """Make a notebook's working folder (without namespaces) for the fork server's user."""
        os.makedirs(os.path.dirname(path), mode=0o700)
        os.mkdir(path, mode=0o700)
        if self.how == "nobody":
            os.chmod(os.path.dirname(path), 0o711)
            os.chown(path, SANDBOX_UID, SANDBOX_UID)

    def wait_ready(self, timeout=START_TIMEOUT_S):
        """Wait for the fork server; falls back to no bubblewrap if it cannot start in one."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            r, _, _ = select.select([self.sock], [], [], 0.5)
            if r:
                data = self.sock.recv(1 << 16)
                if data:
                    info = json.loads(data)
                    self.namespaces, self.seccomp = bool(info["namespaces"]), bool(info["seccomp"])
                    if not self.namespaces:
                        self.why = self.why or info.get("why", "")
                    if self.how == "bwrap" and not self.namespaces and self.ways:
                        break        # a container without per-notebook namespaces: no use
                    return info
                break
            if self.proc.poll() is not None:
                break
        if self.ways:
            if self.how == "bwrap" and not self.why:
                self.why = "bubblewrap could not start: " + (self.log_tail().strip().splitlines() or ["?"])[-1]
            self.close()
            self._spawn()
            return self.wait_ready(max(1.0, deadline - time.monotonic()))
        raise RuntimeError("the grading sandbox did not start:\n" + self.log_tail())

    @property
    def user(self):
        """The host user the notebooks run as (None: the grader's)."""
        return SANDBOX_UID if self.how == "nobody" or (self.how == "bwrap" and os.geteuid() == 0) else None

    @property
    def mode(self):
        return "namespaces" if self.namespaces else "none"

    def log_tail(self):
        try:
            return self.log_path.read_text(errors="replace")[-3000:]
        except OSError:
            return ""

    def send(self, message, fds=()):
        data = json.dumps(message).encode()
        if fds:
            socket.send_fds(self.sock, [data], list(fds))
        else:
            self.sock.send(data)

    def recv(self):
        """(message, fds); (None, []) when the fork server is gone."""
        try:
            data, fds, _, _ = socket.recv_fds(self.sock, 1 << 16, 4)
        except OSError:
            return None, []
        if not data:
            return None, fds
        try:
            message = json.loads(data)
        except ValueError:
            return None, fds
        return (message, fds) if isinstance(message, dict) else (None, fds)

    def close(self):
        try:
            self.sock.close()
        finally:
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
