"""rnnbook.rnn_torch: the simple RNN and its backward sweep in torch tensor operations,
and RNNFunction, the sweep as a torch.autograd.Function. Checked against rnnbook.rnn
(NumPy), rnnbook.reference (torch autograd), torch.nn.RNN, torch.autograd.gradcheck and
gradgradcheck, all in float64; plus: no autograd inside the sweep, float32 kept, pure
functions, in-place changes caught, bad input refused with a ValueError naming it."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from rnnbook import reference, rnn, rnn_torch
from rnnbook.gradcheck import rel_error

SHAPES = [(5, 3, 4, 6), (1, 1, 1, 1), (1, 4, 3, 2), (7, 1, 3, 2), (4, 2, 1, 3), (4, 2, 3, 1)]


def make_case(T, N, M, D, seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    params = {"U": 0.5 * rng.normal(size=(D, D)), "W": rng.normal(size=(D, M)),
              "b": rng.normal(size=D)}
    x, h0 = rng.normal(size=(T, N, M)), 0.5 * rng.normal(size=(N, D))
    dhs = rng.normal(size=(T, N, D))
    cast = (lambda a: a.astype(dtype))
    return {k: cast(v) for k, v in params.items()}, cast(x), cast(h0), cast(dhs)


def tensors(params, *arrays):
    return ({k: torch.from_numpy(v) for k, v in params.items()},
            *[torch.from_numpy(a) for a in arrays])


def assert_matches(T, N, M, D, seed=0, tol=1e-12):
    params, x, h0, dhs = make_case(T, N, M, D, seed)
    p, xt, h0t, dhst = tensors(params, x, h0, dhs)
    hs, cache = rnn_torch.forward(p, xt, h0t)
    dx, dh0, dparams = rnn_torch.backward(dhst, cache)
    ref = reference.gradients(reference.rnn, params, x, (h0,), dhs)
    hs_np, cache_np = rnn.forward(params, x, h0)
    dx_np, dh0_np, dparams_np = rnn.backward(dhs, cache_np)
    assert hs.shape == (T, N, D) and dx.shape == (T, N, M) and dh0.shape == (N, D)
    for got, want_ref, want_np, name in [(hs, ref["hs"], hs_np, "hs"), (dx, ref["dx"], dx_np, "dx"),
                                         (dh0, ref["dh0"], dh0_np, "dh0")] + \
            [(dparams[k], ref["dparams"][k], dparams_np[k], k) for k in "UWb"]:
        assert got.dtype == torch.float64, name
        assert rel_error(got.numpy(), want_ref) < tol, f"{name} vs torch autograd"
        assert rel_error(got.numpy(), want_np) < tol, f"{name} vs rnnbook.rnn"


@pytest.mark.parametrize("T,N,M,D", SHAPES)
def test_matches_numpy_and_autograd(T, N, M, D):
    assert_matches(T, N, M, D)


@settings(max_examples=15, deadline=None)
@given(T=st.integers(1, 7), N=st.integers(1, 4), M=st.integers(1, 5), D=st.integers(1, 6),
       seed=st.integers(0, 2**31 - 1))
def test_matches_numpy_and_autograd_random_shapes(T, N, M, D, seed):
    assert_matches(T, N, M, D, seed)


def function_inputs(T=4, N=3, M=2, D=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(*s, generator=g, dtype=torch.float64, requires_grad=True)
            for s in [(T, N, M), (N, D), (D, D), (D, M), (D,)]]


def test_function_passes_gradcheck():
    assert torch.autograd.gradcheck(rnn_torch.RNNFunction.apply, function_inputs())
    assert torch.autograd.gradcheck(rnn_torch.RNNFunction.apply, function_inputs(1, 1, 1, 1, 1))


def test_function_passes_gradgradcheck():
    """The sweep is made of differentiable tensor operations: its own derivative is right."""
    assert torch.autograd.gradgradcheck(rnn_torch.RNNFunction.apply,
                                        function_inputs(3, 2, 2, 3, 2))


@pytest.mark.parametrize("bias", [True, False])
def test_function_matches_torch_nn_rnn(bias):
    T, N, M, D = 6, 3, 4, 5
    torch.manual_seed(1)
    module = torch.nn.RNN(M, D, bias=bias, dtype=torch.float64)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(T, N, M, generator=g, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(N, D, generator=g, dtype=torch.float64, requires_grad=True)
    dhs = torch.randn(T, N, D, generator=g, dtype=torch.float64)
    out, _ = module(x, h0[None])
    (out * dhs).sum().backward()
    ref_x, ref_h0 = x.grad, h0.grad

    leaves = [x.detach().clone().requires_grad_(), h0.detach().clone().requires_grad_()] + \
        [torch.tensor(a, requires_grad=True) for a in rnn.from_torch(module).values()]
    hs = rnn_torch.RNNFunction.apply(*leaves)
    (hs * dhs).sum().backward()
    assert rel_error(hs.detach().numpy(), out.detach().numpy()) < 1e-12
    want = [ref_x, ref_h0, module.weight_hh_l0.grad, module.weight_ih_l0.grad,
            module.bias_ih_l0.grad if bias else None]
    for name, leaf, w in zip(["x", "h0", "U", "W", "b"], leaves, want):
        if w is not None:
            assert rel_error(leaf.grad.numpy(), w.numpy()) < 1e-12, name
    if not bias:   # b is an input of the Function all the same: dL/db = sum of the deltas
        params, xa, h0a = rnn.from_torch(module), x.detach().numpy(), h0.detach().numpy()
        _, cache = rnn.forward(params, xa, h0a)
        assert rel_error(leaves[4].grad.numpy(), rnn.backward(dhs.numpy(), cache)[2]["b"]) < 1e-12


def test_function_accepts_an_expanded_gradient():
    """hs.sum().backward() hands backward a zero-stride tensor of ones."""
    leaves = function_inputs()
    rnn_torch.RNNFunction.apply(*leaves).sum().backward()
    ref = reference.gradients(reference.rnn,
                              {k: v.detach().numpy() for k, v in zip("UWb", leaves[2:])},
                              leaves[0].detach().numpy(), (leaves[1].detach().numpy(),),
                              np.ones((4, 3, 5)))
    assert rel_error(leaves[0].grad.numpy(), ref["dx"]) < 1e-12
    assert rel_error(leaves[2].grad.numpy(), ref["dparams"]["U"]) < 1e-12


def test_backward_uses_no_autograd(monkeypatch):
    """The sweep runs with autograd switched off and its entry points broken, on tensors
    that carry no graph, and gives the same gradients."""
    params, x, h0, dhs = make_case(5, 2, 3, 4)
    p, xt, h0t, dhst = tensors(params, x, h0, dhs)
    _, cache = rnn_torch.forward(p, xt, h0t)
    want = rnn.backward(dhs, rnn.forward(params, x, h0)[1])

    def boom(*args, **kwargs):
        raise AssertionError("autograd was called inside the backward sweep")

    monkeypatch.setattr(torch.autograd, "grad", boom)
    monkeypatch.setattr(torch.autograd, "backward", boom)
    monkeypatch.setattr(torch.Tensor, "backward", boom)
    with torch.no_grad():
        dx, dh0, dparams = rnn_torch.backward(dhst, cache)
    assert not any(t.requires_grad for t in [dx, dh0, *dparams.values()])
    assert rel_error(dx.numpy(), want[0]) < 1e-12
    assert rel_error(dh0.numpy(), want[1]) < 1e-12
    for k in "UWb":
        assert rel_error(dparams[k].numpy(), want[2][k]) < 1e-12, k


def test_checks_never_leave_torch(monkeypatch):
    """Validation runs in torch: no tensor is converted to NumPy or copied to the CPU, so
    nothing ties the module to either (the book says so)."""
    params, x, h0, dhs = make_case(5, 2, 3, 4)
    p, xt, h0t, dhst = tensors(params, x, h0, dhs)
    leaves = [xt.clone().requires_grad_(), h0t.clone().requires_grad_()] + \
        [p[k].clone().requires_grad_() for k in "UWb"]

    def boom(*args, **kwargs):
        raise AssertionError("a tensor was converted to NumPy or copied to the CPU")

    for name in ("numpy", "cpu", "__array__", "tolist"):
        monkeypatch.setattr(torch.Tensor, name, boom)
    hs, cache = rnn_torch.forward(p, xt, h0t)
    dx, dh0, dparams = rnn_torch.backward(dhst, cache)
    out = rnn_torch.RNNFunction.apply(*leaves)
    (out * dhst).sum().backward()
    monkeypatch.undo()
    want = rnn.backward(dhs, rnn.forward(params, x, h0)[1])
    assert rel_error(hs.numpy(), out.detach().numpy()) == 0
    assert rel_error(dx.numpy(), want[0]) < 1e-12 and rel_error(dh0.numpy(), want[1]) < 1e-12
    assert rel_error(leaves[2].grad.numpy(), want[2]["U"]) < 1e-12


def test_float32_stays_float32():
    params, x, h0, dhs = make_case(4, 2, 3, 5, dtype=np.float32)
    p, xt, h0t, dhst = tensors(params, x, h0, dhs)
    hs, cache = rnn_torch.forward(p, xt, h0t)
    dx, dh0, dparams = rnn_torch.backward(dhst, cache)
    assert all(t.dtype == torch.float32 for t in [hs, dx, dh0, *dparams.values()])
    ref = reference.gradients(reference.rnn, params, x, (h0,), dhs)
    assert rel_error(dparams["U"].numpy(), ref["dparams"]["U"]) < 1e-5


def test_pure_functions():
    params, x, h0, dhs = make_case(4, 2, 3, 5)
    p, xt, h0t, dhst = tensors(params, x, h0, dhs)
    before = [t.clone() for t in [xt, h0t, dhst, *p.values()]]
    hs, cache = rnn_torch.forward(p, xt, h0t)
    hs += 1.0            # the caller's states are its own
    dx, _, _ = rnn_torch.backward(dhst, cache)
    for a, b in zip(before, [xt, h0t, dhst, *p.values()]):
        assert torch.equal(a, b)
    assert rel_error(dx.numpy(), rnn.backward(dhs, rnn.forward(params, x, h0)[1])[0]) < 1e-12


def test_function_refuses_inputs_changed_in_place():
    """save_for_backward: a saved input modified after the forward is caught."""
    leaves = function_inputs()
    hs = rnn_torch.RNNFunction.apply(*leaves)
    with torch.no_grad():
        leaves[2].mul_(2.0)                 # U changed before the backward pass
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        hs.sum().backward()


def _good():
    params, x, h0, dhs = make_case(4, 2, 3, 5)
    return tensors(params, x, h0, dhs)


def _bad_forward_cases():
    p, x, h0, _ = _good()
    nan = x.clone()
    nan[1, 0, 2] = float("nan")
    return [
        ("x not a tensor", p, x.numpy(), h0, r"^x must be a torch tensor, got ndarray"),
        ("x int", p, x.long(), h0, r"^x must be a float32 or float64 tensor"),
        ("x 2-D", p, x[0], h0, r"^x must have 3 dimensions \(T, N, M\)"),
        ("x NaN", p, nan, h0, r"^x contains NaN"),
        ("h0 inf", p, x, h0 / 0.0, r"^h0 contains NaN or infinity"),
        ("U inf", {**p, "U": p["U"] * float("inf")}, x, h0, r"^params\['U'\] contains NaN"),
        ("x empty", p, x[:0], h0, r"^x must not be empty"),
        ("b 2-D", {**p, "b": p["b"][None]}, x, h0, r"^params\['b'\] must have 1 dimensions \(D,\)"),
        ("params list", [p["U"]], x, h0, r"^params must be a dict"),
        ("params missing b", {"U": p["U"], "W": p["W"]}, x, h0, r"missing \['b'\]"),
        ("W wrong M", {**p, "W": p["W"][:, :2]}, x, h0, r"^params\['W'\] must have shape \(D, M\)"),
        ("U numpy", {**p, "U": p["U"].numpy()}, x, h0, r"^params\['U'\] must be a torch tensor"),
        ("h0 wrong N", p, x, h0[:1], r"^h0 must have shape \(N, D\) = \(2, 5\)"),
        ("b float32", {**p, "b": p["b"].float()}, x, h0, r"must have one dtype and one device"),
    ]


@pytest.mark.parametrize("case", _bad_forward_cases(), ids=lambda c: c[0])
def test_forward_refuses_bad_input(case):
    _, params, x, h0, message = case
    with pytest.raises(ValueError, match=message):
        rnn_torch.forward(params, x, h0)


@pytest.mark.parametrize("dhs,message", [
    (lambda d: d[:, :1], r"^dhs must have shape \(T, N, D\) = \(4, 2, 5\)"),
    (lambda d: d.float(), r"must have one dtype"),
    (lambda d: d.numpy(), r"^dhs must be a torch tensor"),
], ids=["shape", "dtype", "numpy"])
def test_backward_refuses_bad_dhs(dhs, message):
    p, x, h0, d = _good()
    _, cache = rnn_torch.forward(p, x, h0)
    with pytest.raises(ValueError, match=message):
        rnn_torch.backward(dhs(d), cache)
