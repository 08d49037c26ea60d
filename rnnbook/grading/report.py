"""What students and instructors read: feedback.md, Gradescope's results.json (Markdown
output, tracebacks indented as Python printed them), grades.csv and review.csv.
Everything shown passes through records.safe_text, so no text can fail a report; what a
notebook wrote (error messages, printed output) is shown inside code blocks or code spans,
never as Markdown; a CSV cell that a spreadsheet would read as a formula starts with '."""
import csv
import datetime
import io

from rnnbook.grading.defaults import OUTPUT_CAP
from rnnbook.grading.records import safe_text
from rnnbook.grading.scoring import fmt

EXPLAIN = ("Each check calls your function on new random inputs and compares every returned "
           "array with a reference (relative error, as in the self-checks). Cells are "
           "numbered In [1], In [2], ... as Jupyter numbers the code cells after "
           "Kernel > Restart & Run All.")


def _fence(text, indent):
    """A Markdown code block that keeps the text's own indentation."""
    body = safe_text(text).replace("```", "'''").replace("~~~", "'''").rstrip().split("\n")
    return ["", indent + "```", *(indent + line for line in body), indent + "```", ""]


def _code(text):
    """Inline code: one line of untrusted text, never read as Markdown."""
    text = safe_text(text).replace("\n", " ").replace("`", "'")
    return f"`{text}`" if text.strip() else "``"


def check_lines(check, previous=None, indent="  "):
    """Markdown lines for one check; ``previous``: the check before it (not to repeat an
    error) -- the first line is the PASS/FAIL headline."""
    ok = check.score >= check.max_score - 1e-9 and not check.rule
    head = f"- {'PASS' if ok else 'FAIL'} `{safe_text(check.name)}`: {fmt(check.score)} / {fmt(check.max_score)}"
    if check.message == "not run":
        return [head + " (not run)"]
    lines = [head]
    if check.rule:
        lines.append(f"{indent}- not written by hand, so 0 points: `{safe_text(check.function)}` {check.rule}")
    if check.not_attempted:
        lines.append(f"{indent}- not attempted: `{safe_text(check.function)}` still raises "
                     "NotImplementedError (the exercise's stub)")
    elif previous is not None and check.message and check.message == previous.message:
        lines.append(f"{indent}- the same error as above")
    elif check.message:
        first, *rest = safe_text(check.message).split("\n")
        lines.append(f"{indent}- {first if check.message == 'not run' else _code(first)}")
        if rest:
            lines += _fence("\n".join(rest), indent + "  ")
    for o in check.outputs:
        if not ok and o.message != "no result":
            lines.append(f"{indent}- `{safe_text(o.name)}`: {'pass' if o.passed else 'FAIL'}, {safe_text(o.message)}")
    return lines


def _exercise(r):
    lines = ["", f"## {r.exercise}: {fmt(r.score)} / {fmt(r.max_score)} ({r.status})", ""]
    if r.reason:
        lines += [f"**{r.status}:** {safe_text(r.reason)}", ""]
    lines += [f"- {safe_text(n)}" for n in r.notes] + ([""] if r.notes else [])
    if r.status == "missing" or (r.status == "invalid" and not r.cell_errors):
        return lines
    if r.checks and all(c.not_attempted for c in r.checks):
        lines += ["Not attempted: every graded function is still the exercise's stub.", ""]
    lines += ["### Checks", ""]
    for i, c in enumerate(r.checks):
        lines += check_lines(c, r.checks[i - 1] if i else None)
    if r.cell_errors:
        lines += ["", "### Problems while running your notebook", ""]
        for c in r.cell_errors:
            lines.append(f"- {safe_text(c['where'])}: {_code(c['type'])}")
            lines += _fence(safe_text(c["message"], 500) + ("\n\n" + c["traceback"] if c.get("traceback") else ""),
                            "  ")
    if r.review:
        lines += ["", "### Code your instructor will read", "",
                  "These lines use what could get around the grader's checks; they change no "
                  "score here, and your instructor will read them:", ""]
        lines += [f"- {safe_text(f['where'])}, line {f['line']}: {safe_text(f['what'])}" for f in r.review]
    if r.skipped_cells:
        lines += ["", "### Cells the grader did not run", ""]
        lines += [f"- {safe_text(c['where'])}: {safe_text(c['why'])}" for c in r.skipped_cells]
    if r.output_dropped_chars:
        lines += ["", f"Your notebook printed more than {OUTPUT_CAP >> 20} MB; the rest "
                  f"({r.output_dropped_chars} characters) was dropped."]
    if r.output_tail:
        lines += ["", "Last output before it stopped:"] + _fence(r.output_tail, "")
    if r.answers:
        lines += ["", "### Written answers (marked by hand)", ""]
        for a in r.answers:
            lines += [f"#### {safe_text(a['title']) or 'Answer'}", ""]
            text = safe_text(a["text"]) or "*(not answered)*"
            lines += ["> " + ln for ln in text.split("\n")] + [""]
    return lines


