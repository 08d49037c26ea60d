"""rnnbook.rnn against torch.nn.RNN + autograd (float64), finite differences,
edge shapes, random shapes (hypothesis), float32, and every kind of bad input."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from rnnbook import rnn
from rnnbook.gradcheck import numerical_gradient, rel_error


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


@pytest.mark.parametrize("T,N,M,D", [
    (5, 3, 4, 6), (1, 1, 1, 1), (1, 4, 3, 2), (7, 1, 3, 2), (4, 2, 1, 3), (4, 2, 3, 1), (50, 8, 16, 32),
])
def test_matches_torch(T, N, M, D):
    assert_matches_torch(T, N, M, D)


def test_matches_torch_without_bias():
    assert_matches_torch(4, 2, 3, 5, bias=False)


@settings(max_examples=40, deadline=None)
@given(T=st.integers(1, 8), N=st.integers(1, 4), M=st.integers(1, 5), D=st.integers(1, 6),
       seed=st.integers(0, 2**31 - 1))
def test_matches_torch_random_shapes(T, N, M, D, seed):
    assert_matches_torch(T, N, M, D, seed)


@settings(max_examples=20, deadline=None)
@given(T=st.integers(1, 6), N=st.integers(1, 3), D=st.integers(1, 4), seed=st.integers(0, 2**31 - 1))
def test_backward_is_linear_in_dhs(T, N, D, seed):
    """The backward operator is a vector-Jacobian product: linear in dhs."""
    _, x, h0, a = make_case(T, N, 2, D, seed % 1000)
    rng = np.random.default_rng(seed)
    params = {"U": rng.normal(size=(D, D)), "W": rng.normal(size=(D, 2)), "b": rng.normal(size=D)}
    b = rng.normal(size=a.shape)
    _, cache = rnn.forward(params, x, h0)
    ga, gb, gab = (rnn.backward(d, cache) for d in (a, b, 2 * a - 3 * b))
    for i in range(2):
        assert rel_error(gab[i], 2 * ga[i] - 3 * gb[i]) < 1e-12
    for k in params:
        assert rel_error(gab[2][k], 2 * ga[2][k] - 3 * gb[2][k]) < 1e-12


def test_finite_differences():
    rng = np.random.default_rng(1)
    T, N, M, D = 4, 2, 3, 3
    params = {"U": rng.normal(size=(D, D)) * 0.5, "W": rng.normal(size=(D, M)), "b": rng.normal(size=D)}
    x, h0, dhs = rng.normal(size=(T, N, M)), rng.normal(size=(N, D)), rng.normal(size=(T, N, D))

    def loss():
        return np.sum(rnn.forward(params, x, h0)[0] * dhs)

    dx, dh0, dparams = rnn.backward(dhs, rnn.forward(params, x, h0)[1])
    for key in params:
        assert rel_error(dparams[key], numerical_gradient(loss, params[key])) < 1e-8, key
    assert rel_error(dx, numerical_gradient(loss, x)) < 1e-8
    assert rel_error(dh0, numerical_gradient(loss, h0)) < 1e-8


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


def test_float32_stays_float32():
    module, x, h0, dhs = make_case(4, 2, 3, 5)
    p64 = rnn.from_torch(module)
    p32 = {k: v.astype(np.float32) for k, v in p64.items()}
    hs, cache = rnn.forward(p32, x.astype(np.float32), h0.astype(np.float32))
    dx, dh0, dparams = rnn.backward(dhs.astype(np.float32), cache)
    assert hs.dtype == dx.dtype == dh0.dtype == np.float32
    assert all(v.dtype == np.float32 for v in dparams.values())
    hs64, cache64 = rnn.forward(p64, x, h0)
    dx64, _, d64 = rnn.backward(dhs, cache64)
    assert rel_error(hs, hs64) < 1e-5 and rel_error(dx, dx64) < 1e-5
    assert all(rel_error(dparams[k], d64[k]) < 1e-5 for k in d64)


def test_from_torch_keeps_float32_module_exact():
    torch.manual_seed(0)
    module = torch.nn.RNN(3, 4)
    params = rnn.from_torch(module)
    assert all(v.dtype == np.float32 for v in params.values())
    x = np.random.default_rng(0).normal(size=(6, 2, 3)).astype(np.float32)
    h0 = np.zeros((2, 4), np.float32)
    hs, _ = rnn.forward(params, x, h0)
    out, _ = module(torch.tensor(x))
    assert np.allclose(hs, out.detach().numpy(), atol=1e-6)


def test_integer_input_becomes_float64():
    params = {"U": np.eye(2), "W": np.ones((2, 1)), "b": np.zeros(2)}
    hs, _ = rnn.forward(params, np.ones((3, 1, 1), dtype=int), np.zeros((1, 2), dtype=int))
    assert hs.dtype == np.float64


# ---- bad input: ValueError naming the argument and the expected shape -------------

def good():
    rng = np.random.default_rng(0)
    params = {"U": rng.normal(size=(4, 4)), "W": rng.normal(size=(4, 3)), "b": rng.normal(size=4)}
    return params, rng.normal(size=(5, 2, 3)), rng.normal(size=(2, 4))


def with_param(key, value):
    params, x, h0 = good()
    params = dict(params)
    if value is None:
        del params[key]
    else:
        params[key] = value
    return params, x, h0


nan_x = good()[1].copy()
nan_x[2, 1, 0] = np.nan

BAD_FORWARD = {
    "x rank 2": (lambda: (good()[0], good()[1][0], good()[2]), r"x must have 3 dimensions \(T, N, M\)"),
    "x rank 4": (lambda: (good()[0], good()[1][None], good()[2]), r"x must have 3 dimensions"),
    "x empty T": (lambda: (good()[0], np.zeros((0, 2, 3)), good()[2]), r"x must not be empty"),
    "x NaN": (lambda: (good()[0], nan_x, good()[2]), r"x contains NaN"),
    "x strings": (lambda: (good()[0], np.full((5, 2, 3), "a"), good()[2]), r"x must hold real numbers"),
    "x complex": (lambda: (good()[0], good()[1] + 1j, good()[2]), r"x must hold real numbers"),
    "x ragged": (lambda: (good()[0], [[[1.0]], [[1.0, 2.0]]], good()[2]), r"x must be an array"),
    "h0 wrong N": (lambda: (good()[0], good()[1], np.zeros((3, 4))), r"h0 must have shape \(N, D\) = \(2, 4\)"),
    "h0 wrong D": (lambda: (good()[0], good()[1], np.zeros((2, 5))), r"h0 must have shape \(N, D\)"),
    "h0 rank 3": (lambda: (good()[0], good()[1], np.zeros((1, 2, 4))), r"h0 must have 2 dimensions"),
    "h0 inf": (lambda: (good()[0], good()[1], np.full((2, 4), np.inf)), r"h0 contains NaN or infinity"),
    "W wrong M": (lambda: with_param("W", np.zeros((4, 2))), r"params\['W'\] must have shape \(D, M\) = \(4, 3\)"),
    "W wrong D": (lambda: with_param("W", np.zeros((5, 3))), r"params\['W'\] must have shape \(D, M\)"),
    "U not square": (lambda: with_param("U", np.zeros((4, 3))), r"params\['U'\] must have shape \(D, D\)"),
    "U rank 1": (lambda: with_param("U", np.zeros(4)), r"params\['U'\] must have 2 dimensions"),
    "b wrong D": (lambda: with_param("b", np.zeros(3)), r"params\['b'\] must have shape \(D,\)"),
    "b rank 2": (lambda: with_param("b", np.zeros((4, 1))), r"params\['b'\] must have 1 dimensions"),
    "b NaN": (lambda: with_param("b", np.full(4, np.nan)), r"params\['b'\] contains NaN"),
    "missing b": (lambda: with_param("b", None), r"missing \['b'\]"),
    "missing U": (lambda: with_param("U", None), r"params must be a dict with keys"),
    "unknown key": (lambda: with_param("V", np.zeros((2, 4))), r"unknown \['V'\]"),
    "params not a dict": (lambda: ([1, 2, 3], good()[1], good()[2]), r"params must be a dict"),
}


@pytest.mark.parametrize("case", sorted(BAD_FORWARD))
def test_forward_rejects(case):
    make, message = BAD_FORWARD[case]
    with pytest.raises(ValueError, match=message):
        rnn.forward(*make())


@pytest.mark.parametrize("dhs,message", [
    (np.zeros((4, 2, 4)), r"dhs must have shape \(T, N, D\) = \(5, 2, 4\)"),
    (np.zeros((5, 2, 3)), r"dhs must have shape \(T, N, D\)"),
    (np.zeros((5, 4)), r"dhs must have 3 dimensions"),
    (np.full((5, 2, 4), np.nan), r"dhs contains NaN"),
])
def test_backward_rejects(dhs, message):
    params, x, h0 = good()
    _, cache = rnn.forward(params, x, h0)
    with pytest.raises(ValueError, match=message):
        rnn.backward(dhs, cache)


@pytest.mark.parametrize("make,message", [
    (lambda: torch.nn.LSTM(3, 4), r"must be a torch.nn.RNN .*got LSTM"),
    (lambda: torch.nn.GRU(3, 4), r"got GRU"),
    (lambda: torch.nn.RNN(3, 4, num_layers=2), r"num_layers=1, got 2"),
    (lambda: torch.nn.RNN(3, 4, bidirectional=True), r"unidirectional"),
    (lambda: torch.nn.RNN(3, 4, nonlinearity="relu"), r"nonlinearity='tanh', got 'relu'"),
    (lambda: torch.nn.Linear(3, 4), r"got Linear"),
    (lambda: {"U": 1}, r"got dict"),
])
def test_from_torch_rejects(make, message):
    with pytest.raises(ValueError, match=message):
        rnn.from_torch(make())


def test_forward_does_not_modify_inputs():
    params, x, h0 = good()
    copies = ({k: v.copy() for k, v in params.items()}, x.copy(), h0.copy())
    _, cache = rnn.forward(params, x, h0)
    rnn.backward(np.ones((5, 2, 4)), cache)
    assert all(np.array_equal(params[k], copies[0][k]) for k in params)
    assert np.array_equal(x, copies[1]) and np.array_equal(h0, copies[2])
