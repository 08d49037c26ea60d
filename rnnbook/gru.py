"""Gated recurrent unit (GRU) with either placement of the reset gate; its gradients,
NNDL exercise 6-5. Book: chapter 05 derives NNDL's placement (eqs. 5.1-5.13); the
worked solution of its exercise 1 (solutions/05_gru_gradients.ipynb) derives PyTorch's
(eqs. E1.1-E1.4).

    z_t = sigmoid(W_z x_t + U_z h_{t-1} + b_z)            update gate     (book 5.1)
    r_t = sigmoid(W_r x_t + U_r h_{t-1} + b_r)            reset gate      (book 5.2)
    reset="before" (NNDL; Cho et al.):
    h~_t = tanh(W_h x_t + U_h (r_t * h_{t-1}) + b_h)      candidate       (book 5.3)
    reset="after" (PyTorch, cuDNN), with n_t = U_h h_{t-1} + b_hn:
    h~_t = tanh(W_h x_t + b_h + r_t * n_t)                candidate       (book 5.5)
    h_t = z_t * h_{t-1} + (1 - z_t) * h~_t                new state       (book 5.4)

The update gate weights the OLD state (NNDL, Cho et al. and PyTorch); Ng's course and
Chung et al. (2014) give z the opposite role. The two placements of the reset gate are
different functions, not two parametrisations of one (chapter 05 shows why).

Backward, with dh_t = dL/dh_t (total) and delta^g_t = dL/da^g_t the error of block
g's net input a^g_t (g = z, r, h):

    delta^z_t = dh_t * (h_{t-1} - h~_t) * z_t (1 - z_t)                    (book 5.7)
    delta^h_t = dh_t * (1 - z_t) * (1 - h~_t^2)                            (book 5.8)
    before: delta^r_t = (U_h^T delta^h_t) * h_{t-1} * r_t (1 - r_t)        (book 5.9)
            dh_{t-1} = dL_{t-1}/dh_{t-1} + z_t * dh_t + r_t * U_h^T delta^h_t
                       + U_z^T delta^z_t + U_r^T delta^r_t                 (book 5.10)
            dL/dU_h = sum_t delta^h_t (r_t * h_{t-1})^T                    (book 5.12)
    after:  dn_t = dL/dn_t = delta^h_t * r_t                               (E1.1)
            delta^r_t = delta^h_t * n_t * r_t (1 - r_t)                    (E1.2)
            dh_{t-1} = dL_{t-1}/dh_{t-1} + z_t * dh_t + U_h^T dn_t
                       + U_z^T delta^z_t + U_r^T delta^r_t                 (E1.3)
            dL/dU_h = sum_t dn_t h_{t-1}^T,  dL/db_hn = sum_t dn_t         (E1.4)
    both:   dL/dW_g = sum_t delta^g_t x_t^T,  dL/db_g = sum_t delta^g_t,
            dL/dU_z = sum_t delta^z_t h_{t-1}^T, dL/dU_r likewise          (book 5.11)
            dL/dx_t = W_z^T delta^z_t + W_r^T delta^r_t + W_h^T delta^h_t  (book 5.13)

Shapes are time-major: x (T, N, M), h0 (N, D), hs (T, N, D); params under NNDL's names:
W_g (D, M), U_g (D, D), b_g (D,) for g = z, r, h, and for reset="after" also b_hn (D,),
PyTorch's bias inside the reset product. Inside, the blocks are stacked in the order
z, r, h~ along a first axis: W (3, D, M), U (3, D, D), b (3, D), and every per-step
array is (N, D) for one block, so that the element-wise work runs on contiguous memory.
PyTorch stacks r, z, n in the rows of its matrices; ``from_torch`` does the mapping.
Row vectors: ``h @ U.T`` is U h for every example in the batch.
"""
import numpy as np

from rnnbook import _validate

BLOCKS = ("z", "r", "h")   # stacking order inside: update, reset, candidate
PARAMS = {f"{kind}_{g}": dims for g in BLOCKS
          for kind, dims in (("W", "D M"), ("U", "D D"), ("b", "D"))}
PARAMS_AFTER = {**PARAMS, "b_hn": "D"}   # reset="after": the bias inside r * (U_h h + b_hn)
RESETS = ("before", "after")


