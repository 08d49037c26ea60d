"""rnnbook autograder: the Gradescope bundle, run against a folder laid out like Gradescope's
(/autograder/source, submission, results), with its root moved by AUTOGRADER_ROOT."""
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import nbformat
import pytest

from rnnbook.grade import solved_submission
from test_grade import GRADESCOPE_SCHEMA

ROOT = Path(__file__).resolve().parents[1]


def build(tmp_path, *args):
    out = tmp_path / "autograder.zip"
    r = subprocess.run([sys.executable, "-m", "rnnbook", "autograder", "--out", str(out), *args],
                       capture_output=True, text=True, cwd=tmp_path)
    return r, out


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


def test_bundle_contents(tmp_path):
    r, bundle = build(tmp_path)
    assert r.returncode == 0, r.stderr
    names = zipfile.ZipFile(bundle).namelist()
    for name in ("setup.sh", "run_autograder", "requirements.txt", "rnnbook/grade.py",
                 "rnnbook/sandbox.py", "exercises/01_bptt.ipynb", "solutions/01_bptt.checks.py",
                 "solutions/02_numpy_and_torch.checks.py"):
        assert name in names
    assert not [n for n in names if n.startswith("solutions/") and n.endswith(".ipynb")], \
        "the solution notebooks stay out of the bundle"
    with zipfile.ZipFile(bundle) as z:
        reqs = z.read("requirements.txt").decode().splitlines()
        modes = {i.filename: i.external_attr >> 16 for i in z.infolist()}
        for script in ("setup.sh", "run_autograder"):
            text = z.read(script).decode()
            check = subprocess.run(["bash", "-n"], input=text, capture_output=True, text=True)
            assert check.returncode == 0, (script, check.stderr)
            assert modes[script] & 0o111
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in reqs
    assert "torch==2.13.0+cpu" in reqs
    main_pins = [ln for ln in (ROOT / "requirements.txt").read_text().splitlines() if "==" in ln]
    for pkg in ("numpy", "matplotlib", "nbformat", "tqdm"):
        assert [ln for ln in main_pins if ln.startswith(pkg + "==")][0] in reqs


def test_run_autograder_grades_a_submission(tmp_path):
    r, bundle = build(tmp_path)
    assert r.returncode == 0, r.stderr
    stub = nbformat.read(ROOT / "exercises" / "02_numpy_and_torch.ipynb", as_version=4)
    root = gradescope_root(tmp_path, bundle, {
        "work/01_bptt.ipynb": solved_submission(ROOT / "solutions" / "01_bptt.ipynb"),
        "02_numpy_and_torch.ipynb": stub, "notes.txt": b"hello"})
    r, results = run_autograder(root)
    assert r.returncode == 0, r.stdout + r.stderr
    pytest.importorskip("jsonschema").validate(results, GRADESCOPE_SCHEMA)
    assert results["score"] == 19
    assert sum(t["max_score"] for t in results["tests"]) == 45
    tests = {t["name"]: t for t in results["tests"]}
    assert tests["01_bptt: jordan_backward"]["status"] == "passed"
    assert tests["02_numpy_and_torch: birnn_backward"]["status"] == "failed"
    assert "NotImplementedError" in tests["02_numpy_and_torch: birnn_backward"]["output"]
    assert "Written answers" in results["output"]


def test_run_autograder_one_exercise_and_nothing_submitted(tmp_path):
    r, bundle = build(tmp_path, "--exercise", "01_bptt", "--timeout", "30")
    assert r.returncode == 0, r.stderr
    root = gradescope_root(tmp_path, bundle, {"README.md": b"no notebook here"})
    r, results = run_autograder(root)
    assert r.returncode == 0, r.stdout + r.stderr
    pytest.importorskip("jsonschema").validate(results, GRADESCOPE_SCHEMA)
    assert results["score"] == 0 and sum(t["max_score"] for t in results["tests"]) == 19
    assert all("not submitted" in t["output"] for t in results["tests"])


def test_build_refuses_an_unknown_exercise(tmp_path):
    r, bundle = build(tmp_path, "--exercise", "99_nothing")
    assert r.returncode == 2 and "unknown exercise" in r.stderr and not bundle.exists()
