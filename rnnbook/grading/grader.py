"""One grading run, from the submissions folder to the reports (the coordinator).

This process draws the checks' inputs from a secret seed, computes the references with
rnnbook and torch in float64, and compares; students' code runs in the sandbox
(rnnbook.grading.sandbox), which receives only the inputs and sends back return values.
Each (student, exercise) result is kept in OUT/students/<student>/<exercise>.result.json,
written atomically: a rerun grades only what has no result yet (or whose notebook or
checks changed, or whose result was the grader's or the host's failure), and force=True
regrades everything. OUT/grades.csv and OUT/review.csv are rebuilt at the end.
"""
import fcntl
import os
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from rnnbook.grading import report
from rnnbook.grading.scan import review as review_code
from rnnbook.grading.checks import UsageError, exercise_files, load_exercises, prepare
from rnnbook.grading.defaults import DISK_MB, MEMORY_MB, STUDENTS_DIR, TIMEOUT_S
from rnnbook.grading.inventory import read_notebook, scan
from rnnbook.grading.notebooks import parse_notebook, written_answers
from rnnbook.grading.job import Job, result_of, split_cells
from rnnbook.grading.pool import Pool
from rnnbook.grading.records import Result, atomic_write, folder_name, missing_result, now, safe_text
from rnnbook.grading.sandbox import Sandbox
from rnnbook.grading.scoring import fmt

ROOT = Path(__file__).resolve().parents[2]


