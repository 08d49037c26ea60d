"""Mark the answers on the solution pages, apart from the questions.

The master notebooks in solutions/ hold two kinds of answers (see rnnbook/assign.py):
Markdown cells tagged `solution` (written answers) and code between the lines
`# BEGIN SOLUTION` and `# END SOLUTION`. On the site both look like the rest of the page
unless marked. This extension, for notebooks under solutions/ only:

- wraps each Markdown cell tagged `solution` in an admonition titled "Solution" with the
  class `rnnbook-solution` (done on the notebook's text before MyST-NB parses it, because
  MyST-NB does not keep a Markdown cell's tags; the notebook file is not changed, so
  Jupyter, Colab and `rnnbook assign` see the cell as written);
- gives each code cell that holds a solution region the class `rnnbook-solution-code` and
  highlights the region's lines (Pygments' hl_lines, as `:emphasize-lines:` does).

book/_static/book.css styles both. tests/test_site.py checks that every answer of a
solution page is marked.
"""
import json
import re

from docutils import nodes

SOLUTION_TAG = "solution"
BEGIN, END = "# BEGIN SOLUTION", "# END SOLUTION"
FOLDER = "solutions/"
COLONS = re.compile(r"^\s*(:{3,})", re.M)


def _wrap(markdown):
    """The cell's Markdown inside a colon-fenced admonition (longer fence than any inside)."""
    inner = max((len(m.group(1)) for m in COLONS.finditer(markdown)), default=2)
    fence = ":" * max(3, inner + 1)
    return (f"{fence}{{admonition}} Solution\n:class: rnnbook-solution\n\n"
            f"{markdown.strip()}\n{fence}\n")


def _mark_markdown(app, docname, source):
    if not docname.startswith(FOLDER) or not str(app.env.doc2path(docname)).endswith(".ipynb"):
        return
    nb = json.loads(source[0])
    changed = False
    for cell in nb.get("cells", []):
        tags = cell.get("metadata", {}).get("tags", [])
        if cell.get("cell_type") == "markdown" and SOLUTION_TAG in tags:
            text = cell["source"] if isinstance(cell["source"], str) else "".join(cell["source"])
            cell["source"] = _wrap(text)
            changed = True
    if changed:
        source[0] = json.dumps(nb)


def solution_lines(code):
    """1-based numbers of the lines from each BEGIN marker to its END marker, inclusive."""
    lines, inside = [], False
    for n, line in enumerate(code.split("\n"), 1):
        marker = line.strip()
        if marker == BEGIN:
            inside = True
        if inside:
            lines.append(n)
        if marker == END:
            inside = False
    return lines


def _mark_code(app, doctree):
    if not app.env.docname.startswith(FOLDER):
        return
    for cell in doctree.findall(nodes.container):
        if "cell" not in cell["classes"]:
            continue
        for block in cell.findall(nodes.literal_block):
            if "cell_input" not in block.parent.get("classes", []):
                continue   # printed output is never marked
            hl = solution_lines(block.rawsource or block.astext())
            if hl:
                args = dict(block.get("highlight_args", {}))
                args["hl_lines"] = hl
                block["highlight_args"] = args
                if "rnnbook-solution-code" not in cell["classes"]:
                    cell["classes"].append("rnnbook-solution-code")


def setup(app):
    app.connect("source-read", _mark_markdown)
    app.connect("doctree-read", _mark_code)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
