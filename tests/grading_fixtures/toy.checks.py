"""Graded checks of the toy exercise the grader's tests build (tests/grading_toy.py):
one check of each kind (function, backward, autograd with one output and with two),
hand-written ones and one that is not. Totals are read from here, never typed in tests."""
import numpy as np
import torch

from rnnbook.grading import Check, HandWritten


def _vector(rng):
    return {"args": [rng.normal(size=(3, 4))]}


def _tanh_inputs(rng):
    x, W = rng.normal(size=(5, 3)), rng.normal(size=(2, 3))
    return {"forward_args": [x, W], "args": [rng.normal(size=(5, 2))]}


def _tanh_reference(case):
    x, W = (torch.tensor(a, requires_grad=True) for a in case["forward_args"])
    h = torch.tanh(x @ W.T)
    dx, dW = torch.autograd.grad((h * torch.tensor(case["args"][0])).sum(), [x, W])
    return {"dx": dx.numpy(), "dW": dW.numpy()}


def _cube_inputs(rng):
    return {"args": [rng.normal(size=(4,))], "grad_output": rng.normal(size=(4,))}


def _cube_reference(case):
    x, g = case["args"][0], case["grad_output"]
    return {"out": x ** 3, "dx": 3 * x ** 2 * g}


def _sincos_inputs(rng):
    return {"args": [rng.normal(size=(3,))], "grad_output": [rng.normal(size=(3,)), rng.normal(size=(3,))]}


def _sincos_reference(case):
    x, (gs, gc) = case["args"][0], case["grad_output"]
    return {"sin": np.sin(x), "cos": np.cos(x), "dx": np.cos(x) * gs - np.sin(x) * gc}


CHECKS = [
    Check("square_grad", points=2, function="square_grad", inputs=_vector,
          reference=lambda case: {"grad": 2 * case["args"][0]}, outputs={"grad": ()},
          hand_written=True),
    Check("tanh_backward", points=3, function="tanh_backward", call="backward",
          forward="tanh_forward", inputs=_tanh_inputs, reference=_tanh_reference,
          outputs={"dx": (0,), "dW": (1,)}, hand_written=True),
    Check("Cube", points=3, function="Cube", call="autograd", inputs=_cube_inputs,
          reference=_cube_reference, outputs={"out": ("out",), "dx": ("grads", 0)},
          hand_written=HandWritten(forbid=("autograd", "rnnbook"))),
    Check("SinCos", points=2, function="SinCos", call="autograd", inputs=_sincos_inputs,
          reference=_sincos_reference,
          outputs={"sin": ("out", 0), "cos": ("out", 1), "dx": ("grads", 0)},
          hand_written=HandWritten(forbid=("autograd",))),
    Check("plain_sum", points=1, function="plain_sum", inputs=_vector,
          reference=lambda case: {"sum": np.sum(case["args"][0])}, outputs={"sum": ()}),
]
