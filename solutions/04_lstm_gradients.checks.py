"""Graded checks of exercises/04_lstm_gradients.ipynb, read by `rnnbook grade` in the
grader's process only (never inside a student's notebook). See rnnbook.grading.Check.

Each check calls the student's function on inputs drawn from the grader's secret seed, with
sizes that differ from the self-checks', and compares every output with a reference
computed here: torch autograd in float64 through rnnbook.reference.lstm for the LSTM, and
through the peephole LSTM's equations written below with torch operations. The functions
must be written by hand (no autograd, no rnnbook while the grader calls them). Points are
split equally over a check's outputs.
"""
import numpy as np
import torch

from rnnbook import reference
from rnnbook.grading import Check

KEYS = [f"{kind}_{g}" for g in "ifoc" for kind in "WUb"]
PEEPHOLES = ["p_i", "p_f", "p_o"]


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
# (cache from the given lstm_step_forward(params, x_t, h_prev, c_prev))

def _step_inputs(N, M, D, last):
    def inputs(rng):
        params = _params(rng, M, D)
        x_t, h_prev, c_prev = (rng.normal(size=s) for s in [(N, M), (N, D), (N, D)])
        dh = rng.normal(size=(N, D))
        dc = np.zeros((N, D)) if last else rng.normal(size=(N, D))
        return {"forward_args": [params, x_t, h_prev, c_prev], "args": [dh, dc]}
    return inputs


def _step_reference(case):
    params, x_t, h_prev, c_prev = case["forward_args"]
    dh, dc = case["args"]
    p = {k: _t(v) for k, v in params.items()}
    x, h, c = _t(np.asarray(x_t)[None]), _t(h_prev), _t(c_prev)
    hs, cs = reference.lstm(p, x, h, c)
    loss = (hs[0] * torch.tensor(dh)).sum() + (cs[0] * torch.tensor(dc)).sum()
    grads = torch.autograd.grad(loss, [x, h, c, *p.values()])
    out = {"dx_t": grads[0][0].numpy(), "dh_prev": grads[1].numpy(),
           "dc_prev": grads[2].numpy()}
    out |= {f"d{k}": g.numpy() for k, g in zip(p, grads[3:])}
    return out


_STEP_OUTPUTS = {"dx_t": (0,), "dh_prev": (1,), "dc_prev": (2,), **_param_outputs(3)}


# Task 2: lstm_backward(dhs, cache) -> dx, dh0, dc0, dparams
# (cache from the given lstm_forward(params, x, h0, c0))

def _sequence_inputs(T, N, M, D, peephole=False):
    def inputs(rng):
        params = _params(rng, M, D, peephole)
        x, h0, c0 = (rng.normal(size=s) for s in [(T, N, M), (N, D), (N, D)])
        return {"forward_args": [params, x, h0, c0],
                "args": [rng.normal(size=(T, N, D))]}
    return inputs


def _sequence_reference(case):
    params, x, h0, c0 = case["forward_args"]
    ref = reference.gradients(reference.lstm, params, x, (h0, c0), case["args"][0])
    out = {name: ref[name] for name in ("dx", "dh0", "dc0")}
    out |= {f"d{k}": ref["dparams"][k] for k in KEYS}
    return out


_SEQUENCE_OUTPUTS = {"dx": (0,), "dh0": (1,), "dc0": (2,), **_param_outputs(3)}


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


_PEEPHOLE_OUTPUTS = {"dx": (0,), "dh0": (1,), "dc0": (2,),
                     **_param_outputs(3, KEYS + PEEPHOLES)}

CHECKS = [
    Check("lstm_step_backward", points=4, function="lstm_step_backward",
          call="backward", forward="lstm_step_forward",
          inputs=_step_inputs(N=4, M=3, D=5, last=False), reference=_step_reference,
          outputs=_STEP_OUTPUTS, hand_written=True),
    Check("lstm_step_backward at the last step (dc = 0)", points=1,
          function="lstm_step_backward", call="backward", forward="lstm_step_forward",
          inputs=_step_inputs(N=2, M=4, D=3, last=True), reference=_step_reference,
          outputs=_STEP_OUTPUTS, hand_written=True),
    Check("lstm_backward", points=4, function="lstm_backward", call="backward",
          forward="lstm_forward", inputs=_sequence_inputs(T=7, N=3, M=2, D=4),
          reference=_sequence_reference, outputs=_SEQUENCE_OUTPUTS, hand_written=True),
    Check("lstm_backward with T = 1", points=1, function="lstm_backward",
          call="backward", forward="lstm_forward",
          inputs=_sequence_inputs(T=1, N=2, M=3, D=3), reference=_sequence_reference,
          outputs=_SEQUENCE_OUTPUTS, hand_written=True),
    Check("peephole_backward", points=5, function="peephole_backward", call="backward",
          forward="peephole_forward",
          inputs=_sequence_inputs(T=5, N=3, M=2, D=4, peephole=True),
          reference=_peephole_reference, outputs=_PEEPHOLE_OUTPUTS, hand_written=True),
    Check("peephole_backward with T = 1", points=1, function="peephole_backward",
          call="backward", forward="peephole_forward",
          inputs=_sequence_inputs(T=1, N=2, M=3, D=2, peephole=True),
          reference=_peephole_reference, outputs=_PEEPHOLE_OUTPUTS, hand_written=True),
]
