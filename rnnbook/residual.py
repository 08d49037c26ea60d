"""The residual state update of NNDL eq. (6.50), with g a tanh layer.
Book: chapter 03 (exploding gradients, exercise 6-3).

    z_t = U h_{t-1} + W x_t + b                   (book 3.2)
    h_t = h_{t-1} + g_t,   g_t = tanh(z_t)        (NNDL 6.50; book 3.2)

The state Jacobian is dh_t/dh_{t-1} = I + diag(1 - g_t^2) U (book 3.4): the identity
carries every earlier state forward unchanged, and the tanh branch adds to it.
Backpropagation through time, with e_t = dL/dh_t (total) and delta_t = dL/dz_t:

    e_t      = dhs[t] + e_{t+1} + U^T delta_{t+1}                 (book 3.6)
    delta_t  = (1 - g_t^2) * e_t                                  (book 3.6)
    dL/dU = sum_t delta_t h_{t-1}^T,  dL/dW = sum_t delta_t x_t^T,  dL/db = sum_t delta_t
                                                 (book 3.7, the form of NNDL 6.39-6.41)

Shapes and contract as ``rnnbook.rnn``: x (T, N, M), h0 (N, D), hs (T, N, D);
params U (D, D), W (D, M), b (D,). PyTorch has no such module, so there is no
``from_torch``; ``rnnbook.reference.residual`` is its autograd reference.
"""
import numpy as np

from rnnbook import _validate


PARAMS = {"U": "D D", "W": "D M", "b": "D"}   # keys and named dimensions of params


def forward(params, x, h0):
    """Run the (6.50) network over a sequence.

    params -- dict U (D, D), W (D, M), b (D,)
    x      -- inputs, (T, N, M)
    h0     -- initial state, (N, D)
    Returns hs (T, N, D), the states h_1..h_T, and a cache for ``backward``.
    """
    dims = _validate.Dims()
    x = dims.array("x", x, "T N M")
    params = dims.params("params", params, PARAMS)
    h0 = dims.array("h0", h0, "N D")
    T, N, D = dims.sizes["T"], dims.sizes["N"], dims.sizes["D"]
    U, W, b = params["U"], params["W"], params["b"]
    dtype = _validate.common_dtype(x, h0, U, W, b)

    xWb = (x @ W.T + b).astype(dtype, copy=False)  # W x_t + b for all t at once
    hs = np.empty((T, N, D), dtype)
    gs = np.empty((T, N, D), dtype)                # g_t = tanh(z_t), for g'(z_t)
    h = h0.astype(dtype, copy=False)
    for t in range(T):
        gs[t] = np.tanh(xWb[t] + h @ U.T)          # g_t = tanh(z_t)     (3.2)
        h = h + gs[t]                              # h_t = h_{t-1} + g_t (6.50)
        hs[t] = h
    cache = {"params": params, "x": x, "h0": h0, "hs": hs, "gs": gs}
    return hs.copy(), cache   # the caller's hs is its own: changing it cannot change the cache


def backward(dhs, cache):
    """BPTT of the (6.50) network in one backward sweep, O(T).

    dhs   -- dL/dh_t for every t (only the direct part, not through h_{t+1}), (T, N, D)
    cache -- from ``forward``
    Returns dx (T, N, M), dh0 (N, D), dparams {U, W, b} with the shapes of params.
    """
    hs, gs, x, h0 = cache["hs"], cache["gs"], cache["x"], cache["h0"]
    U, W = cache["params"]["U"], cache["params"]["W"]
    T, N, D = hs.shape
    M = x.shape[2]
    dhs = _validate.Dims(T=T, N=N, D=D).array("dhs", dhs, "T N D")
    dtype = _validate.common_dtype(hs, dhs)

    delta = np.empty((T, N, D), dtype)   # delta[t] = dL/dz_t
    dh = np.zeros((N, D), dtype)         # dL/dh_t through h_{t+1}, zero after T
    for t in range(T - 1, -1, -1):
        dh = dh + dhs[t]                          # e_t = all of dL/dh_t (3.6)
        delta[t] = dh * (1.0 - gs[t] ** 2)        # delta_t = g' e_t     (3.6)
        dh = dh + delta[t] @ U                    # (I + diag(g')U)^T e_t (3.4)
    h_prev = np.concatenate([h0[None].astype(dtype), hs[:-1]])
    d2 = delta.reshape(T * N, D)
    dparams = {
        "U": d2.T @ h_prev.reshape(T * N, D),     # (3.7), like (6.39)
        "W": (d2.T @ x.reshape(T * N, M)).astype(dtype, copy=False),  # (3.7)
        "b": d2.sum(axis=0),                      # (3.7), like (6.41)
    }
    dx = delta @ W                                # dL/dx_t = W^T delta_t
    return dx.astype(dtype, copy=False), dh, dparams
