"""One notebook's job: its record while it runs (Job), which of its cells run, and from
what it sent to its result record: the status and its reason, the checks' scores, the
cell errors, the skipped cells that matter."""
import dataclasses
import os
import re
import signal

from rnnbook.grading.defaults import MAX_CELL_ERRORS, OUTPUT_CAP, SKIP_TAGS
from rnnbook.grading.notebooks import defines, where
from rnnbook.grading.records import Result, now, safe_text
from rnnbook.grading.scoring import score_check

_MISSING_NAME = re.compile(r"defines no `([A-Za-z_][A-Za-z0-9_]*)`")


@dataclasses.dataclass
class Job:
    id: int
    student: str
    exercise: object             # checks.Exercise
    submission: object           # inventory.Submission
    data: bytes = None           # the notebook, while it is being started
    sha256: str = ""
    cells: list = None
    run_cells: list = None
    run_indexes: set = None
    skipped: list = None
    answers: list = None
    attempts: int = 0
    key: str = ""                # "<id>.<attempt>": the attempt's name in the fork server
    solo: bool = False           # this run is the retry alone
    crowded: bool = False        # another notebook ran meanwhile
    dir: str = None              # without namespaces: its folder on the host (work/ inside)
    uid: int = None              # without namespaces, as root: the host user it runs as
    pid: int = None
    fd: int = None               # its results (frames)
    out_fd: int = None           # its printed output (a pipe: nothing lands on a disk)
    in_fd: int = None            # the checks' inputs, one check at a time
    outbox: bytes = b""          # inputs not yet written to in_fd
    tail: bytearray = dataclasses.field(default_factory=bytearray)   # the output's last bytes
    out_bytes: int = 0
    reader: object = None
    phase: str = "cells"         # "cells", then "checks" (after every cell ended)
    cell_pos: int = 0            # cells ended so far, in order
    open_check: int = None       # the check whose inputs were sent, not yet answered
    next_check: int = 0
    review: list = None
    started: float = 0.0
    deadline: float = 0.0
    current_cell: int = None
    ended: set = dataclasses.field(default_factory=set)
    cell_errors: dict = dataclasses.field(default_factory=dict)
    received: dict = dataclasses.field(default_factory=dict)
    rules: dict = dataclasses.field(default_factory=dict)
    memory: bool = False
    done: bool = False
    dropped: int = 0
    exit_status: int = None
    finished: bool = False
    finished_at: float = 0.0
    exited: bool = False
    status: str = None

    def fresh(self):
        """The same job, to be run again."""
        return Job(self.id, self.student, self.exercise, self.submission, attempts=self.attempts,
                   solo=self.solo)


def split_cells(cells, exercise):
    """(cells to run, skipped cells) of a notebook: a code cell tagged self-check or
    skip-grading, or with the source of one of the exercise's skipped cells, is skipped."""
    run, skipped = [], []
    for c in cells:
        if c.type != "code" or not c.source.strip():
            continue
        tag = next((t for t in SKIP_TAGS if t in c.tags), None) or exercise.skip_sources.get(c.source.strip())
        if tag:
            edited = exercise.skip_sources.get(c.source.strip()) != tag
            skipped.append((c, tag, edited))
        else:
            run.append(c)
    return run, skipped


def skipped_that_matter(skipped, checks):
    """The skipped cells worth a line in the feedback: those the student changed (their
    code there did not run), and those defining a name a failed check missed."""
    missing = {m for c in checks for m in _MISSING_NAME.findall(c.message)}
    out = []
    for cell, tag, edited in skipped:
        what = "a self-check cell" if tag == "self-check" else "a long experiment (skip-grading)"
        needed = sorted(n for n in missing if defines(cell.source, n))
        if needed:
            why = (f"{what}: it defines `{needed[0]}`, which a check needs, but the grader "
                   "does not run such cells; move the definition to another cell")
        elif edited:
            why = f"{what}, which the grader does not run: your changes in it were not graded"
        else:
            continue
        out.append({"cell": cell.number, "where": where(cell), "tag": tag, "why": why})
    return out