class Grader:
    def __init__(self, submissions, out, *, jobs=None, timeout=TIMEOUT_S, memory_mb=MEMORY_MB,
                 disk_mb=DISK_MB, force=False, exercises_dir=None, checks_dir=None,
                 progress=None, log=None, isolation="auto", allow_unisolated=False,
                 as_grader=False, _mirror=True, _landlock=True):
        self.submissions, self.out = Path(submissions), Path(out)
        self.jobs = len(os.sched_getaffinity(0)) if jobs is None else jobs
        self.timeout, self.memory_mb, self.disk_mb = float(timeout), int(memory_mb), int(disk_mb)
        self.force, self.isolation, self.allow_unisolated = force, isolation, allow_unisolated
        self.as_grader, self._mirror, self._landlock = as_grader, _mirror, _landlock
        self.exercises_dir = Path(exercises_dir) if exercises_dir else ROOT / "exercises"
        self.checks_dir = Path(checks_dir) if checks_dir else ROOT / "solutions"
        self.progress = sys.stderr.isatty() if progress is None else progress
        self.log = log or (lambda text: print(text, file=sys.stderr))
        self.mode, self.sandbox = "", None
        if self.jobs < 1 or not self.timeout > 0 or self.memory_mb < 16 or self.disk_mb < 1:
            raise UsageError("--jobs must be >= 1, --timeout > 0, --memory-mb >= 16 and --disk-mb >= 1")
        if isolation not in ("auto", "none"):
            raise UsageError("--isolation must be auto or none")
        if not self.submissions.is_dir():
            raise UsageError(f"no submissions folder {self.submissions}")
        if self.out.exists() and not self.out.is_dir():
            raise UsageError(f"--out {self.out} exists and is not a folder")
        out, subs = self.out.resolve(), self.submissions.resolve()
        if out == subs or subs in out.parents:
            raise UsageError("--out must not be the submissions folder or inside it")
        if not sys.platform.startswith("linux"):
            raise UsageError("rnnbook grade runs on Linux (use the Gradescope bundle elsewhere)")

    def student_dir(self, student):
        return self.out / STUDENTS_DIR / folder_name(student)

    def result_path(self, student, exercise):
        return self.student_dir(student) / f"{exercise}.result.json"

    def load_result(self, student, exercise):
        try:
            return Result.from_json(self.result_path(student, exercise).read_text(encoding="utf-8"))
        except OSError:
            return None

    def write_result(self, result):
        atomic_write(self.result_path(result.student, result.exercise), result.to_json(), sync=True)

    # -- the run ---------------------------------------------------------------------------

    def run(self):
        started = time.monotonic()
        self.seed = _seed()           # out of the environment before any process starts
        self.out.mkdir(mode=0o700, parents=True, exist_ok=True)
        (self.out / STUDENTS_DIR).mkdir(mode=0o700, exist_ok=True)
        os.chmod(self.out / STUDENTS_DIR, 0o700)
        lock = open(self.out / ".rnnbook-grade.lock", "w")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise UsageError(f"another rnnbook grade is writing to {self.out}") from None
        self.base = tempfile.mkdtemp(prefix=f"rnnbook-grade-{os.getpid()}-")
        try:
            return self._run(started)
        finally:
            if self.sandbox is not None:
                self.sandbox.close()
            shutil.rmtree(self.base, ignore_errors=True)

    def _run(self, started):
        _remove_stale_work_dirs()
        names, checks_sha = exercise_files(self.exercises_dir, self.checks_dir)
        self.inventory = scan(self.submissions, names)
        for student, name, why in self.inventory.ignored:
            self.log(f"rnnbook grade: skipped {student + '/' if student else ''}{name}: {why}")
        for tmp in self.out.glob(f"{STUDENTS_DIR}/*/.*.tmp*"):
            tmp.unlink(missing_ok=True)               # left by a killed run
        todo, static, reused, counts = [], [], 0, Counter()
        for student, found in self.inventory.students.items():
            for name, sub in found.items():
                data, sha, problem = (None, "", sub.problem) if sub.problem else read_notebook(sub.path)
                del data
                old = None if problem else self.load_result(student, name)
                if problem:
                    static.append((sub, name, problem, sha or ""))
                elif (self.force or not old or old.sha256 != sha or not old.final
                      or old.checks_sha256 != checks_sha[name]):
                    todo.append((student, name, sub, sha))
                else:
                    reused += 1
        # The sandbox starts before the checks load (it imports torch meanwhile); the seed,
        # taken out of the environment before it started, is never passed to it.
        if todo and self.may_isolate():
            self.sandbox = self.new_sandbox()
        self.exercises = load_exercises(self.exercises_dir, self.checks_dir)
        by_name = {e.name: e for e in self.exercises}
        for sub, name, problem, sha in static:
            self.write_static(sub, by_name[name], "invalid", problem, sha)
            counts["invalid"] += 1
        if todo:
            jobs = [Job(n, student, by_name[name], sub, sha256=sha)
                    for n, (student, name, sub, sha) in enumerate(todo)]
            try:
                counts += self.grade_all(jobs)
            except (KeyboardInterrupt, RuntimeError):     # interrupted, or no sandbox
                self.write_reports()               # what is finished so far
                raise
        self.write_reports()
        return {"students": len(self.inventory.students), "graded_now": len(todo) + len(static),
                "reused": reused, "statuses": counts, "seconds": time.monotonic() - started,
                "ignored": len(self.inventory.ignored), "isolation": self.mode,
                "flagged": getattr(self, "flagged", 0)}

    def may_isolate(self):
        """False when namespaces are known to be out of reach (then nothing is started
        before refusing an unisolated class)."""
        return self.allow_unisolated or (self.isolation == "auto" and shutil.which("bwrap") is not None)

    def new_sandbox(self):
        return Sandbox(self.base, self.isolation, self.log, mirror=self._mirror, landlock=self._landlock)

    def refuse_unisolated(self, students, why, user=None):
        who = "this user" if user is None else user
        self.log(f"rnnbook grade: warning: no isolation between notebooks ({why}); each "
                 f"notebook runs as {who} and can read what it can"
                 + (" outside Landlock's limits" if self.sandbox and self.sandbox.landlock_abi else "")
                 + " (see README, 'For instructors')")
        if len(students) > 1 and not self.allow_unisolated:
            raise UsageError(f"refusing to grade {len(students)} students without isolation: "
                             "grade one student per run, or pass --allow-unisolated")

    def grade_all(self, todo):
        bar, self.counts = None, Counter()
        students = {j.student for j in todo}
        known = "--isolation none" if self.isolation == "none" else "bubblewrap (bwrap) is not installed"
        if self.sandbox is None:                  # refused before anything starts
            if len(students) > 1 and not self.allow_unisolated:
                self.refuse_unisolated(students, known)
            self.sandbox = self.new_sandbox()
        for e in {j.exercise.name: j.exercise for j in todo}.values():
            prepare(e, self.seed)     # never passed to the sandbox
        del self.seed
        self.sandbox.wait_ready()
        self.mode = self.sandbox.mode
        if not self.sandbox.namespaces:
            self.never_as_grader()
            why = known if self.isolation == "none" else self.sandbox.why or "namespaces unavailable"
            self.refuse_unisolated(students, why, self.sandbox.user)
        try:
            if self.progress:
                from tqdm import tqdm
                bar = tqdm(total=len(todo), unit="notebook", desc="grading", file=sys.stderr)
            pool = Pool(self.sandbox, self.jobs, self.timeout, self.memory_mb,
                        self.disk_mb, self.prepare_job, self.finish_job, self.restart, bar)
            try:
                pool.run(todo)
            finally:
                self.sandbox = pool.sandbox
        finally:
            if bar is not None:
                bar.close()
        return self.counts

    def never_as_grader(self):
        """Without namespaces, notebooks never run as the grader's user (root, or the
        instructor's own) unless as_grader: refused with the fix named (UsageError)."""
        sb = self.sandbox
        if sb.how == "uids" and not sb.uid_ok:
            problem = (f"{sb.why or 'no unprivileged user can run this Python environment'}; "
                       "notebooks would run as root, able to read and change anything on this "
                       "host, the grades included")
            fix = ("install bubblewrap (Debian/Ubuntu package `bubblewrap`), or make the Python "
                   "environment readable by other users (a virtual environment and interpreter "
                   "outside /root, e.g. `python3 -m venv /opt/rnnbook-venv`)")
        elif sb.how == "plain" and not sb.landlock_abi:
            problem = ("no namespaces and no Landlock on this host: notebooks would run as your own "
                       "user, able to read and change your files, the grades included")
            fix = "install bubblewrap, or grade as root (each notebook then runs as a user of its own)"
        else:
            return
        if not self.as_grader:
            raise UsageError(f"refusing to run notebooks: {problem}. To fix: {fix}. "
                             "(--dangerously-run-as-grader runs them anyway)")
        sb.as_grader = True
        self.log(f"rnnbook grade: DANGER: {problem} (--dangerously-run-as-grader)")

    def restart(self, sandbox):
        sandbox.close()
        fresh = self.new_sandbox()
        fresh.wait_ready()
        fresh.as_grader = sandbox.as_grader
        if fresh.mode != self.mode:
            raise RuntimeError("the restarted sandbox lost its isolation")
        return fresh

    def prepare_job(self, job):
        """Read and parse the notebook; False if it is not runnable (result written)."""
        data, sha, problem = read_notebook(job.submission.path)
        cells, error = parse_notebook(data) if data is not None else (None, problem)
        if error:
            self.write_static(job.submission, job.exercise, "invalid", error, sha or job.sha256)
            self.counts["invalid"] += 1
            job.finished, job.exited, job.status = True, True, "invalid"
            return False
        job.data, job.sha256, job.cells = data, sha, cells
        job.run_cells, job.skipped = split_cells(cells, job.exercise)
        job.run_indexes = {c.index for c in job.run_cells}
        job.answers = written_answers(cells, job.exercise)
        job.review = review_code(job.run_cells)
        return True

    def finish_job(self, job, status, reason, final=True):
        try:
            r = result_of(job, status, reason, self.timeout, self.memory_mb, self.mode,
                          time.monotonic() - job.started, final)
        except Exception as e:
            r = missing_result(job.student, job.exercise, f"the grader failed on this notebook "
                               f"({type(e).__name__}: {safe_text(str(e), 300)})", "error")
            r.sha256, r.checks_sha256, r.isolation = job.sha256, job.exercise.checks_sha256, self.mode
            r.final = False
        try:
            self.write_result(r)
        except OSError as e:                  # a full disk: this result is lost, not the run
            self.log(f"rnnbook grade: could not write {job.student}/{job.exercise.name}'s result: {e}")
        self.counts[r.status] += 1
        return r.status

    def write_static(self, sub, exercise, status, reason, sha):
        try:
            r = missing_result(sub.student, exercise, safe_text(reason), status)
            r.notebook, r.sha256, r.checks_sha256 = safe_text(os.path.basename(sub.path or "")), sha, exercise.checks_sha256
            r.notes, r.graded_at = [sub.note] if sub.note else [], now()
            self.write_result(r)
        except Exception as e:                 # this result is lost, not the run
            self.log(f"rnnbook grade: could not write {safe_text(sub.student)}/{exercise.name}'s "
                     f"result: {type(e).__name__}: {e}")

    # -- reports ---------------------------------------------------------------------------

    def student_report(self, student, found, ignored, rows, flagged):
        """Append the student's grades.csv and review.csv rows; write their reports."""
        results = []
        for e in self.exercises:
            r = self.load_result(student, e.name) if e.name in found else None
            if r is None or r.exercise != e.name:
                r = missing_result(student, e, "not submitted" if e.name not in found
                                   else "no result yet: rerun rnnbook grade")
            results.append(r)
            rows.append([student, e.name, fmt(r.score), fmt(e.max_score), r.status])
            flagged += [[student, e.name, f.get("cell"), f.get("line"), f.get("what")]
                        for f in (r.review if isinstance(r.review, list) else []) if isinstance(f, dict)]
        mode = next((r.isolation for r in results if r.isolation), "")
        folder = self.student_dir(student)
        atomic_write(folder / "results.json", _json(
            report.gradescope_results(student, results, ignored, mode)))
        atomic_write(folder / "feedback.md", report.feedback(student, results, ignored, mode))

    def write_reports(self):
        rows, ignored, flagged = [], {}, []
        for student, name, why in self.inventory.ignored:
            if student is not None:
                ignored.setdefault(student, []).append((name, why))
        for student, found in self.inventory.students.items():
            mine, marked = [], []
            try:                              # one student's report never stops the others
                self.student_report(student, found, ignored.get(student, []), mine, marked)
            except Exception as e:
                self.log(f"rnnbook grade: could not write {safe_text(student)}'s report: "
                         f"{type(e).__name__}: {safe_text(str(e), 300)}")
            done = {row[1] for row in mine}
            rows += mine + [[student, e.name, "0", fmt(e.max_score), "error"]
                            for e in self.exercises if e.name not in done]
            flagged += marked
        atomic_write(self.out / "grades.csv", report.grades_csv(rows))
        atomic_write(self.out / "review.csv", report.review_csv(flagged))
        self.flagged = len({(s, e) for s, e, *_ in flagged})


