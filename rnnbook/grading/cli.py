"""The command line of ``rnnbook grade``.

    rnnbook grade SUBMISSIONS --out OUT [--jobs N] [--timeout S] [--memory-mb MB]
                  [--disk-mb MB] [--force] [--isolation auto|none] [--allow-unisolated]
                  [--dangerously-run-as-grader]

SUBMISSIONS/<student>/<notebook>.ipynb, where <notebook> is the file name of an exercise
in exercises/. OUT receives grades.csv (student,exercise,score,max_score,status),
review.csv (code flagged for a human to read) and, in OUT/students/<student>/, each
student's results.json (Gradescope's schema) and feedback.md.
"""
import argparse
import sys
from pathlib import Path

from rnnbook.grading.checks import UsageError
from rnnbook.grading.defaults import DISK_MB, MEMORY_MB, STATUSES, TIMEOUT_S
from rnnbook.grading.grader import Grader


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="rnnbook grade", description="Grade students' exercise notebooks "
        "(SUBMISSIONS/<student>/<exercise>.ipynb) into OUT.",
        epilog="Exit status 0 when grading ran (whatever the scores), 2 for a usage mistake "
               "(or a refused unisolated run). Set RNNBOOK_GRADE_SEED=<integer> to reproduce "
               "the random inputs of a run.")
    parser.add_argument("submissions", help="folder of <student>/<notebook>.ipynb")
    parser.add_argument("--out", required=True, help="folder for grades.csv and per-student results")
    parser.add_argument("--jobs", type=int, default=None,
                        help="notebooks graded at once (default: the number of cores)")
    parser.add_argument("--timeout", type=float, default=TIMEOUT_S,
                        help=f"wall-clock seconds per notebook (default {TIMEOUT_S:g})")
    parser.add_argument("--memory-mb", type=int, default=MEMORY_MB,
                        help=f"memory per notebook beyond the pre-imported libraries (default {MEMORY_MB})")
    parser.add_argument("--disk-mb", type=int, default=DISK_MB,
                        help=f"size of each notebook's working folder, and of its largest file (default {DISK_MB})")
    parser.add_argument("--force", action="store_true", help="regrade notebooks already graded")
    parser.add_argument("--exercises", default=None, help="exercise notebooks (default: exercises/)")
    parser.add_argument("--checks", default=None,
                        help="folder of <exercise>.checks.py (default: solutions/)")
    parser.add_argument("--isolation", choices=["auto", "none"], default="auto",
                        help="auto: namespaces through bubblewrap where the host allows them; "
                             "none: a plain process per notebook (for testing)")
    parser.add_argument("--allow-unisolated", action="store_true",
                        help="grade several students even when notebooks cannot be isolated")
    parser.add_argument("--dangerously-run-as-grader", action="store_true",
                        help="DANGEROUS: where notebooks can be neither isolated nor run as a user "
                             "of their own, run them as the grader's user (root, if it is root): "
                             "a notebook can then read and change anything that user can, the "
                             "grades included")
    args = parser.parse_args(argv)
    _erase_arguments()
    try:
        grader = Grader(args.submissions, args.out, jobs=args.jobs, timeout=args.timeout,
                        memory_mb=args.memory_mb, disk_mb=args.disk_mb, force=args.force,
                        exercises_dir=args.exercises, checks_dir=args.checks,
                        isolation=args.isolation, allow_unisolated=args.allow_unisolated,
                        as_grader=args.dangerously_run_as_grader)
        summary = grader.run()
    except UsageError as e:
        print(f"rnnbook grade: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("rnnbook grade: interrupted; rerun the same command to finish "
              "(finished grades are kept)", file=sys.stderr)
        return 130
    except RuntimeError as e:                     # the sandbox could not start
        print(f"rnnbook grade: {e}", file=sys.stderr)
        return 1
    s = summary["statuses"]
    print(f"rnnbook grade: {summary['students']} students; graded {summary['graded_now']} "
          f"notebooks in {summary['seconds']:.1f} s"
          + (f" (isolation: {summary['isolation']})" if summary["isolation"] else "")
          + (f", {summary['reused']} already graded (--force regrades them)" if summary["reused"] else "")
          + (": " + ", ".join(f"{k} {s[k]}" for k in STATUSES if s.get(k)) if s else ""))
    if summary.get("flagged"):
        print(f"rnnbook grade: {summary['flagged']} notebooks use code that can defeat the "
              f"hand-written rule; read {Path(args.out) / 'review.csv'}")
    print(f"rnnbook grade: wrote {Path(args.out) / 'grades.csv'} and each student's "
          f"results.json and feedback.md (in {Path(args.out) / 'students'})")
    return 0


def _erase_arguments():
    """Blank this process's arguments after `grade` in what /proc/<pid>/cmdline shows
    (readable by every user): a notebook without namespaces must not learn OUT from it."""
    import ctypes
    try:
        with open("/proc/self/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        start, end = int(fields[45]), int(fields[46])       # arg_start, arg_end
        with open("/proc/self/cmdline", "rb") as f:
            data = f.read()
    except (OSError, ValueError, IndexError):
        return
    keep = data.find(b"\0grade\0")
    if keep < 0:                        # not `rnnbook grade ...` (a test calling main())
        return
    keep += len(b"\0grade\0")
    if 0 < keep < len(data) and start + len(data) <= end + 1:
        ctypes.memset(start + keep, 0, len(data) - keep)


if __name__ == "__main__":
    sys.exit(main())
