"""The simple RNN of ``rnnbook.rnn`` written with torch tensor operations, and its
backward sweep by hand: no autograd inside. Book: chapter 02 (the PyTorch half of 6-2P).

    z_t = U h_{t-1} + W x_t + b        (book 1.1)
    h_t = tanh(z_t)                    (book 1.2)

Backward in one sweep, with the one-index error term deltabar_t = dL/dz_t (book: a bold
delta with a bar), as in rnnbook.rnn; dL_t/dh_t is the direct derivative of the
step's own loss, and the path through h_{t+1} is the term U^T deltabar_{t+1}:

    deltabar_t = tanh'(z_t) * (dL_t/dh_t + U^T deltabar_{t+1}) (book 1.11)
    dL/dU = sum_t deltabar_t h_{t-1}^T, dL/dW = sum_t deltabar_t x_t^T,
    dL/db = sum_t deltabar_t                                   (book 1.10)

``forward`` and ``backward`` have the contract of ``rnnbook.rnn`` (same arguments,
same keys, same shapes), on torch tensors instead of NumPy arrays:

    hs, cache = forward(params, x, h0)         params {U, W, b}, x (T, N, M), h0 (N, D)
    dx, dh0, dparams = backward(dhs, cache)    dhs (T, N, D): the direct dL/dh_t

``backward`` is the O(T) sweep of chapter 01 line for line; it calls no autograd
function, so it also runs under ``torch.no_grad()`` on tensors that carry no graph.
``RNNFunction`` plugs the pair into autograd:

    hs = RNNFunction.apply(x, h0, U, W, b)

``ctx.save_for_backward`` keeps the tensors the sweep needs, so PyTorch refuses to run
the backward pass if one was modified in place after the forward. The sweep is made of
differentiable tensor operations, so it can itself be differentiated (second
derivatives, ``torch.autograd.gradgradcheck``).

Tensors: floating point, one dtype and one device for all of them (as torch.nn.RNN
wants). Bad input raises ValueError naming the argument, as rnnbook.rnn does. The
checks run in torch (shapes, dtype and device, ``torch.isfinite``): nothing is copied
to the CPU or to NumPy, so nothing here is tied to either.
"""
import torch

from rnnbook import _validate

PARAMS = {"U": "D D", "W": "D M", "b": "D"}   # keys and named dimensions, as rnnbook.rnn


def forward(params, x, h0):
    """Run the RNN over a sequence, with torch tensor operations.

    params -- dict of tensors U (D, D), W (D, M), b (D,)
    x      -- inputs, (T, N, M)
    h0     -- initial state, (N, D)
    Returns hs (T, N, D), the states h_1..h_T, and a cache for ``backward``.
    """
    dims = _validate.Dims()
    _check(dims, "x", x, "T N M")
    if not isinstance(params, dict) or set(params) != set(PARAMS):
        dims.params("params", params, PARAMS)   # raises: not a dict, or wrong keys
    for k, spec in PARAMS.items():
        _check(dims, f"params['{k}']", params[k], spec)
    _check(dims, "h0", h0, "N D")
    _same_kind(x=x, h0=h0, **{f"params['{k}']": params[k] for k in PARAMS})
    U, W, b = params["U"], params["W"], params["b"]

    xWb = x @ W.T + b                      # W x_t + b for all t at once
    hs, h = [], h0
    for t in range(x.shape[0]):
        h = torch.tanh(xWb[t] + h @ U.T)   # (1.1)-(1.2)
        hs.append(h)
    hs = torch.stack(hs)
    cache = {"params": {"U": U, "W": W, "b": b}, "x": x, "h0": h0, "hs": hs}
    return hs.clone(), cache   # the caller's hs is its own: changing it cannot change the cache


