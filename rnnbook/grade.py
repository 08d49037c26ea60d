"""Grade a class's exercise notebooks.

    rnnbook grade SUBMISSIONS --out OUT [--jobs N] [--timeout SECONDS] [--memory-mb MB] [--force]

SUBMISSIONS/<student>/<notebook>.ipynb, where <notebook> is the file name of an exercise
in exercises/. OUT receives grades.csv (student,exercise,score,max_score,status), and for
each student results.json (Gradescope's schema) and feedback.md. Each (student, exercise)
result is also kept in OUT/<student>/<exercise>.result.json, written atomically: a rerun
grades only what has no result yet (or whose notebook or checks changed), and --force
regrades everything.

Each exercise declares its graded checks in solutions/<exercise>.checks.py (a list
``CHECKS`` of ``Check``). This process (the coordinator) draws the checks' inputs from a
secret seed, computes the reference results with rnnbook and torch in float64, and
compares; the students' code runs in children forked from a pre-imported sandbox process
(rnnbook.sandbox), which receive the inputs and send back only the return values.

The seed is os.urandom unless the environment variable RNNBOOK_GRADE_SEED holds an
integer (for reproducible tests). Linux only.
"""
import argparse
import csv
import dataclasses
import datetime
import hashlib
import importlib.util
import io
import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import zlib
from collections import Counter, deque
from pathlib import Path
from typing import Callable

from rnnbook import sandbox

STATUSES = ("graded", "timeout", "memory", "error", "invalid", "missing")
SKIP_TAGS = ("self-check", "skip-grading")
RESULT_VERSION = 1
MAX_NOTEBOOK_BYTES = 20 << 20
OUTPUT_CAP = 1 << 20            # bytes of a notebook's printed output kept
FSIZE_MB = 64                   # largest file a notebook may write
ROOT = Path(__file__).resolve().parents[1]


class UsageError(Exception):
    """A mistake of the instructor's (a missing folder, a bad option, a broken checks file)."""


# ---------------------------------------------------------------------------------------
# Declaring checks

@dataclasses.dataclass(frozen=True)
class Check:
    """One graded check of an exercise, declared in solutions/<exercise>.checks.py.

    name      -- what the student's feedback calls it, e.g. "jordan_backward"
    points    -- split equally over ``outputs``; each output passes or fails on its own
    function  -- the name of the student's function (or class, for call="autograd")
    inputs    -- inputs(rng) -> dict with "args" (positional arguments; with call="backward"
                 the ones before the cache) and anything ``reference`` needs, plus
                 "forward_args" for call="backward" and "grad_output" for call="autograd".
                 Runs in the grader only; rng comes from the secret seed. Keep sizes small.
    reference -- reference(case) -> {output name: expected array}, in the grader only:
                 rnnbook, or torch autograd in float64
    outputs   -- {output name: path into the return value}; a path is a tuple of indices
                 and dict keys, () for the value itself. With call="autograd" the value is
                 {"out": the forward's output, "grads": [the gradient of each arg]}.
    call      -- "function": function(*args)
                 "backward": _, cache = forward(*forward_args); function(*args, cache)
                 "autograd": function.apply(*args as tensors requiring grad), then
                             .backward(grad_output) on its output
    forward   -- with call="backward", the forward function the exercise provides
    tol, tol32 -- largest relative error (rnnbook.gradcheck.rel_error) that passes, for
                 float64 results and for float32 (or float16) results
    """
    name: str
    points: float
    function: str
    inputs: Callable
    reference: Callable
    outputs: dict
    call: str = "function"
    forward: str = None
    tol: float = 1e-7
    tol32: float = 1e-4

    def __post_init__(self):
        if self.call not in ("function", "backward", "autograd"):
            raise ValueError(f"check {self.name!r}: call must be function, backward or autograd")
        if self.call == "backward" and not self.forward:
            raise ValueError(f"check {self.name!r}: call='backward' needs forward=")
        if not (self.points > 0 and self.outputs):
            raise ValueError(f"check {self.name!r}: needs points > 0 and at least one output")


def load_checks(path):
    """The list CHECKS of a checks file, loaded by path (grader process only)."""
    path = Path(path)
    spec = importlib.util.spec_from_file_location(f"rnnbook_checks_{path.stem.split('.')[0]}", path)
    module = importlib.util.module_from_spec(spec)
    dont_write, sys.dont_write_bytecode = sys.dont_write_bytecode, True   # no __pycache__ in solutions/
    try:
        spec.loader.exec_module(module)
    except Exception as e:
        raise UsageError(f"{path}: {type(e).__name__}: {e}") from e
    finally:
        sys.dont_write_bytecode = dont_write
    checks = getattr(module, "CHECKS", None)
    if not isinstance(checks, list) or not checks or not all(isinstance(c, Check) for c in checks):
        raise UsageError(f"{path}: must define CHECKS, a non-empty list of rnnbook.grade.Check")
    names = [c.name for c in checks]
    if len(set(names)) != len(names):
        raise UsageError(f"{path}: two checks have the same name")
    return checks


@dataclasses.dataclass
class Exercise:
    name: str                    # file name without .ipynb
    checks: list
    checks_sha256: str
    skip_sources: dict           # stripped source of the exercise's skipped cells -> tag
    answer_ids: set
    answer_prompts: set          # the text of the exercise's empty answer cells
    specs: list = None           # what the child receives for each check
    expected: list = None        # reference outputs of each check

    @property
    def max_score(self):
        return sum(c.points for c in self.checks)


