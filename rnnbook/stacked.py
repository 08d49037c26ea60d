"""Stacked (deep) simple RNN: L tanh layers of rnnbook.rnn, the states of layer l the
inputs of layer l+1, as torch.nn.RNN(num_layers=L) computes. Book: chapter 02.

    z^(l)_t = U^(l) h^(l)_{t-1} + W^(l) h^(l-1)_t + b^(l),   h^(0)_t = x_t    (book 2.13)
    h^(l)_t = tanh(z^(l)_t),   l = 1..L

Backward, layer by layer from the top: layer l's sweep is rnnbook.rnn.backward, and
the gradient it returns for its inputs, W^(l)T delta^(l)_t, is the direct dL/dh^(l-1)_t
that the layer below needs (book 2.14).

    hs, cache = forward(params, x, h0)
        params -- list of L dicts {U, W, b}: layer 1's W is (D, M), the others' (D, D)
        x (T, N, M), h0 (L, N, D) -> hs (T, N, D), the top layer's states
    dx, dh0, dparams = backward(dhs, cache)
        dhs (T, N, D), the direct dL/dh^(L)_t -> dx (T, N, M), dh0 (L, N, D),
        dparams, a list of L dicts with the shapes of params
    params = from_torch(module)     a unidirectional tanh torch.nn.RNN, any num_layers

Every layer has the same state size D, as in torch.nn.RNN. Layer l of the math is
index l - 1 of the lists and of h0 (Python counts from 0).
"""
import numpy as np

from rnnbook import _validate, rnn


def forward(params, x, h0):
    """Run the L-layer RNN over a sequence.

    params -- list of L dicts: U (D, D), W (D, M) for the first layer and (D, D) above
              it, b (D,)
    x      -- inputs, (T, N, M)
    h0     -- initial states of the L layers, (L, N, D)
    Returns hs (T, N, D), the top layer's states, and a cache for ``backward``.
    """
    params, x, h0 = _validated(params, x, h0)
    caches, inputs = [], x
    for layer, p in enumerate(params):
        hs, cache = rnn.forward(p, inputs, h0[layer])   # (2.13), one layer
        caches.append(cache)
        inputs = hs                  # this layer's states feed the next layer
    return hs, {"layers": caches}


def backward(dhs, cache):
    """BPTT through the L layers, from the top layer down.

    dhs   -- dL/dh^(L)_t for every t, the direct part, (T, N, D)
    cache -- from ``forward``
    Returns dx (T, N, M), dh0 (L, N, D) and dparams, a list of L dicts {U, W, b}.
    """
    caches = cache["layers"]
    dh0, dparams = [None] * len(caches), [None] * len(caches)
    d_inputs = dhs
    for layer in range(len(caches) - 1, -1, -1):     # from the top layer down
        out = rnn.backward(d_inputs, caches[layer])   # (2.15)-(2.16), one layer
        d_inputs, dh0[layer], dparams[layer] = out
        # d_inputs = W^T deltabar of this layer: the layer below's dhs (2.14)
    return d_inputs, np.stack(dh0), dparams


def from_torch(module):
    """Parameters of a ``torch.nn.RNN`` with any ``num_layers`` as a list of params
    dicts, reproducing it exactly.

    Layer l: U = weight_hh_l{l}, W = weight_ih_l{l}, b = bias_ih_l{l} + bias_hh_l{l}
    (zeros without bias). Accepts only a unidirectional, tanh ``torch.nn.RNN`` with
    dropout=0: a module with dropout between its layers raises ValueError, even in
    eval mode (where it would compute the same), because this stack has no dropout.
    ``forward`` always takes time-major x (batch_first only changes torch's layout).
    """
    import torch
    if type(module) is not torch.nn.RNN:
        raise ValueError("module must be a torch.nn.RNN (unidirectional, tanh), "
                         f"got {type(module).__name__}")
    if module.bidirectional:
        raise ValueError("module must be unidirectional, got bidirectional=True")
    if module.nonlinearity != "tanh":
        raise ValueError(f"module must use nonlinearity='tanh', got '{module.nonlinearity}'")
    if module.dropout:
        raise ValueError(f"module must have dropout=0 (there is no dropout between "
                         f"the layers here), got {module.dropout}")

    def np_(p):
        return p.detach().cpu().numpy().copy()

    params = []
    for layer in range(module.num_layers):
        U = np_(getattr(module, f"weight_hh_l{layer}"))
        W = np_(getattr(module, f"weight_ih_l{layer}"))
        b = (np_(getattr(module, f"bias_ih_l{layer}") + getattr(module, f"bias_hh_l{layer}"))
             if module.bias else np.zeros(U.shape[0], U.dtype))
        params.append({"U": U, "W": W, "b": b})
    return params


def _validated(params, x, h0):
    """params, x, h0 as validated arrays; ValueError naming the argument otherwise."""
    if not isinstance(params, (list, tuple)) or not params:
        raise ValueError("params must be a non-empty list of dicts {U, W, b}, one per layer, "
                         f"got {type(params).__name__}"
                         + (" of length 0" if isinstance(params, (list, tuple)) else ""))
    dims = _validate.Dims(L=len(params))
    x = dims.array("x", x, "T N M")
    checked = [dims.params("params[0]", params[0], rnn.PARAMS)]
    for layer in range(1, len(params)):
        checked.append(dims.params(f"params[{layer}]", params[layer],
                                   {"U": "D D", "W": "D D", "b": "D"}))
    h0 = dims.array("h0", h0, "L N D")
    return checked, x, h0
