"""Long short-term memory (LSTM), NNDL section 6.6; its gradients are NNDL exercise 6-4.
Book: chapter 04 (derivation, eqs. 4.1-4.16; NNDL does not number the backward pass).

    i_t = sigmoid(W_i x_t + U_i h_{t-1} + b_i)        input gate           (4.1)
    f_t = sigmoid(W_f x_t + U_f h_{t-1} + b_f)        forget gate          (4.2)
    o_t = sigmoid(W_o x_t + U_o h_{t-1} + b_o)        output gate          (4.3)
    c~_t = tanh(W_c x_t + U_c h_{t-1} + b_c)          candidate state      (4.4)
    c_t = f_t * c_{t-1} + i_t * c~_t                  internal state       (4.5)
    h_t = o_t * tanh(c_t)                             external state       (4.6)

Backward (one sweep from t = T down to 1), with z^g_t the net input of gate g and
delta^g_t = dL/dz^g_t; dL/dh_t and dL/dc_t are total derivatives (all later losses):

    dL/dh_t = dL_t/dh_t + sum_g U_g^T delta^g_{t+1}                         (4.7)
    dL/dc_t = dL/dh_t * o_t * (1 - tanh(c_t)^2) + dL/dc_{t+1} * f_{t+1}     (4.8)
    delta^o_t = dL/dh_t * tanh(c_t) * o_t (1 - o_t)                         (4.9)
    delta^i_t = dL/dc_t * c~_t * i_t (1 - i_t)                              (4.10)
    delta^f_t = dL/dc_t * c_{t-1} * f_t (1 - f_t)                           (4.11)
    delta^c_t = dL/dc_t * i_t * (1 - c~_t^2)                                (4.12)
    dL/dW_g = sum_t delta^g_t x_t^T                                         (4.13)
    dL/dU_g = sum_t delta^g_t h_{t-1}^T                                     (4.14)
    dL/db_g = sum_t delta^g_t                                               (4.15)
    dL/dx_t = sum_g W_g^T delta^g_t,  dL/dh_0 = sum_g U_g^T delta^g_1,
    dL/dc_0 = dL/dc_1 * f_1                                                 (4.16)

Shapes are time-major: x (T, N, M), h0 and c0 (N, D), hs (T, N, D). params use NNDL's
names: W_g (D, M), U_g (D, D), b_g (D,) for the gates g = i, f, o and the candidate c.
Inside, the blocks are stacked in PyTorch's order i, f, c~ (PyTorch's "g"), o into one
matrix [W, b, U] of shape (4D, M + 1 + D): the net inputs of all four blocks are one
matrix product, before the time loop for all x_t at once and in the loop one product
with h_{t-1} per step; after the loop, one product gives every weight gradient.
Row vectors in code: ``h @ U.T`` is U h for every example of the batch.
"""
import numpy as np

from rnnbook import _validate

GATES = ("i", "f", "c", "o")   # stacking order of the blocks (PyTorch's i, f, g, o)
PARAMS = {f"{kind}_{g}": dims for g in ("i", "f", "o", "c")
          for kind, dims in (("W", "D M"), ("U", "D D"), ("b", "D"))}


