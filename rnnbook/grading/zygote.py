"""The fork server: a pre-imported Python that forks one process per graded notebook.
Runs in the sandbox (inside bubblewrap when the host allows it), as an unprivileged user;
it never reads a notebook's results, the seed, the checks or the references.

    coordinator --control socket (SEQPACKET, JSON, passed fds)--> fork server
        {"op": "run", "job": id, "uid": uid} + [spec fd, output pipe, inputs pipe]
                                                           ->  fork; child.job_main
        <- {"op": "started", "job": id, "pid": pid} + [read end of the job's pipe]
        <- {"op": "exited", "job": id, "status": wait status}
        {"op": "kill", "job": id}                          ->  SIGKILL its process

Started with ``python -I -S -B -c BOOT`` (see rnnbook.grading.sandbox.boot_code): no
site-packages .pth files, no user site, no bytecode written.
"""
import json
import os
import select
import signal
import socket
import sys
import time

from rnnbook.grading import confine
from rnnbook.grading.defaults import JOB_DIR, JOB_UID


def main(control_fd, config):
    """config: {"namespaces": wanted, "uids": each notebook as a host user of its own
    (root without namespaces), "landlock": wanted, "read_only": what Landlock lets a
    notebook read, "probe_uid": a user id to test the environment with}."""
    sys.dont_write_bytecode = True
    import numpy  # noqa: F401
    import torch  # noqa: F401  (imported, never run: forking after running it is unsafe)
    import torch.fx.experimental.symbolic_shapes  # noqa: F401  (what a first backward(grad) imports)
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot  # noqa: F401
    _ipython()
    for name in ("rnnbook.gradcheck", "rnnbook.rnn"):
        try:
            __import__(name)
        except ImportError:
            pass
    from rnnbook.grading import child, monitor
    monitor.prepare()                  # the library's files and fingerprints, once
    confine.prctl(confine.PR_SET_PDEATHSIG, signal.SIGKILL)     # die with the coordinator
    confine.prctl(confine.PR_SET_CHILD_SUBREAPER, 1)           # escaped descendants come back
    if config["uids"]:
        confine.keep_capabilities([CAP_KILL, CAP_SETGID, CAP_SETUID])
    sock = socket.socket(fileno=control_fd)
    namespaces, seccomp, why = _confinement(config["namespaces"])
    abi = confine.landlock_abi() if config.get("landlock") and not namespaces else 0
    uid_ok, why_uid = _probe_user(config["probe_uid"]) if config.get("probe_uid") else (False, "")
    job_config = {"namespaces": namespaces, "seccomp": seccomp, "landlock": abi > 0,
                  "read_only": config.get("read_only", []), "uids": config["uids"],
                  "mpl_dir": os.environ.get("MPLCONFIGDIR", "/nonexistent/mpl")}
    sock.send(json.dumps({"op": "ready", "namespaces": namespaces, "seccomp": seccomp,
                          "landlock": abi, "uid_ok": uid_ok, "why": why or why_uid,
                          "pid": os.getpid()}).encode())
    _serve(sock, job_config, child.job_main)


CAP_KILL, CAP_SETGID, CAP_SETUID = 5, 6, 7


def _probe_user(uid):
    """Whether host user uid can run this Python: read the standard library, numpy, the
    students' rnnbook and the matplotlib cache (what a notebook may import later)."""
    import numpy
    import rnnbook
    paths = [os.__file__, numpy.__file__, rnnbook.__file__, os.environ.get("MPLCONFIGDIR", "/")]

    def read_as_user():
        confine.become(uid)
        for p in paths:
            if os.path.isdir(p):
                os.listdir(p)
            else:
                with open(p, "rb") as f:
                    f.read(1)

    ok, why = _in_child(read_as_user)
    return ok, ("" if ok else f"user {uid} cannot run this Python environment ({why})")


