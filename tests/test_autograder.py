"""rnnbook autograder: the Gradescope bundle, run against a folder laid out like Gradescope's
(/autograder/source, submission, results), with its root moved by AUTOGRADER_ROOT.
Totals come from the checks files of whatever exercises the book has."""
import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import nbformat
import pytest

from rnnbook.grading import autograder
from rnnbook.grading.checks import load_checks
from rnnbook.grading.notebooks import solved_submission
from test_grade import EXERCISES, GRADESCOPE_SCHEMA

ROOT = Path(__file__).resolve().parents[1]


def checks(name):
    return load_checks(ROOT / "solutions" / f"{name}.checks.py")


def build(tmp_path, *args):
    """rnnbook autograder, in this process: (exit status, stderr) and the bundle's path."""
    out = tmp_path / "autograder.zip"
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = autograder.main(["--out", str(out), *args])
    return subprocess.CompletedProcess([], code, "", err.getvalue()), out


def gradescope_root(tmp_path, bundle, files):
    """Unzip the bundle as Gradescope does and put a student's files in submission/."""
    root = tmp_path / "autograder"
    with zipfile.ZipFile(bundle) as z:
        z.extractall(root / "source")
    for name in ("setup.sh", "run_autograder"):
        os.chmod(root / "source" / name, 0o755)
    shutil.copy(root / "source" / "run_autograder", root / "run_autograder")
    (root / "submission").mkdir()
    (root / "results").mkdir()
    for name, content in files.items():
        path = root / "submission" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            nbformat.write(content, path)
    return root


def run_autograder(root):
    env = dict(os.environ, AUTOGRADER_ROOT=str(root), RNNBOOK_PYTHON=sys.executable)
    env.pop("PYTHONPATH", None)
    r = subprocess.run([str(root / "run_autograder")], capture_output=True, text=True, env=env,
                       cwd=root, timeout=600)
    return r, json.loads((root / "results" / "results.json").read_text())


ALL = [a for n in EXERCISES for a in ("--exercise", n)]


def test_bundle_contents(tmp_path):
    r, bundle = build(tmp_path, *ALL)
    assert r.returncode == 0, r.stderr
    names = zipfile.ZipFile(bundle).namelist()
    for name in ["setup.sh", "run_autograder", "requirements.txt", "rnnbook/grading/__init__.py",
                 "rnnbook/grading/grader.py", "rnnbook/grading/zygote.py", "rnnbook/grading/child.py"] \
            + [f"exercises/{n}.ipynb" for n in EXERCISES] + [f"solutions/{n}.checks.py" for n in EXERCISES]:
        assert name in names, name
    assert not [n for n in names if n.startswith("solutions/") and n.endswith(".ipynb")], \
        "the solution notebooks stay out of the bundle"
    assert not [n for n in names if "__pycache__" in n]
    with zipfile.ZipFile(bundle) as z:
        reqs = z.read("requirements.txt").decode().splitlines()
        modes = {i.filename: i.external_attr >> 16 for i in z.infolist()}
        for script in ("setup.sh", "run_autograder"):
            text = z.read(script).decode()
            check = subprocess.run(["bash", "-n"], input=text, capture_output=True, text=True)
            assert check.returncode == 0, (script, check.stderr)
            assert modes[script] & 0o111
        assert "rnnbook.grading.autograder run" in z.read("run_autograder").decode()
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in reqs
    main_pins = [ln for ln in (ROOT / "requirements.txt").read_text().splitlines() if "==" in ln]
    for pkg in ("torch", "numpy", "matplotlib", "nbformat", "tqdm"):
        pin = [ln for ln in main_pins if ln.startswith(pkg + "==")][0]
        assert pin in reqs or pin + "+cpu" in reqs, pkg


def test_run_autograder_grades_a_submission(tmp_path):
    solved, stub = EXERCISES[0], EXERCISES[1]
    r, bundle = build(tmp_path, *ALL)
    assert r.returncode == 0, r.stderr
    root = gradescope_root(tmp_path, bundle, {
        f"work/{solved}.ipynb": solved_submission(ROOT / "solutions" / f"{solved}.ipynb"),
        f"{stub}.ipynb": nbformat.read(ROOT / "exercises" / f"{stub}.ipynb", as_version=4),
        "notes.txt": b"hello"})
    r, results = run_autograder(root)
    assert r.returncode == 0, r.stdout + r.stderr
    pytest.importorskip("jsonschema").validate(results, GRADESCOPE_SCHEMA)
    assert results["score"] == sum(c.points for c in checks(solved))
    assert sum(t["max_score"] for t in results["tests"]) == sum(c.points for n in EXERCISES for c in checks(n))
    tests = {t["name"]: t for t in results["tests"]}
    assert all(tests[f"{solved}: {c.name}"]["status"] == "passed" for c in checks(solved))
    for c in checks(stub):
        t = tests[f"{stub}: {c.name}"]
        assert t["status"] == "failed" and "not attempted" in t["output"], t
    assert results["test_output_format"] == "md"
    assert "Written answers" in results["output"]
    assert results["extra_data"]["isolation"] in ("namespaces", "none")


def test_run_autograder_one_exercise_and_nothing_submitted(tmp_path):
    name = EXERCISES[0]
    r, bundle = build(tmp_path, "--exercise", name, "--timeout", "30")
    assert r.returncode == 0, r.stderr
    root = gradescope_root(tmp_path, bundle, {"README.md": b"no notebook here"})
    with contextlib.redirect_stdout(io.StringIO()):      # run_autograder's work, in this process
        assert autograder.run(root) == 0
    results = json.loads((root / "results" / "results.json").read_text())
    pytest.importorskip("jsonschema").validate(results, GRADESCOPE_SCHEMA)
    assert results["score"] == 0 and sum(t["max_score"] for t in results["tests"]) == \
        sum(c.points for c in checks(name))
    assert all(t["output"] == "**missing:** not submitted" for t in results["tests"])


def test_build_refuses_an_unknown_exercise(tmp_path):
    r, bundle = build(tmp_path, "--exercise", "99_nothing")
    assert r.returncode == 2 and "unknown exercise" in r.stderr and not bundle.exists()
