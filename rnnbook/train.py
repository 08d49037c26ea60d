"""Training any rnnbook cell on a task: loss heads, optimizers, and one small loop.
Chapters 03-06 use it; it is checked against torch in tests/test_train.py.

A *cell* is a module with the contract of every rnnbook cell (rnn, residual, lstm, gru):
``forward(params, x, *states, **cell_kwargs) -> hs, cache`` and
``backward(dhs, cache) -> dx, *dstates, dparams``. The number of states (one, h0; two
for the LSTM, h0 and c0) is read from forward's signature; the loop starts every
sequence from zero states.

The head reads the states linearly, ``out = V h + c`` (NNDL's output layer), from the
last state (``where="last"``: out (N, K)) or from every state (``where="all"``:
out (T, N, K)), and scores ``out`` with one of two losses, each a mean:

    cross_entropy(logits, y) -> loss, dlogits   softmax + negative log-likelihood,
                                                mean over examples (and steps);
                                                y int labels, logits (..., K)
    mse(pred, y) -> loss, dpred                 mean over all entries of (pred - y)^2
                                                (torch.nn.MSELoss: no factor 1/2)

Everything else:

    params = init_params(rnn.PARAMS, M, D, rng)        U(-1/sqrt(D), 1/sqrt(D)), as torch
    head = init_head(D, K, rng)                        {"V": (K, D), "c": (K,)}
    out = readout(head, hs, where)
    loss, dhs, dhead, out = head_loss(head, hs, y, loss="mse", where="last")
    opt = SGD(lr, momentum=0, weight_decay=0)          torch.optim.SGD's update
    opt = Adam(lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0)   torch.optim.Adam's
    new_params = opt.step(params, grads)               a new dict; inputs untouched
    result = fit(cell, params, task, steps, lr=..., ...)   -> Result
    metrics = evaluate(cell, params, head, x, y, loss=..., where=...)

``fit`` draws a fresh batch ``task(rng)`` every step (e.g.
``functools.partial(rnnbook.tasks.adding, T=50, N=32)``), computes loss and gradients
(the cell's backward plus the head's), records the global gradient norm and, apart, the
norms of the cell's and of the head's gradients, clips (``clip``: None, a float max_norm
for ``rnnbook.clip.clip_grad_norm``, or any function grads -> grads), and updates the
parameters (the cell's and the head's, one dict; ``frozen`` names any kept fixed) with
the optimizer. It stops early when the loss or the gradient stops being finite, or an
update makes a parameter non-finite, and says at which step (``Result.diverged_at``).
Floating-point warnings are silenced inside the loop (the history shows them).
Bad arguments raise ValueError naming the argument.
"""
import dataclasses
import inspect
import math
import sys
import time

import numpy as np

from rnnbook import _validate, clip as _clip

LOSSES = ("cross_entropy", "mse")
WHERE = ("last", "all")


# ---- the head: readout and losses -----------------------------------------------------

def init_params(spec, M, D, rng, scale=None):
    """Parameters for a cell from its named dimensions (e.g. ``rnn.PARAMS``), every
    entry uniform in (-scale, scale), scale = 1/sqrt(D) by default (torch's RNN init).

    spec -- {key: "D D" | "D M" | "D"}; M input size; D state size; rng numpy Generator
    """
    sizes = {"M": _positive_int("M", M), "D": _positive_int("D", D)}
    if not isinstance(spec, dict) or not spec:
        raise ValueError(f"spec must be a non-empty dict {{key: dims}}, got {spec!r}")
    bound = 1.0 / math.sqrt(D) if scale is None else _nonnegative("scale", scale)
    out = {}
    for key, dims in spec.items():
        try:
            shape = tuple(sizes[d] for d in dims.split())
        except (KeyError, AttributeError):
            raise ValueError(f"spec[{key!r}] must name dimensions among M and D, "
                             f"got {dims!r}") from None
        out[key] = rng.uniform(-bound, bound, size=shape)
    return out


def init_head(D, K, rng, scale=None):
    """The readout {"V": (K, D), "c": (K,)}, uniform in (-1/sqrt(D), 1/sqrt(D))
    (torch.nn.Linear's init) unless ``scale`` is given."""
    return init_params({"V": "M D", "c": "M"}, K, D, rng,
                       1.0 / math.sqrt(D) if scale is None else scale)


def _check_head(head, D=None):
    dims = _validate.Dims() if D is None else _validate.Dims(D=D)
    return dims.params("head", head, {"V": "K D", "c": "K"})


