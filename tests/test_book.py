"""The book's own rules, checked without executing anything."""
import os
import re
from pathlib import Path

import nbformat
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8"))
EXECUTED = sorted((ROOT / "book").glob("*.ipynb")) + sorted((ROOT / "solutions").glob("*.ipynb"))
ALL = EXECUTED + sorted((ROOT / "exercises").glob("*.ipynb"))


def ids(paths):
    return [str(p.relative_to(ROOT)) for p in paths]


def macro_cell_source():
    """The \\newcommand line every notebook starts with, built from _config.yml's macros."""
    macros = CONFIG["sphinx"]["config"]["mathjax3_config"]["tex"]["macros"]
    parts = []
    for name, body in macros.items():
        if isinstance(body, list):
            parts.append(f"\\newcommand{{\\{name}}}[{body[1]}]{{{body[0]}}}")
        else:
            parts.append(f"\\newcommand{{\\{name}}}{{{body}}}")
    return "$" + " ".join(parts) + "$"


def test_toc_files_exist():
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text(encoding="utf-8"))
    files = [toc["root"]] + [c["file"] for part in toc["parts"] for c in part["chapters"]]
    for f in files:
        assert any((ROOT / (f + ext)).exists() for ext in ("", ".md", ".ipynb")), f


def test_there_are_notebooks():
    assert len(EXECUTED) >= 4 and len(ALL) >= 6


@pytest.mark.parametrize("path", ALL, ids=ids(ALL))
def test_macro_cell_matches_config(path):
    """Jupyter, Binder and Colab know the book's macros through this hidden first cell."""
    first = nbformat.read(path, as_version=4).cells[0]
    assert first.cell_type == "markdown" and first.metadata.get("tags") == ["remove-cell"]
    assert first.source == macro_cell_source(), "regenerate the macro cell from _config.yml"


@pytest.mark.parametrize("path", ALL, ids=ids(ALL))
def test_kernel_and_single_title(path):
    nb = nbformat.read(path, as_version=4)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    headings = [line for c in nb.cells if c.cell_type == "markdown"
                for line in c.source.splitlines() if re.match(r"#+ ", line)]
    assert headings and headings[0].startswith("# ")
    assert sum(h.startswith("# ") for h in headings) == 1, "one H1 title per notebook"


@pytest.mark.parametrize("path", ALL, ids=ids(ALL))
def test_code_lines_fit_the_page(path):
    """At most 80 characters: on the site (1280-px window, both sidebars) a code line
    holds about 84, and a longer one hides its end behind a scroll bar."""
    nb = nbformat.read(path, as_version=4)
    long = [f"cell {i}: {line[:60]}... ({len(line)} characters)"
            for i, c in enumerate(nb.cells) if c.cell_type == "code"
            for line in c.source.splitlines() if len(line) > 80]
    assert not long, "code lines over 80 characters:\n" + "\n".join(long)


@pytest.mark.parametrize("path", EXECUTED, ids=ids(EXECUTED))
def test_outputs_are_stored_and_clean(path):
    """nbval compares stored outputs, so every code cell must have been run, without
    errors or warnings, and no output may be excluded from the comparison."""
    nb = nbformat.read(path, as_version=4)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code" or not cell.source.strip():
            continue
        assert cell.execution_count is not None, f"cell {i} was not executed"
        assert "NBVAL" not in cell.source, f"cell {i}: nbval markers are not allowed"
        for out in cell.outputs:
            assert out.output_type != "error", f"cell {i}: stored error {out.get('ename')}"
            assert not (out.output_type == "stream" and out.name == "stderr"), \
                f"cell {i}: stored stderr output: {out.text[:200]}"


@pytest.mark.parametrize("path", sorted((ROOT / "solutions").glob("*.ipynb")),
                         ids=ids(sorted((ROOT / "solutions").glob("*.ipynb"))))
def test_solutions_have_code_and_written_tasks(path):
    nb = nbformat.read(path, as_version=4)
    assert sum("# BEGIN SOLUTION" in c.source for c in nb.cells if c.cell_type == "code") >= 2
    assert any("solution" in c.metadata.get("tags", []) for c in nb.cells if c.cell_type == "markdown")