CHANNEL_EXIT = 86          # rnnbook.grading.runner: the notebook replaced the grader's pipes
_EXTERNAL = (signal.SIGKILL, signal.SIGTERM, signal.SIGHUP, signal.SIGINT, signal.SIGQUIT)


def _final(code):
    """Whether an exit is the notebook's own doing (kept on a rerun): not a kill from
    outside (the kernel's OOM killer, an operator, the sandbox dying)."""
    return not (code is not None and os.WIFSIGNALED(code) and os.WTERMSIG(code) in _EXTERNAL)


def _exit_reason(code, where_):
    if code is not None and os.WIFEXITED(code) and os.WEXITSTATUS(code) == CHANNEL_EXIT:
        return f"the notebook replaced or closed the grader's pipes{where_}"
    if code is None:
        how = "stopped"
    elif os.WIFSIGNALED(code):
        sig = os.WTERMSIG(code)
        how = (f"was killed by signal {signal.Signals(sig).name}" if sig in signal.valid_signals()
               else "was killed by a signal")
    else:
        how = f"exited with code {os.WEXITSTATUS(code)}"
    if code is not None and os.WIFSIGNALED(code):
        hint = "out of memory or CPU time?" if os.WTERMSIG(code) in (signal.SIGKILL, signal.SIGXCPU) \
            else "a crash"
    else:
        hint = "did it call os._exit?"
    return f"the notebook's process {how}{where_} before grading finished ({hint})"


def result_of(job, status, reason, timeout, memory_mb, isolation, seconds, final=True):
    """The Result of a finished job; status None: decided from what it sent. final=False:
    a failure of the grader or the host, regraded by the next run."""
    by_index = {c.index: c for c in job.cells or ()}
    where_ = ""
    if job.current_cell is not None:
        where_ = f" in {where(by_index.get(job.current_cell))}"
    if status == "timeout":
        reason = f"the notebook did not finish within {timeout:g} s{where_}"
        if job.solo:
            reason += " (also when it ran again alone)"
    elif status is None and job.done:
        status = "memory" if job.memory else "graded"
        if job.memory:
            reason = f"the notebook ran out of memory (limit {memory_mb} MB)"
            if len(job.received) < len(job.exercise.checks):
                reason += "; it still held the memory, so the rest was not run"
    elif status is None:
        status = "memory" if job.memory else "error"
        reason = _exit_reason(job.exit_status, where_)
        final = final and _final(job.exit_status)
    tampered = status == "error" and ("malformed data" in reason or "pipes" in reason)
    checks = [score_check(c, job.exercise.expected[k], None if tampered else job.received.get(k),
                          "; ".join(job.rules.get(k, ())), job.exercise.low_precision[k])
              for k, c in enumerate(job.exercise.checks)]
    cell_errors = []
    for i, info in sorted(job.cell_errors.items())[:MAX_CELL_ERRORS]:
        cell = by_index.get(i)
        cell_errors.append({"cell": cell.number if cell else 0, "where": where(cell),
                            "type": safe_text(info["type"]), "message": safe_text(info["message"]),
                            "traceback": safe_text(info["traceback"])})
    notes = [job.submission.note] if job.submission.note else []
    dropped = job.dropped + max(0, job.out_bytes - OUTPUT_CAP)
    if len(job.cell_errors) > MAX_CELL_ERRORS:
        notes.append(f"{len(job.cell_errors) - MAX_CELL_ERRORS} more cells failed; only the first "
                     f"{MAX_CELL_ERRORS} are listed")
    return Result(
        job.student, job.exercise.name, status, safe_text(reason),
        round(sum(c.score for c in checks), 4), job.exercise.max_score, checks,
        notebook=safe_text(os.path.basename(job.submission.path or "")), sha256=job.sha256,
        checks_sha256=job.exercise.checks_sha256, cell_errors=cell_errors,
        skipped_cells=skipped_that_matter(job.skipped or [], checks), answers=job.answers or [],
        notes=notes, output_dropped_chars=dropped,
        output_tail=safe_text(bytes(job.tail).decode("utf-8", "replace"))
        if status in ("error", "memory") else "",
        seconds=round(seconds, 3), attempts=job.attempts, isolation=isolation, final=final,
        review=job.review or [], graded_at=now())
