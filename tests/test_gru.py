"""What is particular to rnnbook.gru (the shared suite, tests/test_cells.py, checks what
every cell must do, for both placements of the reset gate): the mapping of
torch.nn.GRU's stacked blocks and two biases to NNDL's keys, every parameter gradient
against torch.nn.GRU's own, the reset argument, the two placements being different
functions (and equal where they must be), the update gate's identity path, saturated
gates without warnings, Ng's update-gate convention being the same family, and chapter 05
quoting none of the reset="after" backward, which its exercise 1 asks students to write."""
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from rnnbook import gru, reference
from rnnbook.gradcheck import rel_error
from rnnbook.notebook import source_lines

KEYS = [f"{kind}_{g}" for g in "zrh" for kind in "WUb"]


def random_params(rng, M, D, reset="before", scale=1.0):
    shapes = {"W": (D, M), "U": (D, D), "b": (D,)}
    p = {k: scale * rng.normal(size=shapes[k[0]]) for k in KEYS}
    if reset == "after":
        p["b_hn"] = scale * rng.normal(size=D)
    return p


def run(params, x, h0, dhs, reset):
    hs, cache = gru.forward(params, x, h0, reset=reset)
    return (hs, *gru.backward(dhs, cache))


def test_params_keys():
    assert sorted(gru.PARAMS) == sorted(KEYS)
    assert sorted(gru.PARAMS_AFTER) == sorted(KEYS + ["b_hn"])


@pytest.mark.parametrize("bias", [True, False])
def test_from_torch_maps_each_block_and_bias_to_its_key(bias):
    """torch's row blocks are r, z, n: W_r must read block 0, W_z block 1, W_h block 2;
    b_r and b_z are the sums of the two biases, b_h = b_in and b_hn stays apart."""
    M, D = 3, 2
    module = torch.nn.GRU(M, D, bias=bias).double()
    with torch.no_grad():
        for k in range(3):
            module.weight_ih_l0[k * D:(k + 1) * D] = 10 + k
            module.weight_hh_l0[k * D:(k + 1) * D] = 20 + k
            if bias:
                module.bias_ih_l0[k * D:(k + 1) * D] = 30 + k
                module.bias_hh_l0[k * D:(k + 1) * D] = 0.5 * k
    params = gru.from_torch(module)
    assert list(params) == list(gru.PARAMS_AFTER)
    for k, g in enumerate("rzh"):
        assert np.all(params[f"W_{g}"] == 10 + k) and params[f"W_{g}"].shape == (D, M)
        assert np.all(params[f"U_{g}"] == 20 + k) and params[f"U_{g}"].shape == (D, D)
    expected = {"b_r": 30.0, "b_z": 31.5, "b_h": 32.0, "b_hn": 1.0} if bias else {}
    for key in ("b_r", "b_z", "b_h", "b_hn"):
        assert np.all(params[key] == expected.get(key, 0.0)) and params[key].shape == (D,)


def test_from_torch_returns_arrays_of_its_own():
    module = torch.nn.GRU(3, 2).double()
    params = gru.from_torch(module)
    params["W_r"][...] = 0.0
    params["b_hn"][...] = 0.0
    assert torch.all(module.weight_ih_l0[:2] != 0)
    assert torch.all(module.bias_hh_l0[4:] != 0)
    assert all(v.flags.writeable and v.base is None for v in params.values())


def test_from_torch_batch_first_module_same_parameters():
    torch.manual_seed(1)
    module = torch.nn.GRU(3, 4, batch_first=True).double()
    params = gru.from_torch(module)
    rng = np.random.default_rng(0)
    x, h0 = rng.normal(size=(5, 2, 3)), rng.normal(size=(2, 4))
    out, _ = module(torch.tensor(x.transpose(1, 0, 2)), torch.tensor(h0[None]))
    hs, _ = gru.forward(params, x, h0, reset="after")
    assert rel_error(hs, out.detach().numpy().transpose(1, 0, 2)) < 1e-12


