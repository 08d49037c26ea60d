"""Graded checks of exercises/02_numpy_and_torch.ipynb, read by `rnnbook grade` in the
grader's process only (never inside a student's notebook). See rnnbook.grading.Check.

Inputs come from the grader's secret seed, with sizes that differ from the self-checks'.
References: torch autograd in float64, through rnnbook.reference.rnn where the network is
made of simple RNN cells. Points are split equally over a check's outputs.
"""
import numpy as np
import torch

from rnnbook import reference
from rnnbook.grading import Check, HandWritten

# The NumPy backward passes by hand: no autograd, no rnnbook. The Function's backward in
# torch tensor operations, without autograd; it may reuse the chapter's rnn_torch sweep.
# The bidirectional RNN is built from rnnbook.rnn's forward and backward, as its task says.
_STACKED_BY_HAND = HandWritten(allow=("rnnbook.rnn_torch.forward", "rnnbook.rnn_torch.backward"))


def _t(a, grad=False):
    return torch.tensor(np.asarray(a, dtype=np.float64), requires_grad=grad)


def _rnn_params(rng, D, M, scale=0.5):
    return {"U": rng.normal(size=(D, D)) * scale, "W": rng.normal(size=(D, M)),
            "b": rng.normal(size=D)}


# Task 1: output_backward(hs, V, b_y, labels) -> loss, dV, db_y, dhs

def _output_inputs(shift):
    """Logits o_t = V h_t + b_y of order 1 around ``shift``: with shift=1000 every
    exp(o) overflows (float64's exp overflows above about 709), so only a softmax that
    subtracts the largest logit passes."""
    def inputs(rng):
        T, N, D, K = 4, 3, 5, 4
        return {"args": [rng.normal(size=(T, N, D)), rng.normal(size=(K, D)),
                         rng.normal(size=K) + shift, rng.integers(0, K, size=(T, N))]}
    return inputs


def _output_reference(case):
    hs, V, b_y, labels = case["args"]
    N, K = hs.shape[1], V.shape[0]
    t = [_t(a, grad=True) for a in (hs, V, b_y)]
    logits = t[0] @ t[1].T + t[2]
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, K),
                                             torch.from_numpy(labels).reshape(-1),
                                             reduction="sum") / N
    dhs, dV, db_y = torch.autograd.grad(loss, t)
    return {"loss": loss.detach().numpy(), "dV": dV.numpy(), "db_y": db_y.numpy(),
            "dhs": dhs.numpy()}


# Task 2: output, h_n = StackedRNNFunction.apply(x, h0, U1, W1, b1, U2, W2, b2), then
# backward of both outputs; its backward must be hand-written (tensor operations only)

_STACKED = ["x", "h0", "U1", "W1", "b1", "U2", "W2", "b2"]


def _stacked_inputs(rng):
    T, N, M, D = 6, 2, 3, 4
    p1, p2 = _rnn_params(rng, D, M), _rnn_params(rng, D, D)
    x, h0 = rng.normal(size=(T, N, M)), rng.normal(size=(2, N, D))
    return {"args": [x, h0, p1["U"], p1["W"], p1["b"], p2["U"], p2["W"], p2["b"]],
            "grad_output": [rng.normal(size=(T, N, D)), rng.normal(size=(2, N, D))]}