def load_exercises(exercises_dir, checks_dir):
    exercises_dir, checks_dir = Path(exercises_dir), Path(checks_dir)
    if not exercises_dir.is_dir():
        raise UsageError(f"no exercises folder {exercises_dir} (pass --exercises)")
    paths = sorted(exercises_dir.glob("*.ipynb"))
    if not paths:
        raise UsageError(f"no exercise notebooks in {exercises_dir}/")
    out = []
    for p in paths:
        checks_path = checks_dir / f"{p.stem}.checks.py"
        if not checks_path.is_file():
            raise UsageError(f"{checks_path} is missing: every exercise declares its graded "
                             "checks there (see rnnbook/grade.py)")
        cells, error = parse_notebook(p.read_bytes())
        if error:
            raise UsageError(f"{p}: {error}")
        skip = {c.source.strip(): t for c in cells if c.type == "code"
                for t in SKIP_TAGS if t in c.tags}
        out.append(Exercise(p.stem, load_checks(checks_path),
                            hashlib.sha256(checks_path.read_bytes()).hexdigest(), skip,
                            {c.id for c in cells if "answer" in c.tags and c.id},
                            {c.source.strip() for c in cells if "answer" in c.tags}))
    return out


def prepare(exercise, seed):
    """Draw each check's inputs from the seed and compute its reference (grader only)."""
    import numpy as np
    exercise.specs, exercise.expected = [], []
    for k, check in enumerate(exercise.checks):
        rng = np.random.default_rng([seed, zlib.crc32(exercise.name.encode()), k])
        where = f"{exercise.name}.checks.py, check {check.name!r}"
        try:
            case = check.inputs(rng)
            expected = check.reference(case)
        except Exception as e:
            raise UsageError(f"{where}: {type(e).__name__}: {e}") from e
        if not isinstance(expected, dict) or set(expected) != set(check.outputs):
            raise UsageError(f"{where}: reference must return a dict with keys "
                             f"{sorted(check.outputs)}")
        expected = {k2: np.asarray(v, dtype=np.float64) for k2, v in expected.items()}
        if not all(np.all(np.isfinite(v)) for v in expected.values()):
            raise UsageError(f"{where}: the reference is not finite")
        spec = {"name": check.name, "function": check.function, "call": check.call,
                "forward": check.forward, "args": sandbox.encode_value(list(case["args"]))}
        if check.call == "backward":
            spec["forward_args"] = sandbox.encode_value(list(case["forward_args"]))
        if check.call == "autograd":
            spec["grad_output"] = sandbox.encode_value(case["grad_output"])
        exercise.specs.append(spec)
        exercise.expected.append(expected)


# ---------------------------------------------------------------------------------------
# Reading notebooks (untrusted)

@dataclasses.dataclass
class Cell:
    index: int
    type: str
    source: str
    tags: list
    id: str


def parse_notebook(data):
    """(cells, None) for a readable nbformat-4 notebook, else (None, reason)."""
    if len(data) > MAX_NOTEBOOK_BYTES:
        return None, f"the file is larger than {MAX_NOTEBOOK_BYTES >> 20} MB"
    try:
        nb = json.loads(data)
    except (ValueError, RecursionError):
        return None, "not a notebook: the file is not valid JSON (truncated, or not an .ipynb file?)"
    if not isinstance(nb, dict) or not isinstance(nb.get("cells"), list):
        return None, "not a Jupyter notebook: no list of cells"
    if nb.get("nbformat") != 4:
        return None, f"nbformat {nb.get('nbformat')!r} is not supported (save it with Jupyter, nbformat 4)"
    cells = []
    for i, c in enumerate(nb["cells"]):
        if not isinstance(c, dict) or c.get("cell_type") not in ("code", "markdown", "raw"):
            return None, f"cell {i + 1} is malformed"
        source = c.get("source", "")
        if isinstance(source, list) and all(isinstance(s, str) for s in source):
            source = "".join(source)
        if not isinstance(source, str):
            return None, f"cell {i + 1} has a malformed source"
        meta = c.get("metadata") if isinstance(c.get("metadata"), dict) else {}
        tags = [t for t in meta.get("tags", []) if isinstance(t, str)] \
            if isinstance(meta.get("tags"), list) else []
        cells.append(Cell(i, c["cell_type"], source, tags, c.get("id") if isinstance(c.get("id"), str) else ""))
    return cells, None


def first_line(source, width=60):
    line = next((ln.strip() for ln in source.splitlines() if ln.strip()), "")
    return line if len(line) <= width else line[:width - 1] + "…"


def written_answers(cells, exercise):
    """The student's written answers: markdown cells tagged 'answer' (or with the id of an
    exercise's answer cell), each with the heading it answers."""
    answers, heading = [], ""
    for c in cells:
        if c.type != "markdown":
            continue
        if "answer" in c.tags or (c.id and c.id in exercise.answer_ids):
            text = c.source.strip()
            answers.append({"title": heading, "cell": c.index + 1,
                            "text": "" if text in exercise.answer_prompts else text[:20000]})
        else:
            for line in c.source.splitlines():
                if re.match(r"#{1,6} ", line):
                    heading = line.lstrip("#").strip()
    return answers


# ---------------------------------------------------------------------------------------
# Scoring (in the grader, on decoded values)

def _pick(value, path):
    for step in path:
        if isinstance(step, int):
            if not isinstance(value, (tuple, list)):
                return None, f"expected a tuple, got {sandbox.describe_value(value)}"
            if step >= len(value):
                return None, f"expected at least {step + 1} return values, got {len(value)}"
        elif not isinstance(value, dict):
            return None, f"expected a dict, got {sandbox.describe_value(value)}"
        elif step not in value:
            return None, f"the returned dict has no key {step!r}"
        value = value[step]
    return value, None


