"""One graded notebook, in the process the fork server made for it. Runs in the sandbox;
nothing here is secret: students may read it.

``job_main`` confines the process (rnnbook.grading.confine): in namespaces of its own
when the fork server can make them; else as a host user of its own (the fork server is
root) or the grader's, confined by Landlock where the kernel has it; then rlimits, no
capabilities, a seccomp filter. It writes the notebook's copy into its working folder,
forgets the grader's modules (rnnbook.grading is then not importable) and hands over to
rnnbook.grading.runner.Notebook, which runs the cells and the checks.

File descriptors: 3 the pipe to the grader, 4 the pipe of the checks' inputs (from the
grader, one check at a time), 5 the output pipe (becomes stdout and stderr: nothing the
notebook prints lands on a disk), 6 the job's spec (read, then closed).
"""
import base64
import fcntl
import json
import os
import signal
import sys
import traceback

from rnnbook.grading import confine
from rnnbook.grading.defaults import (CPU_SLACK_S, FILES, GRADER_DIR, JOB_DIR, JOB_UID, OPEN_FILES,
                                      THREADS)
from rnnbook.grading.runner import Notebook

_exit = os._exit
_BLOCKED_EVENTS = ("subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn",
                   "pty.spawn", "os.fork", "os.forkpty")
_GC_EVENTS = ("gc.get_objects", "gc.get_referrers", "gc.get_referents")


def job_main(spec_fd, out_fd, in_fd, result_fd, config):
    """Entry point of the process forked for one job; never returns."""
    try:
        signal.set_wakeup_fd(-1)
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGCHLD, signal.SIGALRM, signal.SIGPIPE):
            signal.signal(sig, signal.SIG_DFL)
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)   # too large a file: an error, not death
        os.setsid()
        confine.prctl(confine.PR_SET_PDEATHSIG, signal.SIGKILL)      # dies with the fork server
        confine.limit(None, None, None, None, None)                   # no core dumps
        high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 100) for fd in (result_fd, in_fd, out_fd, spec_fd)]
        for fd, target in zip(high, (3, 4, 5, 6)):
            os.dup2(fd, target)
        os.closerange(7, 1 << 16)
        _first_to_go()
        if config["namespaces"]:
            confine.enter_namespaces(JOB_UID)
            pid = os.fork()                    # PID 1 of the new PID namespace
            if pid:
                _mirror_exit(pid)
            confine.prctl(confine.PR_SET_PDEATHSIG, signal.SIGKILL)
        _run(config)
    except BaseException:
        try:                   # into the output file (fd 5, or 1 once it is stdout)
            text = traceback.format_exc().encode("utf-8", "replace")[-4000:]
            for fd in (5, 1):
                try:
                    os.write(fd, b"grading sandbox: " + text)
                    break
                except OSError:
                    pass
        finally:
            _exit(70)
    _exit(0)


def _mirror_exit(pid):
    """Wait for the notebook's process and end the same way (for the fork server)."""
    os.closerange(0, 1 << 16)
    while True:
        try:
            _, status = os.waitpid(pid, 0)
            break
        except InterruptedError:
            continue
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        signal.signal(sig, signal.SIG_DFL)
        os.kill(os.getpid(), sig)
        _exit(128 + sig)
    _exit(os.waitstatus_to_exitcode(status) & 0xFF)


def _read_spec():
    chunks = []
    while True:
        data = os.pread(6, 1 << 20, sum(map(len, chunks)))
        if not data:
            break
        chunks.append(data)
    os.close(6)
    return json.loads(b"".join(chunks))


def _forget_grader():
    """rnnbook.grading out of sys.modules and of the rnnbook package: a notebook cannot
    import it, nor reach the runner's modules by name."""
    for name in [n for n in sys.modules if n == "rnnbook.grading" or n.startswith("rnnbook.grading.")]:
        del sys.modules[name]
    rnnbook = sys.modules.get("rnnbook")
    if rnnbook is not None:
        rnnbook.__dict__.pop("grading", None)
    sys.path_importer_cache.pop(GRADER_DIR, None)


def _run(config):
    spec = _read_spec()
    workdir = JOB_DIR if config["namespaces"] else spec["workdir"]
    statm = os.open("/proc/self/statm", os.O_RDONLY | os.O_CLOEXEC)
    if config["namespaces"]:
        # /dev/pts hidden: the sandbox's one devpts is shared by every notebook (same host
        # user), so a terminal opened by one could be read by another (no os.openpty here)
        confine.private_filesystem(JOB_DIR, spec["disk_mb"], FILES, JOB_UID,
                                   read_only=("/dev", config["mpl_dir"]), hidden=(GRADER_DIR, "/dev/pts"))
    elif config["uids"] and config.get("uid") is not None:
        confine.become(config["uid"])
    null = os.open("/dev/null", os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(5, 1)
    os.dup2(5, 2)
    os.close(5)
    os.close(null)
    os.chdir(workdir)
    with open(spec["notebook_name"], "wb") as f:
        f.write(base64.b64decode(spec.pop("notebook_b64")))
    os.environ.clear()
    os.environ.update(HOME=workdir, TMPDIR=os.path.join(workdir, "tmp"), PATH="/usr/bin:/bin",
                      LANG="C.UTF-8", MPLBACKEND="Agg", OMP_NUM_THREADS="1",
                      OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONHASHSEED="0")
    os.makedirs(os.environ["TMPDIR"], exist_ok=True)
    import tempfile
    tempfile.tempdir = None
    sys.argv = [spec["notebook_name"]]
    import faulthandler
    import torch
    torch.set_num_threads(1)
    faulthandler.enable(file=sys.__stderr__ if sys.__stderr__ else None, all_threads=False)

    page = os.sysconf("SC_PAGE_SIZE")
    vm_size = lambda: int(os.pread(statm, 64, 0).split()[0]) * page     # noqa: E731
    ballast_size = 16 << 20
    memory = spec["memory_mb"] << 20
    address_space = vm_size() + memory + ballast_size
    own_user = config["namespaces"] or (config["uids"] and config.get("uid") is not None)
    processes = THREADS if own_user else _process_count() + THREADS
    if os.geteuid() == 0:
        processes = None                     # root ignores it; seccomp refuses forks instead
    confine.limit(address_space, spec["disk_mb"] << 20, 2 * int(spec["timeout"]) + CPU_SLACK_S,
                  processes, OPEN_FILES)
    confine.drop_privileges()
    if not config["namespaces"] and config["landlock"]:
        confine.landlock(config["read_only"] + [f"/proc/{os.getpid()}"], [workdir, "/dev/null"])
    if config["seccomp"]:
        confine.seccomp()
    sys.addaudithook(_no_programs)
    _forget_grader()
    Notebook(spec, vm_size, address_space, ballast_size, threads_filter=config["seccomp"]).run()


def _first_to_go():
    """The notebook is the first process the kernel kills if the host runs out of memory.
    (A process may raise its own oom_score_adj; its /proc files are its own while dumpable.)"""
    confine.prctl(confine.PR_SET_DUMPABLE, 1)
    try:
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write("1000")
    except OSError:
        pass
    finally:
        confine.prctl(confine.PR_SET_DUMPABLE, 0)


def _process_count():
    try:
        return sum(1 for e in os.listdir("/proc") if e.isdigit())
    except OSError:
        return 1000


def _no_programs(event, args):
    if event in _BLOCKED_EVENTS:
        raise PermissionError(f"{event}: starting programs or processes is not allowed while grading")
    if event in _GC_EVENTS:         # however gc was reached (even a fresh import of it)
        raise PermissionError(f"{event}: gc's object lists are not available while grading")