def _stacked_reference(case):
    leaves = [_t(a, grad=True) for a in case["args"]]
    x, h0, U1, W1, b1, U2, W2, b2 = leaves
    hs1 = reference.rnn({"U": U1, "W": W1, "b": b1}, x, h0[0])
    hs2 = reference.rnn({"U": U2, "W": W2, "b": b2}, hs1, h0[1])
    h_n = torch.stack([hs1[-1], hs2[-1]])
    g_output, g_h_n = (_t(a) for a in case["grad_output"])
    loss = (hs2 * g_output).sum() + (h_n * g_h_n).sum()
    grads = torch.autograd.grad(loss, leaves)
    return {"output": hs2.detach().numpy(), "h_n": h_n.detach().numpy(),
            **{"d" + n: g.numpy() for n, g in zip(_STACKED, grads)}}


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
    forward = reference.rnn(pf, x, h0_f)
    backward = reference.rnn(pb, x.flip(0), h0_b).flip(0)   # h_bwd at each time t
    out = torch.cat([forward, backward], dim=2)
    grads = torch.autograd.grad((out * _t(case["args"][0])).sum(),
                                [x, h0_f, h0_b] + [pf[k] for k in "UWb"]
                                + [pb[k] for k in "UWb"])
    names = ["dx", "dh0_f", "dh0_b", "dU_f", "dW_f", "db_f", "dU_b", "dW_b", "db_b"]
    return {n: g.numpy() for n, g in zip(names, grads)}


# Task 4: dt_rnn_backward(dhs, cache) -> dx, dh0, {U, W, b, A, b_h}

def _dt_inputs(rng):
    T, N, M, D, E = 5, 3, 2, 3, 4
    params = {"U": 0.6 * rng.normal(size=(E, D)), "W": rng.normal(size=(E, M)),
              "b": rng.normal(size=E), "A": 0.6 * rng.normal(size=(D, E)),
              "b_h": rng.normal(size=D)}
    return {"forward_args": [params, rng.normal(size=(T, N, M)), rng.normal(size=(N, D))],
            "args": [rng.normal(size=(T, N, D))]}


def _dt_reference(case):
    params, x, h0 = case["forward_args"]
    p = {k: _t(v, grad=True) for k, v in params.items()}
    x, h0 = _t(x, grad=True), _t(h0, grad=True)
    h, loss, dhs = h0, 0.0, _t(case["args"][0])
    for t in range(x.shape[0]):
        s = torch.tanh(h @ p["U"].T + x[t] @ p["W"].T + p["b"])
        h = torch.tanh(s @ p["A"].T + p["b_h"])
        loss = loss + (h * dhs[t]).sum()
    grads = torch.autograd.grad(loss, [x, h0] + [p[k] for k in ("U", "W", "b", "A", "b_h")])
    return {n: g.numpy() for n, g in
            zip(["dx", "dh0", "dU", "dW", "db", "dA", "db_h"], grads)}


_OUTPUT = {"loss": (0,), "dV": (1,), "db_y": (2,), "dhs": (3,)}

CHECKS = [
    Check("output_backward", points=4, function="output_backward",
          inputs=_output_inputs(0.0), reference=_output_reference, outputs=_OUTPUT, hand_written=True),
    Check("output_backward with large logits (a stable softmax)", points=2,
          function="output_backward", inputs=_output_inputs(1000.0),
          reference=_output_reference, outputs=_OUTPUT, hand_written=True),
    Check("StackedRNNFunction", points=10, function="StackedRNNFunction", call="autograd",
          inputs=_stacked_inputs, reference=_stacked_reference,
          outputs={"output": ("out", 0), "h_n": ("out", 1),
                   **{"d" + n: ("grads", i) for i, n in enumerate(_STACKED)}},
          hand_written=_STACKED_BY_HAND),
    Check("birnn_backward", points=9, function="birnn_backward", call="backward",
          forward="birnn_forward", inputs=_birnn_inputs, reference=_birnn_reference,
          outputs={"dx": (0,), "dh0_f": (1,), "dh0_b": (2,),
                   "dU_f": (3, "U"), "dW_f": (3, "W"), "db_f": (3, "b"),
                   "dU_b": (4, "U"), "dW_b": (4, "W"), "db_b": (4, "b")},
          hand_written=HandWritten(forbid=("autograd",))),
    Check("dt_rnn_backward", points=7, function="dt_rnn_backward", call="backward",
          forward="dt_rnn_forward", inputs=_dt_inputs, reference=_dt_reference,
          outputs={"dx": (0,), "dh0": (1,), "dU": (2, "U"), "dW": (2, "W"),
                   "db": (2, "b"), "dA": (2, "A"), "db_h": (2, "b_h")}, hand_written=True),
]
