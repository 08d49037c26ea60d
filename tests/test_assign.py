"""rnnbook assign: solutions/ -> exercises/."""
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from rnnbook.assign import ANSWER_PROMPT, assign, make_exercise

ROOT = Path(__file__).resolve().parents[1]

SOLVED = '''import numpy as np

def square(x):
    """Return x**2, elementwise. x: ndarray of any shape."""
    # BEGIN SOLUTION
    y = x * x
    return y
    # END SOLUTION


class Model:
    def step(self, h):
        """One step."""
        if h is not None:
            # BEGIN SOLUTION
            return h + 1
            # END SOLUTION
        return None'''


def notebook(code=SOLVED):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["widgets"] = {"state": 1}
    md = nbformat.v4.new_markdown_cell("# 1. Squares: solutions\n\nDerive it.")
    answer = nbformat.v4.new_markdown_cell("$x^2$ because ...")
    answer.metadata["tags"] = ["solution"]
    c = nbformat.v4.new_code_cell(code, execution_count=3,
                                  outputs=[nbformat.v4.new_output("stream", text="hi\n")])
    nb.cells = [md, answer, c]
    for i, cell in enumerate(nb.cells):
        cell.id = f"c{i}"
    return nb


def test_a_long_stub_is_split_to_fit_80_characters():
    code = ("class StackedRNNFunction:\n"
            "    def backward_sweep(self):\n"
            "        # BEGIN SOLUTION\n        return 1\n        # END SOLUTION")
    stub = make_exercise(notebook(code)).cells[2].source
    assert max(len(line) for line in stub.split("\n")) <= 80
    assert '"StackedRNNFunction.backward_sweep: ' in stub
    compile(stub, "<exercise>", "exec")


def test_stubs_keep_signature_and_docstring():
    ex = make_exercise(notebook())
    code = ex.cells[2].source
    assert "BEGIN SOLUTION" not in code and "y = x * x" not in code and "h + 1" not in code
    assert 'def square(x):\n    """Return x**2, elementwise. x: ndarray of any shape."""\n' \
           '    raise NotImplementedError("square: write your code here")\n' in code
    assert '            raise NotImplementedError("Model.step: write your code here")\n' \
           '        return None' in code
    compile(code, "<exercise>", "exec")
    namespace = {}
    exec(code, namespace)
    with pytest.raises(NotImplementedError, match="square"):
        namespace["square"](2)


def test_answer_cells_outputs_and_metadata():
    ex = make_exercise(notebook())
    assert ex.cells[0].source == "# 1. Squares: exercises\n\nDerive it."
    assert ex.cells[1].source == ANSWER_PROMPT and ex.cells[1].metadata["tags"] == ["answer"]
    assert ex.cells[2].outputs == [] and ex.cells[2].execution_count is None
    assert "widgets" not in ex.metadata and ex.metadata["kernelspec"]["name"] == "python3"
    nbformat.validate(ex)


def test_the_title_must_say_solutions():
    nb = notebook()
    nb.cells[0].source = "# 1. Squares\n\nDerive it."
    with pytest.raises(ValueError, match="bad.ipynb: the title '# 1. Squares' must end with ': solutions'"):
        make_exercise(nb, "bad.ipynb")
    nb.cells[0].source = "## Squares: solutions"
    with pytest.raises(ValueError, match="bad.ipynb: no title"):
        make_exercise(nb, "bad.ipynb")


@pytest.mark.parametrize("code,message", [
    ("def f():\n    # BEGIN SOLUTION\n    return 1\n", "never closed"),
    ("def f():\n    return 1\n    # END SOLUTION\n", "without"),
    ("def f():\n    # BEGIN SOLUTION\n    # BEGIN SOLUTION\n    # END SOLUTION\n", "inside another"),
    ("# BEGIN SOLUTION\nx = 1\n# END SOLUTION\n", "inside a function body"),
])
def test_malformed_regions_are_refused(code, message):
    with pytest.raises(ValueError, match=message):
        make_exercise(notebook(code), "bad.ipynb")


def test_code_cell_tagged_solution_is_refused():
    nb = notebook()
    nb.cells[2].metadata["tags"] = ["solution"]
    with pytest.raises(ValueError, match="cell 2: code cells are not tagged"):
        make_exercise(nb, "bad.ipynb")


def test_assign_writes_checks_and_removes_stale(tmp_path):
    sol, ex = tmp_path / "solutions", tmp_path / "exercises"
    sol.mkdir()
    nbformat.write(notebook(), sol / "a.ipynb")
    ex.mkdir()
    (ex / "old.ipynb").write_text("{}")
    assert assign(sol, ex, check=True) == [ex / "a.ipynb", ex / "old.ipynb"]
    assert not (ex / "a.ipynb").exists()                     # --check writes nothing
    assert assign(sol, ex) == [ex / "a.ipynb", ex / "old.ipynb"]
    first = (ex / "a.ipynb").read_text()
    assert not (ex / "old.ipynb").exists()
    assert assign(sol, ex) == [] and assign(sol, ex, check=True) == []
    assert (ex / "a.ipynb").read_text() == first


def test_assign_without_solutions_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="no notebooks found"):
        assign(tmp_path, tmp_path / "ex")


def test_repository_exercises_are_in_sync():
    """exercises/ must be exactly what `rnnbook assign` writes from solutions/."""
    result = subprocess.run([sys.executable, "-m", "rnnbook", "assign", "--check"],
                            cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, ("exercises/ is out of date; run `rnnbook assign`:\n"
                                    + result.stdout + result.stderr)
    assert sorted(p.name for p in (ROOT / "exercises").glob("*.ipynb")) == \
        sorted(p.name for p in (ROOT / "solutions").glob("*.ipynb"))
