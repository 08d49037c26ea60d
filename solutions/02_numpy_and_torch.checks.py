"""Graded checks of exercises/02_numpy_and_torch.ipynb, read by `rnnbook grade` in the
grader's process only (never inside a student's notebook). See rnnbook.grade.Check.

Inputs come from the grader's secret seed, with sizes that differ from the self-checks'.
References: rnnbook.rnn for the tanh RNN, torch autograd in float64 for the rest.
Points are split equally over a check's outputs.
"""
import numpy as np
import torch

from rnnbook import rnn
from rnnbook.grading import Check


def _t(a, grad=False):
    return torch.tensor(np.asarray(a, dtype=np.float64), requires_grad=grad)


def _rnn_params(rng, D, M, scale=0.5):
    return {"U": rng.normal(size=(D, D)) * scale, "W": rng.normal(size=(D, M)), "b": rng.normal(size=D)}


# Task 1: output_backward(hs, V, c, labels) -> loss, dV, dc, dhs

def _output_inputs(scale):
    def inputs(rng):
        T, N, D, K = 4, 3, 5, 4
        hs = rng.normal(size=(T, N, D)) * scale
        return {"args": [hs, rng.normal(size=(K, D)), rng.normal(size=K),
                         rng.integers(0, K, size=(T, N))]}
    return inputs


def _output_reference(case):
    hs, V, c, labels = case["args"]
    N, K = hs.shape[1], V.shape[0]
    t = [_t(a, grad=True) for a in (hs, V, c)]
    logits = t[0] @ t[1].T + t[2]
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, K), torch.from_numpy(labels).reshape(-1),
                                             reduction="sum") / N
    dhs, dV, dc = torch.autograd.grad(loss, t)
    return {"loss": loss.detach().numpy(), "dV": dV.numpy(), "dc": dc.numpy(), "dhs": dhs.numpy()}


# Task 2: RNNFunction, a torch.autograd.Function wrapping rnnbook.rnn

def _rnnfunction_inputs(rng):
    T, N, M, D = 5, 3, 2, 4
    p = _rnn_params(rng, D, M)
    return {"args": [rng.normal(size=(T, N, M)), rng.normal(size=(N, D)), p["U"], p["W"], p["b"]],
            "grad_output": rng.normal(size=(T, N, D))}


def _rnnfunction_reference(case):
    x, h0, U, W, b = case["args"]
    hs, cache = rnn.forward({"U": U, "W": W, "b": b}, x, h0)
    dx, dh0, d = rnn.backward(case["grad_output"], cache)
    return {"hs": hs, "dx": dx, "dh0": dh0, "dU": d["U"], "dW": d["W"], "db": d["b"]}


# Task 3: birnn_backward(dout, cache) -> dx, dh0_f, dh0_b, dparams_f, dparams_b

def _birnn_inputs(rng):
    T, N, M, D_f, D_b = 5, 2, 3, 4, 3
    x = rng.normal(size=(T, N, M))
    forward_args = [_rnn_params(rng, D_f, M), _rnn_params(rng, D_b, M), x,
                    rng.normal(size=(N, D_f)), rng.normal(size=(N, D_b))]
    return {"forward_args": forward_args, "args": [rng.normal(size=(T, N, D_f + D_b))]}


def _birnn_reference(case):
    params_f, params_b, x, h0_f, h0_b = case["forward_args"]
    pf = {k: _t(v, grad=True) for k, v in params_f.items()}
    pb = {k: _t(v, grad=True) for k, v in params_b.items()}
    x, h0_f, h0_b = _t(x, grad=True), _t(h0_f, grad=True), _t(h0_b, grad=True)
    T = x.shape[0]
    h, fwd = h0_f, []
    for t in range(T):
        h = torch.tanh(h @ pf["U"].T + x[t] @ pf["W"].T + pf["b"])
        fwd.append(h)
    h, bwd = h0_b, [None] * T
    for t in reversed(range(T)):
        h = torch.tanh(h @ pb["U"].T + x[t] @ pb["W"].T + pb["b"])
        bwd[t] = h
    out = torch.cat([torch.stack(fwd), torch.stack(bwd)], dim=2)
    grads = torch.autograd.grad((out * _t(case["args"][0])).sum(),
                                [x, h0_f, h0_b] + [pf[k] for k in "UWb"] + [pb[k] for k in "UWb"])
    names = ["dx", "dh0_f", "dh0_b", "dU_f", "dW_f", "db_f", "dU_b", "dW_b", "db_b"]
    return {n: g.numpy() for n, g in zip(names, grads)}


# Task 4: rnn_relu_backward(dhs, cache) -> dx, dh0, {U, W, b}

def _relu_inputs(rng):
    T, N, M, D = 6, 3, 2, 5
    return {"forward_args": [_rnn_params(rng, D, M), rng.normal(size=(T, N, M)), rng.normal(size=(N, D))],
            "args": [rng.normal(size=(T, N, D))]}


def _relu_reference(case):
    params, x, h0 = case["forward_args"]
    p = {k: _t(v, grad=True) for k, v in params.items()}
    x, h0 = _t(x, grad=True), _t(h0, grad=True)
    h, hs = h0, []
    for t in range(x.shape[0]):
        h = torch.relu(h @ p["U"].T + x[t] @ p["W"].T + p["b"])
        hs.append(h)
    grads = torch.autograd.grad((torch.stack(hs) * _t(case["args"][0])).sum(),
                                [x, h0, p["U"], p["W"], p["b"]])
    return {n: g.numpy() for n, g in zip(["dx", "dh0", "dU", "dW", "db"], grads)}


_OUTPUT = {"loss": (0,), "dV": (1,), "dc": (2,), "dhs": (3,)}

CHECKS = [
    Check("output_backward", points=4, function="output_backward",
          inputs=_output_inputs(1.0), reference=_output_reference, outputs=_OUTPUT),
    Check("output_backward with large logits (a stable softmax)", points=2,
          function="output_backward", inputs=_output_inputs(100.0),
          reference=_output_reference, outputs=_OUTPUT),
    Check("RNNFunction", points=6, function="RNNFunction", call="autograd",
          inputs=_rnnfunction_inputs, reference=_rnnfunction_reference,
          outputs={"hs": ("out",), "dx": ("grads", 0), "dh0": ("grads", 1), "dU": ("grads", 2),
                   "dW": ("grads", 3), "db": ("grads", 4)}),
    Check("birnn_backward", points=9, function="birnn_backward", call="backward",
          forward="birnn_forward", inputs=_birnn_inputs, reference=_birnn_reference,
          outputs={"dx": (0,), "dh0_f": (1,), "dh0_b": (2,),
                   "dU_f": (3, "U"), "dW_f": (3, "W"), "db_f": (3, "b"),
                   "dU_b": (4, "U"), "dW_b": (4, "W"), "db_b": (4, "b")}),
    Check("rnn_relu_backward", points=5, function="rnn_relu_backward", call="backward",
          forward="rnn_relu_forward", inputs=_relu_inputs, reference=_relu_reference,
          outputs={"dx": (0,), "dh0": (1,), "dU": (2, "U"), "dW": (2, "W"), "db": (2, "b")}),
]
