"""Starting the sandbox, from the coordinator's side.

With bubblewrap (``bwrap``) on a Linux host that allows namespaces, the fork server
(rnnbook.grading.zygote) starts inside a container of its own: new mount, PID, IPC,
network, UTS and cgroup namespaces; a read-only root holding only the Python environment
(the virtual environment, the interpreter it points to, /usr and the libraries), a
students' copy of the rnnbook library (without rnnbook.reference or the grader) and the
sandbox's side of the grader apart from it (rnnbook.grading.stage), nothing else of the
host. When the grader runs as root, bubblewrap gives the fork server only CAP_SETUID and
CAP_SETGID, which it uses at once to become the unprivileged user
``defaults.SANDBOX_UID``; otherwise bubblewrap maps the grader's own user into a user
namespace. Each notebook's process then gets namespaces of its own
(rnnbook.grading.confine). The isolation mode is "namespaces".

Without namespaces (no bubblewrap, or a host that refuses them) the mode is "none":

- "uids", the grader is root: the fork server keeps only CAP_SETUID, CAP_SETGID and
  CAP_KILL, and each notebook runs as a host user of its own (defaults.JOB_UIDS), never
  root: from a private copy of the interpreter when other users cannot reach it
  (stage.mirror_python). If no such user can run the environment, the grader refuses
  (exit status 2) unless it is told to run notebooks as root (``as_grader``).
- "plain", the grader is not root: notebooks run as the grader's user, confined by
  Landlock to their working folder; without Landlock the grader refuses unless
  ``as_grader``.

Every notebook keeps its rlimits and, on x86-64, its seccomp filter; with Landlock (Linux
>= 5.13) it sees nothing of the file system but the Python environment (read-only) and
its own working folder.
"""
import json
import os
import pwd
import secrets
import select
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

from rnnbook.grading.defaults import (GRADER_DIR, JOB_DIR, JOB_UIDS, LIB_DIR, MPL_DIR,
                                      SANDBOX_UID, START_TIMEOUT_S)
from rnnbook.grading.stage import mirror_python, python_paths, stage_grader, stage_library


