"""The toy exercise of the grader's tests (checks: tests/grading_fixtures/toy.checks.py),
its solved and stubbed notebooks, and helpers to run `rnnbook grade` on a class.

The real exercises change while the book is written; the attack tests use this one."""
import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from rnnbook.grading.checks import load_checks

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / "grading_fixtures"
NAME = "toy"
SEED = "918273645501"
BWRAP = shutil.which("bwrap") is not None

IMPORTS = "import numpy as np\nimport torch"
SOLVED = {
    "square_grad": "def square_grad(x):\n    return 2 * x",
    "tanh": ("def tanh_forward(x, W):\n    h = np.tanh(x @ W.T)\n    return h, {'x': x, 'W': W, 'h': h}\n\n\n"
             "def tanh_backward(dh, cache):\n    dz = dh * (1 - cache['h'] ** 2)\n"
             "    return dz @ cache['W'], dz.T @ cache['x']"),
    "cube": ("class Cube(torch.autograd.Function):\n    @staticmethod\n    def forward(ctx, x):\n"
             "        ctx.save_for_backward(x)\n        return x ** 3\n\n    @staticmethod\n"
             "    def backward(ctx, g):\n        x, = ctx.saved_tensors\n        return 3 * x ** 2 * g"),
    "sincos": ("class SinCos(torch.autograd.Function):\n    @staticmethod\n    def forward(ctx, x):\n"
               "        ctx.save_for_backward(x)\n        return torch.sin(x), torch.cos(x)\n\n"
               "    @staticmethod\n    def backward(ctx, gs, gc):\n        x, = ctx.saved_tensors\n"
               "        return torch.cos(x) * gs - torch.sin(x) * gc"),
    "plain_sum": "def plain_sum(x):\n    return float(np.sum(x))",
}
STUBS = {
    "square_grad": "def square_grad(x):\n    raise NotImplementedError(\"square_grad: write your code here\")",
    "tanh": (SOLVED["tanh"].split("\n\n\n")[0] + "\n\n\ndef tanh_backward(dh, cache):\n"
             "    raise NotImplementedError(\"tanh_backward: write your code here\")"),
    "cube": ("class Cube(torch.autograd.Function):\n    @staticmethod\n    def forward(ctx, x):\n"
             "        raise NotImplementedError(\"Cube.forward: write your code here\")\n\n"
             "    @staticmethod\n    def backward(ctx, g):\n"
             "        raise NotImplementedError(\"Cube.backward: write your code here\")"),
    "sincos": ("class SinCos(torch.autograd.Function):\n    @staticmethod\n    def forward(ctx, x):\n"
               "        raise NotImplementedError(\"SinCos.forward: write your code here\")\n\n"
               "    @staticmethod\n    def backward(ctx, gs, gc):\n"
               "        raise NotImplementedError(\"SinCos.backward: write your code here\")"),
    "plain_sum": "def plain_sum(x):\n    raise NotImplementedError(\"plain_sum: write your code here\")",
}
SELF_CHECK = "assert np.allclose(square_grad(np.ones(3)), 2)"
ANSWER = "**Your answer:**"


def points():
    """{check name: points} and the total, from the checks file."""
    checks = load_checks(FIXTURES / f"{NAME}.checks.py")
    return {c.name: c.points for c in checks}, sum(c.points for c in checks)


def notebook(parts=None, before=(), after=(), answer="The derivative of x^2 is 2x.",
             self_check=SELF_CHECK):
    """The toy notebook: parts overrides the solved sources ({part: source}); before and
    after are extra code cells (strings) right after the imports and at the end."""
    parts = {**SOLVED, **(parts or {})}
    code, md = nbformat.v4.new_code_cell, nbformat.v4.new_markdown_cell
    cells = [md("# Toy: exercises", id="title"), code(IMPORTS, id="imports")]
    cells += [code(src, id=f"before{i}") for i, src in enumerate(before)]
    for name in SOLVED:
        cells.append(code(parts[name], id=name.replace("_", "-")))
        if name == "square_grad":
            cells.append(code(self_check, metadata={"tags": ["self-check"]}, id="self-check"))
    cells.append(md("## Why 2x?", id="why"))
    cells.append(md(answer, metadata={"tags": ["answer"]}, id="answer"))
    cells += [code(src, id=f"after{i}") for i, src in enumerate(after)]
    nb = nbformat.v4.new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return nb


def exercise():
    return notebook(STUBS, answer=ANSWER)


def write_class(folder, students):
    """students: {name (str or bytes): {file name: notebook node, bytes, or ("link", target)}}."""
    folder = Path(folder)
    for student, files in students.items():
        d = os.path.join(os.fsencode(folder), os.fsencode(student))
        os.makedirs(d, exist_ok=True)
        for name, nb in files.items():
            path = os.path.join(d, os.fsencode(name))
            os.makedirs(os.path.dirname(path), exist_ok=True)
            if isinstance(nb, tuple):
                os.symlink(nb[1], path)
            elif isinstance(nb, bytes):
                with open(path, "wb") as f:
                    f.write(nb)
            else:
                with open(path, "w", encoding="utf-8") as f:
                    nbformat.write(nb, f)


def setup(tmp):
    """Write the exercise folder; returns the grade options that point at the toy."""
    ex = Path(tmp) / "exercises"
    ex.mkdir(parents=True, exist_ok=True)
    nbformat.write(exercise(), ex / f"{NAME}.ipynb")
    return ["--exercises", str(ex), "--checks", str(FIXTURES)]


def grade(subs, out, *args, env=None, timeout=600, unisolated_ok=True):
    """rnnbook grade; where bubblewrap is missing (a developer's machine: CI has it), a
    class is graded without isolation rather than refused, unless unisolated_ok=False."""
    if unisolated_ok and not BWRAP:
        args += ("--allow-unisolated",)
    return subprocess.run([sys.executable, "-m", "rnnbook", "grade", str(subs), "--out", str(out),
                           *args], capture_output=True, text=True, cwd=ROOT,
                          env=dict(os.environ, **(env or {})), timeout=timeout)


def read_grades(out):
    with open(Path(out) / "grades.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return {(r["student"], r["exercise"]): r for r in rows}, rows


def student_dir(out, student):
    """OUT/students/<student>/ (a long name is cut and hashed: rnnbook.grading.records)."""
    from rnnbook.grading.records import folder_name
    return Path(out) / "students" / folder_name(student)


def result(out, student, exercise=NAME):
    return json.loads((student_dir(out, student) / f"{exercise}.result.json").read_text(encoding="utf-8"))


def feedback(out, student):
    return (student_dir(out, student) / "feedback.md").read_text(encoding="utf-8")


def need_bwrap():
    """Skip without bubblewrap, except in CI (.ci/run installs it), where it must fail."""
    if not BWRAP:
        if os.environ.get("CI"):
            pytest.fail("bubblewrap (bwrap) is missing: .ci/run installs it")
        pytest.skip("bubblewrap (bwrap) is not installed")
