"""rnnbook.stacked: the L-layer tanh RNN. Outputs and every gradient against
torch.nn.RNN(num_layers=L) and autograd, and against central differences, in float64;
one layer is rnnbook.rnn exactly; float32 kept; pure; from_torch refuses what it cannot
reproduce; bad input refused with a ValueError naming the argument."""
import numpy as np
import pytest
import torch

from rnnbook import rnn, stacked
from rnnbook.gradcheck import numerical_gradient, rel_error


def make_case(T, N, M, D, L, seed=0, bias=True):
    torch.manual_seed(seed)
    module = torch.nn.RNN(M, D, num_layers=L, bias=bias, dtype=torch.float64)
    rng = np.random.default_rng(seed)
    x, h0, dhs = rng.normal(size=(T, N, M)), rng.normal(size=(L, N, D)), rng.normal(size=(T, N, D))
    return module, x, h0, dhs


def torch_gradients(module, x, h0, dhs):
    """The top layer's states, h_n, and every gradient of sum(output * dhs) by autograd."""
    xt, h0t = torch.tensor(x, requires_grad=True), torch.tensor(h0, requires_grad=True)
    out, h_n = module(xt, h0t)
    module.zero_grad()
    (out * torch.tensor(dhs)).sum().backward()
    grads = [{"U": getattr(module, f"weight_hh_l{l}").grad.numpy(),
              "W": getattr(module, f"weight_ih_l{l}").grad.numpy(),
              "b": (getattr(module, f"bias_ih_l{l}").grad.numpy() if module.bias else None)}
             for l in range(module.num_layers)]
    if module.bias:
        for l in range(module.num_layers):   # both biases get dL/db
            assert rel_error(getattr(module, f"bias_hh_l{l}").grad.numpy(), grads[l]["b"]) < 1e-12
    return out.detach().numpy(), h_n.detach().numpy(), xt.grad.numpy(), h0t.grad.numpy(), grads


@pytest.mark.parametrize("L", [1, 2, 3])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("T,N,M,D", [(5, 3, 2, 4), (1, 1, 1, 1), (6, 2, 4, 3)])
def test_matches_torch_nn_rnn(T, N, M, D, L, bias):
    module, x, h0, dhs = make_case(T, N, M, D, L, seed=T + L, bias=bias)
    params = stacked.from_torch(module)
    assert len(params) == L
    hs, cache = stacked.forward(params, x, h0)
    dx, dh0, dparams = stacked.backward(dhs, cache)
    out, h_n, dx_t, dh0_t, grads_t = torch_gradients(module, x, h0, dhs)
    assert hs.shape == (T, N, D) and dx.shape == (T, N, M) and dh0.shape == (L, N, D)
    assert rel_error(hs, out) < 1e-12
    for l in range(L):                       # every layer's last state, as torch's h_n
        assert rel_error(cache["layers"][l]["hs"][-1], h_n[l]) < 1e-12, l
    assert rel_error(dx, dx_t) < 1e-12
    assert rel_error(dh0, dh0_t) < 1e-12
    for l in range(L):
        for k in "UWb":
            if grads_t[l][k] is not None:
                assert dparams[l][k].shape == params[l][k].shape
                assert rel_error(dparams[l][k], grads_t[l][k]) < 1e-12, (l, k)


def test_one_layer_is_rnn():
    module, x, h0, dhs = make_case(4, 2, 3, 5, 1)
    params = stacked.from_torch(module)
    hs, cache = stacked.forward(params, x, h0)
    hs1, cache1 = rnn.forward(params[0], x, h0[0])
    dx, dh0, dp = stacked.backward(dhs, cache)
    dx1, dh01, dp1 = rnn.backward(dhs, cache1)
    assert np.array_equal(hs, hs1) and np.array_equal(dx, dx1) and np.array_equal(dh0[0], dh01)
    assert all(np.array_equal(dp[0][k], dp1[k]) for k in "UWb")


def test_matches_central_differences():
    module, x, h0, dhs = make_case(4, 2, 2, 3, 2, seed=5)
    params = stacked.from_torch(module)
    _, cache = stacked.forward(params, x, h0)
    dx, dh0, dparams = stacked.backward(dhs, cache)

    def loss():
        return np.sum(dhs * stacked.forward(params, x, h0)[0])

    assert rel_error(dx, numerical_gradient(loss, x)) < 1e-8
    assert rel_error(dh0, numerical_gradient(loss, h0)) < 1e-8
    for l in range(2):
        for k in "UWb":
            assert rel_error(dparams[l][k], numerical_gradient(loss, params[l][k])) < 1e-8, (l, k)


