"""Graded checks of exercises/01_bptt.ipynb, read by `rnnbook grade` in the grader's process
only (never inside a student's notebook). See rnnbook.grade.Check for the fields.

Each check calls the student's function on inputs drawn from the grader's secret seed, with
sizes that differ from the self-checks', and compares every output with a reference computed
here: torch autograd in float64 for the networks rnnbook does not have, rnnbook.rnn for the
tanh RNN. Points are split equally over a check's outputs.
"""
import numpy as np
import torch

from rnnbook import rnn
from rnnbook.grading import Check


def _t(a, grad=False):
    return torch.tensor(np.asarray(a, dtype=np.float64), requires_grad=grad)


def _rnn_params(rng, D, M, scale=1.0):
    return {"U": rng.normal(size=(D, D)) * scale, "W": rng.normal(size=(D, M)), "b": rng.normal(size=D)}


# Exercise 2: logistic_bptt_deltas(U, hs, dhs) -> delta (T, T, N, D)

def _logistic_inputs(T, N, M, D):
    def inputs(rng):
        params = _rnn_params(rng, D, M)
        x, h0, dhs = rng.normal(size=(T, N, M)), rng.normal(size=(N, D)), rng.normal(size=(T, N, D))
        hs, h = np.empty((T, N, D)), h0
        for t in range(T):
            h = 1.0 / (1.0 + np.exp(-(h @ params["U"].T + x[t] @ params["W"].T + params["b"])))
            hs[t] = h
        return {"args": [params["U"], hs, dhs], "params": params, "x": x, "h0": h0, "dhs": dhs}
    return inputs


def _logistic_reference(case):
    p = {k: _t(v, grad=True) for k, v in case["params"].items()}
    h, zs, hs = _t(case["h0"]), [], []
    for x_t in _t(case["x"]):
        z = h @ p["U"].T + x_t @ p["W"].T + p["b"]
        h = torch.sigmoid(z)
        zs.append(z)
        hs.append(h)
    T, (N, D) = len(zs), hs[0].shape
    dhs = _t(case["dhs"])
    delta = np.zeros((T, T, N, D))
    for t in range(T):
        grads = torch.autograd.grad((hs[t] * dhs[t]).sum(), zs[:t + 1], retain_graph=True)
        for k, g in enumerate(grads):
            delta[t, k] = g.numpy()
    return {"delta": delta}


# Exercise 3: jordan_backward(dys, cache) -> dx, dy0, {U, W, b, V, c}

def _jordan_inputs(rng):
    T, N, M, D, K = 6, 3, 2, 5, 3
    params = {"U": rng.normal(size=(D, K)), "W": rng.normal(size=(D, M)), "b": rng.normal(size=D),
              "V": rng.normal(size=(K, D)) / 2, "c": rng.normal(size=K)}
    x, y0, dys = rng.normal(size=(T, N, M)), rng.normal(size=(N, K)), rng.normal(size=(T, N, K))
    return {"forward_args": [params, x, y0], "args": [dys]}


def _jordan_reference(case):
    params, x, y0 = case["forward_args"]
    dys = _t(case["args"][0])
    p = {k: _t(v, grad=True) for k, v in params.items()}
    x, y0 = _t(x, grad=True), _t(y0, grad=True)
    y, loss = y0, 0.0
    for t in range(x.shape[0]):
        y = torch.tanh(y @ p["U"].T + x[t] @ p["W"].T + p["b"]) @ p["V"].T + p["c"]
        loss = loss + (y * dys[t]).sum()
    names = ["dx", "dy0", "dU", "dW", "db", "dV", "dc"]
    grads = torch.autograd.grad(loss, [x, y0] + [p[k] for k in "UWbVc"])
    return {n: g.numpy() for n, g in zip(names, grads)}


# Exercise 4: truncated_bptt(params, x, h0, dhs, window) -> {U, W, b}

def _truncated_inputs(window):
    def inputs(rng):
        T, N, M, D = 6, 2, 3, 4
        params = _rnn_params(rng, D, M, scale=0.5)
        x, h0, dhs = rng.normal(size=(T, N, M)), rng.normal(size=(N, D)), rng.normal(size=(T, N, D))
        return {"args": [params, x, h0, dhs, T + 2 if window is None else window]}
    return inputs


def _truncated_reference(case):
    params, x, h0, dhs, window = case["args"]
    T = x.shape[0]
    if window >= T:                                       # full BPTT: the library
        _, _, d = rnn.backward(dhs, rnn.forward(params, x, h0)[1])
        return {"dU": d["U"], "dW": d["W"], "db": d["b"]}
    p = {k: _t(v, grad=True) for k, v in params.items()}  # torch: cut the graph before z_{t-window+1}
    total = 0.0
    for t in range(T):
        h = _t(h0)
        for s in range(t + 1):
            if s == t - window + 1:
                h = h.detach()
            h = torch.tanh(h @ p["U"].T + _t(x[s]) @ p["W"].T + p["b"])
        total = total + (h * _t(dhs[t])).sum()
    dU, dW, db = torch.autograd.grad(total, [p["U"], p["W"], p["b"]])
    return {"dU": dU.numpy(), "dW": dW.numpy(), "db": db.numpy()}


_GRADS = {"dU": ("U",), "dW": ("W",), "db": ("b",)}

CHECKS = [
    Check("logistic_bptt_deltas", points=2, function="logistic_bptt_deltas",
          inputs=_logistic_inputs(T=6, N=2, M=3, D=5), reference=_logistic_reference,
          outputs={"delta": ()}),
    Check("logistic_bptt_deltas with T = 1", points=1, function="logistic_bptt_deltas",
          inputs=_logistic_inputs(T=1, N=3, M=2, D=4), reference=_logistic_reference,
          outputs={"delta": ()}),
    Check("jordan_backward", points=7, function="jordan_backward", call="backward",
          forward="jordan_forward", inputs=_jordan_inputs, reference=_jordan_reference,
          outputs={"dx": (0,), "dy0": (1,), "dU": (2, "U"), "dW": (2, "W"), "db": (2, "b"),
                   "dV": (2, "V"), "dc": (2, "c")}),
    Check("truncated_bptt, window 1", points=3, function="truncated_bptt",
          inputs=_truncated_inputs(1), reference=_truncated_reference, outputs=_GRADS),
    Check("truncated_bptt, window 3", points=3, function="truncated_bptt",
          inputs=_truncated_inputs(3), reference=_truncated_reference, outputs=_GRADS),
    Check("truncated_bptt, window longer than the sequence (full BPTT)", points=3,
          function="truncated_bptt", inputs=_truncated_inputs(None),
          reference=_truncated_reference, outputs=_GRADS),
]
