"""Reading notebooks (untrusted bytes), in the coordinator.

Cell numbers are the ones a student sees: In [1], In [2], ... as Jupyter numbers the
non-empty code cells after Kernel > Restart & Run All.
"""
import dataclasses
import json
import re
from pathlib import Path

from rnnbook.grading.defaults import MAX_ANSWER_CHARS, MAX_ANSWERS, MAX_CELLS, MAX_NOTEBOOK_BYTES


@dataclasses.dataclass
class Cell:
    index: int          # position among all cells
    number: int         # In [number] for a non-empty code cell, else 0
    type: str
    source: str
    tags: list
    id: str


def parse_notebook(data):
    """(cells, None) for a readable nbformat-4 notebook, else (None, reason)."""
    if len(data) > MAX_NOTEBOOK_BYTES:
        return None, f"the file is larger than {MAX_NOTEBOOK_BYTES >> 20} MB"
    try:
        nb = json.loads(data)
    except (ValueError, RecursionError):
        return None, "not a notebook: the file is not valid JSON (truncated, or not an .ipynb file?)"
    if not isinstance(nb, dict) or not isinstance(nb.get("cells"), list):
        return None, "not a Jupyter notebook: no list of cells"
    if nb.get("nbformat") != 4:
        return None, f"nbformat {str(nb.get('nbformat'))[:20]!r} is not supported (save it with Jupyter, nbformat 4)"
    if len(nb["cells"]) > MAX_CELLS:
        return None, f"the notebook has {len(nb['cells'])} cells, more than the {MAX_CELLS} graded"
    cells, number = [], 0
    for i, c in enumerate(nb["cells"]):
        if not isinstance(c, dict) or c.get("cell_type") not in ("code", "markdown", "raw"):
            return None, f"cell {i + 1} is malformed"
        source = c.get("source", "")
        if isinstance(source, list) and all(isinstance(s, str) for s in source):
            source = "".join(source)
        if not isinstance(source, str):
            return None, f"cell {i + 1} has a malformed source"
        meta = c.get("metadata") if isinstance(c.get("metadata"), dict) else {}
        tags = [t for t in meta.get("tags", []) if isinstance(t, str)] \
            if isinstance(meta.get("tags"), list) else []
        n = 0
        if c["cell_type"] == "code" and source.strip():
            number += 1
            n = number
        cells.append(Cell(i, n, c["cell_type"], source, tags,
                          c.get("id") if isinstance(c.get("id"), str) else ""))
    return cells, None


def first_line(source, width=60):
    line = next((ln.strip() for ln in source.splitlines() if ln.strip()), "")
    return line if len(line) <= width else line[:width - 1] + "…"


def where(cell):
    """How the feedback names a cell: In [5] (`def jordan_backward(...`)."""
    if cell is None:
        return "a cell"
    name = f"In [{cell.number}]" if cell.number else f"cell {cell.index + 1}"
    return f"{name} (`{first_line(cell.source).replace('`', chr(39))}`)"


def written_answers(cells, exercise):
    """The student's written answers: markdown cells tagged 'answer' (or with the id of an
    exercise's answer cell), each with the heading it answers."""
    answers, heading = [], ""
    for c in cells:
        if c.type != "markdown":
            continue
        if "answer" in c.tags or (c.id and c.id in exercise.answer_ids):
            if len(answers) < MAX_ANSWERS:
                text = c.source.strip()
                answers.append({"title": heading[:200], "cell": c.index + 1,
                                "text": "" if text in exercise.answer_prompts else text[:MAX_ANSWER_CHARS]})
        else:
            for line in c.source.splitlines():
                if re.match(r"#{1,6} ", line):
                    heading = line.lstrip("#").strip()
    return answers


def defines(source, name):
    """Whether a cell's source defines ``name`` at top level (def, class or assignment)."""
    return re.search(rf"^(def|class)\s+{re.escape(name)}\b|^{re.escape(name)}\s*=", source, re.M) is not None


def solved_submission(solution_path):
    """The exercise notebook as a student who solved everything hands it in: the solution's
    code (markers removed) and its written answers, in the exercise's cells."""
    import nbformat
    from rnnbook.assign import BEGIN, END, make_exercise
    solution = nbformat.read(str(solution_path), as_version=4)
    nb = make_exercise(solution, Path(solution_path).name)
    for s, c in zip(solution.cells, nb.cells):
        if c.cell_type == "code":
            c.source = "\n".join(ln for ln in s.source.split("\n") if ln.strip() not in (BEGIN, END))
        elif "answer" in c.metadata.get("tags", []):
            c.source = s.source
    return nb