def _in_child(body):
    """Run body() in a forked throwaway process: (True, "") when it returns, else (False,
    what it raised; "" when it exited with a non-zero status of its own)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            body()
            os._exit(0)
        except BaseException as e:
            os.write(w, f"{type(e).__name__}: {e}".encode()[:500])
            os._exit(1)
    os.close(w)
    why = os.read(r, 1000).decode(errors="replace")
    os.close(r)
    return os.waitpid(pid, 0)[1] == 0, why


def _ipython():
    """The IPython shell a notebook may ask for (rnnbook.notebook.setup does, through
    matplotlib_inline), made once, without its history thread: the hand-written rule
    refuses to run while another thread runs."""
    try:
        from IPython.core.interactiveshell import InteractiveShell
        from traitlets.config import Config
        config = Config()
        config.HistoryManager.enabled = False
        InteractiveShell.instance(config=config)
    except Exception as e:            # no IPython here: notebooks just cannot ask for it
        print(f"fork server: no IPython shell ({type(e).__name__}: {e})", file=sys.stderr)


def _confinement(want_namespaces):
    """(namespaces work, seccomp works, why not) -- one probe when all works."""
    can_filter = confine.seccomp_supported()
    ok, why = _probe(want_namespaces, not can_filter)
    if ok:
        return want_namespaces, can_filter, ""
    namespaces, why = _probe(True, True) if want_namespaces else (False, why)
    seccomp, why2 = _probe(False, False) if can_filter else (False, "")
    if want_namespaces and not namespaces:
        why += _userns_hint()
    return namespaces, seccomp, why or why2


def _userns_hint():
    """What on this host forbids an unprivileged user namespace, if a sysctl says so."""
    for path, bad, fix in (
            ("/proc/sys/kernel/apparmor_restrict_unprivileged_userns", "1", "0"),
            ("/proc/sys/kernel/unprivileged_userns_clone", "0", "1"),
            ("/proc/sys/user/max_user_namespaces", "0", "a positive number")):
        try:
            with open(path) as f:
                if f.read().strip() == bad:
                    return f" ({path[10:].replace('/', '.')} is {bad}: set it to {fix})"
        except OSError:
            pass
    return ""


def _probe(namespaces, only_namespaces):
    """Whether the confinement works here: tried in a throwaway process."""
    def confine_here():
        if namespaces:
            confine.enter_namespaces(JOB_UID)
            inner = os.fork()
            if inner:
                os._exit(os.waitstatus_to_exitcode(os.waitpid(inner, 0)[1]) & 0xFF)
            confine.private_filesystem(JOB_DIR, 1, 64, JOB_UID, read_only=("/dev",))
        if not only_namespaces:
            confine.drop_privileges()
            confine.seccomp()
            try:
                os.fork()
                os._exit(3)                    # a fork was not refused
            except OSError:
                pass

    ok, why = _in_child(confine_here)
    return ok, ("" if ok else why or "the probe failed")


def _serve(sock, config, job_main):
    jobs = {}          # pid -> job id, for the children not yet reaped
    wake_r, wake_w = os.pipe()                 # SIGCHLD wakes the loop up
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.set_wakeup_fd(wake_w)
    last_sweep = 0.0
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
                data, fds, _, _ = socket.recv_fds(sock, 1 << 16, 4)
                if not data:
                    break
                msg = json.loads(data)
                if msg["op"] == "run" and len(fds) == 3:
                    _start(sock, msg["job"], fds, dict(config, uid=msg.get("uid")), job_main, jobs)
                elif msg["op"] == "kill":
                    for pid, job in jobs.items():
                        if job == msg["job"]:
                            _kill(pid)
                for fd in fds:
                    os.close(fd)
            _reap(sock, jobs)
            now = time.monotonic()
            if now - last_sweep > 0.5:
                _sweep(jobs)
                last_sweep = now
    finally:
        for pid in list(jobs):
            _kill(pid)
        _sweep({})


def _start(sock, job, fds, config, job_main, jobs):
    r, w = os.pipe()
    try:
        pid = os.fork()
    except OSError as e:
        os.close(r)
        os.close(w)
        sock.send(json.dumps({"op": "failed", "job": job, "reason": str(e)}).encode())
        return
    if pid == 0:
        try:
            os.close(r)
            sock.close()
            job_main(fds[0], fds[1], fds[2], w, config)
        finally:
            os._exit(70)
    os.close(w)
    jobs[pid] = job
    socket.send_fds(sock, [json.dumps({"op": "started", "job": job, "pid": pid}).encode()], [r])
    os.close(r)


def _kill(pid):
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
        if info.si_pid in jobs:
            _kill(info.si_pid)                # what is left in its group, before the pid is freed
        _, status = os.waitpid(info.si_pid, 0)
        job = jobs.pop(info.si_pid, None)
        if job is not None:
            sock.send(json.dumps({"op": "exited", "job": job, "status": status}).encode())


def _sweep(jobs):
    """Kill every child of the fork server that is not a job's own process: descendants
    that left their process group and were reparented here (without namespaces)."""
    me = os.getpid()
    try:
        with open(f"/proc/{me}/task/{me}/children") as f:
            children = [int(p) for p in f.read().split()]
    except OSError:
        return
    for pid in children:
        if pid not in jobs:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
