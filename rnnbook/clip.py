"""Gradient clipping over a dict of arrays (chapter 03). Pure functions: the input dict
and its arrays are never modified; each function returns new arrays of the same dtypes.

    clipped, total_norm = clip_grad_norm(grads, max_norm)        = torch.nn.utils.clip_grad_norm_
    clipped = clip_grad_value(grads, clip_value)                  = torch.nn.utils.clip_grad_value_
    clipped, norms = clip_grad_norm_per_parameter(grads, max_norm)   Paddle's ClipGradByNorm
    global_norm(grads)                                             ||g|| over all parameters

Norm clipping is Algorithm 1 of Pascanu, Mikolov and Bengio (2013): with g the gradient
of ALL parameters stacked into one vector and a threshold tau (``max_norm``),

    if ||g|| > tau:  g <- (tau / ||g||) g                                    (book 3.11)

which shortens g and keeps its direction. The book lists it in five steps: (1) choose
tau, (2) compute ||g||, (3) compare, (4) rescale, (5) update; ``clip_grad_norm`` does
steps 2-4 (its comments say which), the optimizer step 5. Like PyTorch, ``clip_grad_norm`` multiplies
every gradient by min(1, max_norm / (total_norm + 1e-6)): the 1e-6 guards against a
division by zero, and makes the clipped norm a hair below max_norm (by the factor
total_norm / (total_norm + 1e-6)); it also scales, by a hair, a gradient whose norm is
within 1e-6 below max_norm. As in PyTorch, norms and factor are computed in the
gradients' dtype: float32 gradients get a float32 norm, which overflows to inf (and
the gradients are multiplied by 0) when their squares overflow, as torch's does.

Value clipping clamps every entry to [-clip_value, clip_value] (book 3.12); it changes the
direction of g whenever some entries are clamped and others are not.

Per-parameter clipping applies the norm test to each array on its own (what the NNDL
practice book's experiments use, through Paddle's ``ClipGradByNorm``): each array with
norm above max_norm is scaled to norm max_norm exactly (no 1e-6), the others are kept.
The stacked gradient can then have norm up to sqrt(#arrays) * max_norm, and its
direction changes when some arrays are scaled and others are not.

Non-finite gradients are not an error, as in PyTorch's default: ``clip_grad_norm``
returns a non-finite ``total_norm`` (inf or NaN), and the gradients it returns are what
PyTorch leaves (finite entries times 0 when the norm is inf, NaN where an entry is
non-finite or the norm is NaN); a training loop must test ``total_norm`` and skip or
stop (``rnnbook.train.fit`` stops). ``error_if_nonfinite=True`` raises ValueError
instead. ``clip_grad_value`` maps +-inf to +-clip_value and keeps NaN (as torch.clamp).

Bad input raises ValueError naming the argument: grads not a dict, empty, or holding
something other than real arrays; a threshold that is negative, NaN, infinite or not a
number.
"""
import math

import numpy as np

from rnnbook import _validate

EPS = 1e-6   # PyTorch's guard in max_norm / (total_norm + 1e-6)


def _check_grads(grads):
    if not isinstance(grads, dict):
        raise ValueError(f"grads must be a dict of arrays, got {type(grads).__name__}")
    if not grads:
        raise ValueError("grads must not be empty")
    out = {}
    for k, v in grads.items():
        a = _validate._real_array(f"grads[{k!r}]", v, "(any shape)")
        out[k] = a
    return out


def _check_threshold(name, value):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.number)):
        raise ValueError(f"{name} must be a number >= 0, got {value!r}")
    value = float(value)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value}")
    return value


def _norms(grads):
    """The 2-norm of each array, computed in the array's own floating dtype (as PyTorch:
    one norm per tensor first; float32 squares overflow to inf above about 1.8e19).
    Returns {key: NumPy scalar of that dtype}."""
    out = {}
    with np.errstate(over="ignore", invalid="ignore"):
        for k, a in grads.items():
            a = a if np.issubdtype(a.dtype, np.floating) else a.astype(np.float64)
            out[k] = np.sqrt(np.sum(np.square(a)))
    return out


def _total_norm(grads):
    """The norm of the per-array norms: ||g||_2 of everything stacked, in the dtype the
    per-array norms promote to (float32 when every array is float32, as PyTorch)."""
    norms = list(_norms(grads).values())
    norms = np.array(norms, dtype=np.result_type(*norms))
    with np.errstate(over="ignore", invalid="ignore"):
        return np.sqrt(np.sum(norms * norms))


def global_norm(grads):
    """||g||_2 of all arrays of ``grads`` stacked into one vector, a float
    (inf or NaN when an entry is)."""
    return float(_total_norm(_check_grads(grads)))


def clip_grad_norm(grads, max_norm, error_if_nonfinite=False):
    """Scale all gradients together so that their global 2-norm is at most max_norm.

    grads     -- dict of arrays (any shapes); max_norm -- threshold tau >= 0
    Returns (clipped, total_norm): a new dict, every array multiplied by
    min(1, max_norm / (total_norm + 1e-6)), and the norm BEFORE clipping (a float).
    Norm and factor are computed in the gradients' dtype, as PyTorch does: for float32
    gradients they are float32 (the total norm overflows to inf when the squares do,
    and the gradients are then multiplied by 0), so that the result equals torch's.
    """
    grads = _check_grads(grads)
    max_norm = _check_threshold("max_norm", max_norm)
    total_norm = _total_norm(grads)                         # step 2: ||g||
    if error_if_nonfinite and not np.isfinite(total_norm):
        raise ValueError(f"grads has a non-finite total norm, {float(total_norm)}; "
                         "error_if_nonfinite=True")
    kind = total_norm.dtype.type              # float32 stays float32, as in torch
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        coef = kind(max_norm) / (total_norm + kind(EPS))    # step 3: compare
        if not np.isnan(coef):                              # (as torch: NaN stays)
            coef = min(coef, kind(1.0))
        clipped = {k: (a * a.dtype.type(coef)).astype(a.dtype, copy=False)
                   for k, a in grads.items()}               # step 4: rescale
    return clipped, float(total_norm)


def clip_grad_value(grads, clip_value):
    """Clamp every entry of every gradient to [-clip_value, clip_value].

    grads -- dict of arrays; clip_value -- threshold >= 0. Returns a new dict.
    """
    grads = _check_grads(grads)
    clip_value = _check_threshold("clip_value", clip_value)
    return {k: np.clip(a, -clip_value, clip_value).astype(a.dtype, copy=False)
            for k, a in grads.items()}


def clip_grad_norm_per_parameter(grads, max_norm):
    """Clip each array's 2-norm to max_norm on its own (Paddle's ClipGradByNorm).

    grads -- dict of arrays; max_norm -- threshold >= 0
    Returns (clipped, norms): a new dict, each array with norm > max_norm multiplied
    by max_norm / norm, and {key: its norm before clipping (a float)}. Norms and factors
    are computed in each array's dtype.
    """
    grads = _check_grads(grads)
    max_norm = _check_threshold("max_norm", max_norm)
    norms = _norms(grads)
    with np.errstate(over="ignore", invalid="ignore"):
        clipped = {k: (a * a.dtype.type(norms[k].dtype.type(max_norm) / norms[k]))
                   .astype(a.dtype, copy=False)
                   if norms[k] > max_norm else a.copy() for k, a in grads.items()}
    return clipped, {k: float(v) for k, v in norms.items()}