@pytest.mark.parametrize("bias", [True, False])
def test_parameter_gradients_match_torch_modules_own(bias):
    """Every dparams entry against the .grad of torch.nn.GRU's four tensors, block by
    block: the summed biases get the gradient of each of torch's two (they are equal)."""
    torch.manual_seed(2)
    T, N, M, D = 6, 3, 4, 5
    module = torch.nn.GRU(M, D, bias=bias).double()
    params = gru.from_torch(module)
    rng = np.random.default_rng(2)
    x, h0, dhs = rng.normal(size=(T, N, M)), rng.normal(size=(N, D)), rng.normal(size=(T, N, D))
    hs, dx, dh0, dparams = run(params, x, h0, dhs, "after")
    xt, h0t = torch.tensor(x, requires_grad=True), torch.tensor(h0[None], requires_grad=True)
    out, _ = module(xt, h0t)
    (out * torch.tensor(dhs)).sum().backward()
    assert rel_error(hs, out.detach().numpy()) < 1e-12
    assert rel_error(dx, xt.grad.numpy()) < 1e-10
    assert rel_error(dh0, h0t.grad[0].numpy()) < 1e-10
    blocks = {"r": slice(0, D), "z": slice(D, 2 * D), "h": slice(2 * D, 3 * D)}
    for g, rows in blocks.items():
        assert rel_error(dparams[f"W_{g}"], module.weight_ih_l0.grad[rows].numpy()) < 1e-10
        assert rel_error(dparams[f"U_{g}"], module.weight_hh_l0.grad[rows].numpy()) < 1e-10
    if bias:
        b_ih, b_hh = module.bias_ih_l0.grad.numpy(), module.bias_hh_l0.grad.numpy()
        for g in "rz":
            assert rel_error(dparams[f"b_{g}"], b_ih[blocks[g]]) < 1e-10
            assert rel_error(dparams[f"b_{g}"], b_hh[blocks[g]]) < 1e-10
        assert rel_error(dparams["b_h"], b_ih[blocks["h"]]) < 1e-10
        assert rel_error(dparams["b_hn"], b_hh[blocks["h"]]) < 1e-10
        assert rel_error(dparams["b_h"], dparams["b_hn"]) > 1e-3   # not one parameter


@pytest.mark.parametrize("reset", ["middle", "Before", None, 1, ["before"], np.array("after")])
def test_unknown_reset_is_refused(reset):
    rng = np.random.default_rng(0)
    params = random_params(rng, 2, 3)
    with pytest.raises(ValueError, match=r"reset must be 'before' or 'after', got"):
        gru.forward(params, rng.normal(size=(2, 1, 2)), np.zeros((1, 3)), reset=reset)


def test_reset_default_is_nndls_placement():
    rng = np.random.default_rng(0)
    params = random_params(rng, 2, 3)
    x, h0 = rng.normal(size=(4, 2, 2)), rng.normal(size=(2, 3))
    assert np.array_equal(gru.forward(params, x, h0)[0],
                          gru.forward(params, x, h0, reset="before")[0])


def test_each_placement_takes_exactly_its_keys():
    rng = np.random.default_rng(0)
    x, h0 = rng.normal(size=(2, 1, 2)), np.zeros((1, 3))
    with pytest.raises(ValueError, match=r"unknown \['b_hn'\]"):
        gru.forward(random_params(rng, 2, 3, "after"), x, h0, reset="before")
    with pytest.raises(ValueError, match=r"missing \['b_hn'\]"):
        gru.forward(random_params(rng, 2, 3, "before"), x, h0, reset="after")


def test_placements_differ_for_more_than_one_unit():
    """With b_hn = 0, U_h (r * h) and r * (U_h h) differ as soon as D > 1."""
    rng = np.random.default_rng(3)
    params = random_params(rng, 3, 4, "after")
    params["b_hn"][...] = 0.0
    x, h0 = rng.normal(size=(5, 2, 3)), rng.normal(size=(2, 4))
    before = gru.forward({k: v for k, v in params.items() if k != "b_hn"}, x, h0)[0]
    after = gru.forward(params, x, h0, reset="after")[0]
    assert rel_error(before, after) > 1e-2


def test_placements_agree_for_one_unit_without_b_hn():
    """For D = 1 the reset gate is a scalar and commutes with U_h: both placements are the
    same function when b_hn = 0, with the same gradients (the chapter's remark)."""
    rng = np.random.default_rng(4)
    params = random_params(rng, 3, 1, "after")
    params["b_hn"][...] = 0.0
    nine = {k: v for k, v in params.items() if k != "b_hn"}
    x, h0, dhs = rng.normal(size=(6, 2, 3)), rng.normal(size=(2, 1)), rng.normal(size=(6, 2, 1))
    before = run(nine, x, h0, dhs, "before")
    after = run(params, x, h0, dhs, "after")
    for a, b in zip(before[:3], after[:3]):
        assert rel_error(a, b) < 1e-13
    assert all(rel_error(before[3][k], after[3][k]) < 1e-13 for k in nine)


