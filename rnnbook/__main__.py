"""Command line: ``rnnbook assign``, ``rnnbook grade``, ``rnnbook autograder`` and
``rnnbook bench`` (also ``python -m rnnbook ...``)."""
import argparse
import sys


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    # grade and autograder parse their own options (so that `rnnbook grade -h` is theirs)
    if argv and argv[0] == "grade":
        from rnnbook.grading.cli import main as grade_main
        return grade_main(argv[1:])
    if argv and argv[0] == "autograder":
        from rnnbook.grading.autograder import main as autograder_main
        return autograder_main(argv[1:])
    parser = argparse.ArgumentParser(prog="rnnbook", description="Course tools of the rnnbook textbook.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("assign", help="write exercises/ from solutions/")
    p.add_argument("--solutions", default="solutions", help="folder of master notebooks")
    p.add_argument("--exercises", default="exercises", help="folder to write")
    p.add_argument("--check", action="store_true",
                   help="write nothing; exit 1 if exercises/ is out of date")
    sub.add_parser("grade", help="grade students' notebooks (see rnnbook grade -h)")
    sub.add_parser("autograder", help="build a Gradescope autograder (see rnnbook autograder -h)")
    b = sub.add_parser("bench", help="speed against PyTorch (see python -m rnnbook.bench -h)")
    b.add_argument("args", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)

    if args.command == "bench":
        from rnnbook import bench
        return bench.main(args.args)
    from rnnbook.assign import assign
    try:
        changed = assign(args.solutions, args.exercises, check=args.check)
    except (ValueError, OSError) as e:
        print(f"rnnbook assign: {e}", file=sys.stderr)
        return 2
    verb = "out of date" if args.check else "written"
    for path in changed:
        print(f"{verb}: {path}")
    if not changed:
        print(f"{args.exercises}/ is up to date")
    return 1 if (args.check and changed) else 0


if __name__ == "__main__":
    sys.exit(main())
