"""A Gradescope autograder for the exercises.

    rnnbook autograder --out autograder.zip [--exercise NAME ...] [--timeout S] [--memory-mb MB]
        builds the bundle to upload to a Gradescope programming assignment
    python -m rnnbook.grading.autograder run [--root /autograder]
        what the bundle's run_autograder does for each submission

The bundle holds setup.sh (installs Python packages from the pinned, CPU-only
requirements into /autograder/venv), run_autograder, the rnnbook package, the exercise
notebooks and their checks (solutions/<exercise>.checks.py, without the solution notebooks).
run_autograder grades the notebooks found in /autograder/submission with ``rnnbook grade``
and writes /autograder/results/results.json. AUTOGRADER_ROOT (default /autograder) and
RNNBOOK_PYTHON (default $AUTOGRADER_ROOT/venv/bin/python) make it testable elsewhere.
"""
import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import traceback
import zipfile
from pathlib import Path

from rnnbook.grading.defaults import MEMORY_MB, STUDENTS_DIR, TIMEOUT_S

ROOT = Path(__file__).resolve().parents[2]
CONFIG = "rnnbook-autograder.json"
PACKAGES = ("torch", "numpy", "matplotlib", "nbformat", "tqdm")   # what grading imports

SETUP_SH = """#!/usr/bin/env bash
# Gradescope runs this once, as root, in /autograder/source, when it builds the image.
# Choose the Ubuntu 24.04 base image (Python 3.12); numpy 2.4 needs Python >= 3.11.
set -euo pipefail
cd "$(dirname "$0")"
PY=""
for candidate in python3.13 python3.12 python3.11 python3; do
    if command -v "$candidate" >/dev/null &&
       "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
        PY="$candidate"; break
    fi
done
if [ -z "$PY" ]; then
    echo "setup.sh: no Python >= 3.11 on this image; pick Gradescope's Ubuntu 24.04 base image" >&2
    exit 1
fi
if ! "$PY" -m venv /autograder/venv; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$(basename "$PY")-venv" ||
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv
    "$PY" -m venv /autograder/venv
fi
# torch comes from PyTorch's CPU-only index (see requirements.txt): no CUDA download.
/autograder/venv/bin/python -m pip install --no-cache-dir --quiet -r requirements.txt
/autograder/venv/bin/python -c "import numpy, torch, matplotlib, nbformat, tqdm"
"""

RUN_AUTOGRADER = """#!/usr/bin/env bash
# Gradescope runs this for every submission: grade /autograder/submission into
# /autograder/results/results.json. AUTOGRADER_ROOT and RNNBOOK_PYTHON override the paths.
set -uo pipefail
ROOT="${AUTOGRADER_ROOT:-/autograder}"
PYTHON="${RNNBOOK_PYTHON:-$ROOT/venv/bin/python}"
export PYTHONPATH="$ROOT/source"
exec "$PYTHON" -m rnnbook.grading.autograder run --root "$ROOT"
"""


def requirements():
    """The CPU-only pins of binder/requirements.txt for the packages grading imports."""
    lines = (ROOT / "binder" / "requirements.txt").read_text().splitlines()
    out = ["# Pins of the book's binder/requirements.txt (CPU-only torch) that grading needs."]
    out += [ln for ln in lines if ln.startswith("--extra-index-url")]
    for name in PACKAGES:
        pin = [ln for ln in lines if ln.split("==")[0].strip().lower() == name]
        if len(pin) != 1:
            raise ValueError(f"binder/requirements.txt has no single pin for {name}")
        out.append(pin[0].strip())
    return "\n".join(out) + "\n"


def build(out, exercises=None, timeout=TIMEOUT_S, memory_mb=MEMORY_MB, exercises_dir=None,
          checks_dir=None):
    """Write the Gradescope bundle to ``out``; returns the exercises it grades."""
    exercises_dir = Path(exercises_dir or ROOT / "exercises")
    checks_dir = Path(checks_dir or ROOT / "solutions")
    available = sorted(p.stem for p in exercises_dir.glob("*.ipynb"))
    chosen = list(exercises or available)
    unknown = sorted(set(chosen) - set(available))
    if unknown or not chosen:
        raise ValueError(f"unknown exercise(s) {unknown}; the exercises are {available}")
    from rnnbook.grading.checks import load_checks
    for name in chosen:
        load_checks(checks_dir / f"{name}.checks.py")          # a broken checks file fails here
    files = {"setup.sh": SETUP_SH, "run_autograder": RUN_AUTOGRADER, "requirements.txt": requirements(),
             CONFIG: json.dumps({"exercises": chosen, "timeout": timeout, "memory_mb": memory_mb}, indent=1)}
    package = Path(__file__).resolve().parents[1]
    for py in sorted(package.rglob("*.py")):
        if "__pycache__" not in py.parts:
            files[f"rnnbook/{py.relative_to(package).as_posix()}"] = py.read_bytes()
    for name in chosen:
        files[f"exercises/{name}.ipynb"] = (exercises_dir / f"{name}.ipynb").read_bytes()
        files[f"solutions/{name}.checks.py"] = (checks_dir / f"{name}.checks.py").read_bytes()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in files.items():
            info = zipfile.ZipInfo(name, date_time=(2026, 1, 1, 0, 0, 0))
            info.external_attr = (0o755 if name in ("setup.sh", "run_autograder") else 0o644) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(info, data)
    os.replace(tmp, out)
    return chosen