def backward(dhs, cache):
    """BPTT in one backward sweep, O(T), with tensor operations only (no autograd).

    dhs   -- dL_t/dh_t for every t: the direct part only, not through h_{t+1}, (T, N, D)
    cache -- from ``forward``
    Returns dx (T, N, M), dh0 (N, D), dparams {U, W, b} with the shapes of params.
    """
    hs, x, h0 = cache["hs"], cache["x"], cache["h0"]
    U, W = cache["params"]["U"], cache["params"]["W"]
    T, N, D = hs.shape
    M = x.shape[2]
    _check(_validate.Dims(T=T, N=N, D=D), "dhs", dhs, "T N D")
    _same_kind(hs=hs, dhs=dhs)

    delta = [None] * T                   # delta[t] = deltabar_t = dL/dz_t
    dh = torch.zeros_like(h0)            # dL/dh_t through h_{t+1}, zero after T
    for t in range(T - 1, -1, -1):
        dh = dh + dhs[t]                          # total dL/dh_t, all paths
        delta[t] = dh * (1.0 - hs[t] ** 2)        # (1.11), tanh'(z_t) = 1 - h_t^2
        dh = delta[t] @ U                         # U^T deltabar_t, as rows
    delta = torch.stack(delta)
    h_prev = torch.cat([h0[None], hs[:-1]])
    d2 = delta.reshape(T * N, D)
    dparams = {
        "U": d2.T @ h_prev.reshape(T * N, D),     # (1.10), U
        "W": d2.T @ x.reshape(T * N, M),          # (1.10), W
        "b": d2.sum(dim=0),                       # (1.10), b
    }
    dx = delta @ W                                # dL/dx_t = W^T deltabar_t
    return dx, dh, dparams


# RNNFunction's two methods are also named forward and backward; inside them these
# aliases say which is meant: the sweeps above, not a recursive call.
_sweep_forward, _sweep_backward = forward, backward


class RNNFunction(torch.autograd.Function):
    """hs = RNNFunction.apply(x, h0, U, W, b): the RNN as one autograd node
    whose backward is the hand-written sweep. x (T, N, M), h0 (N, D),
    U (D, D), W (D, M), b (D,) -> hs (T, N, D)."""

    @staticmethod
    def forward(ctx, x, h0, U, W, b):
        hs, _ = _sweep_forward({"U": U, "W": W, "b": b}, x, h0)
        ctx.save_for_backward(x, h0, U, W, hs)   # in-place edits caught
        return hs

    @staticmethod
    def backward(ctx, dhs):
        x, h0, U, W, hs = ctx.saved_tensors
        cache = {"params": {"U": U, "W": W}, "x": x, "h0": h0, "hs": hs}
        dx, dh0, dparams = _sweep_backward(dhs, cache)   # no autograd inside
        return dx, dh0, dparams["U"], dparams["W"], dparams["b"]


def _check(dims, name, value, spec):
    """Check a tensor against the named dimensions ``spec`` ("T N M") of ``dims``, as
    rnnbook._validate.Dims.array checks an array, but in torch: the tensor is never
    copied, moved to the CPU or converted to NumPy, so any device works."""
    if not isinstance(value, torch.Tensor):
        raise ValueError(f"{name} must be a torch tensor, got {type(value).__name__}")
    if value.dtype not in (torch.float32, torch.float64):
        raise ValueError(f"{name} must be a float32 or float64 tensor, got {value.dtype}")
    letters = spec.split()
    label = "(" + ", ".join(letters) + ("," if len(letters) == 1 else "") + ")"
    shape = tuple(value.shape)
    if len(shape) != len(letters):
        raise ValueError(f"{name} must have {len(letters)} dimensions {label}, "
                         f"got shape {shape}")
    if 0 in shape:
        raise ValueError(f"{name} must not be empty, got shape {shape} for {label}")
    bound = dict(dims.sizes)
    for letter, got in zip(letters, shape):
        bound.setdefault(letter, got)
    want = tuple(bound[letter] for letter in letters)
    if shape != want:
        raise ValueError(f"{name} must have shape {label} = {_validate._fmt(want)}, "
                         f"got {shape}")
    if not bool(torch.isfinite(value).all()):
        raise ValueError(f"{name} contains NaN or infinity")
    dims.sizes = bound


def _same_kind(**tensors):
    """All tensors share one dtype and one device (torch's matmul mixes neither)."""
    groups = {}
    for name, t in tensors.items():
        groups.setdefault(f"{t.dtype} on {t.device}", []).append(name)
    if len(groups) > 1:
        got = "; ".join(f"{', '.join(names)}: {kind}" for kind, names in groups.items())
        raise ValueError(f"{', '.join(tensors)} must have one dtype and one device, "
                         f"got {got}")
