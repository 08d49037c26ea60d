"""Numerical checks used by the book, the exercises' self-checks and the tests.

    numerical_gradient(f, x)        central differences
    rel_error(a, b)                 max |a - b| / max(max |a|, max |b|)
    check(name, actual, expected)   prints PASS or FAIL, and on FAIL what looks wrong
    with all_checks() as c:         runs every c.check(...) of a cell, then stops on the
        c.check(...)                first failure, so one run shows everything that fails;
                                    prints its lines together at the end (one output box)
"""
import sys
import textwrap

import numpy as np

LINE = 78   # a printed line longer than this is split before "relative error"


def numerical_gradient(f, x, eps=1e-6):
    """Central differences: d f / d x[i] ~ (f(x + eps e_i) - f(x - eps e_i)) / (2 eps).

    f -- function of no arguments returning a scalar; it must read ``x``,
         which is perturbed in place and restored afterwards
    x -- float64 ndarray of any shape
    Returns an array of x's shape.  Truncation error is O(eps^2).
    """
    if not isinstance(x, np.ndarray) or x.dtype != np.float64:
        raise ValueError("x must be a float64 numpy array (perturbed in place), "
                         f"got {type(x).__name__} {getattr(x, 'dtype', '')}")
    grad = np.zeros_like(x)
    it = np.nditer(x, flags=["multi_index"])
    for _ in it:
        i = it.multi_index
        old = x[i]
        x[i] = old + eps
        f_plus = float(f())
        x[i] = old - eps
        f_minus = float(f())
        x[i] = old
        grad[i] = (f_plus - f_minus) / (2 * eps)
    return grad


def rel_error(a, b):
    """max |a - b| / max(max |a|, max |b|): relative error on the scale of the arrays.

    0 when both are zero. Shapes must agree (a clear ValueError otherwise).
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {a.shape} vs {b.shape}")
    scale = max(np.max(np.abs(a), initial=0.0), np.max(np.abs(b), initial=0.0))
    if scale == 0.0:
        return 0.0
    return float(np.max(np.abs(a - b)) / scale)


def check(name, actual, expected, tol=1e-7, axes=None):
    """Print a PASS/FAIL line with the relative error; on FAIL also print what looks
    wrong (see ``diagnose``) and raise AssertionError.

    The line reads ``PASS name: relative error 3e-11 (tolerance 1e-07)``.
    axes -- optional names of actual's axes, e.g. ("t", "n", "d"), used to name the
            first wrong entry and the wrong time steps.
    Returns the relative error.
    """
    ok, err, message = _compare(name, actual, expected, tol, axes)
    if not ok:
        raise AssertionError(message)
    return err


class all_checks:
    """Run every check of a cell, then fail once, listing all that failed.

        with all_checks() as c:
            c.check("dU", dU, dU_ref, axes=("i", "j"))
            c.check("dW", dW, dW_ref)
            c.note("any other line to print with the checks")

    The lines (PASS/FAIL, the hints, the notes) are collected and printed together when
    the block ends, also when it ends with an exception, so a notebook cell shows them in
    one output box. After a failure the last line names the first failing check.
    """

    def __init__(self):
        self.failed = []
        self.lines = []

    def __enter__(self):
        return self

    def check(self, name, actual, expected, tol=1e-7, axes=None):
        """Like ``check``, but a failure is recorded and raised when the block ends."""
        ok, err, message = _compare(name, actual, expected, tol, axes, self.lines.append)
        if not ok:
            self.failed.append(name)
        return err

    def note(self, text):
        """Print ``text`` with the checks' lines (in order), when the block ends."""
        self.lines.append(str(text))

    def __exit__(self, kind, value, traceback):
        if kind is None and self.failed:
            self.lines += textwrap.wrap(f"{len(self.failed)} of the checks above failed; "
                                        f"start with the first: {self.failed[0]}", LINE)
        if self.lines:
            _print("\n".join(self.lines))
            self.lines = []
        if kind is None and self.failed:
            raise AssertionError(f"{len(self.failed)} check(s) failed: "
                                 + "; ".join(self.failed))
        return False


def _print(text):
    """print(text) in one write, so a notebook shows it as one output (print writes the
    text and the newline separately, and the kernel may send them as two outputs)."""
    sys.stdout.write(text + "\n")


