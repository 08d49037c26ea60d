"""Graded checks of exercises/04_lstm_gradients.ipynb, read by `rnnbook grade` in the
grader's process only (never inside a student's notebook). See rnnbook.grading.Check.

Each check calls the student's function on inputs drawn from the grader's secret seed, with
sizes that differ from the self-checks', and compares outputs with a reference computed
here: torch autograd in float64 through rnnbook.reference.lstm for the LSTM, and through the
equations written below with torch operations for the LSTM variants without a squashing
function (NIAF, NOAF) and for the peephole LSTM. The functions must be written by hand (no
autograd, no rnnbook while the grader calls them).

Points are split equally over a check's outputs, so each function's outputs are split over
several checks to weight them: the errors a step or a sequence passes on (dh_prev and
dc_prev, or dh0 and dc0) and dL/dx count more than any one of the twelve (or fifteen)
parameter gradients, a wrong one of which costs 1/12 of its check.
"""
import numpy as np
import torch

from rnnbook import reference
from rnnbook.grading import Check

KEYS = [f"{kind}_{g}" for g in "ifoc" for kind in "WUb"]
PEEPHOLES = ["p_i", "p_f", "p_o"]
_ACTIVATIONS = {"tanh": torch.tanh, "identity": lambda a: a}


def _t(a):
    return torch.tensor(np.asarray(a, dtype=np.float64), requires_grad=True)


def _params(rng, M, D, peephole=False):
    shapes = {"W": (D, M), "U": (D, D), "b": (D,)}
    params = {k: rng.normal(size=shapes[k[0]]) / np.sqrt(D) for k in KEYS}
    params["b_f"] = params["b_f"] + 1.0
    if peephole:
        params |= {k: rng.normal(size=D) for k in PEEPHOLES}
    return params


def _param_outputs(where, keys=KEYS):
    return {f"d{k}": (where, k) for k in keys}


# Task 1: lstm_step_backward(dh, dc, cache) -> dx_t, dh_prev, dc_prev, dparams
# (cache from the given lstm_step_forward(params, x_t, h_prev, c_prev, candidate, readout))

def _step_inputs(N, M, D, last=False, candidate="tanh", readout="tanh"):
    def inputs(rng):
        params = _params(rng, M, D)
        x_t, h_prev, c_prev = (rng.normal(size=s) for s in [(N, M), (N, D), (N, D)])
        dh = rng.normal(size=(N, D))
        dc = np.zeros((N, D)) if last else rng.normal(size=(N, D))
        return {"forward_args": [params, x_t, h_prev, c_prev, candidate, readout],
                "args": [dh, dc]}
    return inputs


def _step_reference(case):
    params, x_t, h_prev, c_prev, candidate, readout = case["forward_args"]
    dh, dc = case["args"]
    p = {k: _t(v) for k, v in params.items()}
    x, h, c = _t(np.asarray(x_t)[None]), _t(h_prev), _t(c_prev)
    if candidate == readout == "tanh":
        hs, cs = reference.lstm(p, x, h, c)
        h_t, c_t = hs[0], cs[0]
    else:   # the LSTM's equations with the given squashing functions
        z = {g: x[0] @ p[f"W_{g}"].T + h @ p[f"U_{g}"].T + p[f"b_{g}"] for g in "ifoc"}
        c_t = torch.sigmoid(z["f"]) * c + torch.sigmoid(z["i"]) * _ACTIVATIONS[candidate](z["c"])
        h_t = torch.sigmoid(z["o"]) * _ACTIVATIONS[readout](c_t)
    loss = (h_t * torch.tensor(dh)).sum() + (c_t * torch.tensor(dc)).sum()
    grads = torch.autograd.grad(loss, [x, h, c, *p.values()])
    out = {"dx_t": grads[0][0].numpy(), "dh_prev": grads[1].numpy(),
           "dc_prev": grads[2].numpy()}
    out |= {f"d{k}": g.numpy() for k, g in zip(p, grads[3:])}
    return out


_STEP_STATES = {"dh_prev": (1,), "dc_prev": (2,)}
_STEP_OUTPUTS = {"dx_t": (0,), **_STEP_STATES, **_param_outputs(3)}


# Task 2: lstm_backward(dhs, dh_next, dc_next, cache) -> dx, dh0, dc0, dparams
# (cache from the given lstm_forward(params, x, h0, c0))

def _sequence_inputs(T, N, M, D, peephole=False, from_later=True):
    def inputs(rng):
        params = _params(rng, M, D, peephole)
        x, h0, c0 = (rng.normal(size=s) for s in [(T, N, M), (N, D), (N, D)])
        args = [rng.normal(size=(T, N, D))]
        if not peephole:
            args += list(rng.normal(size=(2, N, D)) if from_later else np.zeros((2, N, D)))
        return {"forward_args": [params, x, h0, c0], "args": args}
    return inputs


