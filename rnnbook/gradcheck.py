"""Numerical checks used by the book, the exercises' self-checks and the tests."""
import numpy as np


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


def check(name, actual, expected, tol=1e-7):
    """Print a PASS/FAIL line with the relative error; raise AssertionError on FAIL.

    The line reads ``PASS name: relative error 3e-11 (tolerance 1e-07)``.
    Returns the relative error.
    """
    if actual is None:
        raise AssertionError(f"FAIL {name}: got None (did the function return its result?)")
    try:
        err = rel_error(actual, expected)
    except ValueError as e:
        raise AssertionError(f"FAIL {name}: {e}") from None
    ok = err <= tol  # NaN compares False, so NaN fails
    print(f"{'PASS' if ok else 'FAIL'} {name}: relative error {err:.0e} (tolerance {tol:.0e})")
    if not ok:
        raise AssertionError(f"FAIL {name}: relative error {err:.1e} exceeds {tol:.0e}")
    return err
