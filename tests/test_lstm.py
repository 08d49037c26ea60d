"""What is particular to rnnbook.lstm (the shared suite, tests/test_cells.py, checks
everything every cell must do): the mapping of torch.nn.LSTM's stacked blocks to NNDL's
keys, the initialiser and its forget-gate bias, the stacked layout, saturated gates, and
the closed form of dL/dc_0 when the gates do not depend on the state."""
import re
import warnings

import numpy as np
import pytest
import torch

from rnnbook import lstm, reference
from rnnbook.gradcheck import rel_error

KEYS = [f"{kind}_{g}" for g in "ifoc" for kind in "WUb"]


def test_params_keys_are_nndls_names():
    assert sorted(lstm.PARAMS) == sorted(KEYS)
    assert lstm.GATES == ("i", "f", "c", "o")   # PyTorch's stacking order i, f, g, o


@pytest.mark.parametrize("bias", [True, False])
def test_from_torch_maps_each_stacked_block_to_its_key(bias):
    """Fill each of torch's four row blocks with its own constant: W_i must read block 0,
    W_f block 1, W_c (torch's g) block 2, W_o block 3; b_g = bias_ih + bias_hh."""
    M, D = 3, 2
    module = torch.nn.LSTM(M, D, bias=bias).double()
    with torch.no_grad():
        for k in range(4):
            module.weight_ih_l0[k * D:(k + 1) * D] = 10 + k
            module.weight_hh_l0[k * D:(k + 1) * D] = 20 + k
            if bias:
                module.bias_ih_l0[k * D:(k + 1) * D] = 30 + k
                module.bias_hh_l0[k * D:(k + 1) * D] = 0.5 * k
    params = lstm.from_torch(module)
    for k, g in enumerate("ifco"):
        assert np.all(params[f"W_{g}"] == 10 + k) and params[f"W_{g}"].shape == (D, M)
        assert np.all(params[f"U_{g}"] == 20 + k) and params[f"U_{g}"].shape == (D, D)
        expected = 30 + 1.5 * k if bias else 0.0
        assert np.all(params[f"b_{g}"] == expected) and params[f"b_{g}"].shape == (D,)


def test_from_torch_returns_arrays_of_its_own():
    module = torch.nn.LSTM(3, 2).double()
    params = lstm.from_torch(module)
    params["W_i"][...] = 0.0
    params["b_f"][...] = 0.0
    assert torch.all(module.weight_ih_l0[:2] != 0)
    assert np.any(lstm.from_torch(module)["b_f"] != 0)
    assert all(v.flags.writeable and v.base is None for v in params.values())


def test_from_torch_batch_first_module_same_parameters():
    torch.manual_seed(1)
    module = torch.nn.LSTM(3, 4, batch_first=True).double()
    params = lstm.from_torch(module)
    rng = np.random.default_rng(0)
    x, h0, c0 = rng.normal(size=(5, 2, 3)), rng.normal(size=(2, 4)), rng.normal(size=(2, 4))
    out, _ = module(torch.tensor(x.transpose(1, 0, 2)),
                    (torch.tensor(h0[None]), torch.tensor(c0[None])))
    hs, _ = lstm.forward(params, x, h0, c0)
    assert rel_error(hs, out.detach().numpy().transpose(1, 0, 2)) < 1e-12


def test_stack_and_unstack_are_inverse():
    rng = np.random.default_rng(0)
    params = lstm.init(3, 5, rng, forget_bias=0.3)
    params = {k: v + rng.normal(size=v.shape) for k, v in params.items()}
    WbU = lstm.stack(params)
    assert WbU.shape == (4 * 5, 3 + 1 + 5)
    back = lstm.unstack(WbU)
    assert list(back) == list(lstm.PARAMS)
    assert all(np.array_equal(back[k], params[k]) for k in params)


def test_init_shapes_range_and_forget_bias():
    params = lstm.init(7, 5, np.random.default_rng(0))
    assert set(params) == set(KEYS)
    for key, value in params.items():
        expected = {"W": (5, 7), "U": (5, 5), "b": (5,)}[key[0]]
        assert value.shape == expected and value.dtype == np.float64, key
        if key[0] in "WU":
            assert np.all(np.abs(value) <= 1 / np.sqrt(5)) and np.std(value) > 0.1, key
    assert np.all(params["b_f"] == 1.0), "Jozefowicz et al.: b_f = 1 by default"
    for key in ("b_i", "b_o", "b_c"):
        assert np.all(params[key] == 0.0)
    assert np.all(lstm.init(7, 5, 0, forget_bias=2.5)["b_f"] == 2.5)
    assert np.all(lstm.init(7, 5, 0, forget_bias=0)["b_f"] == 0.0)


def test_init_is_seeded_and_keeps_float32():
    a, b = lstm.init(3, 4, 42), lstm.init(3, 4, np.random.default_rng(42))
    assert all(np.array_equal(a[k], b[k]) for k in a)
    p32 = lstm.init(3, 4, 0, dtype=np.float32)
    assert all(v.dtype == np.float32 for v in p32.values())


