"""Finding each student's notebooks in SUBMISSIONS/<student>/<exercise>.ipynb, in the
coordinator, without ever following a symbolic link.

- A student folder or a notebook that is a symbolic link is `invalid` (never read).
- Hidden files and folders (names starting with '.') are reported, not graded.
- A browser's copy, `01_bptt (1).ipynb`, is graded as 01_bptt with a note (when the
  exact name is absent; of several copies the highest number).
- Names that are not UTF-8 are graded and shown escaped (records.safe_name).
"""
import dataclasses
import hashlib
import os
import re
import stat

from rnnbook.grading.defaults import MAX_NOTEBOOK_BYTES
from rnnbook.grading.records import safe_name

MAX_ENTRIES = 2000       # files looked at in one student's folder
COPY = re.compile(r"^(?P<name>.+) \((?P<n>\d{1,4})\)\.ipynb$")


@dataclasses.dataclass
class Submission:
    student: str             # safe name: the reports' and OUT/<student>/'s name
    exercise: str
    path: str = None         # None: nothing to read (see problem)
    problem: str = ""        # non-empty: the status is `invalid`, with this reason
    note: str = ""           # e.g. graded `01_bptt (1).ipynb` as 01_bptt


@dataclasses.dataclass
class Inventory:
    students: dict           # safe name -> {exercise: Submission}
    ignored: list            # (safe student name or None, safe file name, why)


def scan(submissions, exercise_names):
    names = {f"{e}.ipynb": e for e in exercise_names}
    inv = Inventory({}, [])
    with os.scandir(submissions) as it:
        entries = sorted(it, key=lambda e: e.name)
    for entry in entries:
        shown = safe_name(entry.name)
        if entry.name.startswith("."):
            inv.ignored.append((None, shown, "a hidden file or folder: not graded"))
            continue
        if entry.is_symlink():
            if shown in inv.students:
                inv.ignored.append((None, shown, "its name clashes with another student's"))
                continue
            why = "the student's folder is a symbolic link: it was not read"
            inv.students[shown] = {e: Submission(shown, e, problem=why) for e in exercise_names}
            continue
        if not entry.is_dir(follow_symlinks=False):
            inv.ignored.append((None, shown, "not a student's folder "
                                "(expected SUBMISSIONS/<student>/<notebook>.ipynb)"))
            continue
        if shown in inv.students:
            inv.ignored.append((None, shown, "its name clashes with another student's "
                                "once shown escaped"))
            continue
        inv.students[shown] = _student(entry.path, shown, names, inv.ignored)
    return inv


def _student(folder, student, names, ignored):
    exact, copies = {}, {}
    for path, rel, kind in _walk(folder):
        if kind == "hidden":
            ignored.append((student, rel, "hidden: not graded"))
        elif kind == "too many":
            ignored.append((student, rel, f"more than {MAX_ENTRIES} files: the rest was not read"))
        elif kind == "nested":
            ignored.append((student, rel, "not directly in the student's folder"))
        elif rel in names:
            exact[names[rel]] = (path, rel)
        elif COPY.match(rel) and COPY.match(rel)["name"] + ".ipynb" in names:
            m = COPY.match(rel)
            copies.setdefault(names[m["name"] + ".ipynb"], []).append((int(m["n"]), path, rel))
        else:
            ignored.append((student, rel, "not an exercise (the exercises are "
                            + ", ".join(sorted(names)) + ")"))
    found = {}
    for exercise in sorted(set(exact) | set(copies)):
        extra = sorted(copies.get(exercise, []))
        if exercise in exact:
            path, rel = exact[exercise]
            note = ""
        else:
            _, path, rel = extra.pop()
            note = f"`{_tick(rel)}` was graded as {exercise} (a copy saved by the browser?)"
        for _, _, other in extra:
            ignored.append((student, other, f"another copy of {exercise}; `{_tick(rel)}` was graded"))
        problem = "the notebook is a symbolic link: it was not read" if os.path.islink(path) else ""
        found[exercise] = Submission(student, exercise, None if problem else path, problem, note)
    return found


def _tick(name):
    return name.replace("`", "'")


def _walk(folder):
    """(path, shown relative name, kind) of the .ipynb files and hidden entries under
    folder; kind is "", "nested", "hidden" or "too many". Never follows a link."""
    count = 0
    stack = [(folder, "", 0)]
    while stack:
        path, rel, depth = stack.pop()
        try:
            with os.scandir(path) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError:
            continue
        for e in entries:
            count += 1
            shown = (rel + "/" if rel else "") + safe_name(e.name)
            if count > MAX_ENTRIES:
                yield None, shown, "too many"
                return
            if e.name.startswith("."):
                yield e.path, shown, "hidden"
            elif e.is_dir(follow_symlinks=False):
                if depth < 5:
                    stack.append((e.path, shown, depth + 1))
            elif e.name.endswith(".ipynb"):
                yield e.path, shown, "nested" if depth else ""


def read_notebook(path):
    """(bytes, sha256, None), or (None, None, reason): never through a symbolic link, at
    most MAX_NOTEBOOK_BYTES + 1 bytes read."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        return None, None, f"the notebook could not be opened ({os.strerror(e.errno) if e.errno else e})"
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return None, None, "not a regular file"
        chunks, size = [], 0
        while size <= MAX_NOTEBOOK_BYTES:
            data = os.read(fd, 1 << 20)
            if not data:
                break
            chunks.append(data)
            size += len(data)
        data = b"".join(chunks)
    except OSError as e:
        return None, None, f"the notebook could not be read ({e.strerror})"
    finally:
        os.close(fd)
    if len(data) > MAX_NOTEBOOK_BYTES:
        return None, None, f"the file is larger than {MAX_NOTEBOOK_BYTES >> 20} MB"
    return data, hashlib.sha256(data).hexdigest(), None