def compare(value, expected, check):
    """(passed, message) for one output."""
    import numpy as np
    from rnnbook.gradcheck import rel_error
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = np.asarray(value, dtype=np.float64)
    if not isinstance(value, np.ndarray):
        return False, f"got {sandbox.describe_value(value)}, expected an array of shape {expected.shape}"
    if value.dtype == bool:
        return False, "got a boolean array, expected numbers"
    if value.shape != expected.shape:
        return False, f"shape {value.shape}, expected {expected.shape}"
    if not np.all(np.isfinite(value)):
        return False, "contains NaN or infinity"
    tol = check.tol32 if value.dtype in (np.float32, np.float16) else check.tol
    err = rel_error(value.astype(np.float64), expected)
    if not err <= tol:
        return False, f"relative error {err:.1e} exceeds {tol:.0e}"
    return True, f"relative error {err:.0e} (tolerance {tol:.0e}{', float32' if tol == check.tol32 != check.tol else ''})"


def score_check(check, expected, received):
    """A check's result from what the child sent: ("value", v), ("error", info) or None."""
    outputs, per = [], check.points / len(check.outputs)
    message = ""
    if received is None:
        message = "not run"
    elif received[0] == "error":
        info = received[1]
        message = f"{info['type']}: {info['message']}".strip()
        if info.get("traceback"):
            message += "\n" + info["traceback"].rstrip()
    for name, path in check.outputs.items():
        if received is None or received[0] == "error":
            outputs.append({"name": name, "passed": False, "message": "no result"})
            continue
        value, problem = _pick(received[1], path)
        if problem:
            outputs.append({"name": name, "passed": False, "message": problem})
            continue
        passed, why = compare(value, expected[name], check)
        outputs.append({"name": name, "passed": passed, "message": why})
    score = per * sum(o["passed"] for o in outputs)
    return {"name": check.name, "function": check.function, "score": round(score, 4),
            "max_score": check.points, "message": message[:3000], "outputs": outputs}


def fmt(x):
    x = round(float(x), 2)
    return str(int(x)) if x == int(x) else f"{x:.2f}".rstrip("0")


# ---------------------------------------------------------------------------------------
# The sandbox process, seen from the coordinator

class Zygote:
    """The pre-imported process that forks the children (rnnbook.sandbox.zygote_main)."""

    def __init__(self, blocked, keep, log_path):
        self.sock, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        parent = str(Path(sandbox.__file__).resolve().parents[1])
        code = (f"import sys; sys.path.insert(0, {parent!r}); import rnnbook.sandbox as s; "
                f"sys.path.remove({parent!r}); s.zygote_main({theirs.fileno()})")
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8",
               "HOME": os.environ.get("HOME", "/"), "OMP_NUM_THREADS": "1",
               "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
        if "MPLCONFIGDIR" in os.environ:
            env["MPLCONFIGDIR"] = os.environ["MPLCONFIGDIR"]
        self.log_path = log_path
        with open(log_path, "ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-I", "-B", "-c", code], env=env, cwd="/",
                                         pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=log, start_new_session=True)
        theirs.close()
        self.sock.send(json.dumps({"blocked": blocked, "keep": keep}).encode())
        self.info = None

    def wait_ready(self, timeout=300):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            r, _, _ = select.select([self.sock], [], [], 0.5)
            if r:
                data = self.sock.recv(1 << 16)
                if data:
                    self.info = json.loads(data)
                    return self.info
                break
            if self.proc.poll() is not None:
                break
        raise RuntimeError("the grading sandbox did not start:\n" + self.log_tail())

    def log_tail(self):
        try:
            return Path(self.log_path).read_text(errors="replace")[-3000:]
        except OSError:
            return ""

    def send(self, message):
        self.sock.send(json.dumps(message).encode())

    def recv(self):
        """(message, fds); (None, []) when the zygote is gone."""
        try:
            data, fds, _, _ = socket.recv_fds(self.sock, 1 << 16, 4)
        except OSError:
            return None, []
        if not data:
            return None, fds
        return json.loads(data), fds

    def close(self):
        try:
            self.sock.close()
        finally:
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@dataclasses.dataclass
class Job:
    id: int
    student: str
    exercise: Exercise
    path: Path
    sha256: str
    cells: list
    run_cells: list
    skipped: list
    answers: list
    attempts: int = 0
    dir: Path = None
    pid: int = None
    fd: int = None
    reader: object = None
    started: float = 0.0
    deadline: float = 0.0
    current_cell: int = None
    cell_errors: dict = dataclasses.field(default_factory=dict)
    received: dict = dataclasses.field(default_factory=dict)
    memory: bool = False
    done: bool = False
    dropped: int = 0
    protocol_error: str = ""
    exit_status: int = None
    finished: bool = False
    finished_at: float = 0.0
    exited: bool = False
    status: str = None


# ---------------------------------------------------------------------------------------
# The grader

