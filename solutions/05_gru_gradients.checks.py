"""Graded checks of exercises/05_gru_gradients.ipynb, read by `rnnbook grade` in the
grader's process only (never inside a student's notebook). See rnnbook.grading.Check.

Inputs come from the grader's secret seed, with sizes that differ from the self-checks'
(and the edge case of one step, one example and one unit). References, in float64: torch
autograd through rnnbook.reference.gru (PyTorch's placement of the reset gate) for
exercises 1 and 3, and through the simplified GRU written below with torch operations for
exercise 2. The student's functions must be written by hand: no autograd and no rnnbook
while they run. Points are split equally over a check's outputs.
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


# Exercise 3: jacobian_after(params, x_t, h_prev) -> (N, D, D);
# carried_error_norms(params, x, h0, g) -> (T + 1,)


def _jacobian_inputs(N, M, D):
    def inputs(rng):
        params = _params(rng, M, D, _GATES, ("b_hn",))
        return {"args": [params, rng.normal(size=(N, M)), 0.5 * rng.normal(size=(N, D))]}
    return inputs


def _jacobian_reference(case):
    params, x_t, h_prev = case["args"]
    p = {k: torch.tensor(v) for k, v in params.items()}
    rows = [torch.autograd.functional.jacobian(
        lambda h: reference.gru(p, torch.tensor(x_t[None, n:n + 1]), h[None], "after")[0, 0],
        torch.tensor(h_prev[n])).numpy() for n in range(len(x_t))]
    return {"J": np.stack(rows)}


def _norms_inputs(T, N, M, D):
    def inputs(rng):
        params = _params(rng, M, D, _GATES, ("b_hn",))
        return {"args": [params, rng.normal(size=(T, N, M)), 0.5 * rng.normal(size=(N, D)),
                         rng.normal(size=(N, D))]}
    return inputs


def _norms_reference(case):
    """||dL/dh_k|| for k = 0..T, L = sum(g * h_T), by autograd through the unrolled GRU."""
    params, x, h0, g = case["args"]
    p = {k: torch.tensor(v) for k, v in params.items()}
    states = [torch.tensor(h0, requires_grad=True)]
    for t in range(len(x)):
        states.append(reference.gru(p, torch.tensor(x[t:t + 1]), states[-1], "after")[0])
        states[-1].retain_grad()
    (states[-1] * torch.tensor(g)).sum().backward()
    return {"norms": np.array([np.linalg.norm(s.grad.numpy()) for s in states])}


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
    Check("jacobian_after", points=3, function="jacobian_after",
          inputs=_jacobian_inputs(4, 3, 5), reference=_jacobian_reference,
          outputs={"J": ()}, hand_written=True),
    Check("carried_error_norms", points=2, function="carried_error_norms",
          inputs=_norms_inputs(7, 3, 2, 4), reference=_norms_reference,
          outputs={"norms": ()}, hand_written=True),
]
