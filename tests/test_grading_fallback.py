"""Where notebooks cannot be isolated (--isolation none stands in for a host without
namespaces): the grader says so once, grades one student (Gradescope's case), refuses a
class unless --allow-unisolated, and records the isolation mode in every result."""
import os

import grading_toy as toy
from rnnbook.grading import cli

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
    assert not list((tmp_path / "out").glob("*/toy.result.json"))


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
    # root runs them as an unprivileged user when that user can run this Python
    uid = 65534 if "can read what user 65534 can" in r.stderr else os.geteuid()
    assert solo["cell_errors"][0]["message"] == f"uid {uid}"
    toy.write_class(tmp_path / "two", {"a": {"toy.ipynb": toy.notebook()}, "b": {"toy.ipynb": toy.exercise()}})
    r = toy.grade(tmp_path / "two", tmp_path / "out2", *options, "--isolation", "none",
                  "--allow-unisolated", "--jobs", "2")
    assert r.returncode == 0, r.stderr
    assert "(isolation: none)" in r.stdout
    grades, _ = toy.read_grades(tmp_path / "out2")
    assert {k: (v["status"], float(v["score"])) for k, v in grades.items()} == \
        {("a", "toy"): ("graded", total), ("b", "toy"): ("graded", 0)}
    assert toy.result(tmp_path / "out2", "a")["isolation"] == "none"
