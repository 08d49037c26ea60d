"""Torch autograd references of every cell, in one place: the tests, the graded checks
and the book's checks all compare with these. Each forward function is the cell's
equations written once with torch operations, so autograd differentiates them; nothing
here is derived by hand. (The grader keeps this module out of students' reach.)

    hs = reference.rnn(p, x, h0)                       z = U h + W x + b, h = tanh(z)
    hs = reference.residual(p, x, h0)                  h = h_prev + tanh(U h_prev + W x + b)   (NNDL 6.50)
    hs, cs = reference.lstm(p, x, h0, c0)              NNDL's LSTM, keys W_i U_i b_i ... W_c U_c b_c
    hs = reference.gru(p, x, h0, reset="before")       NNDL's / Cho et al.'s GRU
    hs = reference.gru(p, x, h0, reset="after")        PyTorch's GRU (extra key b_hn)

p holds torch tensors under the keys of rnnbook's params; x is (T, N, M), h0 and c0 are
(N, D); every function returns the stacked states (T, N, D). ``gradients`` runs one of
them in float64 on NumPy inputs and returns what a cell's ``backward`` returns.
"""
import numpy as np
import torch


def rnn(p, x, h0):
    h, hs = h0, []
    for x_t in x:
        h = torch.tanh(h @ p["U"].T + x_t @ p["W"].T + p["b"])
        hs.append(h)
    return torch.stack(hs)


def residual(p, x, h0):
    h, hs = h0, []
    for x_t in x:
        h = h + torch.tanh(h @ p["U"].T + x_t @ p["W"].T + p["b"])
        hs.append(h)
    return torch.stack(hs)


def _affine(p, gate, x_t, h):
    return x_t @ p["W_" + gate].T + h @ p["U_" + gate].T + p["b_" + gate]


def lstm(p, x, h0, c0):
    """Returns hs and cs, both (T, N, D)."""
    h, c, hs, cs = h0, c0, [], []
    for x_t in x:
        i = torch.sigmoid(_affine(p, "i", x_t, h))
        f = torch.sigmoid(_affine(p, "f", x_t, h))
        o = torch.sigmoid(_affine(p, "o", x_t, h))
        c_tilde = torch.tanh(_affine(p, "c", x_t, h))
        c = f * c + i * c_tilde
        h = o * torch.tanh(c)
        hs.append(h)
        cs.append(c)
    return torch.stack(hs), torch.stack(cs)


def gru(p, x, h0, reset="before"):
    if reset not in ("before", "after"):
        raise ValueError(f"reset must be 'before' or 'after', got {reset!r}")
    h, hs = h0, []
    for x_t in x:
        z = torch.sigmoid(_affine(p, "z", x_t, h))
        r = torch.sigmoid(_affine(p, "r", x_t, h))
        if reset == "before":
            h_tilde = torch.tanh(x_t @ p["W_h"].T + (r * h) @ p["U_h"].T + p["b_h"])
        else:
            h_tilde = torch.tanh(x_t @ p["W_h"].T + p["b_h"] + r * (h @ p["U_h"].T + p["b_hn"]))
        h = z * h + (1 - z) * h_tilde
        hs.append(h)
    return torch.stack(hs)


def gradients(forward, params, x, states, dhs, **kwargs):
    """Everything a cell's ``backward`` returns, by autograd in float64.

    forward -- one of the functions above
    params  -- dict of NumPy arrays; x (T, N, M); states -- (h0,) or, for the LSTM, (h0, c0)
    dhs     -- dL/dh_t for every t, (T, N, D): the loss is sum(hs * dhs)
    Returns {"hs", "dx", "dh0" (and "dc0"), "dparams"}, NumPy float64.
    """
    def t(a):
        return torch.tensor(np.asarray(a, dtype=np.float64), requires_grad=True)

    p = {k: t(v) for k, v in params.items()}
    xt, st = t(x), [t(s) for s in states]
    out = forward(p, xt, *st, **kwargs)
    hs = out[0] if isinstance(out, tuple) else out
    loss = (hs * torch.tensor(np.asarray(dhs, dtype=np.float64))).sum()
    grads = torch.autograd.grad(loss, [xt, *st, *p.values()], allow_unused=True)
    grads = [np.zeros(a.shape) if g is None else g.numpy() for g, a in
             zip(grads, [xt, *st, *p.values()])]
    result = {"hs": hs.detach().numpy(), "dx": grads[0]}
    for name, g in zip(("dh0", "dc0"), grads[1:1 + len(st)]):
        result[name] = g
    result["dparams"] = dict(zip(p, grads[1 + len(st):]))
    return result
