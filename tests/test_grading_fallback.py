"""Where notebooks cannot be isolated (--isolation none stands in for a host without
namespaces): the grader says so once, grades one student (Gradescope's case), refuses a
class unless --allow-unisolated, and records the isolation mode in every result."""
import os
import sys

import pytest

import grading_toy as toy
from rnnbook.grading import cli, confine
from rnnbook.grading.defaults import JOB_UIDS

UID_CELL = "import os\nraise RuntimeError(f'uid {os.getuid()}')"


def test_a_class_is_refused_without_isolation(tmp_path, capsys):
    options = toy.setup(tmp_path)
    toy.write_class(tmp_path / "subs", {"a": {"toy.ipynb": toy.notebook()},
                                        "b": {"toy.ipynb": toy.notebook()}})
    assert cli.main([str(tmp_path / "subs"), "--out", str(tmp_path / "out"), *options,
                     "--isolation", "none"]) == 2        # refused before anything starts
    err = capsys.readouterr().err
    assert "refusing to grade 2 students without isolation" in err
    assert err.count("no isolation between notebooks") == 1
    assert not list((tmp_path / "out").glob("students/*/toy.result.json"))


def test_one_student_or_an_explicit_flag(tmp_path):
    options = toy.setup(tmp_path)
    _, total = toy.points()
    toy.write_class(tmp_path / "one", {"solo": {"toy.ipynb": toy.notebook(after=[UID_CELL])}})
    r = toy.grade(tmp_path / "one", tmp_path / "out1", *options, "--isolation", "none",
                  unisolated_ok=False)
    assert r.returncode == 0, r.stderr
    assert r.stderr.count("no isolation between notebooks") == 1
    solo = toy.result(tmp_path / "out1", "solo")
    assert (solo["status"], solo["score"], solo["isolation"]) == ("graded", total, "none")
    # root runs each notebook as a host user of its own, never root; another user runs
    # them as itself (confined by Landlock)
    uid = int(solo["cell_errors"][0]["message"].split()[1])
    start, count = JOB_UIDS
    assert start <= uid < start + count if os.geteuid() == 0 else uid == os.geteuid()
    # a classmate's notebook, the grades, the seed: out of reach (own user, Landlock)
    spy = ("import os\nr = []\nfor p in " + repr([str(tmp_path / "two" / "b"), str(tmp_path / "out2"),
                                                  str(toy.ROOT / "solutions")]) +
           ":\n    try:\n        r.append('LEAK ' + str(os.listdir(p)))\n    except OSError:\n"
           "        r.append('blocked')\nr.append(os.environ.get('RNNBOOK_GRADE_SEED', 'no seed'))\n"
           "raise RuntimeError(' '.join(r))")
    toy.write_class(tmp_path / "two", {"a": {"toy.ipynb": toy.notebook(after=[spy])},
                                       "b": {"toy.ipynb": toy.exercise()}})
    r = toy.grade(tmp_path / "two", tmp_path / "out2", *options, "--isolation", "none",
                  "--allow-unisolated", "--jobs", "2", env={"RNNBOOK_GRADE_SEED": toy.SEED})
    assert r.returncode == 0, r.stderr
    assert "(isolation: none)" in r.stdout
    grades, _ = toy.read_grades(tmp_path / "out2")
    assert {k: (v["status"], float(v["score"])) for k, v in grades.items()} == \
        {("a", "toy"): ("graded", total), ("b", "toy"): ("graded", 0)}
    a = toy.result(tmp_path / "out2", "a")
    assert a["isolation"] == "none"
    if confine.landlock_abi():                # else: what its user can read
        assert a["cell_errors"][0]["message"] == "blocked blocked blocked no seed", a["cell_errors"]


def test_never_as_the_graders_user_without_the_dangerous_flag(tmp_path):
    """Root whose Python other users cannot run (no private copy made), or another user
    without Landlock: refused, nothing graded, the fix named."""
    from rnnbook.grading.checks import UsageError
    from rnnbook.grading.grader import Grader
    from rnnbook.grading.stage import open_to_others
    if os.geteuid() == 0 and open_to_others(sys.executable):
        pytest.skip("every user can run this Python: nothing to refuse")
    toy.setup(tmp_path)
    toy.write_class(tmp_path / "subs", {"solo": {"toy.ipynb": toy.notebook()}})
    grader = Grader(tmp_path / "subs", tmp_path / "out", exercises_dir=tmp_path / "exercises",
                    checks_dir=toy.FIXTURES, isolation="none", progress=False, log=lambda *a: None,
                    _mirror=False, _landlock=False)
    with pytest.raises(UsageError, match="refusing to run notebooks: .*To fix: install bubblewrap"):
        grader.run()
    assert not list((tmp_path / "out").glob("students/*/toy.result.json"))