def bwrap_command(lib, grader, mpl, as_root):
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
        for parent in reversed(Path(path).parents):
            p = str(parent)
            if p not in made:
                cmd += ["--perms", "0755", "--dir", p]
                made.add(p)
        cmd += ["--ro-bind", path, path]
    cmd += ["--perms", "0755", "--dir", "/sandbox", "--ro-bind", str(lib), LIB_DIR,
            "--ro-bind", str(grader), GRADER_DIR,
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
    os.chmod(folder, 0o755)
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


def boot_code(lib, grader, sites, drop_to, fd, config):
    drop = (f"os.setgroups([]); os.setgid({drop_to}); os.setuid({drop_to})\n"
            if drop_to is not None else "")
    return (f"import os, sys\n{drop}sys.path[:0] = [{str(lib)!r}]\nsys.path += {sites!r}\n"
            "import importlib.util, rnnbook\n"
            f"spec = importlib.util.spec_from_file_location('rnnbook.grading', "
            f"{os.path.join(str(grader), '__init__.py')!r}, submodule_search_locations=[{str(grader)!r}])\n"
            "sys.modules['rnnbook.grading'] = importlib.util.module_from_spec(spec)\n"
            "spec.loader.exec_module(sys.modules['rnnbook.grading'])\n"
            f"from rnnbook.grading import zygote\nzygote.main({fd}, {config!r})\n")


class Sandbox:
    """The fork server process and its control socket. ``how`` is "bwrap", "uids" (as
    root without namespaces) or "plain" (as the grader's user), tried in that order."""

    def __init__(self, base, isolation="auto", log=print, mirror=True, landlock=True):
        self.base, self.log, self.mirror, self.landlock = Path(base), log, mirror, landlock
        self.lib, self.grader = self.base / "lib", self.base / "grader"
        if not self.lib.exists():
            stage_library(self.lib)
            stage_grader(self.grader)
        self.ways = ["bwrap"] if isolation == "auto" and shutil.which("bwrap") else []
        self.ways.append("uids" if os.geteuid() == 0 else "plain")
        self.namespaces, self.seccomp, self.landlock_abi, self.uid_ok = False, False, 0, False
        self.as_grader, self.uids = False, set()
        self.why = "" if self.ways[0] == "bwrap" or isolation == "none" else \
            "bubblewrap (bwrap) is not installed"
        self._spawn()

    def _spawn(self):
        while True:
            try:
                return self._spawn_next()
            except OSError as e:            # e.g. this Python cannot be run
                self.why = f"{self.how}: {e}"
                if not self.ways:
                    raise RuntimeError(f"the grading sandbox did not start ({e})") from e

    def _spawn_next(self):
        self.how = self.ways.pop(0)
        self.sock, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        as_root = os.geteuid() == 0
        fd = theirs.fileno()
        mpl = matplotlib_cache(self.base / f"mpl-{self.how}")
        exe, sites = sys.executable, python_paths()[1]
        if self.how == "bwrap":
            if as_root:
                os.chown(mpl, SANDBOX_UID, SANDBOX_UID)
            config = {"namespaces": True, "uids": False, "landlock": False}
            boot = boot_code(LIB_DIR, GRADER_DIR, sites, SANDBOX_UID if as_root else None, fd, config)
            cmd = bwrap_command(self.lib, self.grader, mpl, as_root)
            env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8"}
        else:
            os.chmod(self.base, 0o711)          # its lib, grader, mpl and work folders only
            env = sandbox_env(str(mpl))
            mirrored = mirror_python(self.base / "py") if self.how == "uids" and self.mirror else None
            if mirrored:
                exe, env["LD_LIBRARY_PATH"], sites = mirrored
            roots = [str(self.base / "py")] + sites if mirrored else python_paths()[0]
            read = roots + ["/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32",
                            "/etc/ld.so.cache", "/etc/fonts", "/etc/localtime", str(self.lib),
                            str(mpl), "/dev/urandom", "/dev/random", "/dev/zero",
                            "/sys/devices/system/cpu"]
            config = {"namespaces": False, "uids": self.how == "uids", "landlock": self.landlock,
                      "read_only": read, "probe_uid": self.job_uid() if self.how == "uids" else None}
            boot = boot_code(self.lib, self.grader, sites, None, fd, config)
            cmd = []
        cmd += [exe, "-I", "-S", "-B", "-c", boot]
        self.log_path = self.base / "sandbox.log"
        try:
            with open(self.log_path, "ab") as log:
                self.proc = subprocess.Popen(cmd, env=env, cwd="/", pass_fds=[fd],
                                             stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                             start_new_session=True)
        except OSError:
            self.sock.close()
            raise
        finally:
            theirs.close()
        self.sock.settimeout(30)

    def job_uid(self):
        """A host user id of its own for a notebook (mode "uids"), else None: from
        defaults.JOB_UIDS, not in passwd, not given to another running notebook."""
        if (getattr(self, "how", "uids") != "uids") or self.as_grader:
            return None
        start, count = JOB_UIDS
        while True:
            uid = start + secrets.randbelow(count)
            try:
                pwd.getpwuid(uid)
            except KeyError:
                if uid not in self.uids:
                    self.uids.add(uid)
                    return uid

    def workdir(self, uid):
        """(folder, working folder) of a notebook without namespaces: an unguessable name;
        the working folder 0700, owned by the notebook's user."""
        folder = self.base / f"j{secrets.token_hex(12)}"
        os.mkdir(folder, 0o711)
        os.chmod(folder, 0o711)
        work = folder / "work"
        os.mkdir(work, 0o700)
        if uid is not None:
            os.chown(work, uid, uid)
        return str(folder), str(work)

    def release(self, uid):
        """After a notebook ran as uid: remove what it left in the shared temporary
        folders (/tmp, /var/tmp, /dev/shm and their world-writable folders)."""
        if uid is None:
            return
        self.uids.discard(uid)
        for top in ("/tmp", "/var/tmp", "/dev/shm"):
            for path in _entries(top):
                try:
                    st = os.lstat(path)
                except OSError:
                    continue
                if st.st_uid == uid:
                    _remove(path)
                elif path.count("/") == top.count("/") + 1 and os.path.isdir(path) \
                        and not os.path.islink(path) and st.st_mode & 0o002:
                    for inner in _entries(path):
                        try:
                            if os.lstat(inner).st_uid == uid:
                                _remove(inner)
                        except OSError:
                            pass

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
                    self.landlock_abi, self.uid_ok = int(info.get("landlock") or 0), bool(info.get("uid_ok"))
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
        """Who the notebooks run as, in words."""
        if self.how == "uids":
            return "root" if self.as_grader else "a user of its own"
        if self.how == "bwrap" and os.geteuid() == 0:
            return f"user {SANDBOX_UID}"
        return "the grader's user"

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


def _entries(folder, limit=20000):
    try:
        with os.scandir(folder) as it:
            return [e.path for _, e in zip(range(limit), it)]
    except OSError:
        return []


def _remove(path):
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            os.unlink(path)
        except OSError:
            pass
