"""rnnbook grade against bad submissions.

The submissions are generated here from the solution notebooks (solved ones, with cells
edited) and from the exercise notebooks (stubs). One grader run grades them all
(--timeout 5 --memory-mb 400 keeps it short), and each student's expected status and
score per exercise is asserted exactly. Further runs test resuming, --force and the
command line's errors.
"""
import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

from rnnbook import sandbox
from rnnbook.grade import solved_submission

ROOT = Path(__file__).resolve().parents[1]
EX1, EX2 = "01_bptt", "02_numpy_and_torch"
MAX = {EX1: 19, EX2: 26}
LANDLOCK = sandbox.landlock_abi()
FORK_NAME = "rnnbook-fork-t"
SEED = "918273645501"


# ---------------------------------------------------------------------------------------
# Editing notebooks

def solved(name):
    return solved_submission(ROOT / "solutions" / f"{name}.ipynb")


def stubbed(name):
    return nbformat.read(ROOT / "exercises" / f"{name}.ipynb", as_version=4)


def code_cell(nb, needle):
    """Index of the first code cell whose source contains needle."""
    return next(i for i, c in enumerate(nb.cells) if c.cell_type == "code" and needle in c.source)


def insert_after(nb, needle, source):
    nb.cells.insert(code_cell(nb, needle) + 1, nbformat.v4.new_code_cell(source))
    return nb


def edit(nb, needle, old, new):
    cell = nb.cells[code_cell(nb, needle)]
    assert old in cell.source, (needle, old)
    cell.source = cell.source.replace(old, new, 1)
    return nb


def redefine(nb, name, body):
    """Add a cell right after the one defining `name` that redefines it (the notebook's
    provided helpers stay as they are)."""
    return insert_after(nb, f"def {name}(", body)


IMPORTS = "import numpy as np"


