"""Graded checks of exercises/01_bptt.ipynb, read by `rnnbook grade` in the grader's process
only (never inside a student's notebook). See rnnbook.grading.Check for the fields.

Each check calls the student's function on inputs drawn from the grader's secret seed, with
sizes that differ from the self-checks', and compares every output with a reference computed
here in float64 by torch autograd (rnnbook.reference for the tanh RNN's forward pass, loops
written here for the Jordan network and the truncated sums), independent of rnnbook's own
backward pass; exercise 5's reference is confirmed by central differences as well. Points are
split equally over a check's outputs. Every check has the rule the exercise notebook states:
by hand, no autograd and no rnnbook function but rnn.forward.
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


# Exercise 2 (6-1P): state_gradients(U, hs, dhs, dprev) -> hbar (T + 1, N, D), hbar[t] = dL/dh_t,
# for L = sum_t sum(dhs[t] * h_{t+1}) + sum(dprev[t] * h_t): each step's loss reads h_t and h_{t-1}

def _state_gradients_inputs(T, N, M, D):
    def inputs(rng):
        params, x, h0, dhs = _rnn_case(rng, T, N, M, D)
        dprev = rng.normal(size=(T, N, D))
        hs, _ = rnn.forward(params, x, h0)
        return {"args": [params["U"], hs, dhs, dprev], "case": (params, x, h0, dhs, dprev)}
    return inputs


def _state_gradients_reference(case):
    """Autograd through a loop that keeps every state (h_0 included) as a node of the graph."""
    params, x, h0, dhs, dprev = case["case"]
    p = {k: _t(v) for k, v in params.items()}
    h = _t(h0, grad=True)
    states, loss = [h], 0.0
    for x_t, dh, dp in zip(_t(x), _t(dhs), _t(dprev)):
        loss = loss + (h * dp).sum()                       # L_t reads h_{t-1} ...
        h = torch.tanh(h @ p["U"].T + x_t @ p["W"].T + p["b"])
        states.append(h)
        loss = loss + (h * dh).sum()                       # ... and h_t
    return {"hbar": np.stack([g.numpy() for g in torch.autograd.grad(loss, states)])}


# Exercise 3: jordan_backward(dys, cache) -> dx, dy0, {U, W, b, V, b_y}

def _jordan_inputs(T, N, M, D, Dy):
    def inputs(rng):
        params = {"U": rng.normal(size=(D, Dy)), "W": rng.normal(size=(D, M)),
                  "b": rng.normal(size=D), "V": rng.normal(size=(Dy, D)) / 2,
                  "b_y": rng.normal(size=Dy)}
        x, y0 = rng.normal(size=(T, N, M)), rng.normal(size=(N, Dy))
        dys = rng.normal(size=(T, N, Dy))
        return {"forward_args": [params, x, y0], "args": [dys]}
    return inputs


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


_JORDAN_OUTPUTS = {"dx": (0,), "dy0": (1,), "dU": (2, "U"), "dW": (2, "W"), "db": (2, "b"),
                   "dV": (2, "V"), "db_y": (2, "b_y")}


# Exercise 4: truncated_bptt(params, x, h0, dhs, window) -> {U, W, b}

def _truncated_inputs(window):
    def inputs(rng):
        T, N, M, D = 8, 3, 2, 5
        params = _rnn_params(rng, D, M, scale=0.5)
        x, h0, dhs = rng.normal(size=(T, N, M)), rng.normal(size=(N, D)), rng.normal(size=(T, N, D))
        return {"args": [params, x, h0, dhs, T + 2 if window is None else window]}
    return inputs


def _truncated_reference(case):
    """Autograd with the graph cut: for each t the state entering step t - window + 1 is
    detached, so no gradient of L_t reaches an earlier net input (window >= T: full BPTT)."""
    params, x, h0, dhs, window = case["args"]
    p = {k: _t(v, grad=True) for k, v in params.items()}
    total = 0.0
    for t in range(x.shape[0]):
        h = _t(h0)
        for s in range(t + 1):
            if s == t - window + 1:   # 0-based: the gradient of L_t reaches z_k only for
                h = h.detach()        # k >= s, i.e. k in (t - window, t]; none for k < s
            h = torch.tanh(h @ p["U"].T + _t(x[s]) @ p["W"].T + p["b"])
        total = total + (h * _t(dhs[t])).sum()
    dU, dW, db = torch.autograd.grad(total, [p["U"], p["W"], p["b"]])
    return {"dU": dU.numpy(), "dW": dW.numpy(), "db": db.numpy()}


_GRADS = {"dU": ("U",), "dW": ("W",), "db": ("b",)}


# Exercise 5: checkpointed_bptt(params, x, h0, dhs, every) -> dh0, {U, W, b}

def _checkpointed_inputs(T, N, M, D, every):
    def inputs(rng):
        params, x, h0, dhs = _rnn_case(rng, T, N, M, D)
        return {"args": [params, x, h0, dhs, every], "case": (params, x, h0, dhs)}
    return inputs


def _central_differences(params, x, h0, dhs, eps=1e-6):
    """dL/dh0, dL/dU, dL/dW, dL/db of L = sum_t sum(dhs[t] * h_t) by central differences of
    the NumPy forward pass, entry by entry: a second reference, with no autograd in it."""
    arrays = {"dh0": np.array(h0, dtype=np.float64),
              **{"d" + k: np.array(v, dtype=np.float64) for k, v in params.items()}}

    def loss():
        p = {k[1:]: arrays[k] for k in ("dU", "dW", "db")}
        return float(np.sum(rnn.forward(p, x, arrays["dh0"])[0] * dhs))

    grads = {}
    for name, a in arrays.items():
        g = np.zeros_like(a)
        for i in np.ndindex(a.shape):
            old = a[i]
            a[i] = old + eps
            up = loss()
            a[i] = old - eps
            g[i] = (up - loss()) / (2 * eps)
            a[i] = old
        grads[name] = g
    return grads


def _checkpointed_reference(case):
    """Torch autograd, confirmed by central differences (the two must agree to 1e-6, or the
    reference itself is wrong and the check stops with an error rather than grade)."""
    grads = _rnn_autograd(*case["case"])
    differences = _central_differences(*case["case"])
    for name, g in grads.items():
        scale = max(np.abs(g).max(), np.abs(differences[name]).max(), 1e-12)
        if np.abs(g - differences[name]).max() > 1e-6 * scale:
            raise AssertionError(f"references disagree on {name}: autograd vs differences")
    return grads


_CHECKPOINTED_OUTPUTS = {"dh0": (0,), "dU": (1, "U"), "dW": (1, "W"), "db": (1, "b")}


CHECKS = [
    Check("input_gradients", points=4, function="input_gradients",
          inputs=_input_gradients_inputs(T=6, N=2, M=3, D=5),
          reference=_input_gradients_reference, outputs={"dW": ("W",), "db": ("b",)},
          hand_written=_BY_HAND),
    Check("state_gradients", points=3, function="state_gradients",
          inputs=_state_gradients_inputs(T=7, N=3, M=2, D=5),
          reference=_state_gradients_reference, outputs={"hbar": ()}, hand_written=_BY_HAND),
    Check("state_gradients with T = 1", points=1, function="state_gradients",
          inputs=_state_gradients_inputs(T=1, N=2, M=3, D=4),
          reference=_state_gradients_reference, outputs={"hbar": ()}, hand_written=_BY_HAND),
    Check("jordan_backward", points=6, function="jordan_backward", call="backward",
          forward="jordan_forward", inputs=_jordan_inputs(T=6, N=3, M=2, D=5, Dy=3),
          reference=_jordan_reference, outputs=_JORDAN_OUTPUTS, hand_written=_BY_HAND),
    Check("jordan_backward with T = 1", points=1, function="jordan_backward", call="backward",
          forward="jordan_forward", inputs=_jordan_inputs(T=1, N=2, M=4, D=3, Dy=3),
          reference=_jordan_reference, outputs=_JORDAN_OUTPUTS, hand_written=_BY_HAND),
    Check("truncated_bptt, window 1", points=3, function="truncated_bptt",
          inputs=_truncated_inputs(1), reference=_truncated_reference, outputs=_GRADS,
          hand_written=_BY_HAND),
    Check("truncated_bptt, window 3", points=3, function="truncated_bptt",
          inputs=_truncated_inputs(3), reference=_truncated_reference, outputs=_GRADS,
          hand_written=_BY_HAND),
    Check("truncated_bptt, window longer than the sequence (full BPTT)", points=3,
          function="truncated_bptt", inputs=_truncated_inputs(None),
          reference=_truncated_reference, outputs=_GRADS, hand_written=_BY_HAND),
    Check("checkpointed_bptt, spacing 3 (does not divide T = 11)", points=3,
          function="checkpointed_bptt", inputs=_checkpointed_inputs(T=11, N=3, M=2, D=5, every=3),
          reference=_checkpointed_reference, outputs=_CHECKPOINTED_OUTPUTS,
          hand_written=_BY_HAND),
    Check("checkpointed_bptt, spacing longer than the sequence", points=1,
          function="checkpointed_bptt", inputs=_checkpointed_inputs(T=4, N=2, M=3, D=5, every=6),
          reference=_checkpointed_reference, outputs=_CHECKPOINTED_OUTPUTS,
          hand_written=_BY_HAND),
    Check("checkpointed_bptt with T = 1", points=1, function="checkpointed_bptt",
          inputs=_checkpointed_inputs(T=1, N=2, M=2, D=3, every=1),
          reference=_checkpointed_reference, outputs=_CHECKPOINTED_OUTPUTS,
          hand_written=_BY_HAND),
]