def forward(params, x, h0, c0):
    """Run the LSTM over a sequence.

    params -- dict W_g (D, M), U_g (D, D), b_g (D,) for g in i, f, o, c
    x      -- inputs, (T, N, M)
    h0, c0 -- initial external and internal states, (N, D) each
    Returns hs (T, N, D), the states h_1..h_T, and a cache for ``backward``, a dict:
    "cs" the internal states c_1..c_T (T, N, D), "tanh_cs" their tanh, "acts" the
    gates (T, N, 4, D) in the order i, f, c~, o, "xh" the rows [x_t, 1, h_{t-1}]
    (T, N, M + 1 + D), "WbU" = stack(params), "c0".
    Float32 inputs and parameters give float32 results; anything else float64.
    """
    dims = _validate.Dims()
    x = dims.array("x", x, "T N M")
    params = dims.params("params", params, PARAMS)
    h0 = dims.array("h0", h0, "N D")
    c0 = dims.array("c0", c0, "N D")
    (T, N, M), D = x.shape, dims.sizes["D"]
    dtype = _validate.common_dtype(x, h0, c0, *params.values())
    WbU = stack(params, dtype)       # (4D, M+1+D) = [W, b, U], blocks i, f, c~, o
    U_T = WbU[:, M + 1:].T.copy()    # (D, 4D), contiguous: h @ U_T is one fast GEMM

    xh = np.empty((T, N, M + 1 + D), dtype)   # rows [x_t, 1, h_{t-1}], kept for
    xh[:, :, :M], xh[:, :, M], xh[0, :, M + 1:] = x, 1, h0   # the weight gradients
    acts = xh[:, :, :M + 1].reshape(T * N, M + 1) @ WbU[:, :M + 1].T
    acts = acts.reshape(T, N, 4, D)         # W x_t + b for every t: one GEMM
    cs, tanh_cs, hs = (np.empty((T, N, D), dtype) for _ in range(3))
    z, ic = np.empty((N, 4, D), dtype), np.empty((N, D), dtype)
    h, c = h0.astype(dtype, copy=False), c0.astype(dtype, copy=False)
    for t in range(T):
        a = acts[t]                         # (N, 4, D): W x_t + b, then the gates
        i, f, c_tilde, o = a.transpose(1, 0, 2)        # blocks, (N, D) each
        np.matmul(h, U_T, out=z.reshape(N, 4 * D))     # U h_{t-1}, 4 gates
        z += a                                         # (4.1)-(4.4) z_t
        _sigmoid(z, out=a)                             # (4.1)-(4.3) i, f, o
        np.tanh(z[:, 2], out=c_tilde)                  # (4.4) c~_t, over block 2
        c = np.multiply(f, c, out=cs[t])               # (4.5) f_t * c_{t-1}
        c += np.multiply(i, c_tilde, out=ic)           # (4.5)   + i_t * c~_t
        tanh_c = np.tanh(c, out=tanh_cs[t])
        h = np.multiply(o, tanh_c, out=hs[t])          # (4.6) h_t
        if t + 1 < T:
            xh[t + 1, :, M + 1:] = h
    cache = {"WbU": WbU, "xh": xh, "c0": c0, "acts": acts, "cs": cs,
             "tanh_cs": tanh_cs}
    return hs, cache   # the cache holds no reference to hs: hs is the caller's own


def backward(dhs, cache):
    """Backpropagation through time for the LSTM, one backward sweep.

    dhs   -- dL/dh_t for every t (only the direct part, not through step t+1), (T, N, D)
    cache -- from ``forward``
    Returns dx (T, N, M), dh0 (N, D), dc0 (N, D) and dparams, a dict with the keys
    and shapes of params.
    """
    acts, cs, tanh_cs, xh = cache["acts"], cache["cs"], cache["tanh_cs"], cache["xh"]
    WbU = cache["WbU"]
    T, N, _, D = acts.shape
    M = xh.shape[2] - 1 - D
    dhs = _validate.Dims(T=T, N=N, D=D).array("dhs", dhs, "T N D")
    dtype = _validate.common_dtype(acts, dhs)
    U = WbU[:, M + 1:]

    delta = np.empty((T, N, 4, D), dtype)   # delta[t, :, k] = dL/dz_t, block k
    dh = np.zeros((N, D), dtype)            # dL/dh_t through step t+1
    dc = np.zeros((N, D), dtype)            # dL/dc_t through step t+1
    for t in range(T - 1, -1, -1):
        i, f, c_tilde, o = acts[t].transpose(1, 0, 2)
        d_i, d_f, d_c, d_o = delta[t].transpose(1, 0, 2)
        tanh_c, c_prev = tanh_cs[t], cs[t - 1] if t else cache["c0"]
        dh += dhs[t]                                        # (4.7) all of dL/dh_t
        dc += dh * o * (1 - tanh_c ** 2)                    # (4.8) all of dL/dc_t
        np.multiply(dh * tanh_c, o * (1 - o), out=d_o)      # (4.9)
        np.multiply(dc * c_tilde, i * (1 - i), out=d_i)     # (4.10)
        np.multiply(dc * c_prev, f * (1 - f), out=d_f)      # (4.11)
        np.multiply(dc * i, 1 - c_tilde ** 2, out=d_c)      # (4.12)
        np.matmul(delta[t].reshape(N, 4 * D), U, out=dh)    # (4.7) for t-1
        dc *= f                                             # (4.8) for t-1

    d2 = delta.reshape(T * N, 4 * D)
    dWbU = (xh.reshape(T * N, -1).T @ d2).T                 # (4.13)-(4.15)
    dx = (d2 @ WbU[:, :M]).reshape(T, N, M)                 # (4.16)
    return dx, dh, dc, unstack(dWbU, dtype)


def _sigmoid(z, out):
    """The logistic function 1 / (1 + exp(-z)), computed in ``out``.
    For z < -709, exp(-z) overflows to infinity and the result is exactly 0,
    as it should be."""
    np.negative(z, out=out)
    with np.errstate(over="ignore"):
        np.exp(out, out=out)
    out += 1
    return np.reciprocal(out, out=out)