def run(root):
    """Grade ROOT/submission into ROOT/results/results.json (Gradescope's layout)."""
    root = Path(root)
    source = root / "source"
    results_path = root / "results" / "results.json"
    results_path.parent.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="rnnbook-autograder-"))
    try:
        config = json.loads((source / CONFIG).read_text())
        subs = work / "submissions" / "submission"
        subs.mkdir(parents=True)
        notes = []
        upload = root / "submission"
        for path in sorted(upload.rglob("*.ipynb"), key=lambda p: (len(p.parts), str(p))):
            rel = path.relative_to(upload)
            if any(part.startswith(".") or part == "__MACOSX" for part in rel.parts):
                continue
            if any((upload / Path(*rel.parts[:i])).is_symlink() for i in range(1, len(rel.parts))):
                notes.append(f"ignored {rel}: inside a symbolic link")
                continue
            if (subs / path.name).exists() or (subs / path.name).is_symlink():
                notes.append(f"ignored {rel}: another file has that name")
                continue
            shutil.copyfile(path, subs / path.name, follow_symlinks=False)   # a link stays one
        exercises = work / "exercises"
        exercises.mkdir()
        for name in config["exercises"]:
            shutil.copyfile(source / "exercises" / f"{name}.ipynb", exercises / f"{name}.ipynb")
        if os.geteuid() == 0:
            os.chmod(source, 0o700)       # notebooks that run as another user cannot read it
        from rnnbook.grading.grader import Grader
        grader = Grader(work / "submissions", work / "out", timeout=config["timeout"],
                        memory_mb=config["memory_mb"], exercises_dir=exercises,
                        checks_dir=source / "solutions", progress=False, log=print)
        grader.run()
        results = json.loads((work / "out" / STUDENTS_DIR / "submission" / "results.json").read_text())
        if notes:
            results["output"] = "\n".join(f"- {n}" for n in notes) + "\n\n" + results["output"]
        results["execution_time"] = round(time.monotonic() - start, 1)
        status = 0
    except Exception:
        traceback.print_exc()          # the autograder's log, which instructors see
        results = {"score": 0, "tests": [], "output": "The autograder failed; your instructor "
                   "has been shown the error. Your submission was not graded.",
                   "execution_time": round(time.monotonic() - start, 1)}
        status = 1
    finally:
        shutil.rmtree(work, ignore_errors=True)
    tmp = results_path.with_name(".results.json.tmp")
    tmp.write_text(json.dumps(results, indent=1))
    os.replace(tmp, results_path)
    return status


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["run"]:
        p = argparse.ArgumentParser(prog="python -m rnnbook.grading.autograder run",
                                    description="Grade Gradescope's ROOT/submission (run_autograder).")
        p.add_argument("--root", default=os.environ.get("AUTOGRADER_ROOT", "/autograder"))
        return run(p.parse_args(argv[1:]).root)
    p = argparse.ArgumentParser(prog="rnnbook autograder", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="the zip file to write, e.g. autograder.zip")
    p.add_argument("--exercise", action="append", metavar="NAME",
                   help="an exercise to grade (repeatable; default: every notebook in exercises/)")
    p.add_argument("--timeout", type=float, default=TIMEOUT_S,
                   help=f"seconds per notebook (default {TIMEOUT_S:g})")
    p.add_argument("--memory-mb", type=int, default=MEMORY_MB,
                   help=f"memory per notebook (default {MEMORY_MB})")
    args = p.parse_args(argv)
    try:
        chosen = build(args.out, args.exercise, args.timeout, args.memory_mb)
    except Exception as e:       # a missing or broken file of the course: the instructor's to fix
        print(f"rnnbook autograder: {e}", file=sys.stderr)
        return 2
    print(f"rnnbook autograder: wrote {args.out} (grades {', '.join(chosen)}); upload it to a "
          "Gradescope programming assignment with the Ubuntu 24.04 base image")
    return 0


if __name__ == "__main__":
    sys.exit(main())