def forward(params, x, h0, reset="before"):
    """Run the GRU over a sequence.

    params -- dict W_g (D, M), U_g (D, D), b_g (D,) for g in z, r, h;
              with reset="after" also b_hn (D,)
    x      -- inputs, (T, N, M)
    h0     -- initial state, (N, D)
    reset  -- "before": the reset gate multiplies h_{t-1} before U_h (NNDL, eq. 5.3);
              "after": it multiplies U_h h_{t-1} + b_hn (PyTorch, eq. 5.5)
    Returns hs (T, N, D), the states h_1..h_T, and a cache for ``backward``.
    Float32 inputs and parameters give float32 results; anything else float64.
    """
    if not (isinstance(reset, str) and reset in RESETS):
        raise ValueError(f"reset must be 'before' or 'after', got {reset!r}")
    dims = _validate.Dims()
    x = dims.array("x", x, "T N M")
    params = dims.params("params", params, PARAMS if reset == "before" else PARAMS_AFTER)
    h0 = dims.array("h0", h0, "N D")
    T, N, D = dims.sizes["T"], dims.sizes["N"], dims.sizes["D"]
    dtype = _validate.common_dtype(x, h0, *params.values())
    W, U, b = stack(params, dtype)   # (3, D, M), (3, D, D), (3, D): blocks z, r, h~
    UT = np.ascontiguousarray(U.transpose(0, 2, 1))   # h @ UT[g] is U_g h, by rows

    # a[g, t] = net input of block g (z, r, h~) at step t, then its value;
    # W_g x_t + b_g for every g and t in one batched GEMM, before the loop
    a = np.matmul(x.reshape(T * N, -1), W.transpose(0, 2, 1), dtype=dtype)
    a += b[:, None]
    a = a.reshape(3, T, N, D)
    z, r, h_tilde = a                # (T, N, D) each
    H = np.empty((T + 1, N, D), dtype)   # H[t] = h_t, H[0] = h_0
    H[0] = h0
    inner = np.empty((T, N, D), dtype)   # before: r_t * h_{t-1}; after: n_t
    Uh = np.empty((3, N, D), dtype)      # U_g h_{t-1} (or U_h (r_t * h_{t-1}))
    for t in range(T):
        h_prev, h = H[t], H[t + 1]
        if reset == "before":
            a[:2, t] += np.matmul(h_prev, UT[:2], out=Uh[:2])  # (5.1)-(5.2)
            _sigmoid(a[:2, t], out=a[:2, t])                  # z_t, r_t
            np.multiply(r[t], h_prev, out=inner[t])           # r_t * h_{t-1}
            h_tilde[t] += np.matmul(inner[t], UT[2], out=Uh[2])   # (5.3)
        else:
            np.matmul(h_prev, UT, out=Uh)                     # U_g h_{t-1}, all g
            a[:2, t] += Uh[:2]                                # (5.1)-(5.2)
            _sigmoid(a[:2, t], out=a[:2, t])                  # z_t, r_t
            np.add(Uh[2], params["b_hn"], out=inner[t])       # n_t
            h_tilde[t] += np.multiply(r[t], inner[t], out=Uh[2])  # (5.5)
        np.tanh(h_tilde[t], out=h_tilde[t])                   # h~_t
        np.subtract(h_prev, h_tilde[t], out=h)   # (5.4) h_t = h~_t
        h *= z[t]                                #   + z_t * (h_{t-1} - h~_t)
        h += h_tilde[t]
    cache = {"reset": reset, "W": W, "U": U, "x": x, "H": H, "a": a, "inner": inner}
    return H[1:].copy(), cache   # the caller's hs is its own: changing it cannot change the cache


def backward(dhs, cache):
    """Backpropagation through time for the GRU, one backward sweep.

    dhs   -- dL/dh_t for every t (only the direct part, not through step t+1), (T, N, D)
    cache -- from ``forward`` (either placement of the reset gate)
    Returns dx (T, N, M), dh0 (N, D) and dparams, a dict with the keys and shapes of
    params (nine keys for reset="before", ten for "after").
    """
    reset, W, U, x, H = (cache[k] for k in ("reset", "W", "U", "x", "H"))
    a, inner = cache["a"], cache["inner"]
    T, N, D = inner.shape
    M = x.shape[2]
    dhs = _validate.Dims(T=T, N=N, D=D).array("dhs", dhs, "T N D")
    dtype = _validate.common_dtype(H, dhs)
    z, r, h_tilde = a                       # values of the gates and candidate

    delta = np.empty((3, T, N, D), dtype)   # delta[g, t] = dL/da^g_t, g = z, r, h~
    dz, dr, dah = delta
    dn = np.empty((T, N, D), dtype) if reset == "after" else None   # dL/dn_t
    dh = np.zeros((N, D), dtype)            # dL/dh_t through step t+1
    g, s, back = (np.empty((N, D), dtype) for _ in range(3))   # scratch
    for t in range(T - 1, -1, -1):
        dh += dhs[t]                                  # all of dL/dh_t
        np.subtract(1, z[t], out=g)
        g *= dh                                       # (5.6) dL/dh~_t
        np.subtract(H[t + 1], h_tilde[t], out=dz[t])  # = z_t (h_{t-1} - h~_t)
        dz[t] *= g                                    # (5.7)
        np.multiply(h_tilde[t], h_tilde[t], out=dah[t])
        np.subtract(1, dah[t], out=dah[t])            # tanh' = 1 - h~_t^2
        dah[t] *= g                                   # (5.8)
        np.subtract(1, r[t], out=s)
        s *= inner[t]                                 # (1 - r_t) * inner_t
        if reset == "before":                         # s = r_t (1 - r_t) h_{t-1}
            np.matmul(dah[t], U[2], out=back)         # U_h^T delta^h_t
            np.multiply(back, s, out=dr[t])           # (5.9)
            back *= r[t]                              # r_t * U_h^T delta^h_t
        else:                                         # s = (1 - r_t) n_t
            np.multiply(dah[t], r[t], out=dn[t])      # (E1.1) dL/dn_t
            np.multiply(dn[t], s, out=dr[t])          # (E1.2)
            np.matmul(dn[t], U[2], out=back)          # U_h^T dL/dn_t (E1.3)
        dh *= z[t]                                    # (5.10): z_t dL/dh_t
        dh += back                                    #   + the path via h~_t
        dh += np.matmul(dz[t], U[0], out=back)        #   + U_z^T delta^z_t
        dh += np.matmul(dr[t], U[1], out=back)        #   + U_r^T delta^r_t

    d2 = delta.reshape(3, T * N, D)
    dT = d2.transpose(0, 2, 1)                                # delta_g^T
    x2, h2 = x.reshape(T * N, M), H[:-1].reshape(T * N, D)
    dW = np.matmul(dT, x2)                                    # (5.11)
    db = d2.sum(axis=1)                                       # (5.11)
    dx = d2[0] @ W[0]                                         # (5.13)
    dx += d2[1] @ W[1]
    dx += d2[2] @ W[2]
    dU = np.empty((3, D, D), dtype)
    np.matmul(dT[:2], h2, out=dU[:2])                         # (5.11)
    if reset == "before":
        np.matmul(dT[2], inner.reshape(T * N, D), out=dU[2])  # (5.12)
    else:
        np.matmul(dn.reshape(T * N, D).T, h2, out=dU[2])      # (E1.4)
    dparams = unstack(dW, dU, db, dtype)
    if reset == "after":
        dparams["b_hn"] = dn.sum(axis=(0, 1))                 # (E1.4)
    return dx.reshape(T, N, M).astype(dtype, copy=False), dh, dparams