class Grader:
    def __init__(self, submissions, out, *, jobs=None, timeout=60.0, memory_mb=1024, force=False,
                 exercises_dir=None, checks_dir=None, progress=None, log=None):
        self.submissions = Path(submissions)
        self.out = Path(out)
        self.jobs = len(os.sched_getaffinity(0)) if jobs is None else jobs
        self.timeout, self.memory_mb, self.force = float(timeout), int(memory_mb), force
        self.exercises_dir = Path(exercises_dir) if exercises_dir else ROOT / "exercises"
        self.checks_dir = Path(checks_dir) if checks_dir else ROOT / "solutions"
        self.progress = sys.stderr.isatty() if progress is None else progress
        self.log = log or (lambda text: print(text, file=sys.stderr))
        self.fresh = {}                  # results written by this run: (student, exercise) -> dict
        if self.jobs < 1 or not self.timeout > 0 or self.memory_mb < 16:
            raise UsageError("--jobs must be >= 1, --timeout > 0 and --memory-mb >= 16")
        if not self.submissions.is_dir():
            raise UsageError(f"no submissions folder {self.submissions}")
        if self.out.exists() and not self.out.is_dir():
            raise UsageError(f"--out {self.out} exists and is not a folder")
        out, subs = self.out.resolve(), self.submissions.resolve()
        if out == subs or subs in out.parents:
            raise UsageError("--out must not be the submissions folder or inside it")
        if not sys.platform.startswith("linux"):
            raise UsageError("rnnbook grade runs on Linux (use the Gradescope bundle elsewhere)")

    # -- inventory -------------------------------------------------------------------------

    def inventory(self, exercises):
        """Students, their notebooks per exercise, and the files that are not exercises."""
        names = {f"{e.name}.ipynb": e for e in exercises}
        students, ignored = {}, []
        for d in sorted(self.submissions.iterdir()):
            if d.name.startswith("."):
                continue
            if not d.is_dir():
                ignored.append((None, d, "not a student's folder (expected SUBMISSIONS/<student>/<notebook>.ipynb)"))
                continue
            if d.name in ("grades.csv",):
                ignored.append((None, d, "a student folder may not be called grades.csv"))
                continue
            found = {}
            for f in sorted(d.rglob("*.ipynb")):
                if any(part.startswith(".") for part in f.relative_to(d).parts):
                    continue                                  # .ipynb_checkpoints and the like
                if f.parent != d:
                    ignored.append((d.name, f, "not directly in the student's folder"))
                elif f.name in names and f.is_file():
                    found[names[f.name].name] = f
                else:
                    ignored.append((d.name, f, "not an exercise (the exercises are "
                                    + ", ".join(sorted(names)) + ")"))
            students[d.name] = found
        return students, ignored

    def result_path(self, student, exercise):
        return self.out / student / f"{exercise}.result.json"

    def load_result(self, student, exercise):
        try:
            r = json.loads(self.result_path(student, exercise).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return r if isinstance(r, dict) and r.get("version") == RESULT_VERSION else None

    # -- running ---------------------------------------------------------------------------

    def run(self):
        started = time.monotonic()
        self.out.mkdir(parents=True, exist_ok=True)
        lock = open(self.out / ".rnnbook-grade.lock", "w")
        try:
            import fcntl
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise UsageError(f"another rnnbook grade is writing to {self.out}") from None
        exercises = load_exercises(self.exercises_dir, self.checks_dir)
        students, ignored = self.inventory(exercises)
        self.exercises, self.students, self.ignored = exercises, students, ignored
        for student, path, why in ignored:
            self.log(f"rnnbook grade: skipped {path}: {why}")
        for tmp in self.out.glob("*/.*.tmp*"):
            tmp.unlink(missing_ok=True)               # left by a killed run

        todo, reused = [], 0
        by_name = {e.name: e for e in exercises}
        for student, found in students.items():
            for name, path in found.items():
                data = path.read_bytes()
                sha = hashlib.sha256(data).hexdigest()
                old = self.load_result(student, name)
                if (not self.force and old and old.get("sha256") == sha
                        and old.get("checks_sha256") == by_name[name].checks_sha256):
                    reused += 1
                    continue
                todo.append((student, by_name[name], path, data, sha))
        counts = Counter()
        if todo:
            try:
                counts = self.grade_all(todo)
            except KeyboardInterrupt:
                self.write_reports()               # what is finished so far
                raise
        self.write_reports()
        return {"students": len(students), "graded_now": len(todo), "reused": reused,
                "statuses": counts, "seconds": time.monotonic() - started,
                "ignored": len(ignored)}

    def grade_all(self, todo):
        base = Path(tempfile.mkdtemp(prefix=f"rnnbook-grade-{os.getpid()}-"))
        counts = Counter()
        zygote = None
        try:
            _remove_stale_work_dirs()
            blocked = [str(self.submissions.resolve()), str(self.out.resolve()),
                       str(self.checks_dir.resolve()), str(base)]
            keep = [str(Path(sandbox.__file__).resolve().parent), str(self.exercises_dir.resolve())]
            if not _is_installed_location(ROOT):
                blocked.append(str(ROOT))           # a checkout: the solutions, .git, the build
            zygote = Zygote(blocked, keep, base / "sandbox.log")
            # The sandbox exists before the seed does; only now is the seed drawn.
            seed = _seed()
            for e in {t[1].name: t[1] for t in todo}.values():
                prepare(e, seed)
            del seed
            info = zygote.wait_ready()
            if not info.get("landlock"):
                self.log("rnnbook grade: warning: no Landlock on this kernel, so students' code "
                         "can read and write any file this user can (see README, 'For instructors')")
            jobs = deque()
            for n, (student, exercise, path, data, sha) in enumerate(todo):
                cells, error = parse_notebook(data)
                if error:
                    self.finish_static(student, exercise, path, sha, "invalid", error)
                    counts["invalid"] += 1
                    continue
                run, skipped = [], []
                for c in cells:
                    if c.type != "code" or not c.source.strip():
                        continue
                    tag = next((t for t in SKIP_TAGS if t in c.tags), None) \
                        or exercise.skip_sources.get(c.source.strip())
                    if tag:
                        skipped.append({"cell": c.index + 1, "tag": tag, "line": first_line(c.source)})
                    else:
                        run.append(c)
                jobs.append(Job(n, student, exercise, path, sha, cells, run, skipped,
                                written_answers(cells, exercise)))
            bar = None
            if self.progress and jobs:
                from tqdm import tqdm
                bar = tqdm(total=len(jobs), unit="notebook", desc="grading", file=sys.stderr)
            try:
                zygote = self.loop(jobs, zygote, base, counts, bar, blocked, keep)
            finally:
                if bar is not None:
                    bar.close()
        finally:
            if zygote is not None:
                zygote.close()
            shutil.rmtree(base, ignore_errors=True)
        return counts

    def loop(self, pending, zygote, base, counts, bar, blocked, keep):
        running, by_fd = {}, {}
        while pending or running:
            while pending and len(running) < self.jobs:
                job = pending.popleft()
                self.start(job, zygote, base)
                running[job.id] = job
            now = time.monotonic()
            wait = min([0.5] + [j.deadline - now for j in running.values() if not j.finished])
            fds = [zygote.sock] + [j.fd for j in running.values() if j.fd is not None]
            ready, _, _ = select.select(fds, [], [], max(0.0, wait))
            restart = False
            for r in ready:
                if r is zygote.sock:
                    msg, got = zygote.recv()
                    if msg is None:
                        restart = True
                        continue
                    job = running.get(msg.get("job"))
                    if msg["op"] == "started" and job is not None and got:
                        job.pid, job.fd = msg["pid"], got[0]
                        os.set_blocking(job.fd, False)
                        by_fd[job.fd] = job
                    elif msg["op"] == "exited" and job is not None:
                        job.exited, job.exit_status = True, msg["status"]
                        self.drain(job, zygote)
                        if not job.finished:
                            self.finish(job, zygote, None)
                    else:
                        for fd in got:
                            os.close(fd)
                else:
                    job = by_fd.get(r)
                    if job is not None:
                        self.drain(job, zygote)
            now = time.monotonic()
            for job in list(running.values()):
                if not job.finished and now > job.deadline:
                    zygote.send({"op": "kill", "job": job.id})
                    self.finish(job, zygote, "timeout")
                if job.finished and job.fd is not None:
                    by_fd.pop(job.fd, None)
                    os.close(job.fd)
                    job.fd = None
                if job.finished and not job.exited and now - job.finished_at > 30:
                    job.exited = True                 # its exit was never reported; move on
                if job.finished and job.exited:
                    del running[job.id]
                    shutil.rmtree(job.dir, ignore_errors=True)
                    counts[job.status] += 1
                    if bar is not None:
                        bar.update(1)
            if restart:
                # The sandbox died (killed from outside?): start another and retry its jobs once.
                zygote.close()
                for job in list(running.values()):
                    if job.fd is not None:
                        by_fd.pop(job.fd, None)
                        os.close(job.fd)
                        job.fd = None
                    del running[job.id]
                    if job.finished:
                        counts[job.status] += 1
                        if bar is not None:
                            bar.update(1)
                    elif job.attempts >= 2:
                        self.finish(job, None, "error", "the grader's sandbox process stopped "
                                    "while this notebook ran")
                        counts[job.status] += 1
                    else:
                        fresh = Job(job.id, job.student, job.exercise, job.path, job.sha256,
                                    job.cells, job.run_cells, job.skipped, job.answers, job.attempts)
                        pending.appendleft(fresh)
                zygote = Zygote(blocked, keep, base / "sandbox.log")
                zygote.wait_ready()
        return zygote

    def start(self, job, zygote, base):
        job.attempts += 1
        job.dir = base / f"j{job.id}-{job.attempts}"
        work = job.dir / "work"
        work.mkdir(parents=True)
        shutil.copyfile(job.path, work / job.path.name)
        spec = {"workdir": str(work), "output": str(job.dir / "output.txt"),
                "notebook": job.path.name, "memory_mb": self.memory_mb, "fsize_mb": FSIZE_MB,
                "timeout": self.timeout, "output_cap": OUTPUT_CAP,
                "cells": [{"index": c.index, "source": c.source} for c in job.run_cells],
                "checks": job.exercise.specs}
        (job.dir / "spec.json").write_text(json.dumps(spec))
        job.reader = sandbox.FrameReader(max_total=64 << 20)
        job.started = time.monotonic()
        job.deadline = job.started + self.timeout
        zygote.send({"op": "run", "job": job.id, "spec": str(job.dir / "spec.json")})

    def drain(self, job, zygote):
        """Read what the child has written so far and act on complete messages."""
        while job.fd is not None and not job.finished:
            try:
                data = os.read(job.fd, 1 << 16)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                return
            try:
                messages, error = job.reader.feed(data), None
            except sandbox.WireError as e:
                messages, error = e.messages, e
            try:
                for msg in messages:
                    self.on_message(job, msg)
            except sandbox.WireError as e:
                error = e
            if error is not None:
                job.protocol_error = str(error)
            if job.protocol_error:
                zygote.send({"op": "kill", "job": job.id})
                self.finish(job, zygote, "error", "the notebook sent malformed data to the "
                            f"grader ({job.protocol_error})")
                return
            if job.done:
                zygote.send({"op": "kill", "job": job.id})
                self.finish(job, zygote, None)
                return

    def on_message(self, job, msg):
        op = msg.get("op")
        n_checks = len(job.exercise.checks)
        run_indexes = {c.index for c in job.run_cells}
        if op == "cell" and msg.get("index") in run_indexes and msg.get("event") in ("start", "end"):
            job.current_cell = msg["index"] if msg["event"] == "start" else None
            if msg["event"] == "end" and msg.get("error") is not None:
                info = _error_info(msg["error"])
                if info is None:
                    raise sandbox.WireError("malformed cell report")
                job.cell_errors[msg["index"]] = info
                job.memory |= info["memory"]
        elif op == "check" and type(msg.get("index")) is int and 0 <= msg["index"] < n_checks:
            k = msg["index"]
            if k in job.received:
                raise sandbox.WireError("a check's result was sent twice")
            if "error" in msg:
                info = _error_info(msg["error"])
                if info is None:
                    raise sandbox.WireError("malformed check report")
                job.received[k] = ("error", info)
                job.memory |= info["memory"]
            else:
                job.received[k] = ("value", sandbox.decode_value(msg.get("value")))
        elif op == "stop" and msg.get("reason") == "memory":
            job.memory = True
        elif op == "done":
            job.done = True
            if type(msg.get("dropped")) is int:
                job.dropped = msg["dropped"]
        else:
            raise sandbox.WireError(f"unexpected message {str(op)[:40]!r}")

    def finish(self, job, zygote, status, reason=""):
        """Score what was received and write the result. status None: decide from the job."""
        if job.finished:
            return
        job.finished, job.finished_at = True, time.monotonic()
        seconds = time.monotonic() - job.started
        cell_line = {c.index: first_line(c.source) for c in job.cells}
        where = ""
        if job.current_cell is not None:
            where = f" in cell {job.current_cell + 1} (`{cell_line.get(job.current_cell, '')}`)"
        if status == "timeout":
            reason = f"the notebook did not finish within {self.timeout:g} s{where}"
        elif status is None and job.done:
            status = "memory" if job.memory else "graded"
            if job.memory:
                reason = "the notebook ran out of memory (limit " f"{self.memory_mb} MB)"
                if len(job.received) < len(job.exercise.checks):
                    reason += "; it still held the memory, so the rest was not run"
        elif status is None:
            code = job.exit_status
            if code is None:
                how = "stopped"
            elif os.WIFSIGNALED(code):
                how = f"was killed by signal {signal.Signals(os.WTERMSIG(code)).name}" \
                    if os.WTERMSIG(code) in signal.valid_signals() else "was killed by a signal"
            else:
                how = f"exited with code {os.WEXITSTATUS(code)}"
            if code is not None and os.WIFSIGNALED(code):
                hint = "out of memory?" if os.WTERMSIG(code) == signal.SIGKILL else "a crash"
            else:
                hint = "did it call os._exit?"
            status = "memory" if job.memory else "error"
            reason = f"the notebook's process {how}{where} before grading finished ({hint})"
        job.status = status
        checks = [score_check(c, job.exercise.expected[k], job.received.get(k))
                  for k, c in enumerate(job.exercise.checks)]
        tail = ""
        if status in ("error", "memory") and job.dir is not None:
            try:
                tail = (job.dir / "output.txt").read_bytes()[-2000:].decode("utf-8", "replace")
            except OSError:
                pass
        cell_errors = [{"cell": i + 1, "line": cell_line.get(i, ""), **info}
                       for i, info in sorted(job.cell_errors.items())]
        self.write_result(job.student, job.exercise, job.path, job.sha256, status, reason, checks,
                          cell_errors, job.skipped, job.answers, job.dropped, tail, seconds)

    def finish_static(self, student, exercise, path, sha, status, reason):
        checks = [score_check(c, None, None) for c in exercise.checks]
        self.write_result(student, exercise, path, sha, status, reason, checks, [], [], [], 0, "", 0.0)

    def write_result(self, student, exercise, path, sha, status, reason, checks, cell_errors,
                     skipped, answers, dropped, tail, seconds):
        result = {
            "version": RESULT_VERSION, "student": student, "exercise": exercise.name,
            "notebook": path.name, "sha256": sha, "checks_sha256": exercise.checks_sha256,
            "status": status, "reason": reason,
            "score": round(sum(c["score"] for c in checks), 4), "max_score": exercise.max_score,
            "checks": checks, "cell_errors": cell_errors, "skipped_cells": skipped,
            "answers": answers, "output_dropped_chars": dropped, "output_tail": tail,
            "seconds": round(seconds, 3),
            "graded_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        }
        self.fresh[(student, exercise.name)] = result
        atomic_write(self.result_path(student, exercise.name), json.dumps(result, indent=1), sync=True)

    # -- reports ---------------------------------------------------------------------------

    def write_reports(self):
        rows = []
        ignored_by_student = {}
        for student, path, why in self.ignored:
            if student is not None:
                ignored_by_student.setdefault(student, []).append((path.name, why))
        for student, found in self.students.items():
            results = []
            for e in self.exercises:
                r = None
                if (student, e.name) in self.fresh:
                    # what this run wrote, written again if anything changed it meanwhile
                    r = self.fresh[(student, e.name)]
                    text = json.dumps(r, indent=1)
                    try:
                        same = self.result_path(student, e.name).read_text(encoding="utf-8") == text
                    except OSError:
                        same = False
                    if not same:
                        atomic_write(self.result_path(student, e.name), text, sync=True)
                elif e.name in found:
                    r = self.load_result(student, e.name)
                if r is None or r.get("exercise") != e.name or r.get("status") not in STATUSES:
                    r = missing_result(student, e, "not submitted" if e.name not in found
                                       else "no result yet: rerun rnnbook grade")
                results.append((e, r))
                rows.append([student, e.name, fmt(r["score"]), fmt(e.max_score), r["status"]])
            atomic_write(self.out / student / "results.json",
                         json.dumps(gradescope_results(results, ignored_by_student.get(student, [])),
                                    indent=1))
            atomic_write(self.out / student / "feedback.md",
                         feedback(student, results, ignored_by_student.get(student, [])))
        text = io.StringIO()
        w = csv.writer(text, lineterminator="\n")
        w.writerow(["student", "exercise", "score", "max_score", "status"])
        w.writerows(rows)
        atomic_write(self.out / "grades.csv", text.getvalue())


def missing_result(student, exercise, why):
    checks = [{"name": c.name, "function": c.function, "score": 0, "max_score": c.points,
               "message": why, "outputs": []} for c in exercise.checks]
    return {"student": student, "exercise": exercise.name, "status": "missing", "reason": why,
            "score": 0, "max_score": exercise.max_score, "checks": checks, "cell_errors": [],
            "skipped_cells": [], "answers": [], "output_dropped_chars": 0, "output_tail": ""}


def _error_info(e):
    if not (isinstance(e, dict) and isinstance(e.get("type"), str) and isinstance(e.get("message"), str)):
        return None
    tb = e.get("traceback") if isinstance(e.get("traceback"), str) else ""
    return {"type": e["type"][:100], "message": e["message"][:sandbox.MAX_TEXT],
            "traceback": tb[-sandbox.MAX_TEXT:], "memory": e.get("memory") is True}


def atomic_write(path, text, sync=False):
    """Write through a temporary file and os.replace, so that a reader (or a rerun after
    the grader was killed) sees the old file or the new one, never a part. sync=True also
    survives a power cut (used for each result; the reports are rebuilt from those)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        if sync:
            f.flush()
            os.fsync(f.fileno())
    os.replace(tmp, path)


def _seed():
    """os.urandom, or RNNBOOK_GRADE_SEED (then erased, see _erase_from_environ).

    Not a command-line option: every process can read /proc/<pid>/cmdline."""
    env = os.environ.pop("RNNBOOK_GRADE_SEED", None)
    if env is not None:
        _erase_from_environ("RNNBOOK_GRADE_SEED")
        try:
            return int(env)
        except ValueError:
            raise UsageError("RNNBOOK_GRADE_SEED must be an integer") from None
    return int.from_bytes(os.urandom(16), "little")


def _erase_from_environ(name):
    """Overwrite the value of NAME in this process's initial environment block.

    os.environ.pop does not change /proc/<pid>/environ, and Landlock (unlike for
    /proc/<pid>/mem) does not stop a sandboxed process of the same user from reading it."""
    import ctypes
    try:
        with open("/proc/self/stat", "rb") as f:
            env_start = int(f.read().rsplit(b")", 1)[1].split()[47])   # field 50, env_start
        with open("/proc/self/environ", "rb") as f:
            data = f.read()
    except (OSError, ValueError, IndexError):
        return
    key = name.encode() + b"="
    i = data.find(key)
    while i >= 0:
        if i == 0 or data[i - 1] == 0:
            end = data.find(b"\0", i)
            end = len(data) if end < 0 else end
            ctypes.memset(env_start + i, ord("x"), end - i)     # name and value
        i = data.find(key, i + 1)


def _is_installed_location(path):
    import sysconfig
    path = str(Path(path).resolve())
    for p in sysconfig.get_paths().values():
        p = str(Path(p).resolve())
        if path == p or path.startswith(p + os.sep):
            return True
    return False


def _remove_stale_work_dirs():
    """Work folders of graders that were killed (their pid is gone)."""
    for d in Path(tempfile.gettempdir()).glob("rnnbook-grade-*-*"):
        try:
            pid = int(d.name.split("-")[2])
            os.kill(pid, 0)
        except (ValueError, IndexError):
            continue
        except ProcessLookupError:
            shutil.rmtree(d, ignore_errors=True)
        except PermissionError:
            continue


# ---------------------------------------------------------------------------------------
# Feedback and Gradescope

def _check_lines(check, previous=None):
    """Markdown lines for one check; ``previous``: the check before it (to not repeat an error)."""
    ok = check["score"] >= check["max_score"] - 1e-9
    head = f"- {'PASS' if ok else 'FAIL'} `{check['name']}`: {fmt(check['score'])} / {fmt(check['max_score'])}"
    if check["message"] == "not run":
        return [head + " (not run)"]
    lines = [head]
    if previous is not None and check["message"] and check["message"] == previous["message"]:
        lines.append("  - the same error as above")
    elif check["message"]:
        first, *rest = check["message"].split("\n")
        lines.append(f"  - {first}")
        if rest:
            lines += ["", "    ```", *("    " + r for r in rest), "    ```", ""]
    for o in check["outputs"]:
        if not ok and o["message"] != "no result":
            lines.append(f"  - `{o['name']}`: {'pass' if o['passed'] else 'FAIL'}, {o['message']}")
    return lines


def feedback(student, results, ignored):
    total = sum(r["score"] for _, r in results)
    maximum = sum(e.max_score for e, _ in results)
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [f"# Feedback for {student}", "",
             f"Total: **{fmt(total)} / {fmt(maximum)}** points (graded by `rnnbook grade`, {when}). "
             "Written answers are marked by hand and are not in this total.", "",
             "| exercise | score | status |", "|---|---|---|"]
    for e, r in results:
        lines.append(f"| {e.name} | {fmt(r['score'])} / {fmt(e.max_score)} | {r['status']} |")
    for e, r in results:
        lines += ["", f"## {e.name}: {fmt(r['score'])} / {fmt(e.max_score)} ({r['status']})", ""]
        if r["reason"]:
            lines += [f"**{r['status']}:** {r['reason']}", ""]
        if r["status"] == "missing":
            continue
        lines += ["### Checks", "",
                  "Each check calls your function on new random inputs and compares every "
                  "returned array with a reference (relative error, as in the self-checks).", ""]
        for i, c in enumerate(r["checks"]):
            lines += _check_lines(c, r["checks"][i - 1] if i else None)
        if r["cell_errors"]:
            lines += ["", "### Problems while running your notebook", ""]
            for c in r["cell_errors"]:
                lines.append(f"- cell {c['cell']} (`{c['line']}`): {c['type']}: {c['message'][:500]}")
                if c.get("traceback"):
                    lines += ["", "  ```", *("  " + t for t in c["traceback"].rstrip().split("\n")), "  ```", ""]
        if r["skipped_cells"]:
            lines += ["", "### Cells the grader did not run", ""]
            for c in r["skipped_cells"]:
                what = "self-check" if c["tag"] == "self-check" else "a long experiment (skip-grading)"
                lines.append(f"- cell {c['cell']} (`{c['line']}`): {what}")
        if r["output_dropped_chars"]:
            lines += ["", f"Your notebook printed more than {OUTPUT_CAP >> 20} MB; the rest "
                      f"({r['output_dropped_chars']} characters) was dropped."]
        if r["output_tail"]:
            lines += ["", "Last output before it stopped:", "", "```",
                      *r["output_tail"].replace("```", "'''").rstrip().split("\n"), "```"]
        if r["answers"]:
            lines += ["", "### Written answers (marked by hand)", ""]
            for a in r["answers"]:
                lines += [f"#### {a['title'] or 'Answer'} (cell {a['cell']})", ""]
                text = a["text"] or "*(not answered)*"
                lines += ["> " + ln for ln in text.split("\n")] + [""]
    if ignored:
        lines += ["", "## Files that were not graded", ""]
        lines += [f"- `{name}`: {why}" for name, why in ignored]
    return "\n".join(lines).rstrip() + "\n"


def gradescope_results(results, ignored):
    """Gradescope's results.json: score, tests[] with name, score, max_score, status,
    output, visibility."""
    tests = []
    for e, r in results:
        for c in r["checks"]:
            passed = c["score"] >= c["max_score"] - 1e-9
            text = [f"{r['status']}: {r['reason']}"] if r["reason"] else []
            text += [line.lstrip() for line in _check_lines(c)[1:]]
            tests.append({"name": f"{e.name}: {c['name']}", "score": round(c["score"], 4),
                          "max_score": c["max_score"], "status": "passed" if passed else "failed",
                          "output": "\n".join(text), "visibility": "visible"})
    total = sum(r["score"] for _, r in results)
    return {"score": round(total, 4), "tests": tests, "output_format": "md",
            "output": feedback(results[0][1]["student"] if results else "", results, ignored),
            "stdout_visibility": "hidden"}


# ---------------------------------------------------------------------------------------
# Correct submissions, for tests and the benchmark

def solved_submission(solution_path):
    """The exercise notebook as a student who solved everything hands it in: the solution's
    code (markers removed) and its written answers, in the exercise's cells."""
    import nbformat
    from rnnbook.assign import BEGIN, END, make_exercise
    solution = nbformat.read(str(solution_path), as_version=4)
    nb = make_exercise(solution, Path(solution_path).name)
    for s, c in zip(solution.cells, nb.cells):
        if c.cell_type == "code":
            c.source = "\n".join(ln for ln in s.source.split("\n") if ln.strip() not in (BEGIN, END))
        elif "answer" in c.metadata.get("tags", []):
            c.source = s.source
    return nb


# ---------------------------------------------------------------------------------------
# Command line

def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="rnnbook grade", description="Grade students' exercise notebooks "
        "(SUBMISSIONS/<student>/<exercise>.ipynb) into OUT.",
        epilog="Exit status 0 when grading ran (whatever the scores), 2 for a usage mistake. "
               "Set RNNBOOK_GRADE_SEED=<integer> to reproduce the random inputs of a run.")
    parser.add_argument("submissions", help="folder of <student>/<notebook>.ipynb")
    parser.add_argument("--out", required=True, help="folder for grades.csv and per-student results")
    parser.add_argument("--jobs", type=int, default=None,
                        help="notebooks graded at once (default: the number of cores)")
    parser.add_argument("--timeout", type=float, default=60.0,
                        help="wall-clock seconds per notebook (default 60)")
    parser.add_argument("--memory-mb", type=int, default=1024,
                        help="memory per notebook beyond the pre-imported libraries (default 1024)")
    parser.add_argument("--force", action="store_true", help="regrade notebooks already graded")
    parser.add_argument("--exercises", default=None, help="exercise notebooks (default: exercises/)")
    parser.add_argument("--checks", default=None,
                        help="folder of <exercise>.checks.py (default: solutions/)")
    args = parser.parse_args(argv)
    try:
        grader = Grader(args.submissions, args.out, jobs=args.jobs, timeout=args.timeout,
                        memory_mb=args.memory_mb, force=args.force, exercises_dir=args.exercises,
                        checks_dir=args.checks)
        summary = grader.run()
    except UsageError as e:
        print(f"rnnbook grade: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("rnnbook grade: interrupted; rerun the same command to finish "
              "(finished grades are kept)", file=sys.stderr)
        return 130
    except RuntimeError as e:                     # the sandbox could not start
        print(f"rnnbook grade: {e}", file=sys.stderr)
        return 1
    s = summary["statuses"]
    print(f"rnnbook grade: {summary['students']} students; graded {summary['graded_now']} "
          f"notebooks in {summary['seconds']:.1f} s"
          + (f", {summary['reused']} already graded (--force regrades them)" if summary["reused"] else "")
          + (": " + ", ".join(f"{k} {s[k]}" for k in STATUSES if s.get(k)) if s else ""))
    print(f"rnnbook grade: wrote {Path(args.out) / 'grades.csv'} and each student's "
          "results.json and feedback.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
