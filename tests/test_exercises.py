"""Every student notebook runs as handed out: each stub raises NotImplementedError
and nothing else fails (no NameError, no broken imports, no other exception)."""
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
EXERCISES = sorted((ROOT / "exercises").glob("*.ipynb"))


@pytest.mark.parametrize("path", EXERCISES, ids=[p.name for p in EXERCISES])
def test_exercise_runs_up_to_its_stubs(path):
    nb = nbformat.read(path, as_version=4)
    stubs = sum(c.source.count("raise NotImplementedError(") for c in nb.cells if c.cell_type == "code")
    assert stubs > 0, f"{path.name} has no stub for students to fill in"
    NotebookClient(nb, kernel_name="python3", timeout=300, allow_errors=True,
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    errors = [(i, out) for i, c in enumerate(nb.cells) if c.cell_type == "code"
              for out in c.outputs if out.output_type == "error"]
    other = [f"cell {i}: {out.ename}: {out.evalue}" for i, out in errors
             if out.ename != "NotImplementedError"]
    assert not other, f"{path.name}: errors other than the stubs' NotImplementedError:\n" + "\n".join(other)
    assert errors, f"{path.name}: no cell reached a stub (the self-checks must call the students' code)"
