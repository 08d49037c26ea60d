"""The typed result record of one (student, exercise), safe text, and atomic writes.

A result is kept in OUT/students/<folder>/<exercise>.result.json (``folder_name``: the
student's shown name, cut with a short hash when long); reports are rebuilt from those
files, one student at a time. Text from students (names, messages, answers) may hold
lone surrogates or bytes that are not UTF-8: ``safe_text`` and ``safe_name`` turn any
str into printable, valid UTF-8, so that no report can fail to be written. Everything is
written for the grader's user only (files 0600, folders 0700).
"""
import dataclasses
import datetime
import hashlib
import json
import os
from pathlib import Path

from rnnbook.grading.defaults import MAX_NAME_BYTES, RESULT_VERSION, STATUSES


def safe_text(s, limit=None):
    """Valid UTF-8 text: lone surrogates (undecodable bytes of a file name, or an
    exception's message) shown as \\xNN or \\uNNNN; other controls but newline and tab
    escaped."""
    if not isinstance(s, str):
        s = str(s)
    if limit is not None:
        s = s[:limit]
    out = []
    for ch in s:
        o = ord(ch)
        if 0xDC80 <= o <= 0xDCFF:
            out.append(f"\\x{o - 0xDC00:02x}")
        elif 0xD800 <= o <= 0xDFFF:
            out.append(f"\\u{o:04x}")
        elif (o < 32 and ch not in "\n\t") or 0x7F <= o < 0xA0:
            out.append(f"\\x{o:02x}")
        else:
            out.append(ch)
    return "".join(out)


def safe_name(name):
    """A file or folder name as shown in reports: one line."""
    return safe_text(name).replace("\n", "\\n").replace("\t", "\\t") or "_"


def folder_name(student):
    """The folder of a student (shown name) in OUT/students/: the name itself when short,
    else its first characters and a hash of the whole (a file name has at most 255 bytes)."""
    if len(student.encode("utf-8")) <= MAX_NAME_BYTES:
        return student
    short = student[:MAX_NAME_BYTES // 4]
    while len(short.encode("utf-8")) > MAX_NAME_BYTES - 20:
        short = short[:-1]
    return f"{short}~{hashlib.sha256(student.encode('utf-8')).hexdigest()[:12]}"


@dataclasses.dataclass
class Output:
    name: str
    passed: bool
    message: str


@dataclasses.dataclass
class CheckResult:
    name: str
    function: str
    score: float
    max_score: float
    message: str = ""           # the error the call raised, or why it did not run
    outputs: list = dataclasses.field(default_factory=list)     # of Output
    rule: str = ""              # why the hand-written rule gave 0 points
    not_attempted: bool = False  # the function is still the exercise's stub


@dataclasses.dataclass
class Result:
    student: str
    exercise: str
    status: str                 # one of defaults.STATUSES
    reason: str
    score: float
    max_score: float
    checks: list                # of CheckResult
    notebook: str = ""
    sha256: str = ""
    checks_sha256: str = ""
    cell_errors: list = dataclasses.field(default_factory=list)    # {cell, where, type, message, traceback}
    skipped_cells: list = dataclasses.field(default_factory=list)  # {cell, where, tag, why}
    answers: list = dataclasses.field(default_factory=list)        # {title, cell, text}
    notes: list = dataclasses.field(default_factory=list)          # str
    output_dropped_chars: int = 0
    output_tail: str = ""
    seconds: float = 0.0
    attempts: int = 0
    isolation: str = ""         # "namespaces" or "none": how the notebook ran
    final: bool = True          # False: the grader's or the host's failure (a rerun regrades it)
    review: list = dataclasses.field(default_factory=list)   # {cell, where, line, what}: for a human
    graded_at: str = ""
    version: int = RESULT_VERSION

    def to_json(self):
        return json.dumps(dataclasses.asdict(self), indent=1, ensure_ascii=True)

    @classmethod
    def from_json(cls, text):
        """The record, or None if the text is not one (old version, damaged, edited)."""
        try:
            d = json.loads(text)
            if not isinstance(d, dict) or d.get("version") != RESULT_VERSION:
                return None
            d["checks"] = [CheckResult(**{**c, "outputs": [Output(**o) for o in c["outputs"]]})
                           for c in d["checks"]]
            r = cls(**d)
        except (ValueError, TypeError, KeyError, AttributeError):
            return None
        return r if r.status in STATUSES else None


def now():
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def missing_result(student, exercise, why, status="missing"):
    checks = [CheckResult(c.name, c.function, 0, c.points, why) for c in exercise.checks]
    return Result(student, exercise.name, status, why, 0, exercise.max_score, checks)


def atomic_write(path, text, sync=False):
    """Write through a temporary file and os.replace, so that a reader (or a rerun after
    the grader was killed) sees the old file or the new one, never a part. sync=True also
    survives a power cut (used for each result; the reports are rebuilt from those)."""
    path = Path(path)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    with open(fd, "w", encoding="utf-8", errors="backslashreplace") as f:
        f.write(text)
        if sync:
            f.flush()
            os.fsync(f.fileno())
    os.replace(tmp, path)
