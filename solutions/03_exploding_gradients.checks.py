"""Graded checks of exercises/03_exploding_gradients.ipynb, read by `rnnbook grade` in the
grader's process only (never inside a student's notebook). See rnnbook.grading.Check.

Inputs come from the grader's secret seed, with sizes, keys and thresholds that differ from
the self-checks'. References, in float64, computed independently of rnnbook:
torch.nn.utils.clip_grad_norm_ (with its norm_type) for the clipping function; torch
autograd through the scaled (6.50) network written here with torch operations for its
backward pass; the spectral norms of torch.autograd.functional.jacobian for the Jacobian
norms. The student's functions must be written by hand: no autograd, no rnnbook, and no
torch clipping. Points are split equally over a check's outputs. Total: 17 points.
"""
import numpy as np
import torch

from rnnbook.grading import Check, HandWritten

_BY_HAND = HandWritten(forbid=("autograd", "rnnbook", "torch.nn.utils.clip_grad"))
_KEYS = ("V", "U_h", "bias")


def _t(a, grad=False):
    return torch.tensor(np.asarray(a, dtype=np.float64), requires_grad=grad)


# Exercise 1: clip_grad_norm(grads, max_norm, norm_type) -> clipped, total_norm

def _grads(rng):
    shapes = {"V": (3, 5), "U_h": (5, 5), "bias": (5,)}
    scale = rng.uniform(0.5, 3.0)
    return {k: scale * rng.normal(size=s) for k, s in shapes.items()}


def _torch_clip(grads, max_norm, norm_type):
    params = [torch.zeros(g.shape, dtype=torch.float64, requires_grad=True)
              for g in grads.values()]
    for p, g in zip(params, grads.values()):
        p.grad = _t(g)
    total = torch.nn.utils.clip_grad_norm_(params, max_norm, norm_type)
    return {k: p.grad.numpy() for k, p in zip(grads, params)}, total


def _clip_inputs(norm_type, fraction):
    """Threshold = fraction * the gradients' p-norm: below 1 clips, above 1 keeps."""
    def inputs(rng):
        grads = _grads(rng)
        norm = _torch_clip(grads, 1.0, norm_type)[1].item()
        return {"args": [grads, float(fraction * norm), float(norm_type)]}
    return inputs


def _norm_reference(case):
    clipped, total = _torch_clip(*case["args"])
    return {**clipped, "total_norm": total.numpy()}


def _clip_inputs32(norm_type, fraction):
    """The same in float32: the answer must work on float32 arrays (compared with the
    float64 reference of the same float32 values, within the float32 tolerance).
    Non-finite gradients (error_if_nonfinite, an inf norm) cannot be graded here: the
    grader refuses a non-finite reference and fails a non-finite answer, so they stay
    in the exercise's self-checks."""
    def inputs(rng):
        grads = {k: v.astype(np.float32) for k, v in _grads(rng).items()}
        norm = _torch_clip(grads, 1.0, norm_type)[1].item()
        return {"args": [grads, float(fraction * norm), float(norm_type)]}
    return inputs


_NORM_OUTPUTS = {**{k: (0, k) for k in _KEYS}, "total_norm": (1,)}


# Exercise 2: scaled_residual_backward(dhs, cache) -> dx, dh0, {U, W, b, alpha}

def _scaled_inputs(rng):
    T, N, M, D = 7, 2, 3, 5
    params = {"U": 0.4 * rng.normal(size=(D, D)), "W": rng.normal(size=(D, M)),
              "b": rng.normal(size=D), "alpha": float(rng.uniform(0.2, 1.5))}
    return {"forward_args": [params, rng.normal(size=(T, N, M)), rng.normal(size=(N, D))],
            "args": [rng.normal(size=(T, N, D))]}


def _scaled_reference(case):
    params, x, h0 = case["forward_args"]
    dhs = case["args"][0]
    t = {k: _t(v, grad=True) for k, v in {**params, "x": x, "h0": h0}.items()}
    h, total = t["h0"], 0.0
    for s in range(x.shape[0]):
        h = h + t["alpha"] * torch.tanh(h @ t["U"].T + t["x"][s] @ t["W"].T + t["b"])
        total = total + (h * _t(dhs[s])).sum()
    total.backward()
    return {"dx": t["x"].grad.numpy(), "dh0": t["h0"].grad.numpy(),
            **{"d" + k: t[k].grad.numpy() for k in ("U", "W", "b", "alpha")}}


# Exercise 3: residual_jacobian_norm(params, x, h0) -> norms (N,)

def _jacobian_inputs(rng):
    T, N, M, D = 9, 3, 2, 5
    a = rng.uniform(0.0, 2.0)
    params = {"U": 0.5 * rng.normal(size=(D, D)) / np.sqrt(D) - a * np.eye(D),
              "W": rng.normal(size=(D, M)), "b": 0.2 * rng.normal(size=D)}
    return {"args": [params, rng.normal(size=(T, N, M)), 0.5 * rng.normal(size=(N, D))]}


def _jacobian_reference(case):
    params, x, h0 = case["args"]
    p = {k: _t(v) for k, v in params.items()}
    norms = []
    for n in range(h0.shape[0]):
        def to_last(h):
            for x_t in _t(x[:, n]):
                h = h + torch.tanh(h @ p["U"].T + x_t @ p["W"].T + p["b"])
            return h
        J = torch.autograd.functional.jacobian(to_last, _t(h0[n]))
        norms.append(np.linalg.norm(J.numpy(), 2))
    return {"norms": np.array(norms)}


CHECKS = [
    Check("clip_grad_norm, 2-norm, a threshold below the norm (clips)", points=2,
          function="clip_grad_norm", inputs=_clip_inputs(2.0, 0.3),
          reference=_norm_reference, outputs=_NORM_OUTPUTS, tol=1e-12,
          hand_written=_BY_HAND),
    Check("clip_grad_norm, max-norm (p = inf), clips", points=2,
          function="clip_grad_norm", inputs=_clip_inputs(float("inf"), 0.4),
          reference=_norm_reference, outputs=_NORM_OUTPUTS, tol=1e-12,
          hand_written=_BY_HAND),
    Check("clip_grad_norm, p = 1, clips", points=1,
          function="clip_grad_norm", inputs=_clip_inputs(1.0, 0.5),
          reference=_norm_reference, outputs=_NORM_OUTPUTS, tol=1e-12,
          hand_written=_BY_HAND),
    Check("clip_grad_norm, p = 3, a threshold above the norm (keeps)", points=1,
          function="clip_grad_norm", inputs=_clip_inputs(3.0, 1.7),
          reference=_norm_reference, outputs=_NORM_OUTPUTS, tol=1e-12,
          hand_written=_BY_HAND),
    Check("clip_grad_norm, float32 gradients, 2-norm, clips", points=1,
          function="clip_grad_norm", inputs=_clip_inputs32(2.0, 0.4),
          reference=_norm_reference, outputs=_NORM_OUTPUTS, tol=1e-12, tol32=1e-5,
          hand_written=_BY_HAND),
    Check("scaled_residual_backward", points=6, function="scaled_residual_backward",
          call="backward", forward="scaled_residual_forward", inputs=_scaled_inputs,
          reference=_scaled_reference,
          outputs={"dx": (0,), "dh0": (1,), "dU": (2, "U"), "dW": (2, "W"),
                   "db": (2, "b"), "dalpha": (2, "alpha")}, hand_written=True),
    Check("residual_jacobian_norm", points=4, function="residual_jacobian_norm",
          inputs=_jacobian_inputs, reference=_jacobian_reference,
          outputs={"norms": ()}, hand_written=True),
]