@pytest.mark.parametrize("kwargs,message", [
    ({"M": 0}, r"M must be a positive integer"),
    ({"M": 2.0}, r"M must be a positive integer"),
    ({"D": -1}, r"D must be a positive integer"),
    ({"D": True}, r"D must be a positive integer"),
    ({"forget_bias": np.nan}, r"forget_bias must be finite"),
    ({"forget_bias": "one"}, r"forget_bias must be a real number"),
    ({"dtype": np.int64}, r"dtype must be float32 or float64"),
    ({"dtype": "no such type"}, r"dtype must be float32 or float64"),
])
def test_init_rejects(kwargs, message):
    args = {"M": 3, "D": 4, **kwargs}
    with pytest.raises(ValueError, match=message):
        lstm.init(args.pop("M"), args.pop("D"), 0, **args)


def test_saturated_gates_no_overflow_warning():
    """Net inputs of thousands: the sigmoid is exactly 0 or 1, with no overflow warning
    from exp, and the result still equals torch's."""
    rng = np.random.default_rng(0)
    params = {k: 800 * v for k, v in lstm.init(3, 4, rng, forget_bias=0).items()}
    x, h0, c0 = rng.normal(size=(6, 2, 3)), rng.normal(size=(2, 4)), rng.normal(size=(2, 4))
    dhs = rng.normal(size=(6, 2, 4))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        hs, cache = lstm.forward(params, x, h0, c0)
        dx, dh0, dc0, dparams = lstm.backward(dhs, cache)
    ref = reference.gradients(reference.lstm, params, x, (h0, c0), dhs)
    assert rel_error(hs, ref["hs"]) < 1e-12
    assert rel_error(dc0, ref["dc0"]) < 1e-10
    assert all(rel_error(dparams[k], ref["dparams"][k]) < 1e-10 for k in params)


@pytest.mark.parametrize("forget_bias", [-2.0, 0.0, 1.0, 3.0])
def test_cell_state_gradient_is_a_product_of_forget_gates(forget_bias):
    """With U = W = 0 the gates are constants, c_t = f c_{t-1} + i c~ and h_t = o tanh(c_t),
    so dL/dc_0 = sum_t f^t o tanh'(c_t) dL/dh_t: the error on the internal state shrinks
    by exactly f = sigmoid(b_f) per step (dc_t/dc_{t-1} = diag(f_t))."""
    T, N, M, D = 30, 2, 3, 4
    rng = np.random.default_rng(1)
    params = {k: np.zeros_like(v) for k, v in lstm.init(M, D, rng).items()}
    params["b_f"][:] = forget_bias
    params["b_c"][:] = rng.normal(size=D)
    x, h0, c0 = rng.normal(size=(T, N, M)), rng.normal(size=(N, D)), rng.normal(size=(N, D))
    dhs = rng.normal(size=(T, N, D))
    hs, cache = lstm.forward(params, x, h0, c0)
    _, dh0, dc0, _ = lstm.backward(dhs, cache)
    f, i, o = 1 / (1 + np.exp(-forget_bias)), 0.5, 0.5
    c, expected = c0, np.zeros((N, D))
    for t in range(T):
        c = f * c + i * np.tanh(params["b_c"])
        expected += f ** (t + 1) * o * (1 - np.tanh(c) ** 2) * dhs[t]
    assert rel_error(dc0, expected) < 1e-12
    assert np.all(dh0 == 0.0)   # no path from h_0 when U = 0


def test_mixed_precision_gives_float64():
    rng = np.random.default_rng(0)
    p32 = lstm.init(3, 4, rng, dtype=np.float32)
    x = rng.normal(size=(5, 2, 3))                     # float64 input
    h0 = c0 = np.zeros((2, 4), np.float32)
    hs, cache = lstm.forward(p32, x, h0, c0)
    assert hs.dtype == np.float64
    dx, dh0, dc0, dparams = lstm.backward(np.ones((5, 2, 4), np.float32), cache)
    assert dx.dtype == dh0.dtype == dc0.dtype == np.float64
    assert all(v.dtype == np.float64 for v in dparams.values())
    p64 = {k: v.astype(np.float64) for k, v in p32.items()}
    assert rel_error(hs, lstm.forward(p64, x, h0, c0)[0]) < 1e-15


def test_benchmark_command_times_the_lstm():
    """`python -m rnnbook.bench cells --cells lstm` times rnnbook.lstm against
    torch.nn.LSTM (needs from_torch); a tiny size here, so the entry cannot break."""
    import subprocess
    import sys
    out = subprocess.run([sys.executable, "-m", "rnnbook.bench", "cells", "--cells", "lstm",
                          "--T", "3", "--N", "2", "--M", "3", "--D", "4", "--repeat", "1"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert re.search(r"lstm .*T=3 N=2 M=  3 D=  4: rnnbook .* ms, torch.nn.LSTM .* ms, "
                     r"ratio \d", out.stdout), out.stdout
