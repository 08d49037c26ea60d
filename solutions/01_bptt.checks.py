"""Graded checks of exercises/01_bptt.ipynb, read by `rnnbook grade` in the grader's process
only (never inside a student's notebook). See rnnbook.grading.Check for the fields.

Each check calls the student's function on inputs drawn from the grader's secret seed, with
sizes that differ from the self-checks', and compares every output with a reference computed
here in float64: torch autograd (rnnbook.reference for the tanh RNN's forward pass, a loop
written here for the Jordan network), or rnnbook.rnn for full BPTT. Points are split equally
over a check's outputs.
"""
import numpy as np
import torch

from rnnbook import reference, rnn
from rnnbook.grading import Check, HandWritten

# BPTT by hand: no autograd and no rnnbook function but the forward pass of the tanh RNN.
_BY_HAND = HandWritten(allow=("rnnbook.rnn.forward",))


def _t(a, grad=False):
    return torch.tensor(np.asarray(a, dtype=np.float64), requires_grad=grad)


def _rnn_params(rng, D, M, scale=1.0):
    return {"U": rng.normal(size=(D, D)) * scale, "W": rng.normal(size=(D, M)),
            "b": rng.normal(size=D)}


def _rnn_case(rng, T, N, M, D, scale=0.6):
    params = _rnn_params(rng, D, M, scale)
    x, h0, dhs = rng.normal(size=(T, N, M)), rng.normal(size=(N, D)), rng.normal(size=(T, N, D))
    return params, x, h0, dhs


# Exercise 1 (NNDL 6-2): input_gradients(delta, x) -> {"W": (D, M), "b": (D,)}

def _error_terms(params, x, h0, dhs):
    """The table delta[t, k] = dL_t/dz_k (T, T, N, D) of L_t = sum(dhs[t] * h_t), by autograd."""
    p = {k: _t(v, grad=True) for k, v in params.items()}
    T, N, D = dhs.shape
    h, zs, hs = _t(h0), [], []
    for x_t in _t(x):
        z = h @ p["U"].T + x_t @ p["W"].T + p["b"]
        h = torch.tanh(z)
        zs.append(z)
        hs.append(h)
    delta = np.zeros((T, T, N, D))
    for t in range(T):
        grads = torch.autograd.grad((hs[t] * _t(dhs[t])).sum(), zs[:t + 1], retain_graph=True)
        for k, g in enumerate(grads):
            delta[t, k] = g.numpy()
    return delta


def _input_gradients_inputs(T, N, M, D):
    def inputs(rng):
        params, x, h0, dhs = _rnn_case(rng, T, N, M, D)
        return {"args": [_error_terms(params, x, h0, dhs), x], "case": (params, x, h0, dhs)}
    return inputs


def _rnn_autograd(params, x, h0, dhs):
    """dL/dU, dL/dW, dL/db and dL/dh0 of L = sum_t sum(dhs[t] * h_t), torch autograd."""
    p = {k: _t(v, grad=True) for k, v in params.items()}
    h0_ = _t(h0, grad=True)
    hs = reference.rnn(p, _t(x), h0_)
    dU, dW, db, dh0 = torch.autograd.grad((hs * _t(dhs)).sum(), [p["U"], p["W"], p["b"], h0_])
    return {"dU": dU.numpy(), "dW": dW.numpy(), "db": db.numpy(), "dh0": dh0.numpy()}


def _input_gradients_reference(case):
    grads = _rnn_autograd(*case["case"])
    return {"dW": grads["dW"], "db": grads["db"]}


# Exercise 2 (6-1P): state_gradients(U, hs, dhs) -> gs (T + 1, N, D), gs[t] = dL/dh_t

def _state_gradients_inputs(T, N, M, D):
    def inputs(rng):
        params, x, h0, dhs = _rnn_case(rng, T, N, M, D)
        hs, _ = rnn.forward(params, x, h0)
        return {"args": [params["U"], hs, dhs], "case": (params, x, h0, dhs)}
    return inputs


