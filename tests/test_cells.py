"""One test suite for every recurrent cell of rnnbook (the registry is tests/cells.py):
torch autograd in float64, central differences, linearity of the backward in dhs, shapes
down to T = N = M = D = 1, float32 kept, pure functions, from_torch, and every kind of
bad input refused with a ValueError naming the argument."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from cells import CELLS
from rnnbook import reference
from rnnbook.gradcheck import numerical_gradient, rel_error

IDS = [c.name for c in CELLS]
SHAPES = [(5, 3, 4, 6), (1, 1, 1, 1), (1, 4, 3, 2), (7, 1, 3, 2), (4, 2, 1, 3), (4, 2, 3, 1),
          (30, 8, 16, 32)]


def shape_of(dims, sizes):
    return tuple(sizes[d] for d in dims.split())


def make_case(cell, T, N, M, D, seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    sizes = {"T": T, "N": N, "M": M, "D": D}
    params = {k: (cell.scale * rng.normal(size=shape_of(d, sizes))).astype(dtype)
              for k, d in cell.params.items()}
    x = rng.normal(size=(T, N, M)).astype(dtype)
    states = tuple((0.5 * rng.normal(size=(N, D))).astype(dtype) for _ in cell.states)
    dhs = rng.normal(size=(T, N, D)).astype(dtype)
    return params, x, states, dhs


def run(cell, params, x, states, dhs):
    hs, cache = cell.lib.forward(params, x, *states, **cell.kwargs)
    out = cell.lib.backward(dhs, cache)
    assert len(out) == 2 + len(cell.states), "backward returns dx, the dstates, dparams"
    return hs, out[0], out[1:-1], out[-1]


def assert_matches_reference(cell, T, N, M, D, seed=0, tol=1e-10):
    params, x, states, dhs = make_case(cell, T, N, M, D, seed)
    hs, dx, dstates, dparams = run(cell, params, x, states, dhs)
    ref = reference.gradients(cell.reference, params, x, states, dhs, **cell.kwargs)
    assert hs.shape == (T, N, D) and dx.shape == (T, N, M)
    assert rel_error(hs, ref["hs"]) < tol, "hs"
    assert rel_error(dx, ref["dx"]) < tol, "dx"
    for name, got in zip(cell.states, dstates):
        assert got.shape == (N, D)
        assert rel_error(got, ref["d" + name]) < tol, "d" + name
    assert set(dparams) == set(params)
    for k in params:
        assert dparams[k].shape == params[k].shape, k
        assert rel_error(dparams[k], ref["dparams"][k]) < tol, k


@pytest.mark.parametrize("cell", CELLS, ids=IDS)
@pytest.mark.parametrize("T,N,M,D", SHAPES)
def test_matches_torch_autograd(cell, T, N, M, D):
    assert_matches_reference(cell, T, N, M, D)


@pytest.mark.parametrize("cell", CELLS, ids=IDS)
@settings(max_examples=15, deadline=None)
@given(T=st.integers(1, 7), N=st.integers(1, 4), M=st.integers(1, 5), D=st.integers(1, 6),
       seed=st.integers(0, 2**31 - 1))
def test_matches_torch_autograd_random_shapes(cell, T, N, M, D, seed):
    assert_matches_reference(cell, T, N, M, D, seed)


@pytest.mark.parametrize("cell", CELLS, ids=IDS)
@settings(max_examples=10, deadline=None)
@given(T=st.integers(1, 6), N=st.integers(1, 3), D=st.integers(1, 4),
       seed=st.integers(0, 2**31 - 1))
def test_backward_is_linear_in_dhs(cell, T, N, D, seed):
    """The backward operator is a vector-Jacobian product: linear in dhs."""
    params, x, states, a = make_case(cell, T, N, 2, D, seed)
    b = np.random.default_rng(seed + 1).normal(size=a.shape)
    _, cache = cell.lib.forward(params, x, *states, **cell.kwargs)
    ga, gb, gab = (cell.lib.backward(d, cache) for d in (a, b, 2 * a - 3 * b))
    for i in range(len(ga) - 1):
        assert rel_error(gab[i], 2 * ga[i] - 3 * gb[i]) < 1e-12
    for k in params:
        assert rel_error(gab[-1][k], 2 * ga[-1][k] - 3 * gb[-1][k]) < 1e-12, k


@pytest.mark.parametrize("cell", CELLS, ids=IDS)
def test_finite_differences(cell):
    params, x, states, dhs = make_case(cell, 4, 2, 3, 3, seed=1)

    def loss():
        return np.sum(cell.lib.forward(params, x, *states, **cell.kwargs)[0] * dhs)

    _, dx, dstates, dparams = run(cell, params, x, states, dhs)
    for k in params:
        assert rel_error(dparams[k], numerical_gradient(loss, params[k])) < 1e-8, k
    assert rel_error(dx, numerical_gradient(loss, x)) < 1e-8
    for name, s, ds in zip(cell.states, states, dstates):
        assert rel_error(ds, numerical_gradient(loss, s)) < 1e-8, name


@pytest.mark.parametrize("cell", CELLS, ids=IDS)
def test_float32_stays_float32(cell):
    p32, x32, s32, d32 = make_case(cell, 4, 2, 3, 5, dtype=np.float32)
    hs, dx, dstates, dparams = run(cell, p32, x32, s32, d32)
    assert hs.dtype == dx.dtype == np.float32
    assert all(d.dtype == np.float32 for d in dstates)
    assert all(v.dtype == np.float32 for v in dparams.values())
    p64 = {k: v.astype(np.float64) for k, v in p32.items()}
    hs64, dx64, _, d64 = run(cell, p64, x32.astype(np.float64),
                             tuple(s.astype(np.float64) for s in s32), d32.astype(np.float64))
    assert rel_error(hs, hs64) < 1e-5 and rel_error(dx, dx64) < 1e-5
    assert all(rel_error(dparams[k], d64[k]) < 1e-5 for k in d64)


@pytest.mark.parametrize("cell", CELLS, ids=IDS)
def test_integer_input_becomes_float64(cell):
    params, _, states, _ = make_case(cell, 3, 1, 1, 2)
    hs, _ = cell.lib.forward(params, np.ones((3, 1, 1), dtype=int),
                             *(np.zeros((1, 2), dtype=int) for _ in states), **cell.kwargs)
    assert hs.dtype == np.float64


@pytest.mark.parametrize("cell", CELLS, ids=IDS)
def test_pure_functions(cell):
    """Inputs are never modified, and the returned arrays are the caller's own: writing
    into hs does not change what backward computes."""
    params, x, states, dhs = make_case(cell, 5, 2, 3, 4)
    copies = ({k: v.copy() for k, v in params.items()}, x.copy(),
              [s.copy() for s in states], dhs.copy())
    hs, cache = cell.lib.forward(params, x, *states, **cell.kwargs)
    first = cell.lib.backward(dhs, cache)
    hs[...] = 0.0
    second = cell.lib.backward(dhs, cache)
    assert all(np.array_equal(params[k], copies[0][k]) for k in params)
    assert np.array_equal(x, copies[1]) and np.array_equal(dhs, copies[3])
    assert all(np.array_equal(s, c) for s, c in zip(states, copies[2]))
    for a, b in zip(first[:-1], second[:-1]):
        assert np.array_equal(a, b)
    assert all(np.array_equal(first[-1][k], second[-1][k]) for k in params)


# ---- from_torch ---------------------------------------------------------------------

TORCH_CELLS = [c for c in CELLS if c.torch_module]


@pytest.mark.parametrize("cell", TORCH_CELLS, ids=[c.name for c in TORCH_CELLS])
@pytest.mark.parametrize("bias", [True, False])
def test_from_torch_reproduces_the_module(cell, bias):
    torch.manual_seed(0)
    module = cell.torch_module(3, 4, bias).double()
    params = cell.lib.from_torch(module)
    assert set(params) == set(cell.params)
    _, x, states, dhs = make_case(cell, 6, 2, 3, 4)
    hs, dx, dstates, _ = run(cell, params, x, states, dhs)
    xt = torch.tensor(x, requires_grad=True)
    st_ = [torch.tensor(s, requires_grad=True) for s in states]
    out = cell.torch_run(module, xt, st_)
    grads = torch.autograd.grad((out * torch.tensor(dhs)).sum(), [xt, *st_])
    assert rel_error(hs, out.detach().numpy()) < 1e-12
    assert rel_error(dx, grads[0].numpy()) < 1e-12
    for d, g in zip(dstates, grads[1:]):
        assert rel_error(d, g.numpy()) < 1e-12


@pytest.mark.parametrize("cell", TORCH_CELLS, ids=[c.name for c in TORCH_CELLS])
def test_from_torch_keeps_float32_module_exact(cell):
    torch.manual_seed(0)
    module = cell.torch_module(3, 4, True)
    params = cell.lib.from_torch(module)
    assert all(v.dtype == np.float32 for v in params.values())
    _, x, states, _ = make_case(cell, 6, 2, 3, 4, dtype=np.float32)
    hs, _ = cell.lib.forward(params, x, *states, **cell.kwargs)
    out = cell.torch_run(module, torch.tensor(x), [torch.tensor(s) for s in states])
    assert np.allclose(hs, out.detach().numpy(), atol=1e-6)


REJECTS = [(c, make, msg) for c in TORCH_CELLS for make, msg in c.torch_rejects]


@pytest.mark.parametrize("cell,make,message", REJECTS,
                         ids=[f"{c.name}-{m}" for c, _, m in REJECTS])
def test_from_torch_rejects(cell, make, message):
    with pytest.raises(ValueError, match=message):
        cell.lib.from_torch(make())


# ---- bad input: ValueError naming the argument and the expected shape -----------------

def bad_forward_cases(cell):
    """(id, mutate, message regex) for every kind of bad input to forward."""
    T, N, M, D = 5, 2, 3, 4
    sizes = {"T": T, "N": N, "M": M, "D": D}
    cases = [
        ("x rank 2", lambda p, x, s: (p, x[0], s), r"x must have 3 dimensions \(T, N, M\)"),
        ("x rank 4", lambda p, x, s: (p, x[None], s), r"x must have 3 dimensions"),
        ("x empty", lambda p, x, s: (p, np.zeros((0, N, M)), s), r"x must not be empty"),
        ("x NaN", lambda p, x, s: (p, np.where(x > 1, np.nan, x), s), r"x contains NaN"),
        ("x strings", lambda p, x, s: (p, np.full(x.shape, "a"), s), r"x must hold real"),
        ("x complex", lambda p, x, s: (p, x + 1j, s), r"x must hold real numbers"),
        ("x ragged", lambda p, x, s: (p, [[[1.0]], [[1.0, 2.0]]], s), r"x must be an array"),
        ("params not a dict", lambda p, x, s: ([1, 2], x, s), r"params must be a dict"),
        ("unknown key", lambda p, x, s: ({**p, "V": np.zeros((2, 4))}, x, s),
         r"unknown \['V'\]"),
    ]
    for i, name in enumerate(cell.states):
        def replace(value, i=i):
            return lambda p, x, s: (p, x, s[:i] + (value,) + s[i + 1:])
        cases += [
            (f"{name} wrong N", replace(np.zeros((N + 1, D))),
             rf"{name} must have shape \(N, D\) = \({N}, {D}\)"),
            (f"{name} wrong D", replace(np.zeros((N, D + 1))), rf"{name} must have shape \(N, D\)"),
            (f"{name} rank 3", replace(np.zeros((1, N, D))), rf"{name} must have 2 dimensions"),
            (f"{name} inf", replace(np.full((N, D), np.inf)), rf"{name} contains NaN or infinity"),
        ]
    for key, dims in cell.params.items():
        shape = shape_of(dims, sizes)
        label = "\\(" + ", ".join(dims.split()) + ("," if len(shape) == 1 else "") + "\\)"
        wrong = shape[:-1] + (shape[-1] + 1,)

        def put(value, key=key):
            def mutate(p, x, s):
                p = dict(p)
                if value is None:
                    del p[key]
                else:
                    p[key] = value
                return p, x, s
            return mutate
        cases += [
            (f"{key} wrong shape", put(np.zeros(wrong)),
             rf"params\['{key}'\] must have shape {label}"),
            (f"{key} rank", put(np.zeros(shape + (1,))),
             rf"params\['{key}'\] must have {len(shape)} dimensions"),
            (f"{key} NaN", put(np.full(shape, np.nan)), rf"params\['{key}'\] contains NaN"),
            (f"missing {key}", put(None), rf"missing \['{key}'\]"),
        ]
    return cases


BAD_FORWARD = [(c, *case) for c in CELLS for case in bad_forward_cases(c)]


@pytest.mark.parametrize("cell,case,mutate,message", BAD_FORWARD,
                         ids=[f"{c.name}-{case}" for c, case, _, _ in BAD_FORWARD])
def test_forward_rejects(cell, case, mutate, message):
    params, x, states, _ = make_case(cell, 5, 2, 3, 4)
    p, x, s = mutate(params, x, states)
    with pytest.raises(ValueError, match=message):
        cell.lib.forward(p, x, *s, **cell.kwargs)


@pytest.mark.parametrize("cell", CELLS, ids=IDS)
@pytest.mark.parametrize("dhs,message", [
    (np.zeros((4, 2, 4)), r"dhs must have shape \(T, N, D\) = \(5, 2, 4\)"),
    (np.zeros((5, 2, 3)), r"dhs must have shape \(T, N, D\)"),
    (np.zeros((5, 4)), r"dhs must have 3 dimensions"),
    (np.full((5, 2, 4), np.nan), r"dhs contains NaN"),
    ("abc", r"dhs must hold real numbers"),
])
def test_backward_rejects(cell, dhs, message):
    params, x, states, _ = make_case(cell, 5, 2, 3, 4)
    _, cache = cell.lib.forward(params, x, *states, **cell.kwargs)
    with pytest.raises(ValueError, match=message):
        cell.lib.backward(dhs, cache)
