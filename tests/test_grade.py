"""rnnbook grade on the book's real exercises (whatever exercises/ holds: a solved notebook
gets full marks, an untouched one 0 and "not attempted"), and the grader's life cycle on
the toy exercise: resuming, --force, being killed, the instructor's mistakes.
Expected totals are read from the checks files."""
import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

import grading_toy as toy
from rnnbook.grading import cli
from rnnbook.grading.checks import load_checks
from rnnbook.grading.notebooks import solved_submission

ROOT = toy.ROOT
EXERCISES = sorted(p.stem for p in (ROOT / "exercises").glob("*.ipynb")
                   if (ROOT / "solutions" / f"{p.stem}.ipynb").exists()
                   and (ROOT / "solutions" / f"{p.stem}.checks.py").exists())


def max_score(name):
    return sum(c.points for c in load_checks(ROOT / "solutions" / f"{name}.checks.py"))


# ---------------------------------------------------------------------------------------
# The real exercises

@pytest.fixture(scope="module")
def real(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("real")
    toy.write_class(tmp / "subs", {
        "solved": {f"{n}.ipynb": solved_submission(ROOT / "solutions" / f"{n}.ipynb") for n in EXERCISES},
        "stubbed": {f"{n}.ipynb": nbformat.read(ROOT / "exercises" / f"{n}.ipynb", as_version=4)
                    for n in EXERCISES}})
    (tmp / "exercises").mkdir()
    for n in EXERCISES:         # the exercises with a solution and checks (others may be in progress)
        shutil.copyfile(ROOT / "exercises" / f"{n}.ipynb", tmp / "exercises" / f"{n}.ipynb")
    r = toy.grade(tmp / "subs", tmp / "out", "--jobs", "2", "--timeout", "120",
                  "--exercises", str(tmp / "exercises"), env={"RNNBOOK_GRADE_SEED": toy.SEED})
    return {"result": r, "out": tmp / "out"}


def test_real_exercises_exist():
    assert len(EXERCISES) >= 2, EXERCISES


@pytest.mark.parametrize("name", EXERCISES)
def test_solution_gets_full_marks_and_stub_zero(real, name):
    assert real["result"].returncode == 0, real["result"].stderr
    grades, _ = toy.read_grades(real["out"])
    top = max_score(name)
    assert (grades[("solved", name)]["status"], float(grades[("solved", name)]["score"])) == ("graded", top)
    assert (grades[("stubbed", name)]["status"], float(grades[("stubbed", name)]["score"])) == ("graded", 0)
    assert float(grades[("solved", name)]["max_score"]) == top
    stub = toy.result(real["out"], "stubbed", name)
    assert all(c["not_attempted"] for c in stub["checks"] if c["message"] != "not run"), stub["checks"]
    assert "Not attempted: every graded function is still the exercise's stub." in \
        toy.feedback(real["out"], "stubbed")
    solved = toy.result(real["out"], "solved", name)
    assert not solved["cell_errors"], solved["cell_errors"]
    assert all(a["text"] for a in solved["answers"])


def test_gradescope_results_schema(real):
    jsonschema = pytest.importorskip("jsonschema")
    total = sum(max_score(n) for n in EXERCISES)
    for student in ("solved", "stubbed"):
        results = json.loads((toy.student_dir(real["out"], student) / "results.json").read_text())
        jsonschema.validate(results, GRADESCOPE_SCHEMA)
        assert results["score"] == pytest.approx(sum(t["score"] for t in results["tests"]))
        assert sum(t["max_score"] for t in results["tests"]) == total
        assert results["output_format"] == results["test_output_format"] == "md"


GRADESCOPE_SCHEMA = {
    "type": "object", "required": ["score", "tests"],
    "properties": {
        "score": {"type": "number"}, "output": {"type": "string"},
        "output_format": {"enum": ["text", "html", "simple_format", "md", "ansi"]},
        "test_output_format": {"enum": ["text", "html", "simple_format", "md", "ansi"]},
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
# Being killed, resuming, --force (toy exercise)

def test_killed_grader_loses_nothing_and_a_rerun_finishes(tmp_path):
    options = toy.setup(tmp_path)
    subs, out = tmp_path / "subs", tmp_path / "out"
    slow = toy.notebook(before=["import time\ntime.sleep(1)"])
    toy.write_class(subs, {f"s{i}": {"toy.ipynb": slow} for i in range(6)})
    cmd = [sys.executable, "-m", "rnnbook", "grade", str(subs), "--out", str(out), "--jobs", "2",
           *options, *([] if toy.BWRAP else ["--allow-unisolated"])]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # Kill it once a grade is written *and* notebooks run (poll: do not sample once).
    deadline, tree = time.monotonic() + 180, []
    while time.monotonic() < deadline:
        tree = _descendants(proc.pid)
        if list(out.glob("students/*/toy.result.json")) and _running_notebooks(tree):
            break
        time.sleep(0.02)
    assert _running_notebooks(tree), "no notebook was running after the first grade"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = sorted(p.parent.name for p in out.glob("students/*/toy.result.json"))
    assert 1 <= len(done_before) < 6
    for _ in range(100):
        if not [pid for pid in tree if _alive(pid)]:
            break
        time.sleep(0.1)
    assert not [pid for pid in tree if _alive(pid)], "the sandbox outlived the grader"
    # as if also killed while writing (a temporary file left), and one graded notebook
    # resubmitted: the rerun grades exactly what is missing or changed
    (out / "students" / done_before[0] / ".toy.result.json.tmp999").write_text('{"half": ')
    nbformat.write(toy.exercise(), subs / done_before[0] / "toy.ipynb")
    r = toy.grade(subs, out, *options, "--jobs", "2")
    assert r.returncode == 0, r.stderr
    assert f"graded {6 - len(done_before) + 1} notebooks" in r.stdout
    reused = len(done_before) - 1
    assert (f"{reused} already graded" in r.stdout) == (reused > 0), r.stdout
    assert not list(out.glob("**/.*.tmp*"))
    grades, rows = toy.read_grades(out)
    total = toy.points()[1]
    assert len(rows) == 6 and {(k[0], x["status"], float(x["score"])) for k, x in grades.items()} == \
        {(s, "graded", 0 if s == done_before[0] else total) for s in (f"s{i}" for i in range(6))}
    r = toy.grade(subs, out, *options, "--jobs", "2", "--force")
    assert "graded 6 notebooks" in r.stdout and "already graded" not in r.stdout
    assert toy.read_grades(out)[0] == grades


def _ppid(pid):
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def _descendants(root):
    pids = [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]
    parent = {p: _ppid(p) for p in pids}
    found, frontier = [], {root}
    while frontier:
        frontier = {p for p, pp in parent.items() if pp in frontier and p not in found}
        found += sorted(frontier)
    return found


def _running_notebooks(tree):
    """Processes forked by the fork server (their command line is its own)."""
    servers = [p for p in tree if "zygote.main" in _cmd(p)]
    return [p for p in tree if _ppid(p) in servers and "zygote.main" in _cmd(p)]


def _cmd(pid):
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


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
    (["{tmp}/subs", "--out", "{tmp}/out", "--disk-mb", "0"], "--disk-mb >= 1"),
    (["{tmp}/subs", "--out", "{tmp}/out", "--exercises", "{tmp}/none"], "no exercises folder"),
    (["{tmp}/subs", "--out", "{tmp}/out", "--exercises", "{tmp}/exercises", "--checks", "{tmp}"],
     "toy.checks.py is missing"),
    (["{tmp}/subs", "--out", "{tmp}/out", "--memory-mb", "lots"], "invalid int value"),
    (["{tmp}/subs", "--out", "{tmp}/out", "--isolation", "maybe"], "invalid choice"),
    (["{tmp}/subs"], "required: --out"),
])
def test_usage_errors(tmp_path, args, message, capsys):
    (tmp_path / "subs").mkdir()
    (tmp_path / "subs" / "a.txt").write_text("")
    toy.setup(tmp_path)
    try:
        code = cli.main([a.format(tmp=tmp_path) for a in args])
    except SystemExit as e:                      # argparse's own errors
        code = e.code
    assert code == 2 and message in capsys.readouterr().err


def test_empty_class_and_quiet_output(tmp_path, capsys):
    options = toy.setup(tmp_path)
    (tmp_path / "subs" / "nobody").mkdir(parents=True)
    assert cli.main([str(tmp_path / "subs"), "--out", str(tmp_path / "out"), *options]) == 0
    assert capsys.readouterr().err == ""
    _, rows = toy.read_grades(tmp_path / "out")
    assert [(x["student"], x["exercise"], x["status"]) for x in rows] == [("nobody", "toy", "missing")]
    feedback = toy.feedback(tmp_path / "out", "nobody")
    assert feedback.count("not submitted") == 1          # once for the exercise, not per check
