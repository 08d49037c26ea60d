"""Compatibility alias: the grader is the package rnnbook.grading (``rnnbook grade``)."""
from rnnbook.grading import Check, HandWritten  # noqa: F401
from rnnbook.grading.cli import main  # noqa: F401
from rnnbook.grading.grader import Grader  # noqa: F401
from rnnbook.grading.notebooks import solved_submission  # noqa: F401
