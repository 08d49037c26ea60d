"""Grading students' exercise notebooks (``rnnbook grade``, ``rnnbook autograder``).

Checks files import the checks API from here, the one stable import:

    from rnnbook.grading import Check, HandWritten

Modules, one job each:

- ``checks``      the checks API (Check, HandWritten), loading checks, drawing inputs
- ``notebooks``   reading a notebook (untrusted), cell numbers, written answers
- ``inventory``   finding each student's notebooks (symbolic links, hidden folders, copies)
- ``sandbox``     starting the fork server, inside bubblewrap where the host allows it
- ``stage``       what the sandbox sees: the students' library, the grader's sandbox side
                  kept apart, a private copy of the interpreter (without namespaces)
- ``zygote``, ``child``, ``runner``, ``confine``, ``monitor``, ``wire``
                  what runs in the sandbox: the fork server, one confined process per
                  notebook, the hand-written rule, the wire format
- ``pool``        running the jobs: deadlines, retries, reading what they send
- ``job``         one notebook's job record, and from what it sent to its result
- ``scoring``     comparing return values with the references
- ``scan``        a static scan of each notebook's code for a human to review
- ``records``     the typed result record, safe text, atomic writes
- ``report``      grades.csv, review.csv, feedback.md, Gradescope's results.json
- ``grader``      one grading run from start to end; ``cli`` its command line
- ``autograder``  the Gradescope bundle
- ``defaults``    every default and cap, declared once
"""
from rnnbook.grading.checks import Check, HandWritten  # noqa: F401
