"""What is particular to rnnbook.rnn: its parameter gradients against torch.nn.RNN's own
(with and without biases), and the double sums (6.39)-(6.41) against the O(T) sweep. The
tests every cell shares (autograd, finite differences, shapes, float32, bad input) are in
tests/test_cells.py."""
import numpy as np
import pytest
import torch

from rnnbook import rnn
from rnnbook.gradcheck import rel_error


def make_case(T, N, M, D, seed=0, bias=True):
    torch.manual_seed(seed)
    module = torch.nn.RNN(M, D, bias=bias).double()
    rng = np.random.default_rng(seed)
    x, h0, dhs = rng.normal(size=(T, N, M)), rng.normal(size=(N, D)), rng.normal(size=(T, N, D))
    return module, x, h0, dhs


def torch_reference(module, x, h0, dhs):
    """hs and every gradient of sum(hs * dhs) by autograd."""
    module.zero_grad()
    xt = torch.tensor(x, requires_grad=True)
    h0t = torch.tensor(h0[None], requires_grad=True)
    out, _ = module(xt, h0t)
    (out * torch.tensor(dhs)).sum().backward()
    grads = {"U": module.weight_hh_l0.grad.numpy(), "W": module.weight_ih_l0.grad.numpy()}
    if module.bias:
        grads["b"] = module.bias_ih_l0.grad.numpy()  # equals bias_hh_l0.grad
        assert rel_error(module.bias_ih_l0.grad.numpy(), module.bias_hh_l0.grad.numpy()) < 1e-12
    return out.detach().numpy(), xt.grad.numpy(), h0t.grad[0].numpy(), grads


def assert_matches_torch(T, N, M, D, seed=0, bias=True, tol=1e-10):
    module, x, h0, dhs = make_case(T, N, M, D, seed, bias)
    params = rnn.from_torch(module)
    hs, cache = rnn.forward(params, x, h0)
    dx, dh0, dparams = rnn.backward(dhs, cache)
    hs_t, dx_t, dh0_t, grads_t = torch_reference(module, x, h0, dhs)
    assert hs.shape == (T, N, D) and dx.shape == (T, N, M) and dh0.shape == (N, D)
    assert rel_error(hs, hs_t) < tol
    assert rel_error(dx, dx_t) < tol
    assert rel_error(dh0, dh0_t) < tol
    assert set(dparams) == {"U", "W", "b"}
    for key, g in grads_t.items():
        assert dparams[key].shape == params[key].shape
        assert rel_error(dparams[key], g) < tol, key


@pytest.mark.parametrize("bias", [True, False])
def test_parameter_gradients_match_torch_module(bias):
    assert_matches_torch(5, 3, 4, 6, bias=bias)
    assert_matches_torch(1, 1, 1, 1, bias=bias)


def test_double_sum_equals_sweep():
    """(6.39)-(6.41) as the literal sum over t and k <= t equal the O(T) sweep."""
    rng = np.random.default_rng(2)
    T, N, M, D = 5, 2, 3, 4
    params = {"U": rng.normal(size=(D, D)) * 0.4, "W": rng.normal(size=(D, M)), "b": rng.normal(size=D)}
    x, h0, dhs = rng.normal(size=(T, N, M)), rng.normal(size=(N, D)), rng.normal(size=(T, N, D))
    hs, cache = rnn.forward(params, x, h0)
    h_prev = np.concatenate([h0[None], hs[:-1]])
    dU, dW, db = np.zeros((D, D)), np.zeros((D, M)), np.zeros(D)
    for t in range(T):
        delta = dhs[t] * (1 - hs[t] ** 2)            # delta_{t,t}
        for k in range(t, -1, -1):
            dU += delta.T @ h_prev[k]
            dW += delta.T @ x[k]
            db += delta.sum(0)
            if k > 0:
                delta = (delta @ params["U"]) * (1 - hs[k - 1] ** 2)   # delta_{t,k-1}
    _, _, dparams = rnn.backward(dhs, cache)
    assert rel_error(dparams["U"], dU) < 1e-12
    assert rel_error(dparams["W"], dW) < 1e-12
    assert rel_error(dparams["b"], db) < 1e-12
