"""Scoring, in the coordinator, on decoded values: each output of a check passes or fails
on its own (relative error within the check's tolerance); a hand-written check that broke
its rule scores 0."""
import numpy as np

from rnnbook.grading.records import CheckResult, Output, safe_text
from rnnbook.grading.wire import describe_value

STUB = "NotImplementedError"


def fmt(x):
    x = round(float(x), 2)
    return str(int(x)) if x == int(x) else f"{x:.2f}".rstrip("0")


def _pick(value, path):
    for step in path:
        if isinstance(step, int):
            if not isinstance(value, (tuple, list)):
                return None, f"expected a tuple, got {describe_value(value)}"
            if step >= len(value):
                return None, f"expected at least {step + 1} return values, got {len(value)}"
        elif not isinstance(value, dict):
            return None, f"expected a dict, got {describe_value(value)}"
        elif step not in value:
            return None, f"the returned dict has no key {step!r}"
        value = value[step]
    return value, None


def compare(value, expected, check, low_precision=False):
    """(passed, message) for one output: within check.tol, or check.tol32 when the check's
    inputs are float32 (a float32 result of float64 inputs gets no slack)."""
    from rnnbook.gradcheck import rel_error
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = np.asarray(value, dtype=np.float64)
    if not isinstance(value, np.ndarray):
        return False, f"got {describe_value(value)}, expected an array of shape {expected.shape}"
    if value.dtype == bool:
        return False, "got a boolean array, expected numbers"
    if value.shape != expected.shape:
        return False, f"shape {value.shape}, expected {expected.shape}"
    if not np.all(np.isfinite(value)):
        return False, "contains NaN or infinity"
    tol = check.tol32 if low_precision else check.tol
    err = rel_error(value.astype(np.float64), expected)
    low = ", float32 inputs" if low_precision and check.tol32 != check.tol else ""
    if not err <= tol:
        cast = (" (float32 results of float64 inputs get no more slack)"
                if value.dtype in (np.float32, np.float16) and not low_precision else "")
        return False, f"relative error {err:.1e} exceeds {tol:.0e}{low}{cast}"
    return True, f"relative error {err:.0e} (tolerance {tol:.0e}{low})"


def score_check(check, expected, received, rule="", low_precision=False):
    """A check's result from what the child sent: ("value", v), ("error", info) or None
    (not run); rule: why the hand-written rule was broken, if it was."""
    outputs, per = [], check.points / len(check.outputs)
    message, stub = "", False
    if received is None:
        message = "not run"
    elif received[0] == "error":
        info = received[1]
        stub = info["type"] == STUB
        message = f"{info['type']}: {info['message']}".strip()
        if info.get("traceback"):
            message += "\n" + info["traceback"].rstrip()
    for name, path in check.outputs.items():
        if received is None or received[0] == "error":
            outputs.append(Output(name, False, "no result"))
            continue
        value, problem = _pick(received[1], path)
        if problem:
            outputs.append(Output(name, False, problem))
            continue
        passed, why = compare(value, expected[name], check, low_precision)
        outputs.append(Output(name, passed, why))
    score = 0.0 if rule else per * sum(o.passed for o in outputs)
    return CheckResult(check.name, check.function, round(score, 4), check.points,
                       safe_text(message, 3000), outputs, safe_text(rule, 1000), stub)