def stack(params, dtype=None):
    """The parameters as one matrix [W, b, U], (4D, M + 1 + D): row block k holds
    [W_g, b_g, U_g] of the gate g = GATES[k] (i, f, c~, o, PyTorch's order), so that
    [W, b, U] [x_t; 1; h_{t-1}] is the net input of all four gates."""
    blocks = [np.concatenate([params[f"W_{g}"], params[f"b_{g}"][:, None],
                              params[f"U_{g}"]], axis=1) for g in GATES]
    return np.concatenate(blocks).astype(dtype or blocks[0].dtype, copy=False)


def unstack(WbU, dtype=None):
    """The inverse of ``stack``: a params dict from [W, b, U], (4D, M + 1 + D)."""
    D = WbU.shape[0] // 4
    M = WbU.shape[1] - 1 - D
    out = {}
    for k, g in enumerate(GATES):
        block = WbU[k * D:(k + 1) * D].astype(dtype or WbU.dtype, copy=False)
        out[f"W_{g}"], out[f"b_{g}"], out[f"U_{g}"] = block[:, :M], block[:, M], block[:, M + 1:]
    return {key: out[key] for key in PARAMS}


def init(M, D, rng=None, forget_bias=1.0, dtype=np.float64):
    """Parameters of a new LSTM: weights uniform in [-1/sqrt(D), 1/sqrt(D)] (as
    torch.nn.LSTM), biases zero except the forget gate's, b_f = forget_bias.

    forget_bias=1 (the default) follows Jozefowicz et al. (2015): with f_t = sigmoid(1)
    ~ 0.73 at the start, the internal state, and its gradient, are kept over more steps.
    M, D  -- input and state sizes, positive integers
    rng   -- a numpy Generator (or a seed); default a fresh one
    dtype -- float64 or float32
    """
    for name, value in (("M", M), ("D", D)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    try:
        forget_bias = float(forget_bias)
    except (TypeError, ValueError):
        raise ValueError(f"forget_bias must be a real number, got {forget_bias!r}") from None
    if not np.isfinite(forget_bias):
        raise ValueError(f"forget_bias must be finite, got {forget_bias}")
    try:
        dtype = np.dtype(dtype)
    except TypeError:
        raise ValueError(f"dtype must be float32 or float64, got {dtype!r}") from None
    if dtype not in (np.float32, np.float64):
        raise ValueError(f"dtype must be float32 or float64, got {dtype}")
    rng = np.random.default_rng(rng)
    bound = 1 / np.sqrt(D)
    params = {}
    for key, dims in PARAMS.items():
        shape = tuple({"D": D, "M": M}[d] for d in dims.split())
        if key.startswith("b_"):
            params[key] = np.full(shape, forget_bias if key == "b_f" else 0.0, dtype)
        else:
            params[key] = rng.uniform(-bound, bound, size=shape).astype(dtype)
    return params


def from_torch(module):
    """Parameters of a ``torch.nn.LSTM`` as a params dict, reproducing it exactly.

    Accepts only a one-layer, unidirectional ``torch.nn.LSTM`` without projection
    (proj_size=0). PyTorch stacks the blocks i, f, g, o in the rows of weight_ih_l0
    (4D, M) and weight_hh_l0 (4D, D); its g is NNDL's candidate c~. So W_i = rows 0..D-1
    of weight_ih_l0, W_f the next D rows, W_c the next, W_o the last, and the same for
    U from weight_hh_l0; b_g = the block of bias_ih_l0 + bias_hh_l0 (zeros without bias).
    Arrays keep the module's dtype. ``batch_first`` does not change the parameters, but
    ``forward`` always takes time-major x.
    """
    import torch
    if type(module) is not torch.nn.LSTM:
        raise ValueError("module must be a torch.nn.LSTM (one layer, unidirectional, "
                         f"no projection), got {type(module).__name__}")
    if module.num_layers != 1:
        raise ValueError(f"module must have num_layers=1, got {module.num_layers}")
    if module.bidirectional:
        raise ValueError("module must be unidirectional, got bidirectional=True")
    if module.proj_size != 0:
        raise ValueError(f"module must have proj_size=0 (no projection), got {module.proj_size}")

    def np_(p):
        return p.detach().cpu().numpy().copy()

    W, U = np_(module.weight_ih_l0), np_(module.weight_hh_l0)
    if module.bias:
        b = np_(module.bias_ih_l0 + module.bias_hh_l0)
    else:
        b = np.zeros(U.shape[0], U.dtype)
    return {k: v.copy() for k, v in unstack(np.concatenate([W, b[:, None], U], axis=1)).items()}
