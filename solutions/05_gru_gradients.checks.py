"""Graded checks of exercises/05_gru_gradients.ipynb, read by `rnnbook grade` in the
grader's process only (never inside a student's notebook). See rnnbook.grading.Check.

Inputs come from the grader's secret seed, with sizes that differ from the self-checks'
(and the edge case of one step, one example and one unit). References, in float64: torch
autograd through rnnbook.reference.gru (PyTorch's placement of the reset gate) for
exercise 1, and through the simplified GRU written below with torch operations for
exercise 2. The student's backward passes must be written by hand: no autograd and no
rnnbook while they run. Points are split equally over a check's outputs.
"""
import numpy as np
import torch

from rnnbook import reference
from rnnbook.grading import Check

_GATES = ("z", "r", "h")


def _params(rng, M, D, blocks, extra=()):
    """Weights ~ N(0, 1/D) (the usual scale: gates neither saturated nor linear)."""
    shapes = {"W": (D, M), "U": (D, D), "b": (D,)}
    p = {f"{k}_{g}": rng.normal(size=shapes[k]) / np.sqrt(D) for g in blocks for k in "WUb"}
    p.update({key: rng.normal(size=D) / np.sqrt(D) for key in extra})
    return p


def _inputs(T, N, M, D, blocks, extra=()):
    def inputs(rng):
        params = _params(rng, M, D, blocks, extra)
        x, h0 = rng.normal(size=(T, N, M)), 0.5 * rng.normal(size=(N, D))
        dhs = rng.normal(size=(T, N, D))
        return {"forward_args": [params, x, h0], "args": [dhs]}
    return inputs


def _outputs(keys):
    return {"dx": (0,), "dh0": (1,), **{f"d{k}": (2, k) for k in keys}}


# Exercise 1: gru_after_backward(dhs, cache) -> dx, dh0, {10 keys}

_AFTER_KEYS = [f"{k}_{g}" for g in _GATES for k in "WUb"] + ["b_hn"]


def _after_reference(case):
    params, x, h0 = case["forward_args"]
    ref = reference.gradients(reference.gru, params, x, (h0,), case["args"][0],
                              reset="after")
    return {"dx": ref["dx"], "dh0": ref["dh0"],
            **{f"d{k}": ref["dparams"][k] for k in _AFTER_KEYS}}


# Exercise 2: simple_gru_backward(dhs, cache) -> dx, dh0, {6 keys}

_SIMPLE_KEYS = [f"{k}_{g}" for g in ("z", "h") for k in "WUb"]


def _simple_gru(p, x, h0):
    """Ng's simplified GRU in NNDL's convention, eq. (5.18), in torch."""
    h, out = h0, []
    for x_t in x:
        z = torch.sigmoid(x_t @ p["W_z"].T + h @ p["U_z"].T + p["b_z"])
        h_tilde = torch.tanh(x_t @ p["W_h"].T + h @ p["U_h"].T + p["b_h"])
        h = z * h + (1 - z) * h_tilde
        out.append(h)
    return torch.stack(out)


def _simple_reference(case):
    params, x, h0 = case["forward_args"]
    ref = reference.gradients(_simple_gru, params, x, (h0,), case["args"][0])
    return {"dx": ref["dx"], "dh0": ref["dh0"],
            **{f"d{k}": ref["dparams"][k] for k in _SIMPLE_KEYS}}


CHECKS = [
    Check("gru_after_backward", points=8, function="gru_after_backward",
          call="backward", forward="gru_after_forward",
          inputs=_inputs(7, 3, 4, 5, _GATES, ("b_hn",)), reference=_after_reference,
          outputs=_outputs(_AFTER_KEYS), hand_written=True),
    Check("gru_after_backward, one step, one example, one unit", points=2,
          function="gru_after_backward", call="backward", forward="gru_after_forward",
          inputs=_inputs(1, 1, 2, 1, _GATES, ("b_hn",)), reference=_after_reference,
          outputs=_outputs(_AFTER_KEYS), hand_written=True),
    Check("simple_gru_backward", points=6, function="simple_gru_backward",
          call="backward", forward="simple_gru_forward",
          inputs=_inputs(8, 2, 3, 4, ("z", "h")), reference=_simple_reference,
          outputs=_outputs(_SIMPLE_KEYS), hand_written=True),
    Check("simple_gru_backward, one step", points=1, function="simple_gru_backward",
          call="backward", forward="simple_gru_forward",
          inputs=_inputs(1, 2, 1, 3, ("z", "h")), reference=_simple_reference,
          outputs=_outputs(_SIMPLE_KEYS), hand_written=True),
]