@pytest.mark.parametrize("reset", ["before", "after"])
def test_update_gate_near_one_is_an_identity_path(reset):
    """z_t -> 1 (a large update-gate bias): h_t = h_{t-1}, so dL/dh_0 = sum_t dL/dh_t."""
    rng = np.random.default_rng(5)
    params = random_params(rng, 3, 4, reset, scale=0.5)
    params["b_z"][...] = 40.0
    x, h0, dhs = rng.normal(size=(30, 2, 3)), rng.normal(size=(2, 4)), rng.normal(size=(30, 2, 4))
    hs, _, dh0, dparams = run(params, x, h0, dhs, reset)
    assert np.allclose(hs, h0, atol=1e-12, rtol=0)
    assert rel_error(dh0, dhs.sum(axis=0)) < 1e-12
    assert np.abs(dparams["W_h"]).max() < 1e-12   # the candidate is never used


@pytest.mark.parametrize("reset", ["before", "after"])
def test_saturated_gates_give_no_warnings_and_finite_results(reset):
    rng = np.random.default_rng(6)
    params = random_params(rng, 3, 4, reset, scale=400.0)
    x, h0, dhs = rng.normal(size=(5, 2, 3)), rng.normal(size=(2, 4)), rng.normal(size=(5, 2, 4))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        hs, dx, dh0, dparams = run(params, x, h0, dhs, reset)
    assert np.all(np.abs(hs) <= 1 + np.abs(h0).max())
    assert all(np.all(np.isfinite(a)) for a in (hs, dx, dh0, *dparams.values()))
    ref = reference.gradients(reference.gru, params, x, (h0,), dhs, reset=reset)
    assert rel_error(hs, ref["hs"]) < 1e-12


@pytest.mark.parametrize("reset", ["before", "after"])
def test_ngs_convention_is_the_same_family(reset):
    """Ng and Chung et al. write h_t = z' h~_t + (1 - z') h_{t-1}. Since
    1 - sigmoid(a) = sigmoid(-a), negating W_z, U_z, b_z turns one convention into the
    other: same states, and gradients of the update gate's parameters of opposite sign."""
    rng = np.random.default_rng(7)
    params = random_params(rng, 3, 4, reset)
    x, h0, dhs = rng.normal(size=(5, 2, 3)), rng.normal(size=(2, 4)), rng.normal(size=(5, 2, 4))
    hs, _, _, dparams = run(params, x, h0, dhs, reset)

    def ng(p, x, h0):   # Ng's convention, written out in torch for autograd
        h, out = h0, []
        for x_t in x:
            u = torch.sigmoid(x_t @ p["W_z"].T + h @ p["U_z"].T + p["b_z"])
            r = torch.sigmoid(x_t @ p["W_r"].T + h @ p["U_r"].T + p["b_r"])
            if reset == "before":
                a = x_t @ p["W_h"].T + (r * h) @ p["U_h"].T + p["b_h"]
            else:
                a = x_t @ p["W_h"].T + p["b_h"] + r * (h @ p["U_h"].T + p["b_hn"])
            h = u * torch.tanh(a) + (1 - u) * h
            out.append(h)
        return torch.stack(out)

    flipped = {**params, **{k: -params[k] for k in ("W_z", "U_z", "b_z")}}
    ref = reference.gradients(ng, flipped, x, (h0,), dhs)
    assert rel_error(hs, ref["hs"]) < 1e-12
    for k in ("W_z", "U_z", "b_z"):
        assert rel_error(dparams[k], -ref["dparams"][k]) < 1e-10
    for k in ("W_r", "U_h", "b_h"):
        assert rel_error(dparams[k], ref["dparams"][k]) < 1e-10


def test_float32_module_float32_params():
    module = torch.nn.GRU(3, 4)
    params = gru.from_torch(module)
    assert all(v.dtype == np.float32 for v in params.values())


def test_chapter_quotes_no_line_of_the_after_backward():
    """Exercise 1 of chapter 05 asks for the backward pass of PyTorch's placement, so the
    chapter may quote gru.backward only where its lines are NNDL's placement or shared by
    both: never the else branch, whose lines are the only ones that use dn = dL/dn_t."""
    import nbformat
    path = Path(__file__).resolve().parents[1] / "book" / "05_gru_gradients.ipynb"
    cells = nbformat.read(path, as_version=4).cells
    calls = [m.groups() for c in cells if c.cell_type == "code" for m in re.finditer(
        r'show_source\(gru\.backward,\s*"([^"]+)",\s*"([^"]+)"\)', c.source)]
    assert len(calls) >= 4, calls            # steps 1-2, 3, 4 and 5 each quote lines
    quoted = "\n".join(source_lines(gru.backward, *call) for call in calls)
    after_lines = [line for line in source_lines(gru.backward).splitlines()
                   if re.search(r"\bdn\b", line)]
    assert len(after_lines) >= 4
    leaked = [line for line in quoted.splitlines()
              if re.search(r"\bdn\b|\belse\b|E1\.", line)]
    assert not leaked, leaked