def _compare(name, actual, expected, tol, axes, emit=_print):
    if actual is None:
        emit(f"FAIL {name}: got None (did the function return its result?)")
        return False, float("nan"), f"FAIL {name}: got None"
    try:
        a = np.asarray(actual, dtype=np.float64)
    except (TypeError, ValueError) as e:
        emit(f"FAIL {name}: not an array of numbers ({e})")
        return False, float("nan"), f"FAIL {name}: not an array of numbers"
    b = np.asarray(expected, dtype=np.float64)
    if a.shape != b.shape:
        emit(f"FAIL {name}: shape {a.shape}, expected {b.shape}")
        if a.shape == b.shape[::-1]:
            emit("     (the expected shape reversed: a transposed matrix?)")
        return False, float("nan"), f"FAIL {name}: shape {a.shape}, expected {b.shape}"
    err = rel_error(a, b)
    ok = err <= tol  # NaN compares False, so NaN fails
    line = f"{'PASS' if ok else 'FAIL'} {name}: relative error {err:.0e} (tolerance {tol:.0e})"
    if len(line) > LINE:
        line = (f"{'PASS' if ok else 'FAIL'} {name}:\n"
                f"     relative error {err:.0e} (tolerance {tol:.0e})")
    emit(line)
    if not ok:
        for hint in diagnose(a, b, tol, axes):
            for part in textwrap.wrap(hint, LINE - 5):   # lines of at most LINE
                emit("     " + part)
    return ok, err, f"FAIL {name}: relative error {err:.1e} exceeds {tol:.0e}"


def diagnose(actual, expected, tol, axes=None):
    """Hints on why ``actual`` differs from ``expected`` (same shape): the first wrong
    entry, the wrong time steps, and the usual mistakes behind the error's size."""
    a, b = np.asarray(actual, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    hints = []
    if not np.all(np.isfinite(a)):
        where = tuple(int(i) for i in np.argwhere(~np.isfinite(a))[0])
        return [f"your result has NaN or infinity, first at index {_where(where, axes)}"]
    scale = max(np.max(np.abs(a), initial=0.0), np.max(np.abs(b), initial=0.0))
    if not np.any(a):
        return ["your result is all zeros: is the computation (or the accumulation) missing?"]
    if a.ndim == 2 and a.shape[0] == a.shape[1] and a.shape[0] > 1 \
            and rel_error(a.T, b) <= tol:
        return ["it equals the expected result transposed: an outer product the wrong "
                "way round (h delta^T for delta h^T), or U for U^T?"]
    if rel_error(-a, b) <= tol:
        return ["it equals the expected result with the opposite sign"]
    factor = float(np.vdot(a, b) / np.vdot(a, a))
    if factor and rel_error(factor * a, b) <= max(tol, 1e-12):
        times = 1 / factor   # actual = times * expected
        if abs(times - 1) < 1e-3:
            return [f"it is the expected result times {times:.7g}: a tiny constant factor, "
                    "as from a missing or extra guard term (the 1e-6 of norm + 1e-6?)"]
        size = f"{times:.4g} times" if abs(times) >= 1 else f"1/{1 / times:.4g} of"
        return [f"it is {size} the expected result: a missing or extra constant factor "
                "(1/N, 1/2, 2)?"]
    wrong = np.abs(a - b) > tol * scale
    first = tuple(int(i) for i in np.argwhere(wrong)[0])
    hints.append(f"first wrong entry at index {_where(first, axes)}: got {a[first]:.6g}, "
                 f"expected {b[first]:.6g}")
    if axes and a.ndim > 1 and str(axes[0]).lower().startswith("t"):
        bad = [t for t in range(a.shape[0]) if wrong[t].any()]
        hints.append(f"wrong at {axes[0]} = {_ranges(bad)} of 0..{a.shape[0] - 1}; "
                     "a backward sweep is usually wrong from the last of these down")
    err = rel_error(a, b)
    if err > 0.3:
        hints.append("a relative error near 1 is not rounding: usually a missing term "
                     "(the path through the next step?), a transposed matrix or a "
                     "wrong index")
    elif err < 1e-3:
        hints.append("small but above the tolerance: float32 arithmetic somewhere, or an "
                     "approximation (a finite-difference step) where an exact value is due")
    return hints


def _where(index, axes):
    if axes and len(axes) == len(index):
        return f"{index} ({', '.join(f'{n}={i}' for n, i in zip(axes, index))})"
    return str(index)


def _ranges(values):
    parts, start = [], None
    for i, v in enumerate(values):
        if start is None:
            start = v
        if i + 1 == len(values) or values[i + 1] != v + 1:
            parts.append(str(start) if start == v else f"{start}..{v}")
            start = None
    return ", ".join(parts)
