"""The course tools: grading students' notebooks. Checks files import ``Check`` from here:

    from rnnbook.grading import Check
"""
from rnnbook.grade import Check  # noqa: F401