def readout(head, hs, where="last"):
    """out = V h + c for the last state (N, K) or for every state (T, N, K).

    head -- {"V": (K, D), "c": (K,)}; hs -- (T, N, D)
    """
    _where(where)
    dims = _validate.Dims()
    hs = dims.array("hs", hs, "T N D")
    head = _check_head(head, dims.sizes["D"])
    h = hs[-1] if where == "last" else hs
    return h @ head["V"].T + head["c"]


def cross_entropy(logits, y):
    """Mean softmax cross-entropy and its gradient.

    logits -- (..., K) floats; y -- integer labels in 0..K-1 of shape logits.shape[:-1]
    Returns (loss, dlogits): loss = mean over all positions of -log softmax(logits)[y],
    dlogits = (softmax(logits) - onehot(y)) / number of positions.
    """
    logits = np.asarray(logits)
    if logits.ndim < 1 or logits.shape[-1] < 1 or logits.size == 0:
        raise ValueError(f"logits must have shape (..., K), got {logits.shape}")
    y = _labels(y, logits.shape[:-1], logits.shape[-1])
    shifted = logits - logits.max(axis=-1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    picked = np.take_along_axis(log_p, y[..., None], axis=-1)[..., 0]
    count = y.size
    dlogits = np.exp(log_p)
    np.put_along_axis(dlogits, y[..., None],
                      np.take_along_axis(dlogits, y[..., None], axis=-1) - 1.0, axis=-1)
    return float(-picked.sum() / count), dlogits / count


def mse(pred, y):
    """Mean squared error and its gradient: loss = mean((pred - y)^2),
    dpred = 2 (pred - y) / pred.size. pred and y have the same shape."""
    pred, y = np.asarray(pred, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if pred.shape != y.shape:
        raise ValueError(f"y must have the shape of the predictions {pred.shape}, "
                         f"got {y.shape}")
    diff = pred - y
    return float(np.mean(diff ** 2)), 2.0 * diff / diff.size


def head_loss(head, hs, y, loss="mse", where="last"):
    """Readout, loss, and the gradients the cell's backward and the optimizer need.

    head -- {"V": (K, D), "c": (K,)}; hs -- (T, N, D); y -- targets for ``loss``:
            mse: (N, K) with where="last", (T, N, K) with where="all";
            cross_entropy: int labels (N,) or (T, N)
    Returns (loss value, dhs (T, N, D), dhead {"V", "c"}, out).
    """
    fn = _loss(loss)
    readout(head, hs, where)   # validates head, hs and where
    return _head_loss(fn, {k: np.asarray(v, dtype=np.float64) for k, v in head.items()},
                      np.asarray(hs, dtype=np.float64), y, where)


def _head_loss(fn, head, hs, y, where):
    """head_loss without the checks (fit checks once, before the loop)."""
    h = hs[-1] if where == "last" else hs
    out = h @ head["V"].T + head["c"]
    value, dout = fn(out, y)
    K, D = dout.shape[-1], hs.shape[-1]
    dhead = {"V": dout.reshape(-1, K).T @ h.reshape(-1, D),
             "c": dout.reshape(-1, K).sum(axis=0)}
    dh = dout @ head["V"]
    if where == "last":
        dhs = np.zeros_like(hs)
        dhs[-1] = dh
    else:
        dhs = dh
    return value, dhs, dhead, out


def _loss(loss):
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
    return cross_entropy if loss == "cross_entropy" else mse


def _where(where):
    if where not in WHERE:
        raise ValueError(f"where must be one of {WHERE}, got {where!r}")


def _labels(y, shape, K):
    y = np.asarray(y)
    if not (np.issubdtype(y.dtype, np.integer) or y.dtype == bool):
        raise ValueError(f"y must hold integer class labels, got dtype {y.dtype}")
    if y.shape != shape:
        raise ValueError(f"y must have shape {shape} (the logits' shape without K), "
                         f"got {y.shape}")
    if y.size and (y.min() < 0 or y.max() >= K):
        raise ValueError(f"y must hold labels in 0..{K - 1}, got {y.min()}..{y.max()}")
    return y.astype(np.int64)


# ---- optimizers -----------------------------------------------------------------------

class SGD:
    """Stochastic gradient descent with torch.optim.SGD's update (dampening 0, no
    Nesterov): g <- g + weight_decay * p; with momentum, buf <- momentum * buf + g
    (buf = g at the first step) and g <- buf; then p <- p - lr * g."""

    def __init__(self, lr, momentum=0.0, weight_decay=0.0):
        self.lr = _positive("lr", lr)
        self.momentum = _nonnegative("momentum", momentum)
        self.weight_decay = _nonnegative("weight_decay", weight_decay)
        self.buffers = {}

    def step(self, params, grads):
        """Returns the updated parameters as a new dict."""
        _same_keys(params, grads)
        new = {}
        for k, p in params.items():
            g = grads[k] + self.weight_decay * p if self.weight_decay else grads[k]
            if self.momentum:
                buf = self.buffers.get(k)
                buf = g.copy() if buf is None else self.momentum * buf + g
                self.buffers[k] = buf
                g = buf
            new[k] = p - self.lr * g
        return new


class Adam:
    """Adam (Kingma and Ba 2015) with torch.optim.Adam's update (L2 weight decay added
    to the gradient, not AdamW): m <- b1 m + (1 - b1) g, v <- b2 v + (1 - b2) g^2,
    p <- p - lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)."""

    def __init__(self, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        self.lr = _positive("lr", lr)
        try:
            b1, b2 = betas
        except (TypeError, ValueError):
            raise ValueError(f"betas must be a pair (b1, b2), got {betas!r}") from None
        self.betas = (_unit("betas[0]", b1), _unit("betas[1]", b2))
        self.eps = _nonnegative("eps", eps)
        self.weight_decay = _nonnegative("weight_decay", weight_decay)
        self.t, self.m, self.v = 0, {}, {}

    def step(self, params, grads):
        """Returns the updated parameters as a new dict."""
        _same_keys(params, grads)
        self.t += 1
        b1, b2 = self.betas
        bias1, bias2 = 1.0 - b1 ** self.t, 1.0 - b2 ** self.t
        new = {}
        for k, p in params.items():
            g = grads[k] + self.weight_decay * p if self.weight_decay else grads[k]
            self.m[k] = b1 * self.m.get(k, 0.0) + (1.0 - b1) * g
            self.v[k] = b2 * self.v.get(k, 0.0) + (1.0 - b2) * g * g
            denom = np.sqrt(self.v[k]) / math.sqrt(bias2) + self.eps
            new[k] = p - (self.lr / bias1) * self.m[k] / denom
        return new


def _same_keys(params, grads):
    if not isinstance(params, dict) or not isinstance(grads, dict):
        raise ValueError("params and grads must be dicts of arrays")
    if set(params) != set(grads):
        raise ValueError(f"grads must have the keys of params {sorted(params)}, "
                         f"got {sorted(grads)}")


# ---- the loop -------------------------------------------------------------------------

@dataclasses.dataclass
class Result:
    """What ``fit`` returns.

    params, head -- the trained parameters (those before the failing step if it diverged)
    history      -- dict of arrays of length ``steps``, one entry per step (NaN after a
                    divergence): "loss"; "grad_norm", the global 2-norm of the gradients
                    of all trained parameters (all but ``frozen``) before clipping, the
                    norm that clipping tests; "grad_norm_cell" and "grad_norm_head", the
                    2-norms of the cell's gradients and of the head's (V, c), frozen or
                    not, before clipping; "clipped", 1.0 when clipping scaled or changed
                    the gradient (with a float ``clip``: when its factor
                    clip / (grad_norm + 1e-6) is below 1), else 0.0; "accuracy" with
                    cross_entropy (share of correct argmax predictions)
    diverged_at  -- the first step whose loss or gradient was not finite, or whose update
                    made a parameter non-finite; None if training ran to the end
    seconds      -- wall time of the loop
    """
    params: dict
    head: dict
    history: dict
    diverged_at: int = None
    seconds: float = 0.0


def fit(cell, params, task, steps, *, lr, optimizer="sgd", loss="mse", where="last",
        head=None, outputs=None, clip=None, weight_decay=0.0, seed=0, cell_kwargs=None,
        progress=None, desc=None, frozen=()):
    """Train ``cell`` (with its parameters ``params``) and a linear head on ``task``.

    cell      -- a cell module (rnnbook.rnn, rnnbook.residual, ...)
    params    -- the cell's initial parameters (not modified)
    task      -- task(rng) -> (x (T, N, M), y), a fresh batch per call
    steps     -- number of updates
    lr        -- learning rate
    optimizer -- "sgd", "adam", or an object with step(params, grads) -> params
                 (its state is then the caller's)
    loss, where -- the head: "mse" or "cross_entropy"; from the "last" or "all" states
    head      -- initial {"V", "c"}; default init_head(D, outputs, rng)
    outputs   -- K, the number of outputs, when head is None (mse: taken from y)
    clip      -- None, a float max_norm (rnnbook.clip.clip_grad_norm), or a function
                 grads -> clipped grads
    weight_decay -- L2 penalty of the named optimizers
    seed      -- seeds the batches (and the default head)
    cell_kwargs -- passed to cell.forward, e.g. {"reset": "after"} for the GRU
    progress  -- a tqdm bar: True, False, or None (only when stderr is a terminal)
    frozen    -- names of parameters (the cell's or the head's "V", "c") kept at their
                 initial values: their gradients are computed and their norms recorded,
                 but they are neither clipped nor counted in "grad_norm", nor updated
                 (like torch parameters with requires_grad=False)
    Returns a ``Result``.
    """
    steps = _positive_int("steps", steps, zero=True)
    loss_fn = _loss(loss)
    _where(where)
    if not callable(task):
        raise ValueError(f"task must be a function rng -> (x, y), got {task!r}")
    if clip is not None and not callable(clip):
        max_norm, clip_fn = _clip._check_threshold("clip", clip), None
    else:
        max_norm, clip_fn = None, clip
    n_states = _n_states(cell)
    cell_kwargs = dict(cell_kwargs or {})
    rng = np.random.default_rng(seed)
    params = {k: np.asarray(v, dtype=np.float64).copy() for k, v in params.items()}
    D = _state_size(params)
    frozen = _frozen(frozen, params)
    if isinstance(optimizer, str):
        if optimizer not in ("sgd", "adam"):
            raise ValueError(f"optimizer must be 'sgd', 'adam' or an object with step(), "
                             f"got {optimizer!r}")
        opt = (SGD if optimizer == "sgd" else Adam)(lr, weight_decay=weight_decay)
    elif hasattr(optimizer, "step"):
        opt = optimizer
    else:
        raise ValueError(f"optimizer must be 'sgd', 'adam' or an object with step(), "
                         f"got {optimizer!r}")

    history = {name: np.full(steps, np.nan) for name in
               ("loss", "grad_norm", "grad_norm_cell", "grad_norm_head", "clipped")}
    if loss == "cross_entropy":
        history["accuracy"] = np.full(steps, np.nan)
    diverged_at, start = None, time.perf_counter()
    show = sys.stderr.isatty() if progress is None else bool(progress)
    bar = _tqdm(steps, show, desc)
    for s in range(steps):
        x, y = task(rng)
        x = np.asarray(x, dtype=np.float64)
        if s == 0:
            head = _first_head(head, outputs, loss, y, D, rng)
            if set(head) & set(params):
                raise ValueError(f"params must not use the head's keys {sorted(head)}")
        states = [np.zeros((x.shape[1], D)) for _ in range(n_states)]
        with np.errstate(all="ignore"):
            hs, cache = cell.forward(params, x, *states, **cell_kwargs)
            if not np.all(np.isfinite(hs)):
                diverged_at = s
                break
            if s == 0:
                readout(head, hs, where)                 # checks the head once
            value, dhs, dhead, out = _head_loss(loss_fn, head, hs, y, where)
            if not (math.isfinite(value) and np.all(np.isfinite(dhs))):
                history["loss"][s] = value
                diverged_at = s
                break
            dcell = cell.backward(dhs, cache)[-1]
            history["grad_norm_cell"][s] = _clip.global_norm(dcell)
            history["grad_norm_head"][s] = _clip.global_norm(dhead)
            grads = {k: g for k, g in {**dcell, **dhead}.items() if k not in frozen}
            if max_norm is not None:                     # clip_grad_norm: its norm
                clipped, norm = _clip.clip_grad_norm(grads, max_norm)
                fired = max_norm / (norm + _clip.EPS) < 1.0   # it scaled the gradient
            else:
                norm = _clip.global_norm(grads)
                clipped = grads if clip_fn is None else clip_fn(grads)
                clipped = clipped[0] if isinstance(clipped, tuple) else clipped
                fired = clipped is not grads and any(
                    not np.array_equal(clipped[k], grads[k]) for k in grads)
            history["loss"][s], history["grad_norm"][s] = value, norm
            if loss == "cross_entropy":
                history["accuracy"][s] = float(np.mean(out.argmax(axis=-1) == y))
            if not math.isfinite(norm):
                diverged_at = s
                break
            history["clipped"][s] = float(fired)
            grads = clipped
            new = opt.step({k: v for k, v in {**params, **head}.items()
                            if k not in frozen}, grads)
        if not all(np.all(np.isfinite(v)) for v in new.values()):
            diverged_at = s
            break
        params = {k: new.get(k, v) for k, v in params.items()}
        head = {k: new.get(k, v) for k, v in head.items()}
        bar.update(1)
        if s % 10 == 0 or s == steps - 1:
            bar.set_postfix(loss=f"{value:.3g}", norm=f"{norm:.3g}", refresh=False)
    bar.close()
    return Result(params, head, history, diverged_at, time.perf_counter() - start)


def _frozen(frozen, params):
    """The set of frozen parameter names, checked against the cell's and the head's."""
    try:
        names = set(frozen)
    except TypeError:
        names = None
    if isinstance(frozen, str) or names is None or not all(isinstance(k, str)
                                                           for k in names):
        raise ValueError(f"frozen must be a list of parameter names, got {frozen!r}")
    frozen = names
    known = set(params) | {"V", "c"}
    if frozen - known:
        raise ValueError(f"frozen must name parameters among {sorted(known)}, "
                         f"got {sorted(frozen - known)}")
    if frozen == known:
        raise ValueError("frozen must leave at least one parameter to train")
    return frozen


def _first_head(head, outputs, loss, y, D, rng):
    if head is not None:
        head = {k: np.asarray(v, dtype=np.float64).copy() for k, v in head.items()}
        return _check_head(head, D)
    K = outputs
    if K is None and loss == "mse":
        K = np.shape(y)[-1]
    if K is None:
        raise ValueError("outputs (the number of classes) is needed with "
                         "loss='cross_entropy' when head is None")
    return init_head(D, _positive_int("outputs", K), rng)


def evaluate(cell, params, head, x, y, loss="mse", where="last", cell_kwargs=None):
    """Loss (and accuracy, with cross_entropy) of a trained model on one batch,
    from zero states. Returns {"loss": float[, "accuracy": float]}."""
    x = np.asarray(x, dtype=np.float64)
    D = _state_size(params)
    states = [np.zeros((x.shape[1], D)) for _ in range(_n_states(cell))]
    hs, _ = cell.forward(params, x, *states, **dict(cell_kwargs or {}))
    value, _, _, out = head_loss(head, hs, y, loss, where)
    result = {"loss": value}
    if loss == "cross_entropy":
        result["accuracy"] = float(np.mean(out.argmax(axis=-1) == np.asarray(y)))
    return result


# ---- helpers --------------------------------------------------------------------------

def _n_states(cell):
    """How many initial states cell.forward takes: its positional parameters without a
    default, after params and x (rnn, residual, gru: 1; lstm: 2)."""
    if not (hasattr(cell, "forward") and hasattr(cell, "backward")):
        raise ValueError(f"cell must be a module with forward and backward, got {cell!r}")
    sig = inspect.signature(cell.forward)
    positional = [p for p in sig.parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
                  and p.default is p.empty]
    if len(positional) < 3:
        raise ValueError("cell.forward must take (params, x, h0, ...)")
    return len(positional) - 2


def _state_size(params):
    """D, read from the 1-D parameters (every cell's biases are (D,))."""
    if not isinstance(params, dict) or not params:
        raise ValueError("params must be a non-empty dict of arrays")
    sizes = {np.shape(v)[0] for v in params.values() if np.ndim(v) == 1}
    if len(sizes) != 1:
        raise ValueError("params must hold biases of one size D (the state size), "
                         f"got sizes {sorted(sizes)}")
    return sizes.pop()


def _tqdm(total, show, desc):
    if not show:
        return _NoBar()
    from tqdm import tqdm
    return tqdm(total=total, desc=desc, leave=False)


class _NoBar:
    def update(self, n):
        pass

    def set_postfix(self, **kwargs):
        pass

    def close(self):
        pass


def _number(name, value):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.number)):
        raise ValueError(f"{name} must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return value


def _positive(name, value):
    value = _number(name, value)
    if value <= 0:
        raise ValueError(f"{name} must be > 0, got {value}")
    return value


def _nonnegative(name, value):
    value = _number(name, value)
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return value


def _unit(name, value):
    value = _number(name, value)
    if not 0 <= value < 1:
        raise ValueError(f"{name} must be in [0, 1), got {value}")
    return value


def _positive_int(name, value, zero=False):
    low = 0 if zero else 1
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) \
            or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)
