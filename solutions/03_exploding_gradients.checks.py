"""Graded checks of exercises/03_exploding_gradients.ipynb, read by `rnnbook grade` in the
grader's process only (never inside a student's notebook). See rnnbook.grading.Check.

Inputs come from the grader's secret seed, with sizes, keys and thresholds that differ from
the self-checks'. References, in float64: torch.nn.utils.clip_grad_norm_ and
clip_grad_value_ for the clipping functions; torch autograd through
rnnbook.reference.residual for the backward pass of the (6.50) network; the spectral norms
of torch.autograd.functional.jacobian for the state Jacobians. The student's functions must
be written by hand: no autograd, no rnnbook, and no torch clipping. Points are split equally
over a check's outputs.
"""
import numpy as np
import torch

from rnnbook import reference
from rnnbook.grading import Check, HandWritten

_BY_HAND = HandWritten(forbid=("autograd", "rnnbook", "torch.nn.utils.clip_grad"))
_KEYS = ("V", "U_h", "bias")


def _t(a, grad=False):
    return torch.tensor(np.asarray(a, dtype=np.float64), requires_grad=grad)


# Exercise 1: clip_grad_norm(grads, max_norm) -> clipped, total_norm
# Exercise 2: clip_grad_value(grads, clip_value) -> clipped

def _grads(rng):
    shapes = {"V": (3, 5), "U_h": (5, 5), "bias": (5,)}
    scale = rng.uniform(0.5, 3.0)
    return {k: scale * rng.normal(size=s) for k, s in shapes.items()}


def _clip_inputs(fraction):
    """Threshold = fraction * the gradients' norm: below 1 clips, above 1 keeps."""
    def inputs(rng):
        grads = _grads(rng)
        norm = np.sqrt(sum(np.sum(g ** 2) for g in grads.values()))
        return {"args": [grads, float(fraction * norm)]}
    return inputs


def _torch_clip(case, clip_fn):
    grads, threshold = case["args"]
    params = [torch.zeros(g.shape, dtype=torch.float64, requires_grad=True)
              for g in grads.values()]
    for p, g in zip(params, grads.values()):
        p.grad = _t(g)
    out = clip_fn(params, threshold)
    return {k: p.grad.numpy() for k, p in zip(grads, params)}, out


def _norm_reference(case):
    clipped, total = _torch_clip(case, torch.nn.utils.clip_grad_norm_)
    return {**clipped, "total_norm": total.numpy()}


def _value_reference(case):
    return _torch_clip(case, torch.nn.utils.clip_grad_value_)[0]


def _value_inputs(rng):
    grads = _grads(rng)
    return {"args": [grads, float(np.median(np.abs(np.concatenate(
        [g.ravel() for g in grads.values()]))))]}


_NORM_OUTPUTS = {**{k: (0, k) for k in _KEYS}, "total_norm": (1,)}


# Exercise 3: residual_backward(dhs, cache) -> dx, dh0, {U, W, b}

def _residual_inputs(rng):
    T, N, M, D = 7, 2, 3, 5
    params = {"U": 0.4 * rng.normal(size=(D, D)), "W": rng.normal(size=(D, M)),
              "b": rng.normal(size=D)}
    return {"forward_args": [params, rng.normal(size=(T, N, M)), rng.normal(size=(N, D))],
            "args": [rng.normal(size=(T, N, D))]}


def _residual_reference(case):
    params, x, h0 = case["forward_args"]
    ref = reference.gradients(reference.residual, params, x, (h0,), case["args"][0])
    return {"dx": ref["dx"], "dh0": ref["dh0"],
            **{"d" + k: ref["dparams"][k] for k in "UWb"}}


# Exercise 4: state_jacobian_norms(params, x, h0, activation) -> norms (T, N)

def _jacobian_inputs(activation):
    def inputs(rng):
        T, N, M, D = 6, 3, 2, 5
        params = {"U": rng.uniform(0.5, 2.0) * rng.normal(size=(D, D)) / np.sqrt(D),
                  "W": rng.normal(size=(D, M)), "b": rng.normal(size=D)}
        return {"args": [params, rng.normal(size=(T, N, M)), rng.normal(size=(N, D)),
                         activation]}
    return inputs


def _jacobian_reference(case):
    params, x, h0, activation = case["args"]
    f = torch.tanh if activation == "tanh" else torch.sigmoid
    p = {k: _t(v) for k, v in params.items()}
    T, N = x.shape[0], x.shape[1]

    def steps(h, n, first):
        for t in range(first, T):
            h = f(h @ p["U"].T + _t(x[t, n]) @ p["W"].T + p["b"])
        return h

    norms = np.empty((T, N))
    for n in range(N):
        h_k = _t(h0[n])
        for k in range(T):
            J = torch.autograd.functional.jacobian(lambda h: steps(h, n, k), h_k)
            norms[k, n] = np.linalg.norm(J.numpy(), 2)
            h_k = f(h_k @ p["U"].T + _t(x[k, n]) @ p["W"].T + p["b"])   # h_{k+1}
    return {"norms": norms}


CHECKS = [
    Check("clip_grad_norm, a threshold below the norm (clips)", points=3,
          function="clip_grad_norm", inputs=_clip_inputs(0.3), reference=_norm_reference,
          outputs=_NORM_OUTPUTS, tol=1e-12, hand_written=_BY_HAND),
    Check("clip_grad_norm, a threshold above the norm (keeps)", points=1,
          function="clip_grad_norm", inputs=_clip_inputs(1.7), reference=_norm_reference,
          outputs=_NORM_OUTPUTS, tol=1e-12, hand_written=_BY_HAND),
    Check("clip_grad_value", points=2, function="clip_grad_value", inputs=_value_inputs,
          reference=_value_reference, outputs={k: (k,) for k in _KEYS}, tol=1e-15,
          hand_written=_BY_HAND),
    Check("residual_backward", points=6, function="residual_backward", call="backward",
          forward="residual_forward", inputs=_residual_inputs,
          reference=_residual_reference,
          outputs={"dx": (0,), "dh0": (1,), "dU": (2, "U"), "dW": (2, "W"),
                   "db": (2, "b")}, hand_written=True),
    Check("state_jacobian_norms, tanh", points=2, function="state_jacobian_norms",
          inputs=_jacobian_inputs("tanh"), reference=_jacobian_reference,
          outputs={"norms": ()}, hand_written=True),
    Check("state_jacobian_norms, logistic", points=2, function="state_jacobian_norms",
          inputs=_jacobian_inputs("logistic"), reference=_jacobian_reference,
          outputs={"norms": ()}, hand_written=True),
]