def test_lower_layers_get_gradient_only_through_the_top():
    """dhs on the top layer reaches layer 1: its gradients are not zero, and a dhs of
    zeros gives zeros everywhere (backward is linear in dhs)."""
    module, x, h0, dhs = make_case(5, 2, 3, 4, 2)
    _, cache = stacked.forward(stacked.from_torch(module), x, h0)
    _, dh0, dparams = stacked.backward(dhs, cache)
    assert np.abs(dparams[0]["W"]).max() > 1e-3 and np.abs(dh0[0]).max() > 1e-3
    dx, dh0, dparams = stacked.backward(np.zeros_like(dhs), cache)
    assert not dx.any() and not dh0.any() and not any(v.any() for p in dparams for v in p.values())


def test_float32_stays_float32():
    module, x, h0, dhs = make_case(4, 2, 3, 5, 2)
    params = [{k: v.astype(np.float32) for k, v in p.items()} for p in stacked.from_torch(module)]
    hs, cache = stacked.forward(params, x.astype(np.float32), h0.astype(np.float32))
    dx, dh0, dparams = stacked.backward(dhs.astype(np.float32), cache)
    assert all(a.dtype == np.float32 for a in [hs, dx, dh0] + [v for p in dparams for v in p.values()])


def test_pure_functions():
    module, x, h0, dhs = make_case(4, 2, 3, 5, 2)
    params = stacked.from_torch(module)
    copies = [x.copy(), h0.copy(), dhs.copy()] + [v.copy() for p in params for v in p.values()]
    hs, cache = stacked.forward(params, x, h0)
    hs += 1.0
    dx, _, _ = stacked.backward(dhs, cache)
    for a, b in zip(copies, [x, h0, dhs] + [v for p in params for v in p.values()]):
        assert np.array_equal(a, b)
    assert rel_error(dx, torch_gradients(module, x, h0, dhs)[2]) < 1e-12


@pytest.mark.parametrize("factory,message", [
    (lambda: torch.nn.LSTM(3, 4, num_layers=2), r"must be a torch.nn.RNN .*got LSTM"),
    (lambda: torch.nn.RNN(3, 4, num_layers=2, bidirectional=True), r"unidirectional"),
    (lambda: torch.nn.RNN(3, 4, num_layers=2, nonlinearity="relu"), r"'tanh', got 'relu'"),
    (lambda: torch.nn.RNN(3, 4, num_layers=2, dropout=0.5), r"dropout=0 .*got 0.5"),
    (lambda: torch.nn.RNN(3, 4, num_layers=2, dropout=0.5).eval(), r"dropout=0 .*got 0.5"),
    (lambda: [{"U": 1}], r"got list"),
], ids=["lstm", "bidirectional", "relu", "dropout", "dropout-eval", "list"])
def test_from_torch_refuses(factory, message):
    with pytest.raises(ValueError, match=message):
        stacked.from_torch(factory())


def test_from_torch_batch_first_has_the_same_parameters():
    torch.manual_seed(0)
    a = torch.nn.RNN(3, 4, num_layers=2)
    torch.manual_seed(0)
    b = torch.nn.RNN(3, 4, num_layers=2, batch_first=True)
    for pa, pb in zip(stacked.from_torch(a), stacked.from_torch(b)):
        assert all(np.array_equal(pa[k], pb[k]) for k in "UWb")


def _bad_cases():
    module, x, h0, _ = make_case(4, 2, 3, 5, 2)
    p = stacked.from_torch(module)
    return [
        ("empty", [], x, h0, r"^params must be a non-empty list .*of length 0"),
        ("dict", p[0], x, h0, r"^params must be a non-empty list .*got dict"),
        ("layer 2 missing b", [p[0], {"U": p[1]["U"], "W": p[1]["W"]}], x, h0,
         r"^params\[1\] must have exactly the keys .*missing \['b'\]"),
        ("layer 2 W (D, M)", [p[0], {**p[1], "W": p[0]["W"]}], x, h0,
         r"^params\[1\]\['W'\] must have shape \(D, D\) = \(5, 5\), got \(5, 3\)"),
        ("layer 1 W wrong M", [{**p[0], "W": p[0]["W"][:, :2]}, p[1]], x, h0,
         r"^params\[0\]\['W'\] must have shape \(D, M\)"),
        ("h0 one layer", p, x, h0[:1], r"^h0 must have shape \(L, N, D\) = \(2, 2, 5\), got \(1, 2, 5\)"),
        ("h0 2-D", p, x, h0[0], r"^h0 must have 3 dimensions \(L, N, D\)"),
        ("x NaN", p, np.where(x > 1, np.nan, x), h0, r"^x contains NaN"),
    ]


@pytest.mark.parametrize("case", _bad_cases(), ids=lambda c: c[0])
def test_forward_refuses_bad_input(case):
    _, params, x, h0, message = case
    with pytest.raises(ValueError, match=message):
        stacked.forward(params, x, h0)


def test_backward_refuses_bad_dhs():
    module, x, h0, dhs = make_case(4, 2, 3, 5, 2)
    _, cache = stacked.forward(stacked.from_torch(module), x, h0)
    with pytest.raises(ValueError, match=r"^dhs must have shape \(T, N, D\) = \(4, 2, 5\)"):
        stacked.backward(dhs[:, :, :3], cache)