def _sequence_reference(case):
    """The loss sum(dhs * hs) + sum(dh_next * h_T) + sum(dc_next * c_T)."""
    params, x, h0, c0 = case["forward_args"]
    dhs, dh_next, dc_next = case["args"]
    p = {k: _t(v) for k, v in params.items()}
    xt, h0t, c0t = _t(x), _t(h0), _t(c0)
    hs, cs = reference.lstm(p, xt, h0t, c0t)
    loss = ((hs * torch.tensor(dhs)).sum() + (hs[-1] * torch.tensor(dh_next)).sum()
            + (cs[-1] * torch.tensor(dc_next)).sum())
    grads = torch.autograd.grad(loss, [xt, h0t, c0t, *p.values()])
    out = {"dx": grads[0].numpy(), "dh0": grads[1].numpy(), "dc0": grads[2].numpy()}
    out |= {f"d{k}": g.numpy() for k, g in zip(p, grads[3:])}
    return out


_SEQUENCE_STATES = {"dh0": (1,), "dc0": (2,)}
_SEQUENCE_OUTPUTS = {"dx": (0,), **_SEQUENCE_STATES, **_param_outputs(3)}


# Task 3: peephole_backward(dhs, cache) -> dx, dh0, dc0, dparams
# (cache from the given peephole_forward(params, x, h0, c0))

def _peephole_reference(case):
    params, x, h0, c0 = case["forward_args"]
    t = {k: _t(v) for k, v in params.items()}
    xt, h0t, c0t = _t(x), _t(h0), _t(c0)

    def net(g, x_t, h):
        return x_t @ t[f"W_{g}"].T + h @ t[f"U_{g}"].T + t[f"b_{g}"]

    h, c, loss = h0t, c0t, 0.0
    for x_t, dh_t in zip(xt, torch.tensor(case["args"][0])):
        i = torch.sigmoid(net("i", x_t, h) + t["p_i"] * c)
        f = torch.sigmoid(net("f", x_t, h) + t["p_f"] * c)
        c = f * c + i * torch.tanh(net("c", x_t, h))
        o = torch.sigmoid(net("o", x_t, h) + t["p_o"] * c)
        h = o * torch.tanh(c)
        loss = loss + (h * dh_t).sum()
    grads = torch.autograd.grad(loss, [xt, h0t, c0t, *t.values()])
    out = {"dx": grads[0].numpy(), "dh0": grads[1].numpy(), "dc0": grads[2].numpy()}
    out |= {f"d{k}": g.numpy() for k, g in zip(t, grads[3:])}
    return out


_PEEPHOLE_OUTPUTS = {"dx": (0,), **_SEQUENCE_STATES, **_param_outputs(3, KEYS + PEEPHOLES)}


def _only(reference, outputs):
    """reference restricted to the outputs one check grades."""
    return lambda case: {k: v for k, v in reference(case).items() if k in outputs}


def _step(name, points, outputs, **kwargs):
    return Check(f"lstm_step_backward{name}", points=points, function="lstm_step_backward",
                 call="backward", forward="lstm_step_forward", inputs=_step_inputs(**kwargs),
                 reference=_only(_step_reference, outputs), outputs=outputs, hand_written=True)


def _sequence(name, points, outputs, **kwargs):
    return Check(f"lstm_backward{name}", points=points, function="lstm_backward",
                 call="backward", forward="lstm_forward", inputs=_sequence_inputs(**kwargs),
                 reference=_only(_sequence_reference, outputs),
                 outputs=outputs, hand_written=True)


def _peephole(name, points, outputs, **kwargs):
    return Check(f"peephole_backward{name}", points=points, function="peephole_backward",
                 call="backward", forward="peephole_forward",
                 inputs=_sequence_inputs(peephole=True, **kwargs),
                 reference=_only(_peephole_reference, outputs),
                 outputs=outputs, hand_written=True)


_SIZES = dict(N=4, M=3, D=5)
CHECKS = [
    # Task 1: 6 points
    _step(": dh_prev, dc_prev", 2, _STEP_STATES, **_SIZES),
    _step(": dx_t", 0.5, {"dx_t": (0,)}, **_SIZES),
    _step(": parameter gradients", 1, _param_outputs(3), **_SIZES),
    _step(" at the last step (dc = 0)", 0.5, _STEP_OUTPUTS, N=2, M=4, D=3, last=True),
    _step(" without the candidate's activation (NIAF)", 1, _STEP_OUTPUTS, **_SIZES,
          candidate="identity"),
    _step(" without the read-out's activation (NOAF)", 1, _STEP_OUTPUTS, **_SIZES,
          readout="identity"),
    # Task 2: 5 points
    _sequence(": dh0, dc0", 1.5, _SEQUENCE_STATES, T=7, N=3, M=2, D=4),
    _sequence(": dx", 1, {"dx": (0,)}, T=7, N=3, M=2, D=4),
    _sequence(": parameter gradients", 1.5, _param_outputs(3), T=7, N=3, M=2, D=4),
    _sequence(" at the end of a sequence, T = 1", 1, _SEQUENCE_OUTPUTS, T=1, N=2, M=3, D=3,
              from_later=False),
    # Task 3: 6 points
    _peephole(": dh0, dc0, dx", 2, {"dx": (0,), **_SEQUENCE_STATES}, T=5, N=3, M=2, D=4),
    _peephole(": peephole gradients", 1.5, _param_outputs(3, PEEPHOLES), T=5, N=3, M=2, D=4),
    _peephole(": other parameter gradients", 1.5, _param_outputs(3), T=5, N=3, M=2, D=4),
    _peephole(" with T = 1", 1, _PEEPHOLE_OUTPUTS, T=1, N=2, M=3, D=2),
]
