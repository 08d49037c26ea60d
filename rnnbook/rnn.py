"""Simple recurrent network (Elman), NNDL section 6.2; BPTT, NNDL section 6.4.1.
Book: chapter 01 (derivation, eqs. 1.1-1.11), chapter 02 (NumPy and PyTorch).

    z_t = U h_{t-1} + W x_t + b        (book 1.1)
    h_t = tanh(z_t)                    (book 1.2)

Backpropagation through time in one sweep. Its error term has one index,
deltabar_t = dL/dz_t = sum_{s>=t} delta_{s,t} (book: a bold delta with a bar),
the column sum of NNDL's two-index delta_{s,t} = dL_s/dz_t. Here dL_t/dh_t is the
direct derivative of the step's own loss L_t (which reads only h_t); the path through
h_{t+1} is the term U^T deltabar_{t+1}:

    deltabar_t = tanh'(z_t) * (dL_t/dh_t + U^T deltabar_{t+1}) (book 1.11)
    dL/dU = sum_t deltabar_t h_{t-1}^T                         (book 1.10)
    dL/dW = sum_t deltabar_t x_t^T                             (book 1.10)
    dL/db = sum_t deltabar_t                                   (book 1.10)

(book 1.10) is NNDL's double sums (6.39)-(6.41) summed over s first.

Shapes are time-major: x (T, N, M), h0 (N, D), hs (T, N, D);
params: U (D, D) state-to-state, W (D, M) input-to-state, b (D,).
Row vectors in code: ``h @ U.T`` is U h for every example in the batch.
"""
import numpy as np

from rnnbook import _validate


PARAMS = {"U": "D D", "W": "D M", "b": "D"}   # keys and named dimensions of params


def forward(params, x, h0):
    """Run the RNN over a sequence.

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
    h = h0.astype(dtype, copy=False)
    for t in range(T):
        h = np.tanh(xWb[t] + h @ U.T)              # (1.1)-(1.2)
        hs[t] = h
    cache = {"params": params, "x": x, "h0": h0, "hs": hs}
    return hs.copy(), cache   # the caller's hs is its own: changing it cannot change the cache


def backward(dhs, cache):
    """BPTT in one backward sweep, O(T).

    dhs   -- dL_t/dh_t for every t: the direct part only, not through h_{t+1}, (T, N, D)
    cache -- from ``forward``
    Returns dx (T, N, M), dh0 (N, D), dparams {U, W, b} with the shapes of params.
    """
    hs, x, h0 = cache["hs"], cache["x"], cache["h0"]
    U, W = cache["params"]["U"], cache["params"]["W"]
    T, N, D = hs.shape
    M = x.shape[2]
    dhs = _validate.Dims(T=T, N=N, D=D).array("dhs", dhs, "T N D")
    dtype = _validate.common_dtype(hs, dhs)

    delta = np.empty((T, N, D), dtype)   # delta[t] = deltabar_t = dL/dz_t
    dh = np.zeros((N, D), dtype)         # dL/dh_t through h_{t+1}, zero after T
    for t in range(T - 1, -1, -1):
        dh = dh + dhs[t]                          # total dL/dh_t, all paths
        delta[t] = dh * (1.0 - hs[t] ** 2)        # (1.11), tanh'(z_t) = 1 - h_t^2
        dh = delta[t] @ U                         # U^T deltabar_t, as rows
    h_prev = np.concatenate([h0[None].astype(dtype), hs[:-1]])
    d2 = delta.reshape(T * N, D)
    dparams = {
        "U": d2.T @ h_prev.reshape(T * N, D),     # (1.10), U
        "W": (d2.T @ x.reshape(T * N, M)).astype(dtype, copy=False),  # (1.10), W
        "b": d2.sum(axis=0),                      # (1.10), b
    }
    dx = delta @ W                                # dL/dx_t = W^T deltabar_t
    return dx.astype(dtype, copy=False), dh, dparams


def from_torch(module):
    """Parameters of a ``torch.nn.RNN`` as a params dict, reproducing it exactly.

    Accepts only a one-layer, unidirectional, tanh ``torch.nn.RNN``.
    U = weight_hh_l0, W = weight_ih_l0, b = bias_ih_l0 + bias_hh_l0 (zeros without bias).
    Arrays keep the module's dtype. ``batch_first`` does not change the
    parameters, but ``forward`` always takes time-major x.
    """
    import torch
    if type(module) is not torch.nn.RNN:
        raise ValueError("module must be a torch.nn.RNN (one layer, unidirectional, "
                         f"tanh), got {type(module).__name__}")
    if module.num_layers != 1:
        raise ValueError(f"module must have num_layers=1, got {module.num_layers}")
    if module.bidirectional:
        raise ValueError("module must be unidirectional, got bidirectional=True")
    if module.nonlinearity != "tanh":
        raise ValueError(f"module must use nonlinearity='tanh', got '{module.nonlinearity}'")

    def np_(p):
        return p.detach().cpu().numpy().copy()

    U, W = np_(module.weight_hh_l0), np_(module.weight_ih_l0)
    b = np_(module.bias_ih_l0 + module.bias_hh_l0) if module.bias else np.zeros(U.shape[0], U.dtype)
    return {"U": U, "W": W, "b": b}