def test_requirements_are_exact_pins():
    lines = [ln.strip() for ln in (ROOT / "requirements.txt").read_text().splitlines()
             if ln.strip() and not ln.startswith("#")]
    assert all(re.fullmatch(r"[A-Za-z0-9_.\-\[\]]+==[\w.]+", ln) for ln in lines), lines
    assert "torch==2.13.0" in lines
    assert any(re.fullmatch(r"jupyter-book==1\.[\w.]+", ln) for ln in lines)


def pins(path):
    return {ln.split("==")[0].lower(): ln.split("==")[1] for ln in
            (ROOT / path).read_text().splitlines() if "==" in ln and not ln.startswith("#")}


def test_binder_pins_match_requirements():
    main, binder = pins("requirements.txt"), pins("binder/requirements.txt")
    assert binder.pop("torch") == main.pop("torch") + "+cpu"
    assert binder == main


def test_binder_environment_is_complete():
    """With binder/ present, Binder ignores the root files: Python version, packages and the
    install of rnnbook must all come from binder/."""
    assert (ROOT / "binder" / "runtime.txt").read_text().strip() == "python-3.11"
    post_build = ROOT / "binder" / "postBuild"
    assert os.access(post_build, os.X_OK), "binder/postBuild must be executable"
    assert "pip install --no-deps -e ." in post_build.read_text()


def test_launch_buttons_configured():
    launch, html = CONFIG["launch_buttons"], CONFIG["html"]
    assert launch["binderhub_url"] == "https://mybinder.org"
    assert launch["colab_url"] == "https://colab.research.google.com"
    assert launch["thebe"] is True
    assert html["use_edit_page_button"] and html["use_issues_button"]
    assert CONFIG["repository"]["url"].startswith("https://github.com/")


def test_toc_lists_exercises_and_solutions():
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text(encoding="utf-8"))
    files = {c["file"] for part in toc["parts"] for c in part["chapters"]}
    for folder in ("exercises", "solutions"):
        for nb in (ROOT / folder).glob("*.ipynb"):
            assert f"{folder}/{nb.stem}" in files, f"{folder}/{nb.name} is not in _toc.yml"


WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))


@pytest.mark.parametrize("path", WORKFLOWS, ids=ids(WORKFLOWS))
def test_workflows_run_only_the_readme_commands(path):
    workflow = yaml.safe_load(path.read_text(encoding="utf-8"))
    runs = [step["run"].strip() for job in workflow["jobs"].values()
            for step in job.get("steps", []) if "run" in step]
    assert runs and set(runs) <= {"make book", "make test", "bash .ci/run"}, runs


# ---- the chapter pattern (README, "For the book's authors") ---------------------------

def setup_line():
    """The Colab install line every notebook's setup cell holds (repository from _config.yml)."""
    return f"%pip install --quiet git+{CONFIG['repository']['url']}"


@pytest.mark.parametrize("path", ALL, ids=ids(ALL))
def test_setup_cell_installs_the_library_and_is_hidden(path):
    """The first code cell installs rnnbook where it is missing (Colab) and imports what the
    notebook uses; on the site it is folded away (hide-cell), so the page opens with prose."""
    nb = nbformat.read(path, as_version=4)
    first = next(c for c in nb.cells if c.cell_type == "code")
    assert "hide-cell" in first.metadata.get("tags", []), "tag the setup cell hide-cell"
    assert "except ImportError:" in first.source and setup_line() in first.source, \
        f"the setup cell must install rnnbook when it is missing: {setup_line()}"


ALIGNED_BRACKET = re.compile(r"\\begin\{(aligned|gathered|split)\}\s*\[")


@pytest.mark.parametrize("path", ALL + sorted((ROOT / "book").glob("*.md")),
                         ids=ids(ALL + sorted((ROOT / "book").glob("*.md"))))