def feedback(student, results, ignored, isolation=""):
    """feedback.md of one student: results is a list of records.Result."""
    total = sum(r.score for r in results)
    maximum = sum(r.max_score for r in results)
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [f"# Feedback for {_code(student)}", "",
             f"Total: **{fmt(total)} / {fmt(maximum)}** points (graded by `rnnbook grade`, {when}). "
             "Written answers are marked by hand and are not in this total.", "",
             "| exercise | score | status |", "|---|---|---|"]
    for r in results:
        lines.append(f"| {r.exercise} | {fmt(r.score)} / {fmt(r.max_score)} | {r.status} |")
    if any(r.status not in ("missing", "invalid") for r in results):
        lines += ["", EXPLAIN]
    for r in results:
        lines += _exercise(r)
    if ignored:
        lines += ["", "## Files that were not graded", ""]
        lines += [f"- {_code(name)}: {safe_text(why)}" for name, why in ignored]
    return "\n".join(lines).rstrip() + "\n"


def gradescope_results(student, results, ignored, isolation=""):
    """Gradescope's results.json: score, tests[] (name, score, max_score, status, output
    in Markdown, visibility), the whole feedback as output."""
    tests = []
    for r in results:
        for i, c in enumerate(r.checks):
            passed = c.score >= c.max_score - 1e-9 and not c.rule
            if r.status in ("missing", "invalid") and c.message == r.reason:
                text = [f"**{r.status}:** {safe_text(r.reason)}"]
            else:
                text = [f"**{r.status}:** {safe_text(r.reason)}", ""] if r.reason else []
                text += [ln[2:] if ln.startswith("  ") else ln for ln in check_lines(c, None)[1:]]
            tests.append({"name": f"{r.exercise}: {safe_text(c.name)}", "score": round(c.score, 4),
                          "max_score": c.max_score, "status": "passed" if passed else "failed",
                          "output": "\n".join(text), "visibility": "visible"})
    return {"score": round(sum(r.score for r in results), 4), "tests": tests,
            "output": feedback(student, results, ignored, isolation), "output_format": "md",
            "test_output_format": "md", "stdout_visibility": "hidden",
            "extra_data": {"isolation": isolation}}


def _cell(x):
    """A CSV cell: safe text; a leading =, +, -, @, tab or CR (a spreadsheet formula) gets
    a ' before it."""
    text = safe_text(x)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def _csv(header, rows):
    text = io.StringIO()
    w = csv.writer(text, lineterminator="\n")
    w.writerow(header)
    w.writerows([[_cell(x) for x in row] for row in rows])
    return text.getvalue()


def grades_csv(rows):
    """grades.csv: student,exercise,score,max_score,status."""
    return _csv(["student", "exercise", "score", "max_score", "status"], rows)


def review_csv(rows):
    """review.csv: student,exercise,cell,line,what -- code to read (rnnbook.grading.scan)."""
    return _csv(["student", "exercise", "cell", "line", "what"], rows)