def _sigmoid(a, out):
    """The logistic function, (1 + tanh(a / 2)) / 2: no overflow for any a."""
    np.multiply(a, 0.5, out=out)
    np.tanh(out, out=out)
    out += 1
    out *= 0.5
    return out


def stack(params, dtype=None):
    """The blocks z, r, h~ stacked: W (3, D, M), U (3, D, D), b (3, D)."""
    return tuple(np.stack([params[f"{kind}_{g}"] for g in BLOCKS]).astype(
        dtype or params[f"{kind}_z"].dtype, copy=False) for kind in "WUb")


def unstack(W, U, b, dtype=None):
    """The inverse of ``stack``: a dict of the nine keys from stacked W, U, b."""
    out = {}
    for k, g in enumerate(BLOCKS):
        for kind, arr in (("W", W), ("U", U), ("b", b)):
            out[f"{kind}_{g}"] = arr[k].astype(dtype or arr.dtype, copy=False)
    return {key: out[key] for key in PARAMS}


def from_torch(module):
    """Parameters of a ``torch.nn.GRU`` for ``forward(..., reset="after")``, reproducing
    it exactly.

    Accepts only a one-layer, unidirectional ``torch.nn.GRU``. PyTorch stacks the blocks
    r, z, n (n is NNDL's candidate h~) in the rows of weight_ih_l0 (3D, M) and
    weight_hh_l0 (3D, D), and has two biases. So W_r, W_z, W_h are the three blocks of
    weight_ih_l0 and U_r, U_z, U_h those of weight_hh_l0; b_r = b_ir + b_hr and
    b_z = b_iz + b_hz (they only ever appear summed); b_h = b_in, and b_hn stays apart,
    because it sits inside r_t * (U_h h_{t-1} + b_hn). Without biases they are zeros.
    Arrays keep the module's dtype. ``batch_first`` does not change the parameters,
    but ``forward`` always takes time-major x.
    """
    import torch
    if type(module) is not torch.nn.GRU:
        raise ValueError("module must be a torch.nn.GRU (one layer, unidirectional), "
                         f"got {type(module).__name__}")
    if module.num_layers != 1:
        raise ValueError(f"module must have num_layers=1, got {module.num_layers}")
    if module.bidirectional:
        raise ValueError("module must be unidirectional, got bidirectional=True")

    def np_(p):
        return p.detach().cpu().numpy().copy()

    W, U = np_(module.weight_ih_l0), np_(module.weight_hh_l0)
    D = U.shape[1]
    if module.bias:
        b_i, b_h = np_(module.bias_ih_l0), np_(module.bias_hh_l0)
    else:
        b_i = b_h = np.zeros(3 * D, U.dtype)
    r, z, n = slice(0, D), slice(D, 2 * D), slice(2 * D, 3 * D)   # PyTorch's order
    params = {}
    for g, block in (("z", z), ("r", r), ("h", n)):
        params[f"W_{g}"], params[f"U_{g}"] = W[block], U[block]
        params[f"b_{g}"] = b_i[block] + b_h[block] if g != "h" else b_i[block]
    params["b_hn"] = b_h[n]
    return {key: params[key].copy() for key in PARAMS_AFTER}