def _state_gradients_reference(case):
    params, x, h0, dhs = case["case"]
    p = {k: _t(v) for k, v in params.items()}
    h = _t(h0, grad=True)
    states, loss = [h], 0.0
    for x_t, dh in zip(_t(x), _t(dhs)):
        h = torch.tanh(h @ p["U"].T + x_t @ p["W"].T + p["b"])
        states.append(h)
        loss = loss + (h * dh).sum()
    return {"gs": np.stack([g.numpy() for g in torch.autograd.grad(loss, states)])}


# Exercise 3: jordan_backward(dys, cache) -> dx, dy0, {U, W, b, V, b_y}

def _jordan_inputs(rng):
    T, N, M, D, K = 6, 3, 2, 5, 3
    params = {"U": rng.normal(size=(D, K)), "W": rng.normal(size=(D, M)), "b": rng.normal(size=D),
              "V": rng.normal(size=(K, D)) / 2, "b_y": rng.normal(size=K)}
    x, y0, dys = rng.normal(size=(T, N, M)), rng.normal(size=(N, K)), rng.normal(size=(T, N, K))
    return {"forward_args": [params, x, y0], "args": [dys]}


def _jordan_reference(case):
    params, x, y0 = case["forward_args"]
    dys = _t(case["args"][0])
    p = {k: _t(v, grad=True) for k, v in params.items()}
    x, y0 = _t(x, grad=True), _t(y0, grad=True)
    y, loss = y0, 0.0
    for t in range(x.shape[0]):
        y = torch.tanh(y @ p["U"].T + x[t] @ p["W"].T + p["b"]) @ p["V"].T + p["b_y"]
        loss = loss + (y * dys[t]).sum()
    names = ["dx", "dy0", "dU", "dW", "db", "dV", "db_y"]
    grads = torch.autograd.grad(loss, [x, y0] + [p[k] for k in ("U", "W", "b", "V", "b_y")])
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
    Check("input_gradients", points=4, function="input_gradients",
          inputs=_input_gradients_inputs(T=6, N=2, M=3, D=5),
          reference=_input_gradients_reference, outputs={"dW": ("W",), "db": ("b",)},
          hand_written=_BY_HAND),
    Check("state_gradients", points=3, function="state_gradients",
          inputs=_state_gradients_inputs(T=7, N=3, M=2, D=5),
          reference=_state_gradients_reference, outputs={"gs": ()}, hand_written=_BY_HAND),
    Check("state_gradients with T = 1", points=1, function="state_gradients",
          inputs=_state_gradients_inputs(T=1, N=2, M=3, D=4),
          reference=_state_gradients_reference, outputs={"gs": ()}, hand_written=_BY_HAND),
    Check("jordan_backward", points=7, function="jordan_backward", call="backward",
          forward="jordan_forward", inputs=_jordan_inputs, reference=_jordan_reference,
          outputs={"dx": (0,), "dy0": (1,), "dU": (2, "U"), "dW": (2, "W"), "db": (2, "b"),
                   "dV": (2, "V"), "db_y": (2, "b_y")}, hand_written=_BY_HAND),
    Check("truncated_bptt, window 1", points=3, function="truncated_bptt",
          inputs=_truncated_inputs(1), reference=_truncated_reference, outputs=_GRADS, hand_written=_BY_HAND),
    Check("truncated_bptt, window 3", points=3, function="truncated_bptt",
          inputs=_truncated_inputs(3), reference=_truncated_reference, outputs=_GRADS, hand_written=_BY_HAND),
    Check("truncated_bptt, window longer than the sequence (full BPTT)", points=3,
          function="truncated_bptt", inputs=_truncated_inputs(None),
          reference=_truncated_reference, outputs=_GRADS, hand_written=_BY_HAND),
]