def test_no_bracket_after_begin_aligned(path):
    """MathJax (and LaTeX) read a '[' right after \\begin{aligned} as the environment's
    optional argument and drop it with what follows: the page loses the left-hand side."""
    if path.suffix == ".md":
        texts = [path.read_text(encoding="utf-8")]
    else:
        texts = [c.source for c in nbformat.read(path, as_version=4).cells
                 if c.cell_type == "markdown"]
    bad = [m.group(0) for text in texts for m in ALIGNED_BRACKET.finditer(text)]
    assert not bad, f"put {{}} before the '[': {bad}"


def image_cells(path):
    nb = nbformat.read(path, as_version=4)
    return [(i, c) for i, c in enumerate(nb.cells) if c.cell_type == "code"
            and any("image/png" in o.get("data", {}) for o in c.outputs)]


@pytest.mark.parametrize("path", EXECUTED, ids=ids(EXECUTED))
def test_figures_are_numbered_captioned_crisp_and_described(path):
    """Every figure: a caption and a name (so Sphinx numbers it), alt text that says what
    it shows, and a 2x PNG (retina: the output's metadata halves its displayed size)."""
    for i, cell in image_cells(path):
        meta = cell.metadata.get("mystnb", {})
        fig, img = meta.get("figure", {}), meta.get("image", {})
        assert fig.get("caption") and fig.get("name"), f"cell {i}: mystnb.figure caption/name"
        assert len(img.get("alt", "")) >= 40, f"cell {i}: mystnb.image.alt, a sentence or more"
        for out in cell.outputs:
            if "image/png" in out.get("data", {}):
                assert out.get("metadata", {}).get("image/png", {}).get("width"), \
                    f"cell {i}: not a 2x PNG (call rnnbook.notebook.setup() first)"


@pytest.mark.parametrize("path", EXECUTED, ids=ids(EXECUTED))
def test_printed_output_fits_and_is_one_box(path):
    """A cell's printed text shows as one box on the site (nb_merge_streams; the kernel may
    deliver one print in several pieces, which nbval joins too), so the text must not be
    broken up by a figure in between, and no printed line is longer than 80 characters,
    so the site never wraps it in the middle of a number or word."""
    assert CONFIG["sphinx"]["config"].get("nb_merge_streams") is True
    nb = nbformat.read(path, as_version=4)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        kinds = [o.output_type for o in cell.outputs]
        runs = [k for j, k in enumerate(kinds) if j == 0 or k != kinds[j - 1]]
        assert runs.count("stream") <= 1, \
            f"cell {i}: printed text before and after a figure makes two boxes; print once"
        text = "".join(o.text for o in cell.outputs if o.output_type == "stream")
        long = [line for line in text.splitlines() if len(line) > 80]
        assert not long, f"cell {i}: printed lines over 80 characters: {long[:3]}"


DISPLAYS = re.compile(r"\$\$(.+?)\$\$|\\begin\{equation\*\}(.+?)\\end\{equation\*\}", re.S)
NNDL_DOUBLE_SUMS = re.compile(r"\\tag\{6\.(39|40|41)\}")


@pytest.mark.parametrize("path", ALL + sorted((ROOT / "book").glob("*.md")),
                         ids=ids(ALL + sorted((ROOT / "book").glob("*.md"))))
def test_nndl_numbers_only_on_the_double_sums(path):
    """NNDL's (6.39)-(6.41) are double sums over t and k <= t. A display tagged with one of
    these numbers must be that double sum; the book's single-sum forms carry the book's own
    numbers (chapter 01's (1.10))."""
    if path.suffix == ".md":
        texts = [path.read_text(encoding="utf-8")]
    else:
        texts = [c.source for c in nbformat.read(path, as_version=4).cells
                 if c.cell_type == "markdown"]
    bad = [m.group(0)[:120] for text in texts for m in DISPLAYS.finditer(text)
           if NNDL_DOUBLE_SUMS.search(m.group(0)) and m.group(0).count("\\sum") < 2]
    assert not bad, "an NNDL number on a formula that is not its double sum:\n" + "\n".join(bad)