def _json(obj):
    import json
    return json.dumps(obj, indent=1, ensure_ascii=True)


def _seed():
    """os.urandom, or RNNBOOK_GRADE_SEED (for reproducible tests; then erased from this
    process's environment block too). Not a command-line option: /proc/<pid>/cmdline."""
    env = os.environ.pop("RNNBOOK_GRADE_SEED", None)
    if env is None:
        return int.from_bytes(os.urandom(16), "little")
    _erase_from_environ("RNNBOOK_GRADE_SEED")
    try:
        return int(env)
    except ValueError:
        raise UsageError("RNNBOOK_GRADE_SEED must be an integer") from None


def _erase_from_environ(name):
    """Overwrite NAME=value in this process's initial environment block (what
    /proc/<pid>/environ shows), which os.environ.pop does not change."""
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
            ctypes.memset(env_start + i, ord("x"), (len(data) if end < 0 else end) - i)
        i = data.find(key, i + 1)


def _remove_stale_work_dirs():
    """Work folders of graders that were killed (their pid is gone)."""
    for d in Path(tempfile.gettempdir()).glob("rnnbook-grade-*-*"):
        try:
            os.kill(int(d.name.split("-")[2]), 0)
        except (ValueError, IndexError, PermissionError):
            continue
        except ProcessLookupError:
            shutil.rmtree(d, ignore_errors=True)