def submissions(out_dir):
    """{student: {notebook file name: notebook node or raw bytes}} and the expected
    {(student, exercise): (status, score)}."""
    subs, expect = {}, {}

    def add(student, name, nb, status, score):
        subs.setdefault(student, {})[f"{name}.ipynb"] = nb
        expect[(student, name)] = (status, score)

    add("correct", EX1, solved(EX1), "graded", 19)
    add("correct", EX2, solved(EX2), "graded", 26)
    add("stubbed", EX1, stubbed(EX1), "graded", 0)
    add("stubbed", EX2, stubbed(EX2), "graded", 0)
    add("infinite_loop", EX1, insert_after(solved(EX1), IMPORTS, "while True:\n    pass"), "timeout", 0)
    # checks run in order: logistic (2 + 1) and jordan (7) finish before truncated_bptt loops
    add("loop_in_function", EX1, redefine(solved(EX1), "truncated_bptt",
        "def truncated_bptt(params, x, h0, dhs, window):\n    while True:\n        pass"), "timeout", 10)
    add("memory_bomb", EX1, insert_after(solved(EX1), IMPORTS, "x = np.ones((1 << 20, 1 << 20))"),
        "memory", 19)
    add("memory_hog", EX1, insert_after(solved(EX1), IMPORTS,
        "hog = []\nwhile True:\n    hog.append(bytearray(1 << 24))"), "memory", 0)
    add("memory_in_function", EX2, edit(solved(EX2), "def output_backward(", "    T, N, _ = hs.shape",
        "    T, N, _ = hs.shape\n    waste = np.ones((1 << 40,))"), "memory", 20)
    # torch and rnnbook are not imported: truncated_bptt (uses rnn) fails, the rest works
    add("import_error", EX1, edit(solved(EX1), IMPORTS, IMPORTS, IMPORTS + "\nimport not_a_module_xyz"),
        "graded", 10)
    add("import_error", EX2, edit(solved(EX2), IMPORTS, IMPORTS, IMPORTS + "\nimport not_a_module_xyz"),
        "graded", 11)   # output_backward 6 + rnn_relu_backward 5; RNNFunction, birnn need torch/rnn
    add("syntax_error", EX1, _append_to_cell(solved(EX1), "def jordan_backward(", "\nthis is not python ("),
        "graded", 12)
    add("sys_exit", EX1, insert_after(solved(EX1), IMPORTS, "import sys\nsys.exit('bye')"), "graded", 19)
    add("os_exit", EX1, insert_after(solved(EX1), IMPORTS, "import os\nos._exit(3)"), "error", 0)
    add("segfault", EX1, insert_after(solved(EX1), IMPORTS, "import ctypes\nctypes.string_at(0)"), "error", 0)
    add("fork", EX1, insert_after(solved(EX1), IMPORTS, FORK), "graded", 19)
    add("huge_output", EX1, insert_after(solved(EX1), IMPORTS,
        "print('x' * 100_000_000)\nimport sys\nfor _ in range(50):\n    sys.stderr.write('y' * 1_000_000)"),
        "graded", 19)
    add("deleted_function", EX1, _cut_function(solved(EX1), "jordan_backward"), "graded", 12)
    add("renamed_function", EX1, edit(solved(EX1), "def jordan_backward(", "def jordan_backward(",
                                      "def jordan_backward_v2("), "graded", 12)
    # dV transposed: 3 of 4 outputs in output_backward (4 points) and in the large-logits check (2)
    add("wrong_shapes", EX2, edit(solved(EX2), "def output_backward(", "return float(loss), dV, dc, dhs",
                                  "return float(loss), dV.T, dc, dhs"), "graded", 24.5)
    add("nan_outputs", EX2, edit(solved(EX2), "def rnn_relu_backward(", "return delta @ W, dh, dparams",
                                 "return delta @ W * np.nan, dh, dparams"), "graded", 25)
    add("float32", EX2, insert_after(solved(EX2), "def rnn_relu_backward(", FLOAT32), "graded", 26)
    add("weird_returns", EX2, redefine(redefine(solved(EX2), "birnn_backward",
        "def birnn_backward(dout, cache):\n    return None"), "rnn_relu_backward",
        "def rnn_relu_backward(dhs, cache):\n    return (i for i in range(3))"), "graded", 12)
    add("monkeypatch", EX1, insert_after(redefine(solved(EX1), "jordan_backward", ZERO_JORDAN),
                                         IMPORTS, MONKEYPATCH), "graded", 12)
    add("fake_score", EX1, insert_after(stubbed(EX1), IMPORTS, FAKE_SCORE), "graded", 0)
    add("writes_out", EX1, insert_after(stubbed(EX1), IMPORTS, WRITES_OUT.format(out=str(out_dir))),
        "graded", 0)
    add("spy", EX1, insert_after(stubbed(EX1), IMPORTS, SPY.format(
        submissions=str(out_dir.parent / "subs"), root=str(ROOT), kill=LANDLOCK >= 6,
        seed=SEED)), "graded", 0)
    add("garbage_on_pipe", EX1, insert_after(solved(EX1), IMPORTS,
        "import os\nos.write(3, b'12\\n{\"op\": \"ok\"}' + bytes(range(256)))"), "error", 0)
    good = nbformat.writes(solved(EX1)).encode()
    add("truncated_file", EX1, good[: len(good) // 2], "invalid", 0)
    add("not_json", EX1, b"PK\x03\x04 this is a zip file, not a notebook", "invalid", 0)
    add("not_a_notebook", EX1, b'{"cells": 3, "nbformat": 4}', "invalid", 0)
    long = insert_after(solved(EX1), IMPORTS, "while True:\n    pass")
    long.cells[code_cell(long, "while True:")].metadata["tags"] = ["skip-grading"]
    add("long_experiment", EX1, long, "graded", 19)
    untagged = solved(EX2)
    for cell in untagged.cells:
        cell.metadata.pop("tags", None)          # self-checks found by their source instead
    add("lost_tags", EX2, untagged, "graded", 26)
    add("missing_one", EX2, solved(EX2), "graded", 26)
    expect[("missing_one", EX1)] = ("missing", 0)
    subs["unknown_names"] = {"01_bptt (1).ipynb": solved(EX1), "notes.ipynb": solved(EX2),
                             "work/02_numpy_and_torch.ipynb": solved(EX2),
                             ".ipynb_checkpoints/01_bptt-checkpoint.ipynb": solved(EX1)}
    expect[("unknown_names", EX1)] = expect[("unknown_names", EX2)] = ("missing", 0)
    for student in subs:
        for name in (EX1, EX2):
            expect.setdefault((student, name), ("missing", 0))
    return subs, expect


def _append_to_cell(nb, needle, text):
    nb.cells[code_cell(nb, needle)].source += text
    return nb


def _cut_function(nb, name):
    cell = nb.cells[code_cell(nb, f"def {name}(")]
    cell.source = cell.source[: cell.source.index(f"def {name}(")]
    return nb


FORK = f"""import ctypes, os, time
if os.fork() == 0:
    os.setsid()
    ctypes.CDLL(None).prctl(15, b"{FORK_NAME}", 0, 0, 0)
    time.sleep(300)
"""

FLOAT32 = """def _float32(f):
    def g(*args):
        out = f(*args)
        if isinstance(out, dict):
            return {k: np.asarray(v, np.float32) for k, v in out.items()}
        return tuple(_float32_value(v) for v in out)
    return g

def _float32_value(v):
    if isinstance(v, dict):
        return {k: np.asarray(a, np.float32) for k, a in v.items()}
    return np.asarray(v, np.float32)

output_backward = _float32(output_backward)
birnn_backward = _float32(birnn_backward)
rnn_relu_backward = _float32(rnn_relu_backward)
"""

ZERO_JORDAN = """def jordan_backward(dys, cache):
    x, y0, p = cache["x"], cache["y0"], cache["params"]
    return np.zeros_like(x), np.zeros_like(y0), {k: np.zeros_like(v) for k, v in p.items()}
"""

MONKEYPATCH = """import builtins, numpy, torch
import rnnbook.gradcheck as gradcheck
numpy.allclose = lambda *a, **k: True
numpy.testing.assert_allclose = lambda *a, **k: None
numpy.abs = lambda a: a * 0
gradcheck.rel_error = lambda a, b: 0.0
gradcheck.check = lambda *a, **k: 0.0
torch.allclose = lambda *a, **k: True
builtins.max = lambda *a, **k: 0
builtins.abs = lambda a: 0
builtins.len = lambda a: 0
import json
json.dumps = lambda *a, **k: '{"op": "done"}'
"""

FAKE_SCORE = """import json, sys, os
print(json.dumps({"score": 19, "tests": [{"name": "all", "score": 19, "max_score": 19}]}))
print("student,exercise,score,max_score,status")
print("fake_score,01_bptt,19,19,graded")
os.write(1, b'14\\n{"op": "done"}')
sys.stderr.write("PASS everything\\n")
"""

WRITES_OUT = """import json, os
out = {out!r}
attempts = []
for path, text in [(os.path.join(out, "grades.csv"), "student,exercise,score,max_score,status\\nwrites_out,01_bptt,19,19,graded\\n"),
                   (os.path.join(out, "writes_out", "results.json"), json.dumps({{"score": 45, "tests": []}})),
                   (os.path.join(out, "writes_out", "01_bptt.result.json"), "{{}}"),
                   (os.path.join(out, "correct", "01_bptt.result.json"), "{{}}")]:
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(text)
        attempts.append("WROTE " + path)
    except OSError as e:
        attempts.append("blocked " + type(e).__name__)
raise RuntimeError("; ".join(attempts))
"""

SPY = """import glob, json, os, signal, subprocess
report = []
def attempt(name, f):
    try:
        f()
        report.append("LEAK " + name)
    except BaseException as e:
        report.append("blocked " + name + " (" + type(e).__name__ + ")")

def grade_module():
    import rnnbook.grade
def autograder_module():
    import rnnbook.autograder
def checks_file():
    open({root!r} + "/solutions/01_bptt.checks.py").read()
def solution_notebook():
    open({root!r} + "/solutions/01_bptt.ipynb").read()
def git_history():
    os.listdir({root!r} + "/.git")
def classmate():
    nb = json.load(open({submissions!r} + "/correct/01_bptt.ipynb"))
    for cell in nb["cells"]:
        if cell["cell_type"] == "code" and "self-check" not in cell["metadata"].get("tags", []):
            exec("".join(cell["source"]), globals())
def list_submissions():
    if not os.listdir({submissions!r}):
        raise FileNotFoundError
def seed_in_environ():
    for p in glob.glob("/proc/[0-9]*/environ") + glob.glob("/proc/[0-9]*/cmdline"):
        try:
            data = open(p, "rb").read()
            if b"RNNBOOK_GRADE_SEED" in data or b"{seed}" in data:
                return
        except OSError:
            pass
    raise LookupError("not found")
def seed_in_my_environment():
    if "RNNBOOK_GRADE_SEED" in os.environ:
        return
    raise LookupError("not found")
def run_program():
    subprocess.run(["cat", {root!r} + "/solutions/01_bptt.checks.py"], check=True, capture_output=True)
def classmate_via_libc():
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    fd = libc.open({submissions!r}.encode() + b"/correct/01_bptt.ipynb", 0)
    if fd < 0:
        raise PermissionError(ctypes.get_errno(), "libc open")
def network():
    import socket
    socket.create_connection(("127.0.0.1", 9), timeout=2)
def kill_sandbox():
    if {kill}:
        os.kill(os.getppid(), signal.SIGKILL)
    raise LookupError("not tried: this kernel's Landlock cannot scope signals")

for name, f in list(globals().items()):
    if callable(f) and name not in ("attempt",) and getattr(f, "__module__", None) == "__main__":
        attempt(name, f)
raise RuntimeError("SPY: " + "; ".join(report))
"""


# ---------------------------------------------------------------------------------------
# Running the grader

def write_submissions(folder, subs):
    for student, notebooks in subs.items():
        (folder / student).mkdir(parents=True, exist_ok=True)
        for name, nb in notebooks.items():
            path = folder / student / name
            path.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(nb, bytes):
                path.write_bytes(nb)
            else:
                nbformat.write(nb, path)


def grade(subs_dir, out_dir, *args, env=None):
    return subprocess.run([sys.executable, "-m", "rnnbook", "grade", str(subs_dir), "--out", str(out_dir),
                           *args], capture_output=True, text=True, cwd=ROOT,
                          env=dict(os.environ, **(env or {})), timeout=600)


def read_grades(out_dir):
    with open(out_dir / "grades.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    return {(r["student"], r["exercise"]): r for r in rows}, rows


def fork_survivors():
    found = []
    for comm in Path("/proc").glob("[0-9]*/comm"):
        try:
            if comm.read_text().strip() == FORK_NAME:
                found.append(comm.parent.name)
        except OSError:
            pass
    return found


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("grade")
    subs_dir, out_dir = tmp / "subs", tmp / "out"
    subs, expect = submissions(out_dir)
    write_submissions(subs_dir, subs)
    start = time.monotonic()
    result = grade(subs_dir, out_dir, "--jobs", "2", "--timeout", "5", "--memory-mb", "400",
                   env={"RNNBOOK_GRADE_SEED": SEED})
    return {"result": result, "subs": subs_dir, "out": out_dir, "expect": expect,
            "seconds": time.monotonic() - start}


def result_of(graded, student, exercise=EX1):
    return json.loads((graded["out"] / student / f"{exercise}.result.json").read_text())


def test_grading_ran(graded):
    r = graded["result"]
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr, r.stderr
    assert not r.stderr.strip() or all(line.startswith("rnnbook grade:") for line in r.stderr.splitlines()), r.stderr


def test_exact_statuses_and_scores(graded):
    grades, rows = read_grades(graded["out"])
    assert len(rows) == len(graded["expect"])             # one row per (student, exercise)
    got = {k: (r["status"], float(r["score"])) for k, r in grades.items()}
    want = {k: (s, float(v)) for k, v in graded["expect"].items() for s, v in [v]}
    wrong = {k: (got.get(k), want[k]) for k in want if got.get(k) != want[k]}
    assert not wrong, "\n".join(f"{k}: got {g}, expected {w}" for k, (g, w) in sorted(wrong.items()))
    for (student, exercise), r in grades.items():
        assert r["max_score"] == str(MAX[exercise])


def test_unknown_notebooks_are_reported(graded):
    err = graded["result"].stderr
    assert "unknown_names/01_bptt (1).ipynb: not an exercise" in err
    assert "unknown_names/notes.ipynb: not an exercise" in err
    assert "unknown_names/work/02_numpy_and_torch.ipynb: not directly in the student's folder" in err
    assert "checkpoint" not in err
    fb = (graded["out"] / "unknown_names" / "feedback.md").read_text()
    assert "`notes.ipynb`: not an exercise" in fb and "not submitted" in fb


def test_reasons_in_feedback(graded):
    def reason(student, exercise=EX1):
        return result_of(graded, student, exercise)["reason"]
    assert "did not finish within 5 s in cell" in reason("infinite_loop")
    assert "`while True:`" in reason("infinite_loop")
    assert "ran out of memory" in reason("memory_hog") and "not run" in reason("memory_hog")
    assert "exited with code 3" in reason("os_exit")
    assert "killed by signal SIGSEGV" in reason("segfault")
    assert "Segmentation fault" in result_of(graded, "segfault")["output_tail"]     # faulthandler
    assert "malformed data" in reason("garbage_on_pipe")
    assert "not valid JSON" in reason("truncated_file") and "not valid JSON" in reason("not_json")
    assert "no list of cells" in reason("not_a_notebook")
    cells = result_of(graded, "import_error")["cell_errors"]
    assert cells[0]["type"] == "ModuleNotFoundError" and "not_a_module_xyz" in cells[0]["message"]
    checks = {c["name"]: c for c in result_of(graded, "import_error")["checks"]}
    assert "NameError" in checks["truncated_bptt, window 1"]["message"]
    checks = {c["name"]: c for c in result_of(graded, "renamed_function")["checks"]}
    assert "defines no `jordan_backward`" in checks["jordan_backward"]["message"]
    assert [c["type"] for c in result_of(graded, "syntax_error")["cell_errors"]] == ["SyntaxError"]
    assert [c["type"] for c in result_of(graded, "sys_exit")["cell_errors"]] == ["SystemExit"]
    checks = {c["name"]: c for c in result_of(graded, "wrong_shapes", EX2)["checks"]}
    assert {o["name"]: o["message"] for o in checks["output_backward"]["outputs"]}["dV"] == \
        "shape (5, 4), expected (4, 5)"
    checks = {c["name"]: c for c in result_of(graded, "nan_outputs", EX2)["checks"]}
    assert "NaN" in {o["name"]: o["message"] for o in checks["rnn_relu_backward"]["outputs"]}["dx"]
    checks = {c["name"]: c for c in result_of(graded, "float32", EX2)["checks"]}
    assert "float32" in checks["birnn_backward"]["outputs"][0]["message"]
    checks = {c["name"]: c for c in result_of(graded, "weird_returns", EX2)["checks"]}
    assert "got None" in checks["birnn_backward"]["outputs"][0]["message"]
    assert "generator" in checks["rnn_relu_backward"]["outputs"][0]["message"]
    assert result_of(graded, "huge_output")["output_dropped_chars"] > 100_000_000
    fb = (graded["out"] / "stubbed" / "feedback.md").read_text()
    assert "NotImplementedError: jordan_backward: write your code here" in fb
    assert "self-check" in fb and "(not answered)" in fb


def test_skipped_cells_are_listed(graded):
    skipped = result_of(graded, "long_experiment")["skipped_cells"]
    assert [c["tag"] for c in skipped] == ["skip-grading", "self-check", "self-check", "self-check"]
    assert skipped[0]["line"] == "while True:"
    assert [c["tag"] for c in result_of(graded, "lost_tags", EX2)["skipped_cells"]] == ["self-check"] * 4
    fb = (graded["out"] / "long_experiment" / "feedback.md").read_text()
    assert "a long experiment (skip-grading)" in fb


def test_written_answers_are_collected(graded):
    answers = result_of(graded, "correct")["answers"]
    assert [a["title"] for a in answers] == ["Exercise 1: derive eqs. (6.40) and (6.41)",
                                             "Exercise 5: memory of BPTT and RTRL"]
    assert "outer product" in answers[0]["text"].lower()
    fb = (graded["out"] / "correct" / "feedback.md").read_text()
    assert "### Written answers (marked by hand)" in fb and "RTRL" in fb


def test_nothing_escapes_the_sandbox(graded):
    spy = result_of(graded, "spy")["cell_errors"][0]["message"]
    assert spy.startswith("SPY: "), spy
    names = ["grade_module", "autograder_module", "checks_file", "solution_notebook", "git_history",
             "classmate", "list_submissions", "seed_in_my_environment", "run_program", "kill_sandbox"]
    if LANDLOCK:
        names.append("seed_in_environ")      # /proc/<grader>/environ: erased, and no ptrace
        names.append("classmate_via_libc")   # not Python's open: only the kernel (Landlock) stops it
    for name in names:
        assert f"blocked {name} " in spy, (name, spy)
    if LANDLOCK >= 4:
        assert "blocked network (PermissionError)" in spy
    if LANDLOCK >= 6:
        assert "blocked kill_sandbox (PermissionError)" in spy
    writes = result_of(graded, "writes_out")["cell_errors"][0]["message"]
    if LANDLOCK:
        assert "WROTE" not in writes, writes
    grades, _ = read_grades(graded["out"])
    assert grades[("writes_out", EX1)]["score"] == "0" and grades[("correct", EX1)]["score"] == "19"
    assert json.loads((graded["out"] / "writes_out" / "results.json").read_text())["score"] == 0
    assert result_of(graded, "correct")["score"] == 19
    assert fork_survivors() == []
    assert not list(Path(graded["out"]).glob("**/.*.tmp*"))


def test_gradescope_results_schema(graded):
    jsonschema = pytest.importorskip("jsonschema")
    for student_dir in graded["out"].iterdir():
        if student_dir.is_dir():
            results = json.loads((student_dir / "results.json").read_text())
            jsonschema.validate(results, GRADESCOPE_SCHEMA)
            assert results["score"] == pytest.approx(sum(t["score"] for t in results["tests"]))
            assert sum(t["max_score"] for t in results["tests"]) == 45


GRADESCOPE_SCHEMA = {
    "type": "object", "required": ["score", "tests"],
    "properties": {
        "score": {"type": "number"}, "output": {"type": "string"},
        "output_format": {"enum": ["text", "html", "simple_format", "md", "ansi"]},
        "stdout_visibility": {"enum": ["hidden", "after_due_date", "after_published", "visible"]},
        "tests": {"type": "array", "items": {
            "type": "object", "required": ["name", "score", "max_score", "status", "output", "visibility"],
            "properties": {"name": {"type": "string"}, "score": {"type": "number"},
                           "max_score": {"type": "number"}, "status": {"enum": ["passed", "failed"]},
                           "output": {"type": "string"},
                           "visibility": {"enum": ["hidden", "after_due_date", "after_published", "visible"]}}}},
    },
}


# ---------------------------------------------------------------------------------------
# Resuming, --force, and being killed

def small_class(tmp_path, n=2):
    subs = tmp_path / "subs"
    write_submissions(subs, {f"s{i}": {f"{EX1}.ipynb": solved(EX1), f"{EX2}.ipynb": stubbed(EX2)}
                             for i in range(n)})
    return subs, tmp_path / "out"


def test_rerun_grades_only_what_is_missing(tmp_path):
    subs, out = small_class(tmp_path)
    r = grade(subs, out, "--timeout", "20")
    assert r.returncode == 0, r.stderr
    assert "graded 4 notebooks" in r.stdout
    first, _ = read_grades(out)
    # as if killed while writing: one result gone, a temporary file left behind
    (out / "s1" / f"{EX1}.result.json").unlink()
    (out / "s1" / f".{EX1}.result.json.tmp999").write_text('{"half": ')
    r = grade(subs, out, "--timeout", "20")
    assert r.returncode == 0, r.stderr
    assert "graded 1 notebooks" in r.stdout and "3 already graded" in r.stdout
    again, rows = read_grades(out)
    assert again == first and len(rows) == 4
    assert not list(out.glob("**/.*.tmp*"))
    # a resubmission is regraded; --force regrades everything
    nbformat.write(solved(EX2), subs / "s0" / f"{EX2}.ipynb")
    r = grade(subs, out, "--timeout", "20")
    assert "graded 1 notebooks" in r.stdout
    assert read_grades(out)[0][("s0", EX2)]["score"] == "26"
    r = grade(subs, out, "--timeout", "20", "--force")
    assert "graded 4 notebooks" in r.stdout and "already graded" not in r.stdout


def test_killed_grader_loses_nothing(tmp_path):
    subs = tmp_path / "subs"
    slow = insert_after(solved(EX1), IMPORTS, "import time\ntime.sleep(1.5)")
    write_submissions(subs, {f"s{i}": {f"{EX1}.ipynb": slow} for i in range(6)})
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "rnnbook", "grade", str(subs), "--out", str(out), "--jobs", "2"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # Kill it once a grade is written *and* a notebook is running. (Right after the first
    # results both workers may be between notebooks: poll, do not sample once.)
    deadline = time.monotonic() + 120
    children = []
    while time.monotonic() < deadline:
        children = _children(proc.pid)                            # the sandbox process
        children += [g for c in children for g in _children(c)]   # the notebooks running in it
        if len(children) >= 2 and list(out.glob("*/*.result.json")):
            break
        time.sleep(0.02)
    assert len(children) >= 2, "no notebook was running after the first grade"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = {p.parent.name for p in out.glob("*/*.result.json")}
    assert 1 <= len(done_before) < 6
    time.sleep(1.0)
    assert not [pid for pid in children if _alive(pid)], "the sandbox outlived the grader"
    r = grade(subs, out)
    assert r.returncode == 0, r.stderr
    assert f"graded {6 - len(done_before)} notebooks" in r.stdout
    grades, rows = read_grades(out)
    rows = [r for r in rows if r["exercise"] == EX1]
    assert len(rows) == 6 and {r["status"] for r in rows} == {"graded"}
    assert {r["score"] for r in rows} == {"19"}


def _children(pid):
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(stat.parent.name))
        except (OSError, ValueError, IndexError):
            pass
    return found


def _alive(pid):
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


# ---------------------------------------------------------------------------------------
# The instructor's mistakes

@pytest.mark.parametrize("args,message", [
    (["{tmp}/nowhere", "--out", "{tmp}/out"], "no submissions folder"),
    (["{tmp}/subs", "--out", "{tmp}/subs/a.txt"], "exists and is not a folder"),
    (["{tmp}/subs", "--out", "{tmp}/subs/out"], "must not be the submissions folder or inside it"),
    (["{tmp}/subs", "--out", "{tmp}/out", "--jobs", "0"], "--jobs must be >= 1"),
    (["{tmp}/subs", "--out", "{tmp}/out", "--timeout", "-1"], "--timeout > 0"),
    (["{tmp}/subs", "--out", "{tmp}/out", "--exercises", "{tmp}/none"], "no exercises folder"),
    (["{tmp}/subs", "--out", "{tmp}/out", "--checks", "{tmp}"], "01_bptt.checks.py is missing"),
    (["{tmp}/subs", "--out", "{tmp}/out", "--memory-mb", "lots"], "invalid int value"),
    (["{tmp}/subs"], "required: --out"),
])
def test_usage_errors(tmp_path, args, message):
    (tmp_path / "subs").mkdir()
    (tmp_path / "subs" / "a.txt").write_text("")
    r = subprocess.run([sys.executable, "-m", "rnnbook", "grade"] + [a.format(tmp=tmp_path) for a in args],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 2 and message in r.stderr, r.stderr


def test_empty_class_and_quiet_output(tmp_path):
    (tmp_path / "subs" / "nobody").mkdir(parents=True)
    r = grade(tmp_path / "subs", tmp_path / "out")
    assert r.returncode == 0 and r.stderr == ""
    _, rows = read_grades(tmp_path / "out")
    assert [(x["student"], x["status"]) for x in rows] == [("nobody", "missing")] * 2


# ---------------------------------------------------------------------------------------
# The wire format never trusts the child

@pytest.mark.parametrize("data", [
    b"x\n{}", b"99999999999\n", b"5\n[1,2]", b"4\nnull", b"10\n" + b"[" * 10,
    b"20000\n" + b"[" * 20000,
])
def test_frame_reader_rejects_garbage(data):
    with pytest.raises(sandbox.WireError):
        sandbox.FrameReader(1 << 20).feed(data)


@pytest.mark.parametrize("node", [
    {"t": "array", "dtype": "|O", "shape": [1], "data": ""},
    {"t": "array", "dtype": "<f8", "shape": [2], "data": "AAAAAAAAAAA="},
    {"t": "array", "dtype": "<f8", "shape": [1 << 30, 1 << 30], "data": ""},
    {"t": "array", "dtype": "<f8", "shape": [-1], "data": ""},
    {"t": "list", "items": [{"t": "none"}] * 1000},
    {"t": "pickle", "data": "gASVAAAAAAAAAAB9lC4="},
    {"t": "int", "v": 2 ** 70}, {"t": "float", "v": "1" * 100}, [],
])
def test_decode_rejects_malformed_values(node):
    with pytest.raises(sandbox.WireError):
        sandbox.decode_value(node)


def test_values_round_trip():
    import numpy as np
    value = (np.arange(6.0).reshape(2, 3), {"U": np.float32(2.5), "n": 3}, [None, True, 1.5, "s"],
             np.array([1, 2], dtype=">i4"))
    back = sandbox.decode_value(json.loads(json.dumps(sandbox.encode_value(value))))
    assert np.array_equal(back[0], value[0]) and back[1]["U"].dtype == np.float32
    assert back[1]["n"] == 3 and back[2] == [None, True, 1.5, "s"]
    assert back[3].tolist() == [1, 2]
